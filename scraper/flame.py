"""What a pprof profile says, for people: a tree of frames per sample type, the top functions, a diff.

Pure functions over the decoded profile: no HTTP, no files. The profile pages
(:mod:`scraper.profile_view`) and ``pprof-scraper top`` are built on them.

Frames are functions, as ``go tool pprof``'s default granularity: a location's inlined lines each
become a frame (the inlined callee below its caller), and addresses without symbols show as hex.
"""

from __future__ import annotations

import gzip
import io
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate

from google.protobuf.message import DecodeError

from .pprof import DEFAULT_SIZE_LIMIT, GZIP_MAGIC

# pprof's lenient schema (string_table as bytes): what validation accepted, this reads, UTF-8 or not.
from .pprof import _Profile as LenientProfile

# Sample types that count since the process started (Go's allocs, mutex and block profiles), unless
# the profile was stored as a delta. inuse_* and goroutines are snapshots; cpu covers ?seconds=.
CUMULATIVE_SAMPLE_TYPES = frozenset({"alloc_objects", "alloc_space", "contentions", "delay"})


class ProfileUnreadable(ValueError):
    """The bytes are not a pprof profile this module can read; the message says why."""


@dataclass(frozen=True, slots=True)
class SampleType:
    """One of a profile's value columns, e.g. ``alloc_space`` in ``bytes``."""

    name: str
    unit: str

    @property
    def cumulative(self) -> bool:
        """Whether Go counts this type since process start (allocations, contentions, delay)."""
        return self.name in CUMULATIVE_SAMPLE_TYPES


@dataclass(slots=True)
class Frame:
    """A node of the flame graph: a function at one place in the call tree.

    ``total`` counts every sample whose stack passes through this node, ``self_value`` those
    that end here. In a diff, ``base_total`` is the earlier profile's total.
    """

    name: str
    total: int = 0
    self_value: int = 0
    base_total: int = 0
    children: dict[str, Frame] = field(default_factory=dict)



@dataclass(frozen=True, slots=True)
class TopRow:
    """One line of ``pprof -top``: a function's flat (leaf) and cumulative values."""

    name: str
    flat: int
    cum: int


@dataclass(slots=True)
class Profile:
    """A decoded profile reduced to what the pages show: stacks of function names and their values.

    ``stacks`` maps a stack (root first) to one value per sample type, summed over samples.
    """

    sample_types: list[SampleType]
    default_type: int
    stacks: dict[tuple[str, ...], list[int]]
    duration_nanos: int
    time_nanos: int
    samples: int

    def type_index(self, name: str | None) -> int:
        """The index of the sample type called ``name``; the profile's default when None."""
        if name is None:
            return self.default_type
        for i, st in enumerate(self.sample_types):
            if st.name == name:
                return i
        names = ", ".join(st.name for st in self.sample_types)
        raise KeyError(f"this profile has no sample type {name!r}; it has {names}")

    def total(self, index: int) -> int:
        return sum(values[index] for values in self.stacks.values())


