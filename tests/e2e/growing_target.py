"""A Go-like pprof target whose cumulative profiles grow at known rates, so a test can say exactly
what the target added between two of its scrapes.

It serves ``/debug/pprof/allocs`` (``alloc_*`` growing, ``inuse_*`` constant), ``/debug/pprof/mutex``
and ``/debug/pprof/block`` (``contentions``, ``delay`` growing) as Go does: running totals since the
process started, gzipped, with the time of the profile in ``time_nanos`` and location and function ids
numbered anew (shuffled) in every answer. :meth:`GrowingTarget.restart` starts the totals again from
zero, as a restarted process would. ``/debug/pprof/delta_mutex`` serves a godeltaprof body.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

from scraper._proto import profile_pb2
from tests.conftest import DATA
from tests.fakes import answer


@dataclass(frozen=True)
class Stack:
    #: function names, leaf first
    frames: tuple[str, ...]
    #: growth per second of each cumulative sample type
    rates: tuple[int, ...]
    #: values of the gauges (inuse_*), constant
    gauges: tuple[int, ...] = ()
    #: cumulative values present from the start (allocations made before the growth)
    initial: tuple[int, ...] = ()


MEMORY_TYPES = (("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"),
                ("inuse_space", "bytes"))
CONTENTION_TYPES = (("contentions", "count"), ("delay", "nanoseconds"))

PROFILES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[Stack, ...]]] = {
    "/debug/pprof/allocs": (MEMORY_TYPES, (
        Stack(("main.alloc", "main.worker", "main.main"), rates=(1000, 13_000_000), gauges=(7, 4096)),
        Stack(("main.cache", "main.main"), rates=(10, 640_000), gauges=(3, 1_000_000)),
        # allocated once at start, still in use: its alloc delta is zero, its inuse must still arrive
        Stack(("main.init", "main.main"), rates=(0, 0), gauges=(5, 500), initial=(5, 500)),
    )),
    "/debug/pprof/mutex": (CONTENTION_TYPES, (
        Stack(("sync.(*Mutex).Unlock", "main.lockA", "main.main"), rates=(50, 2_000_000)),
        Stack(("sync.(*Mutex).Unlock", "main.lockB", "main.main"), rates=(5, 700_000)),
    )),
    "/debug/pprof/block": (CONTENTION_TYPES, (
        Stack(("runtime.chanrecv1", "main.consume", "main.main"), rates=(300, 90_000_000)),
        Stack(("sync.(*WaitGroup).Wait", "main.main"), rates=(1, 1_000_000_000)),
    )),
}


def grown(rate: int, elapsed_ns: int) -> int:
    """What a counter growing ``rate`` per second holds ``elapsed_ns`` after it started."""
    return rate * elapsed_ns // 1_000_000_000


class GrowingTarget:
    """The target; ``started_ns`` holds the start of each of its lives (a restart begins a new one)."""

    def __init__(self) -> None:
        self.started_ns = [time.time_ns()]
        #: per path, the time_nanos of every profile served
        self.served: dict[str, list[int]] = {path: [] for path in PROFILES}
        self.held = threading.Event()
        self._hold: threading.Event | None = None
        self._hold_path: str | None = None
        self._lock = threading.Lock()
        self._rng = random.Random(7)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        #: the client port of the request being held
        self.held_client_port: int | None = None
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def restart(self) -> None:
        """Start every total again from zero, as a restarted process does."""
        with self._lock:
            self.started_ns.append(time.time_ns())

    def hold_next(self, path: str) -> threading.Event:
        """Hold the next request of ``path`` until the returned event is set; :attr:`held` is set once it is held."""
        release = threading.Event()
        with self._lock:
            self._hold = release
            self._hold_path = path
        return release

    def life_of(self, time_ns: int) -> int:
        """The start of the life a profile taken at ``time_ns`` belongs to."""
        return max(start for start in self.started_ns if start <= time_ns)

    def totals_added(self, path: str, since_ns: int, until_ns: int) -> dict[str, int]:
        """What the cumulative sample types of ``path`` grew by from ``since_ns`` to ``until_ns`` (one life)."""
        types, stacks = PROFILES[path]
        start = self.life_of(until_ns)
        added = {}
        for i, (name, _) in enumerate(types[:len(stacks[0].rates)]):
            added[name] = sum(grown(s.rates[i], until_ns - start) - grown(s.rates[i], since_ns - start) for s in stacks)
        return added

    def totals_at(self, path: str, time_ns: int) -> dict[str, int]:
        """Every sample type of the profile of ``path`` taken at ``time_ns``, summed over its samples."""
        types, stacks = PROFILES[path]
        start = self.life_of(time_ns)
        cumulative = len(stacks[0].rates)
        out = {name: sum(grown(st.rates[i], time_ns - start) + (st.initial[i] if st.initial else 0) for st in stacks)
               for i, (name, _) in enumerate(types[:cumulative])}
        return out | self.gauges(path)

    def gauges(self, path: str) -> dict[str, int]:
        """The constant gauges of ``path`` (inuse_*), summed over its samples."""
        types, stacks = PROFILES[path]
        first = len(stacks[0].rates)
        return {name: sum(s.gauges[i] for s in stacks) for i, (name, _) in enumerate(types[first:])}

    def profile(self, path: str, now_ns: int) -> bytes:
        types, stacks = PROFILES[path]
        start = self.life_of(now_ns)
        p = profile_pb2.Profile()
        strings = {"": 0}

        def s(text: str) -> int:
            return strings.setdefault(text, len(strings))

        for name, unit in types:
            p.sample_type.add(type=s(name), unit=s(unit))
        functions = sorted({f for stack in stacks for f in stack.frames})
        ids = list(range(1, len(functions) + 1))
        self._rng.shuffle(ids)  # another numbering in every answer, as another process would
        location = {}
        for name, ident in zip(functions, ids):
            p.function.add(id=ident, name=s(name), system_name=s(name), filename=s("main.go"))
            p.location.add(id=ident, address=0x401000 + 32 * functions.index(name)).line.add(function_id=ident, line=9)
            location[name] = ident
        for stack in stacks:
            initial = stack.initial or (0,) * len(stack.rates)
            values = [base + grown(rate, now_ns - start) for rate, base in zip(stack.rates, initial)]
            sample = p.sample.add(location_id=[location[f] for f in stack.frames], value=[*values, *stack.gauges])
            if stack.gauges and stack.rates[0]:
                # Go labels a heap sample with its allocation size
                sample.label.add(key=s("bytes"), num=stack.rates[1] // stack.rates[0])
        p.string_table.extend(strings)
        p.time_nanos = now_ns
        return gzip.compress(p.SerializeToString())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/debug/pprof/delta_mutex":
                    self._answer((DATA / "go/mutex_delta_1.pb.gz").read_bytes())
                    return
                if path not in PROFILES:
                    self.send_error(404)
                    return
                with target._lock:
                    hold = target._hold if target._hold_path == path else None
                    if hold is not None:
                        target._hold = None
                        target.held_client_port = self.client_address[1]
                if hold is not None:
                    target.held.set()
                    hold.wait(60)
                now = time.time_ns()
                with target._lock:
                    body = target.profile(path, now)
                    target.served[path].append(now)
                self._answer(body)

            def _answer(self, body: bytes) -> None:
                answer(self, 200, body, "application/octet-stream")

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hold is not None:
            self._hold.set()
        self.server.shutdown()
        self.server.server_close()
