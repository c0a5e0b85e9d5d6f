"""Heap and allocs profiles of live Python allocations, from ``tracemalloc``.

tracemalloc keeps only blocks that are still allocated, so it cannot tell what was allocated
and freed: both profiles carry the same live blocks, under Go's four sample types
(``alloc_objects``, ``alloc_space``, ``inuse_objects``, ``inuse_space``) with equal ``alloc_*``
and ``inuse_*`` values. They differ only in the default sample type (``inuse_space`` for
heap, ``alloc_space`` for allocs), as Go's do. Stacks are as deep as tracing was started
with (``tracemalloc.start(nframe)``); function names come from live code objects (see
``source.py``) or, failing that, read ``filename:line``.

While tracemalloc traces, every allocation — the profiler's own included — costs a traceback
capture, so building the profile allocates per distinct frame and stack, never per frame of
every trace.
"""

from __future__ import annotations

import time
import tracemalloc

from scraper.selfprofile.source import CodeIndex
from scraper.selfprofile.writer import ProfileBuilder

TRACEMALLOC_OFF_MESSAGE = (
    "Python allocation tracing (tracemalloc) is off in this process, so there is no heap profile: "
    "set SCRAPER_TRACEMALLOC=1 and restart it. Tracing costs CPU and memory on every allocation."
)

_SAMPLE_TYPES = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
]


class TracemallocOff(RuntimeError):
    """A heap or allocs profile was asked for while tracemalloc is not tracing."""

    def __init__(self) -> None:
        super().__init__(TRACEMALLOC_OFF_MESSAGE)


def heap_profile() -> bytes:
    """Live allocations as a gzipped pprof heap profile (default sample type ``inuse_space``)."""
    return _memory_profile("inuse_space")


def allocs_profile() -> bytes:
    """Live allocations as a gzipped pprof allocs profile (default sample type ``alloc_space``)."""
    return _memory_profile("alloc_space")


def _memory_profile(default_sample_type: str) -> bytes:
    if not tracemalloc.is_tracing():
        raise TracemallocOff()
    # The raw traces behind take_snapshot(): (domain, size, frames leaf first, total frames),
    # identical tracebacks sharing one tuple. The public Snapshot/Traceback wrappers build
    # objects for every frame of every trace, each allocation traced: minutes on a big heap.
    traces = tracemalloc._get_traces()  # type: ignore[attr-defined]
    totals: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for trace in traces:
        stack_totals = totals.get(trace[2])
        if stack_totals is None:
            totals[trace[2]] = [1, trace[1]]
        else:
            stack_totals[0] += 1
            stack_totals[1] += trace[1]
    del traces
    distinct_frames: set[tuple[str, int]] = set()
    for stack in totals:
        distinct_frames.update(stack)
    code = CodeIndex(distinct_frames)
    # every block is recorded, not sampled: one byte per byte
    builder = ProfileBuilder(_SAMPLE_TYPES, ("space", "bytes"), 1, default_sample_type)
    location_of: dict[tuple[str, int], int] = {}
    for stack, (count, size) in totals.items():
        builder.add_locations(_locations(stack, code, builder, location_of), [count, size, count, size])
    return builder.gzipped(time_nanos=time.time_ns())


def _locations(
    stack: tuple[tuple[str, int], ...], code: CodeIndex, builder: ProfileBuilder, location_of: dict[tuple[str, int], int]
) -> list[int]:
    ids = []
    previous = None
    for frame in stack:
        if frame == previous:  # a run at one line (comprehension, recursion) is resolved as a whole
            return [builder.location(resolved) for resolved in code.resolve(stack)]
        previous = frame
        location_id = location_of.get(frame)
        if location_id is None:
            location_id = location_of[frame] = builder.location(code.resolve([frame])[0])
        ids.append(location_id)
    return ids