def parse(data: bytes, *, size_limit: int = DEFAULT_SIZE_LIMIT) -> Profile:
    """Decode a pprof profile (gzip or raw) into stacks of function names per sample type.

    Raises :class:`ProfileUnreadable` when ``data`` is not a readable profile.
    """
    if data.startswith(GZIP_MAGIC):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                raw = f.read(size_limit + 1)
        except (OSError, EOFError) as exc:
            raise ProfileUnreadable(f"corrupt gzip: {exc}") from None
        if len(raw) > size_limit:
            raise ProfileUnreadable(f"profile decompresses to more than {size_limit} bytes")
    else:
        raw = data
    try:
        p = LenientProfile.FromString(raw)
    except DecodeError as exc:
        raise ProfileUnreadable(f"not a pprof profile: {exc}") from None
    if not p.string_table:
        raise ProfileUnreadable("not a pprof profile: it has no string table")
    strings = [b.decode("utf-8", "replace") for b in p.string_table]

    def text(i: int) -> str:
        return strings[i] if 0 <= i < len(strings) else f"<bad string {i}>"

    functions = {f.id: text(f.name) or text(f.system_name) for f in p.function}
    # Root-first names of each location: pprof lists a location's lines innermost (inlined) first.
    frames: dict[int, tuple[str, ...]] = {}
    for loc in p.location:
        names = tuple(functions.get(line.function_id, "?") for line in reversed(loc.line))
        frames[loc.id] = names or (f"0x{loc.address:x}",)

    types = [SampleType(text(st.type), text(st.unit)) for st in p.sample_type]
    width = len(types)
    stacks: dict[tuple[str, ...], list[int]] = {}
    # Identical location lists are common (many samples differ only in labels): name them once.
    by_locations: dict[tuple[int, ...], list[int]] = {}
    for s in p.sample:
        key = tuple(s.location_id)
        values = by_locations.get(key)
        if values is None:
            values = by_locations[key] = [0] * width
        for i, v in enumerate(s.value[:width]):
            values[i] += v
    for location_ids, values in by_locations.items():
        stack: list[str] = []
        for lid in reversed(location_ids):  # sample stacks are leaf first
            stack.extend(frames.get(lid, (f"<location {lid}>",)))
        key = tuple(stack)
        merged = stacks.get(key)
        if merged is None:
            stacks[key] = values
        else:
            for i, v in enumerate(values):
                merged[i] += v

    default = 0
    if p.default_sample_type:
        wanted = text(p.default_sample_type)
        default = next((i for i, st in enumerate(types) if st.name == wanted), len(types) - 1)
    elif types:
        default = len(types) - 1  # pprof's choice when the profile names none
    return Profile(types, default, stacks, p.duration_nanos, p.time_nanos, len(p.sample))


def tree(profile: Profile, index: int, min_share: float = 0.0) -> tuple[Frame, int]:
    """The call tree of sample type ``index`` (root named ``total``) and how many call paths were
    left out for being under ``min_share`` of the total (their values stay in their callers')."""
    columns = {stack: (values[index], 0) for stack, values in profile.stacks.items() if values[index]}
    return _build(columns, min_share)


def diff_tree(base: Profile, new: Profile, index_base: int, index_new: int,
              min_share: float = 0.0) -> tuple[Frame, int]:
    """One tree of both profiles: ``total`` from ``new``, ``base_total`` from ``base``; a call path
    is left out when under ``min_share`` of the total in both."""
    columns = {stack: (values[index_new], 0) for stack, values in new.stacks.items() if values[index_new]}
    for stack, values in base.stacks.items():
        if values[index_base]:
            columns[stack] = (columns.get(stack, (0, 0))[0], values[index_base])
    return _build(columns, min_share)


# Sorts after every function name: ``prefix + (_LAST,)`` bounds the stacks that start with ``prefix``.
_LAST = "\U0010ffff"


def _build(columns: dict[tuple[str, ...], tuple[int, int]], min_share: float) -> tuple[Frame, int]:
    """The tree of ``columns`` (stack -> (value, base value)), built from the stacks in sorted order:
    the stacks under one frame are a contiguous run, found by bisection, and summed by prefix sums,
    so a call path under the limit costs one bisection however deep it goes."""
    stacks = sorted(columns)
    values = [columns[s][0] for s in stacks]
    bases = [columns[s][1] for s in stacks]
    sums = list(accumulate(values, initial=0))
    base_sums = list(accumulate(bases, initial=0))
    root = Frame("total", sums[-1], 0, base_sums[-1])
    limit, base_limit = abs(root.total) * min_share, abs(root.base_total) * min_share
    dropped = 0
    pending = [(root, 0, len(stacks), 0)]
    while pending:
        node, lo, hi, depth = pending.pop()
        if lo < hi and len(stacks[lo]) == depth:  # the one stack that ends here sorts first
            node.self_value = values[lo]
            lo += 1
        while lo < hi:
            name = stacks[lo][depth]
            end = bisect_left(stacks, (*stacks[lo][:depth + 1], _LAST), lo, hi)
            total, base_total = sums[end] - sums[lo], base_sums[end] - base_sums[lo]
            if (abs(total) >= limit and abs(total)) or (abs(base_total) >= base_limit and abs(base_total)):
                child = node.children[name] = Frame(name, total, 0, base_total)
                pending.append((child, lo, end, depth + 1))
            else:
                dropped += 1
            lo = end
    return root, dropped


