"""``/debug/pprof/*`` answers, shaped like Go's ``net/http/pprof``, for any HTTP server to send."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable

from scraper.selfprofile.cpu import CPUProfileInUse, cpu_profile
from scraper.selfprofile.goroutine import goroutine_profile
from scraper.selfprofile.memory import TracemallocOff, allocs_profile, heap_profile

PREFIX = "/debug/pprof/"
DEFAULT_CPU_SECONDS = 30.0  # Go's default
MAX_CPU_SECONDS = 300.0

Response = tuple[int, dict[str, str], bytes]

_INDEX = """\
/debug/pprof/: profiles of this Python process, in pprof's protobuf format (gzipped).
Open one with: go tool pprof http://HOST:PORT/debug/pprof/NAME

profile    CPU profile of every thread (under gevent, of the running greenlets); ?seconds=N, default 30, at most 300
goroutine  the stack of every thread and every live greenlet
heap       live Python allocations (needs SCRAPER_TRACEMALLOC=1); ?gc=1 collects garbage first
allocs     the same live allocations, alloc_space as default sample type
"""


def handle_pprof(path: str, query: dict[str, list[str]]) -> Response:
    """Status, headers and body answering a GET of ``path`` with ``query`` (as ``parse_qs`` returns it).

    A CPU profile takes its ``seconds`` to answer; under gevent the calling greenlet waits
    without blocking the hub.
    """
    if path in ("/debug/pprof", PREFIX):
        return 200, _text_headers(), _INDEX.encode()
    if not path.startswith(PREFIX):
        return _error(404, "404 page not found")
    name = path[len(PREFIX):]
    handler = _HANDLERS.get(name)
    if handler is None:
        return _error(404, "Unknown profile")
    debug = _first(query, "debug")
    if debug not in (None, "0"):
        return _error(400, "only the protobuf format (debug=0) is served; the text formats of debug=1 and debug=2 are not")
    if name != "profile" and _first(query, "seconds") is not None:
        return _error(400, f"seconds (a delta profile) is not supported for {name}; only /debug/pprof/profile takes it")
    return handler(query)


def _profile(query: dict[str, list[str]]) -> Response:
    text = _first(query, "seconds")
    seconds = DEFAULT_CPU_SECONDS
    if text is not None:
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= MAX_CPU_SECONDS:  # also refuses nan
            return _error(400, f"seconds must be a number above 0 and at most {MAX_CPU_SECONDS:g}, got {text!r}")
    try:
        return _profile_answer(cpu_profile(seconds))
    except CPUProfileInUse as error:
        return _error(500, str(error))


def _goroutine(query: dict[str, list[str]]) -> Response:
    return _profile_answer(goroutine_profile())


def _memory(make: Callable[[], bytes]) -> Callable[[dict[str, list[str]]], Response]:
    def answer(query: dict[str, list[str]]) -> Response:
        if _first(query, "gc") not in (None, "", "0"):
            gc.collect()  # like Go's ?gc=1: only what is still reachable
        try:
            return _profile_answer(make())
        except TracemallocOff as error:
            return _error(404, str(error))

    return answer


_HANDLERS: dict[str, Callable[[dict[str, list[str]]], Response]] = {
    "profile": _profile,
    "goroutine": _goroutine,
    "heap": _memory(heap_profile),
    "allocs": _memory(allocs_profile),
}


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None  # Go's FormValue takes the first


def _profile_answer(body: bytes) -> Response:
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="profile"',
        "X-Content-Type-Options": "nosniff",
    }
    return 200, headers, body


def _text_headers() -> dict[str, str]:
    return {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}


def _error(status: int, message: str) -> Response:
    # Go's serveError: plain text, X-Go-Pprof: 1, the message and a newline
    return status, {**_text_headers(), "X-Go-Pprof": "1"}, (message + "\n").encode()
