"""Build pprof ``Profile`` messages from Python stacks and serialize them the way Go does (gzip level 1).

A stack is a sequence of frames, leaf first. A frame is either ``(code, line)`` or, when no
code object is known (a tracemalloc frame that ``source`` could not place), ``(filename,
line)``, named ``filename:line``. Each distinct code object becomes one ``Function`` (code
objects with the same qualified name, file and first line — e.g. a module imported twice —
share one), named by module and qualified name (``scraper.scrape.scrape_once``,
``scraper.push.PushStage.deliver``) as Go's are by package; each distinct frame one ``Location``
with one ``Line``. Samples with the same stack are merged by adding their values.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Sequence
from types import CodeType

from scraper._proto import profile_pb2

#: a frame: (code object or filename, line number)
Frame = tuple[CodeType | str, int]


#: source file -> module name, from sys.modules; rebuilt when modules were imported since
_modules_by_file: dict[str, str] = {}
_modules_counted = 0
_FROZEN = "<frozen "


def module_of(filename: str) -> str | None:
    """The name of the loaded module whose source is ``filename``, or None (``<string>``, a script)."""
    global _modules_counted
    if filename.startswith(_FROZEN) and filename.endswith(">"):  # "<frozen importlib._bootstrap>"
        return filename[len(_FROZEN):-1]
    name = _modules_by_file.get(filename)
    if name is None and len(sys.modules) != _modules_counted:
        _modules_counted = len(sys.modules)
        # __main__ last: a module run with ``python -m`` is better known by its own name
        for module_name, module in sorted(sys.modules.items(), key=lambda item: item[0] == "__main__"):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                _modules_by_file.setdefault(path, module_name)
        name = _modules_by_file.get(filename)
    return name


def function_name(code: CodeType) -> str:
    """``module.qualified.name`` of ``code``, or its qualified name alone when no module holds it."""
    module = module_of(code.co_filename)
    return f"{module}.{code.co_qualname}" if module else code.co_qualname


class ProfileBuilder:
    """Accumulates samples and emits one valid pprof profile."""

    def __init__(
        self,
        sample_types: Sequence[tuple[str, str]],
        period_type: tuple[str, str],
        period: int,
        default_sample_type: str | None = None,
    ) -> None:
        self._strings: dict[str, int] = {"": 0}  # pprof requires string_table[0] == ""
        self._functions: dict[tuple[str, str, int], int] = {}
        self._locations: dict[tuple[int | str, int], int] = {}
        self._code_alive: list[CodeType] = []  # so no other code object takes a known id
        self._samples: dict[tuple[int, ...], list[int]] = {}
        self._profile = profile_pb2.Profile(period=period)
        for kind, unit in sample_types:
            self._profile.sample_type.add(type=self.string(kind), unit=self.string(unit))
        self._profile.period_type.type = self.string(period_type[0])
        self._profile.period_type.unit = self.string(period_type[1])
        if default_sample_type is not None:
            self._profile.default_sample_type = self.string(default_sample_type)

    def string(self, text: str) -> int:
        """Index of ``text`` in the string table, adding it on first use."""
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
        return index

    def location(self, frame: Frame) -> int:
        """Id of the ``Location`` of ``frame``, adding it (and its ``Function``) on first use."""
        where, line = frame
        # code objects by identity: they compare by value, and hashing one walks all its
        # contents (a module's code: every function in it), which made large profiles slow
        key = (id(where) if isinstance(where, CodeType) else where, line)
        location_id = self._locations.get(key)
        if location_id is not None:
            return location_id
        location_id = self._locations[key] = len(self._locations) + 1  # ids are non-zero
        if isinstance(where, CodeType):
            self._code_alive.append(where)
            function_id = self._function(function_name(where), where.co_filename, where.co_firstlineno)
        else:
            function_id = self._function(f"{where}:{line}", where, line)
        self._profile.location.add(id=location_id).line.add(function_id=function_id, line=line)
        return location_id

    def add(self, stack: Sequence[Frame], values: Sequence[int]) -> None:
        """Add ``values`` to the sample whose stack (leaf first) is ``stack``."""
        self.add_locations([self.location(frame) for frame in stack], values)

    def add_locations(self, location_ids: Sequence[int], values: Sequence[int]) -> None:
        """Add ``values`` to the sample whose stack is ``location_ids`` (from ``location``, leaf first)."""
        if len(values) != len(self._profile.sample_type):
            raise ValueError(f"{len(values)} values for {len(self._profile.sample_type)} sample types")
        key = tuple(location_ids)
        totals = self._samples.get(key)
        if totals is None:
            self._samples[key] = list(values)
        else:
            for i, value in enumerate(values):
                totals[i] += value

    def build(self, time_nanos: int, duration_nanos: int = 0) -> profile_pb2.Profile:
        """The profile holding every sample added so far."""
        profile = self._profile
        profile.time_nanos = time_nanos
        profile.duration_nanos = duration_nanos
        del profile.sample[:]
        for location_ids, values in self._samples.items():
            profile.sample.add(location_id=location_ids, value=values)
        profile.string_table[:] = list(self._strings)  # dicts keep insertion order == index order
        return profile

    def gzipped(self, time_nanos: int, duration_nanos: int = 0) -> bytes:
        """The serialized profile, gzip-compressed at level 1 like Go's ``runtime/pprof``."""
        raw = self.build(time_nanos, duration_nanos).SerializeToString()
        return gzip.compress(raw, compresslevel=1, mtime=0)

    def _function(self, name: str, filename: str, start_line: int) -> int:
        key = (name, filename, start_line)
        function_id = self._functions.get(key)
        if function_id is not None:
            return function_id
        function_id = self._functions[key] = len(self._functions) + 1
        self._profile.function.add(
            id=function_id,
            name=self.string(name),
            system_name=self.string(name),
            filename=self.string(filename),
            start_line=start_line,
        )
        return function_id