def top(profile: Profile, index: int) -> list[TopRow]:
    """Every function's flat value (samples ending in it) and cumulative value (samples passing
    through it, counted once per stack even when it recurses), sorted as ``pprof -top`` sorts:
    by flat, then cumulative, descending, then by name."""
    flat: dict[str, int] = defaultdict(int)
    cum: dict[str, int] = defaultdict(int)
    for stack, values in profile.stacks.items():
        value = values[index]
        if not value or not stack:
            continue
        flat[stack[-1]] += value
        for name in set(stack):
            cum[name] += value
    rows = [TopRow(name, flat.get(name, 0), c) for name, c in cum.items()]
    rows.sort(key=lambda r: (-abs(r.flat), -abs(r.cum), r.name))
    return rows


def as_json_tree(root: Frame, names: dict[str, int], diff: bool = False) -> list:
    """``root`` as nested lists for the page's script: ``[name index, total, self, children]``, with
    the base total before the children in a diff. Function names go once into ``names``."""

    def encode(node: Frame) -> list:
        index = names.setdefault(node.name, len(names))
        children = sorted(node.children.values(), key=lambda c: c.name)
        head: list = [index, node.total, node.self_value]
        if diff:
            head.append(node.base_total)
        head.append([encode(c) for c in children])
        return head

    return encode(root)


# Units as people read them. pprof writes bytes, nanoseconds, count (and seconds, microseconds...).
_BYTES = [("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)]
_TIME_NS = [("ns", 1), ("µs", 10**3), ("ms", 10**6), ("s", 10**9), ("min", 60 * 10**9), ("h", 3600 * 10**9)]
_COUNT = [("", 1), ("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12)]
_SCALE_TO_NS = {"nanoseconds": 1, "microseconds": 10**3, "milliseconds": 10**6, "seconds": 10**9}


def format_value(value: float, unit: str) -> str:
    """``value`` in ``unit`` humanised: ``1.50 MiB``, ``230 ms``, ``12.3k``."""
    if unit == "bytes":
        return _scaled(value, _BYTES, " ")
    if unit in _SCALE_TO_NS:
        return _scaled(value * _SCALE_TO_NS[unit], _TIME_NS, " ")
    text = _scaled(value, _COUNT, "")
    return text if unit in ("count", "") else f"{text} {unit}"


def _scaled(value: float, scales: list[tuple[str, int]], space: str) -> str:
    suffix, factor = scales[0]
    for s, f in scales:
        if abs(value) >= f:
            suffix, factor = s, f
    scaled = value / factor
    if factor == 1 and float(value).is_integer():
        number = str(int(value))
    else:
        number = f"{scaled:.{0 if abs(scaled) >= 100 else 1 if abs(scaled) >= 10 else 2}f}"
    return f"{number}{space}{suffix}" if suffix else number


def format_top(rows: Iterable[TopRow], total: int, unit: str, limit: int | None = None) -> list[str]:
    """``rows`` as ``go tool pprof -top`` prints them: flat, flat%, sum%, cum, cum%, name."""
    lines = [f"{'flat':>10} {'flat%':>7} {'sum%':>7} {'cum':>10} {'cum%':>7}  name"]
    running = 0
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        running += row.flat
        lines.append(
            f"{format_value(row.flat, unit):>10} {_percent(row.flat, total):>7} {_percent(running, total):>7} "
            f"{format_value(row.cum, unit):>10} {_percent(row.cum, total):>7}  {row.name}"
        )
    return lines


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"
