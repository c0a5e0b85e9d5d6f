"""Real servers on loopback that tests scrape: a Go-like pprof target serving the corpus."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).parent / "data"

#: Go's net/http/pprof path -> the corpus body it serves.
GO_BODIES = {
    "/debug/pprof/allocs": "go/allocs_1.pb.gz",
    "/debug/pprof/heap": "go/heap_1.pb.gz",
    "/debug/pprof/block": "go/block_1.pb.gz",
    "/debug/pprof/goroutine": "go/goroutine_1.pb.gz",
    "/debug/pprof/mutex": "go/mutex_1.pb.gz",
    "/debug/pprof/threadcreate": "go/threadcreate_1.pb.gz",
    "/debug/pprof/profile": "go/cpu_1.pb.gz",
    "/debug/fgprof": "go/fgprof_1.pb.gz",
}



def answer(handler: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
    """Send ``body`` as the whole answer of ``handler``'s request."""
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)

class PprofTarget:
    """A pprof endpoint that answers like Go: holds ``?seconds=N`` requests N seconds, refuses a
    second concurrent CPU profile with Go's 500, and counts what it served."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.served: Counter[str] = Counter()
        self.cpu_overlaps = 0
        #: seconds a CPU profile is held past its ``seconds`` (a slow target)
        self.cpu_extra_s = 0.0
        self.requests: list[tuple[str, dict[str, str]]] = []
        #: (path, client address, Unix time) of every request: who scraped what, when
        self.arrivals: list[tuple[str, str, float]] = []
        self._cpu_busy = threading.Lock()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.server.daemon_threads = True
        self.address = f"{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                with target._lock:
                    target.requests.append((url.path, {k.lower(): v for k, v in self.headers.items()}))
                    target.arrivals.append((url.path, self.client_address[0], time.time()))
                name = GO_BODIES.get(url.path)
                if name is None:
                    self._answer(404, b"404 page not found\n", "text/plain; charset=utf-8")
                    return
                seconds = float(parse_qs(url.query).get("seconds", ["0"])[0])
                if url.path == "/debug/pprof/profile":
                    if not target._cpu_busy.acquire(blocking=False):
                        with target._lock:
                            target.cpu_overlaps += 1
                        self._answer(500, b"Could not enable CPU profiling: cpu profiling already in use\n",
                                     "text/plain; charset=utf-8")
                        return
                    try:
                        time.sleep(seconds + target.cpu_extra_s)
                    finally:
                        target._cpu_busy.release()
                elif seconds:
                    time.sleep(seconds)
                with target._lock:
                    target.served[url.path] += 1
                self._answer(200, (DATA / name).read_bytes(), "application/octet-stream")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                answer(self, code, body, content_type)

        return Handler

    def start(self) -> PprofTarget:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def pprof_target() -> Iterator[PprofTarget]:
    target = PprofTarget().start()
    try:
        yield target
    finally:
        target.stop()
