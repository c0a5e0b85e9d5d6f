"""A fleet of Go-like pprof targets in one asyncio process: one loopback port per target.

    python bench/fleet.py --targets 1000 --duration 180 [--size 100k]

Each target answers Go's net/http/pprof paths with real bodies from ``tests/data/go/`` (or with
those bodies padded to ~100 KB / ~1 MB of valid samples), holds ``?seconds=S`` requests S seconds
as Go does, and answers a second concurrent CPU profile on the same target with Go's
``500 Could not enable CPU profiling: cpu profiling already in use`` (counted as an overlap).

It prints one JSON line ``{"ports": [...], "control": <port>}`` once every port listens, then
serves until ``--duration`` ends (or SIGTERM/SIGINT). The control port answers ``GET /stats``
(counters as JSON) and ``GET /arrivals`` (``[[port, path, unix time], ...]`` of every request
since the previous call, for schedule-lag figures). HTTP/1.1 with keep-alive, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import resource
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "go"

#: Go's net/http/pprof path -> the corpus file it serves.
GO_BODIES = {
    "/debug/pprof/allocs": "allocs_1.pb.gz",
    "/debug/pprof/heap": "heap_1.pb.gz",
    "/debug/pprof/block": "block_1.pb.gz",
    "/debug/pprof/goroutine": "goroutine_1.pb.gz",
    "/debug/pprof/mutex": "mutex_1.pb.gz",
    "/debug/pprof/threadcreate": "threadcreate_1.pb.gz",
    "/debug/pprof/profile": "cpu_1.pb.gz",
}
CPU_PATH = "/debug/pprof/profile"
CPU_BUSY = b"Could not enable CPU profiling: cpu profiling already in use\n"
SIZES = {"real": 0, "100k": 100 * 1024, "1m": 1024 * 1024}
_MAX_HEAD = 16 * 1024


def padded_profile(body: bytes, target_size: int, seed: int = 0) -> bytes:
    """``body`` (a gzipped pprof profile) grown to about ``target_size`` gzipped bytes with valid
    extra functions, locations and samples, so it still parses and passes pprof's checks."""
    sys.path.insert(0, str(DATA.parents[2]))
    from scraper._proto import profile_pb2

    profile = profile_pb2.Profile.FromString(gzip.decompress(body))
    rng = random.Random(seed)
    next_fn = max((f.id for f in profile.function), default=0) + 1
    next_loc = max((loc.id for loc in profile.location), default=0) + 1
    values = len(profile.sample_type)

    def grow(count: int) -> None:
        nonlocal next_fn, next_loc
        for _ in range(count):
            # Random names and values, so gzip cannot fold the padding away.
            profile.string_table.append(f"bench/pad.{rng.getrandbits(96):024x}")
            profile.function.add(id=next_fn, name=len(profile.string_table) - 1,
                                 system_name=len(profile.string_table) - 1, filename=1 % len(profile.string_table))
            loc = profile.location.add(id=next_loc, address=rng.getrandbits(40))
            loc.line.add(function_id=next_fn, line=rng.randrange(1, 5000))
            stack = [next_loc] + [rng.randrange(1, next_loc) for _ in range(rng.randrange(1, 8))]
            profile.sample.add(location_id=stack, value=[rng.getrandbits(24) for _ in range(values)])
            next_fn += 1
            next_loc += 1

    out, per_entry = body, 100.0
    while len(out) < target_size * 0.98:
        # Grow by ~90% of what is still missing at the measured gzipped bytes per entry, then re-measure.
        before, count = len(out), max(16, int(0.9 * (target_size - len(out)) / per_entry))
        grow(count)
        out = gzip.compress(profile.SerializeToString(), compresslevel=1, mtime=0)
        per_entry = max(1.0, (len(out) - before) / count)
    return out


def load_bodies(size: str) -> dict[str, bytes]:
    """The body served on each path: the real corpus file, or it padded to ``SIZES[size]`` bytes."""
    bodies = {path: (DATA / name).read_bytes() for path, name in GO_BODIES.items()}
    if SIZES[size]:
        bodies = {path: padded_profile(b, SIZES[size], seed=i) for i, (path, b) in enumerate(bodies.items())}
    return bodies


