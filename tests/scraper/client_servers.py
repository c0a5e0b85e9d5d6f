"""Real servers on 127.0.0.1 for the HTTP client's tests: a target whose answers each test sets,
raw TCP servers that misbehave, a forwarding HTTP proxy and a SOCKS5 proxy."""

from __future__ import annotations

import http.client
import selectors
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as a server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class Exchange(BaseHTTPRequestHandler):
    """One request being answered; routes get it and answer through :meth:`reply`."""

    protocol_version = "HTTP/1.1"
    server: _LoopbackServer
    seen: Seen

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_CONNECT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                    self.client_address[1])
        self.seen = seen
        self.server.on_request(self, seen)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers only; the route writes the body itself."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, on_request: Callable[[Exchange, Seen], None], tls: ssl.SSLContext | None) -> None:
        self.on_request = on_request
        self.tls = tls
        self.handshake_failures = 0
        super().__init__(("127.0.0.1", 0), Exchange)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake happens here, in the connection's thread, so a failing client blocks no one.
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            request.close()
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        pass  # clients that hang up early are what these tests are about


class Target:
    """An HTTP(S) server whose answer for each path a test sets with :meth:`route`; records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Callable[[Exchange], None]] = {}
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        self._server = _LoopbackServer(self._on_request, tls)
        self.port = self._server.server_address[1]
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def handshake_failures(self) -> int:
        return self._server.handshake_failures

    def route(self, path: str, answer: Callable[[Exchange], None]) -> None:
        self.routes[path] = answer

    def _on_request(self, exchange: Exchange, seen: Seen) -> None:
        self.requests.append(seen)
        answer = self.routes.get(urlsplit(seen.path).path)
        if answer is None:
            exchange.reply(404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
        else:
            answer(exchange)

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


class ForwardProxy:
    """An HTTP proxy: forwards each absolute-URL request of an http:// target, tunnels a CONNECT
    for an https:// one, and records each; names resolve through ``hosts`` first."""

    def __init__(self, credentials: str | None = None, tls: ssl.SSLContext | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.requests: list[Seen] = []
        self._credentials = credentials
        self._hosts = hosts or {}
        self._stopping = threading.Event()
        self._server = _LoopbackServer(self._forward, tls)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _forward(self, exchange: Exchange, seen: Seen) -> None:
        self.requests.append(seen)
        if self._credentials is not None and seen.headers.get("proxy-authorization") != self._credentials:
            exchange.reply(407, b"proxy authentication required\n", {"Proxy-Authenticate": "Basic"})
            return
        if seen.method == "CONNECT":
            self._tunnel(exchange, seen.path)
            return
        url = urlsplit(seen.path)
        upstream = http.client.HTTPConnection(self._hosts.get(url.hostname or "", url.hostname), url.port, timeout=5)
        try:
            headers = {k: v for k, v in seen.headers.items() if not k.startswith("proxy-")}
            upstream.request(seen.method, url.path + (f"?{url.query}" if url.query else ""),
                             body=seen.body or None, headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
            exchange.reply(answer.status, body, {"Content-Type": answer.getheader("content-type", "")})
        finally:
            upstream.close()

    def _tunnel(self, exchange: Exchange, authority: str) -> None:
        host, _, port = authority.rpartition(":")
        upstream = socket.create_connection((self._hosts.get(host, host), int(port)), timeout=5)
        with upstream:
            exchange.send_response(200, "Connection established")
            exchange.end_headers()
            exchange.wfile.flush()
            _relay(exchange.connection, upstream, self._stopping)
        exchange.close_connection = True

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


class RawServer:
    """A TCP server on 127.0.0.1 that hands each accepted connection to ``serve`` in its own thread."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stopping = threading.Event()
        self.accepted = 0
        self._serve = serve
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._serve(conn, self.stopping)
            except OSError:
                pass

    def close(self) -> None:
        self.stopping.set()
        self._listener.close()


def read_request_head(conn: socket.socket) -> bytes:
    """Read a request up to the blank line after its headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client went away mid-handshake")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while not stopping.is_set():
            for key, _ in selector.select(timeout=0.2):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


class Socks5Proxy:
    """A SOCKS5 proxy (no authentication, CONNECT only) that resolves names itself, through ``hosts``
    first, and records the destinations it was asked for."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        self.destinations: list[tuple[str, int]] = []
        self._hosts = hosts or {}
        self._server = RawServer(self._serve)
        self.port = self._server.port

    def _serve(self, client: socket.socket, stopping: threading.Event) -> None:
        _, n_methods = _recv_exact(client, 2)
        _recv_exact(client, n_methods)
        client.sendall(b"\x05\x00")
        _, _, _, address_type = _recv_exact(client, 4)
        if address_type == 1:
            host = socket.inet_ntoa(_recv_exact(client, 4))
        elif address_type == 3:
            host = _recv_exact(client, _recv_exact(client, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(client, 16))
        port = struct.unpack("!H", _recv_exact(client, 2))[0]
        self.destinations.append((host, port))
        try:
            upstream = socket.create_connection((self._hosts.get(host, host), port), timeout=5)
        except OSError:
            client.sendall(b"\x05\x05\x00\x01" + bytes(6))  # 0x05: connection refused
            return
        with upstream:
            client.sendall(b"\x05\x00\x00\x01" + bytes(6))
            _relay(client, upstream, stopping)

    def close(self) -> None:
        self._server.close()
