"""Recover the functions of (filename, line) frames, for tracemalloc tracebacks that name no function.

tracemalloc records only a file and a line per frame. We name the function from the code
objects alive in this process: every function object's code and the code nested in it
(comprehensions, lambdas, inner functions), found in one pass over the GC's objects. Several
code objects can hold one line: a comprehension or lambda runs on the line of the function
around it, and then both frames carry that line. A run of frames at one line is therefore
matched, from the caller inward, with those code objects from the outermost inward, cycling
(recursion through a comprehension alternates the two).

Best effort: code that no live function holds — module and class bodies, which run once at
import, functions since deleted or reloaded, ``exec``'d strings — stays ``(filename, line)``
and is named ``filename:line`` in the profile. Nothing is compiled or read from disk: with
tracemalloc on, compiling sources would itself allocate (and show up) far more than it names.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from itertools import groupby
from types import CodeType, FunctionType

from scraper.selfprofile.writer import Frame


class CodeIndex:
    """The live code objects running each of a set of (filename, line) frames."""

    def __init__(self, frames: Iterable[tuple[str, int]]) -> None:
        wanted: dict[str, set[int]] = {}
        for filename, line in frames:
            lines = wanted.get(filename)
            if lines is None:
                lines = wanted[filename] = set()
            lines.add(line)
        self._candidates = _live_code_index(wanted)

    def resolve(self, stack: Sequence[tuple[str, int]]) -> list[Frame]:
        """``stack`` (leaf first) with each frame's code object in place of its filename where found."""
        frames: list[Frame] = []
        for raw, run in groupby(stack):
            count = len(list(run))
            candidates = self._candidates.get(raw)
            if not candidates:
                frames.extend([raw] * count)
                continue
            line = raw[1]
            # a leaf-first run ends with its outermost caller, matched with the outermost code
            for depth in reversed(range(count)):
                frames.append((candidates[depth % len(candidates)], line))
        return frames


def _live_code_index(wanted: dict[str, set[int]]) -> dict[tuple[str, int], list[CodeType]]:
    """(filename, line) -> the live code objects running that line, outermost first."""
    codes: dict[int, CodeType] = {}
    depths: dict[int, int] = {}
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance asks a lazy proxy for its __class__, which evaluates it
        if type(obj) is not FunctionType or obj.__code__.co_filename not in wanted:
            continue
        # depth from this function; a closure is also reached from its parent, deeper: keep the largest
        pending = [(obj.__code__, 0)]
        while pending:
            code, depth = pending.pop()
            if depths.get(id(code), -1) >= depth:
                continue
            codes[id(code)] = code
            depths[id(code)] = depth
            pending.extend((const, depth + 1) for const in code.co_consts if isinstance(const, CodeType))
    index: dict[tuple[str, int], list[CodeType]] = {}
    for _code_id, code in sorted(codes.items(), key=lambda item: depths[item[0]]):
        filename = code.co_filename
        lines = wanted[filename]
        for _start, _end, line in code.co_lines():
            if line in lines:
                found = index.setdefault((filename, line), [])
                if not found or found[-1] is not code:  # a line can span several bytecode ranges
                    found.append(code)
    return index
