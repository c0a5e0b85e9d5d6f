"""The scraper profiles itself: pprof profiles of this Python process, served at ``/debug/pprof/``.

- ``cpu_profile(seconds, hz)``: sampled CPU profile of every thread (the running greenlet of
  each, under gevent); one at a time per process, else ``CPUProfileInUse``.
- ``goroutine_profile()``: every thread's and every greenlet's stack, counted.
- ``heap_profile()`` / ``allocs_profile()``: live allocations from tracemalloc, else ``TracemallocOff``.
- ``handle_pprof(path, query)``: the HTTP answer (status, headers, body) for ``/debug/pprof/*``.

No Celery here: any HTTP server can serve these.
"""

from scraper.selfprofile.cpu import CPU_IN_USE_MESSAGE, CPUProfileInUse, CPUSampler, cpu_profile
from scraper.selfprofile.goroutine import goroutine_profile
from scraper.selfprofile.handler import handle_pprof
from scraper.selfprofile.memory import TRACEMALLOC_OFF_MESSAGE, TracemallocOff, allocs_profile, heap_profile
from scraper.selfprofile.writer import ProfileBuilder

__all__ = [
    "CPU_IN_USE_MESSAGE",
    "TRACEMALLOC_OFF_MESSAGE",
    "CPUProfileInUse",
    "CPUSampler",
    "ProfileBuilder",
    "TracemallocOff",
    "allocs_profile",
    "cpu_profile",
    "goroutine_profile",
    "handle_pprof",
    "heap_profile",
]