@dataclass
class Stats:
    """What the fleet served, shared by every target."""

    served: Counter[str] = field(default_factory=Counter)
    status: Counter[int] = field(default_factory=Counter)
    bytes_out: int = 0
    cpu_overlaps: int = 0
    cpu_held: int = 0
    cpu_held_max: int = 0
    connections: int = 0
    connections_max: int = 0
    connections_opened: int = 0
    arrivals: list[tuple[int, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"served": dict(self.served), "status": {str(k): v for k, v in self.status.items()},
                "bytes_out": self.bytes_out, "cpu_overlaps": self.cpu_overlaps, "cpu_held": self.cpu_held,
                "cpu_held_max": self.cpu_held_max, "connections": self.connections,
                "connections_max": self.connections_max, "connections_opened": self.connections_opened}


class Target:
    """One Go program's pprof endpoint: its port and whether a CPU profile is running."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.cpu_busy = False


def _response(code: int, reason: str, body: bytes, content_type: str, close: bool) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"X-Content-Type-Options: nosniff\r\n{connection}\r\n")
    return head.encode() + body


class PprofProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection: one request at a time, keep-alive unless asked to close."""

    def __init__(self, target: Target, stats: Stats, bodies: dict[str, bytes], log_arrivals: bool) -> None:
        self.target, self.stats, self.bodies, self.log_arrivals = target, stats, bodies, log_arrivals
        self.buffer = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.TimerHandle | None = None
        self.holds_cpu = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        s = self.stats
        s.connections += 1
        s.connections_opened += 1
        s.connections_max = max(s.connections_max, s.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections -= 1
        if self.pending is not None:
            self.pending.cancel()  # the client gave up: Go stops profiling when the request dies
            self.pending = None
        self._release_cpu()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self.busy or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self.transport.close()
            return
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self.transport.close()
            return
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        path, _, query = target.partition("?")
        self.busy = True
        self._serve(method, path, query, close)

    def _serve(self, method: str, path: str, query: str, close: bool) -> None:
        stats, now = self.stats, time.time()
        if self.log_arrivals:
            stats.arrivals.append((self.target.port, path, now))
        body = self.bodies.get(path)
        if method != "GET" or body is None:
            self._send(404, "Not Found", b"404 page not found\n", "text/plain; charset=utf-8", close)
            return
        try:
            seconds = float(parse_qs(query).get("seconds", ["0"])[0])
        except ValueError:
            seconds = 0.0
        if path == CPU_PATH:
            if self.target.cpu_busy:
                stats.cpu_overlaps += 1
                self._send(500, "Internal Server Error", CPU_BUSY, "text/plain; charset=utf-8", close)
                return
            self.target.cpu_busy = self.holds_cpu = True
            stats.cpu_held += 1
            stats.cpu_held_max = max(stats.cpu_held_max, stats.cpu_held)
        if seconds > 0:
            self.pending = asyncio.get_running_loop().call_later(seconds, self._finish, path, body, close)
        else:
            self._finish(path, body, close)

    def _finish(self, path: str, body: bytes, close: bool) -> None:
        self.pending = None
        self._release_cpu()
        self.stats.served[path] += 1
        self._send(200, "OK", body, "application/octet-stream", close)

    def _release_cpu(self) -> None:
        if self.holds_cpu:
            self.holds_cpu = self.target.cpu_busy = False
            self.stats.cpu_held -= 1

    def _send(self, code: int, reason: str, body: bytes, content_type: str, close: bool) -> None:
        assert self.transport is not None
        self.stats.status[code] += 1
        self.stats.bytes_out += len(body)
        self.transport.write(_response(code, reason, body, content_type, close))
        self.busy = False
        if close:
            self.transport.close()
        elif self.buffer:
            self._next_request()


class ControlProtocol(asyncio.Protocol):
    """``GET /stats`` and ``GET /arrivals`` for the benchmark driver; one request per connection."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        path = self.buffer.split(b" ", 2)[1].decode()
        if path == "/arrivals":
            arrivals, self.stats.arrivals = self.stats.arrivals, []
            body = json.dumps(arrivals).encode()
        else:
            body = json.dumps(self.stats.as_dict()).encode()
        self.transport.write(_response(200, "OK", body, "application/json", True))  # type: ignore[attr-defined]
        self.transport.close()


async def serve(targets: int, duration: float, size: str, log_arrivals: bool, ready: asyncio.Future | None = None,
                stats: Stats | None = None) -> Stats:
    """Serve ``targets`` pprof targets and a control port for ``duration`` seconds (or until cancelled)."""
    loop = asyncio.get_running_loop()
    stats = stats or Stats()
    bodies = load_bodies(size)
    servers = []
    ports: list[int] = []
    for _ in range(targets):
        target = Target()
        server = await loop.create_server(lambda t=target: PprofProtocol(t, stats, bodies, log_arrivals),
                                          "127.0.0.1", 0, backlog=1024)
        target.port = server.sockets[0].getsockname()[1]
        ports.append(target.port)
        servers.append(server)
    control = await loop.create_server(lambda: ControlProtocol(stats), "127.0.0.1", 0)
    servers.append(control)
    info = {"ports": ports, "control": control.sockets[0].getsockname()[1],
            "body_bytes": {p: len(b) for p, b in bodies.items()}}
    if ready is not None:
        ready.set_result(info)
    else:
        print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (RuntimeError, ValueError):
            pass  # not the main thread (tests): cancellation stops us instead
    try:
        await asyncio.wait_for(stop.wait(), timeout=duration)
    except TimeoutError:
        pass
    finally:
        for server in servers:
            server.close()
    return stats


def raise_fd_limit(wanted: int) -> None:
    """Raise the open-file limit towards ``wanted`` (one listener plus a few connections per target)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds to serve, then exit")
    parser.add_argument("--size", choices=sorted(SIZES), default="real", help="profile body size")
    parser.add_argument("--log-arrivals", action="store_true", help="record request arrival times for /arrivals")
    args = parser.parse_args()
    raise_fd_limit(args.targets * 8 + 256)
    asyncio.run(serve(args.targets, args.duration, args.size, args.log_arrivals))


if __name__ == "__main__":
    main()
