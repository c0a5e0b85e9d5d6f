"""Targets that misbehave on purpose: one plain-HTTP server whose every path is a different way a
pprof endpoint can go wrong, and small HTTPS servers with bad certificates.

The HTTP server speaks raw HTTP/1.1 over sockets, so it can do what a well-behaved server
library will not: stall between the headers and the body, trickle, lie in Content-Length, reset
the connection, answer never. Every wait inside it ends when the server stops.
"""

from __future__ import annotations

import os
import socket
import socketserver
import ssl
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
GOOD_PATH = "/debug/pprof/goroutine"
GOOD_BODY = (DATA / "go" / "goroutine_1.pb.gz").read_bytes()

#: What pprof's text format (``?debug=1``) looks like.
LEGACY_TEXT = (b"heap profile: 3: 1536 [12: 6144] @ heap/1048576\n"
               b"1: 512 [4: 2048] @ 0x4a1b2c 0x4a1d3e 0x43e1a1\n")
#: Seconds between the bytes of the trickling answer.
TRICKLE_EVERY_S = 0.5


def gzip_bomb(decompressed: int = 1 << 30, member: int = 64 << 20) -> bytes:
    """Gzip that inflates to ``decompressed`` zero bytes, about a thousandth of that on the wire.

    One member of ``member`` zeros is compressed and repeated: gzip readers (Go's, pprof's, ours)
    read concatenated members as one stream, and compressing 1 GiB once would take seconds.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    one = compressor.compress(bytes(member)) + compressor.flush()
    return one * (decompressed // member)


@dataclass(frozen=True)
class _Request:
    stream: socket.socket
    stopping: threading.Event


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


def _answer(status: str, body: bytes, content_type: str = "application/octet-stream",
            length: int | None = None, **extra: str) -> Callable[[_Request], None]:
    def send(request: _Request) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body) if length is None else length),
                   **{k.replace("_", "-"): v for k, v in extra.items()}}
        request.stream.sendall(_head(status, headers) + body)
    return send


def _never_answer(request: _Request) -> None:
    request.stopping.wait()


def _stall_mid_body(request: _Request) -> None:
    request.stream.sendall(_head("200 OK", {"Content-Length": str(len(GOOD_BODY))}) + GOOD_BODY[:100])
    request.stopping.wait()


def _trickle(request: _Request) -> None:
    request.stream.sendall(_head("200 OK", {"Content-Length": str(len(GOOD_BODY))}))
    for byte in GOOD_BODY:
        if request.stopping.wait(TRICKLE_EVERY_S):
            return
        request.stream.sendall(bytes([byte]))


def _reset(request: _Request) -> None:
    # A zero linger time makes close() send RST instead of FIN; closing the descriptor here keeps
    # socketserver from sending a FIN first with its shutdown(SHUT_WR).
    request.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    os.close(request.stream.detach())


def _redirect(to: str) -> Callable[[_Request], None]:
    return _answer("302 Found", b"", Location=to)


class HostileTarget:
    """A plain-HTTP target on a free loopback port; each path in :attr:`routes` misbehaves its own way.

    ``GOOD_PATH`` serves a valid goroutine profile. The gzip bomb at ``/gzip_bomb`` answers 404
    until :meth:`arm_bomb`, so a test can read the worker's memory before it.
    """

    def __init__(self) -> None:
        bad = DATA / "bad"
        html = (bad / "html_error_page.html").read_bytes()
        json = (bad / "json_error.json").read_bytes()
        in_use = (bad / "text_cpu_profiling_in_use.txt").read_bytes()
        self.routes: dict[str, Callable[[_Request], None]] = {
            GOOD_PATH: _answer("200 OK", GOOD_BODY),
            "/html_200": _answer("200 OK", html, "text/html"),
            "/html_502": _answer("502 Bad Gateway", html, "text/html"),
            "/json_200": _answer("200 OK", json, "application/json"),
            "/json_503": _answer("503 Service Unavailable", json, "application/json"),
            "/cpu_in_use_500": _answer("500 Internal Server Error", in_use, "text/plain; charset=utf-8"),
            "/plain_text_200": _answer("200 OK", in_use, "text/plain; charset=utf-8"),
            "/empty_body": _answer("200 OK", b""),
            "/truncated_gzip": _answer("200 OK", (bad / "truncated_gzip_half.pb.gz").read_bytes()),
            "/gzip_bad_crc": _answer("200 OK", (bad / "gzip_bad_crc.pb.gz").read_bytes()),
            "/gzip_of_garbage": _answer("200 OK", (bad / "gzip_of_garbage.pb.gz").read_bytes()),
            "/double_gzip": _answer("200 OK", (bad / "double_gzip.pb.gz").read_bytes()),
            "/protobuf_not_a_profile": _answer("200 OK", (bad / "not_a_profile_protobuf.pb.gz").read_bytes()),
            "/legacy_text": _answer("200 OK", LEGACY_TEXT, "text/plain; charset=utf-8"),
            "/redirect_loop": _redirect("/redirect_loop_back"),
            "/redirect_loop_back": _redirect("/redirect_loop"),
            "/never_answers": _never_answer,
            "/stalls_mid_body": _stall_mid_body,
            "/trickles": _trickle,
            "/huge_content_length": _answer("200 OK", GOOD_BODY[:100], length=1 << 40),
            "/short_body": _answer("200 OK", GOOD_BODY[:100], length=len(GOOD_BODY)),
            "/connection_reset": _reset,
            "/gzip_bomb": self._bomb,
        }
        self.bomb = gzip_bomb()
        self.bombs_sent = 0
        self.requests: Counter[str] = Counter()
        self._armed = threading.Event()
        self.stopping = threading.Event()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hostile-target", daemon=True)

    def arm_bomb(self) -> None:
        self._armed.set()

    def _bomb(self, request: _Request) -> None:
        if not self._armed.is_set():
            _answer("404 Not Found", b"not armed yet\n", "text/plain")(request)
            return
        request.stream.sendall(_head("200 OK", {"Content-Length": str(len(self.bomb))}))
        view = memoryview(self.bomb)
        for start in range(0, len(view), 64 * 1024):
            request.stream.sendall(view[start:start + 64 * 1024])
        self.bombs_sent += 1

    def _handler(self) -> type[socketserver.StreamRequestHandler]:
        target = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(8192).decode("latin-1")
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # the headers: nothing in them matters here
                path = line.split(" ")[1].split("?")[0] if line.count(" ") >= 2 else "/"
                target.requests[path] += 1
                route = target.routes.get(path, _answer("404 Not Found", b"404 page not found\n", "text/plain"))
                try:
                    route(_Request(self.connection, target.stopping))
                except OSError:
                    pass  # the scraper gave up first: what several routes are for

        return Handler

    def start(self) -> HostileTarget:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


class TLSTarget:
    """An HTTPS target that serves a valid goroutine profile under a given certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(GOOD_BODY)))
                self.end_headers()
                self.wfile.write(GOOD_BODY)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                sock, address = super().get_request()
                # The handshake runs in the handler's thread, so a client that fails it cannot stall accept().
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # refused handshakes are the point

        self._server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> TLSTarget:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
