"""The goroutine profile's Python counterpart: the stack of every OS thread and every greenlet."""

from __future__ import annotations

import sys
import time

from scraper.selfprofile.stacks import leaf_first, parked_greenlet_frames
from scraper.selfprofile.writer import ProfileBuilder


def goroutine_profile() -> bytes:
    """A gzipped pprof profile counting threads and live greenlets by identical stack.

    Each OS thread contributes its current stack (under gevent, that of the greenlet running
    on it, or the hub's); each parked greenlet its own. Unstarted and finished greenlets have
    no stack and are not counted.
    """
    builder = ProfileBuilder([("goroutine", "count")], ("goroutine", "count"), 1)
    for frame in sys._current_frames().values():
        builder.add(leaf_first(frame), [1])
    for frame in parked_greenlet_frames():
        builder.add(leaf_first(frame), [1])
    return builder.gzipped(time_nanos=time.time_ns())
