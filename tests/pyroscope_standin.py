"""A stand-in for Grafana Pyroscope: a real HTTP server on 127.0.0.1 that speaks the two APIs
the scraper pushes to, checks what it gets as Pyroscope would, and records every request.

- ``POST /push.v1.PusherService/Push`` (Connect, ``application/proto``): the body is decoded as a
  ``push.v1.PushRequest`` with the protobuf package; every ``raw_profile`` must gunzip (when
  gzip) and parse as a ``perftools.profiles.Profile`` with at least one sample type, else the
  answer is 400 ``invalid_argument``.
- ``POST /ingest`` (and ``/pyroscope/ingest``): ``name``/``from``/``until``/``format`` query
  parameters, the raw pprof as the body with ``format=pprof``, or (without ``format``) a
  ``multipart/form-data`` body with a ``profile`` and an optional ``sample_type_config``; the
  series labels are derived as Pyroscope derives them (``RecordedRequest.ingest_labels``).

Tell it to require credentials (``basic_auth``, ``bearer_token``, ``tenant``), to answer a queue
of statuses before the next 200 (:meth:`PyroscopeStandIn.answer`), or to hold answers until
released (:meth:`PyroscopeStandIn.hold`), to test timeouts without sleeping. Pass ``tls`` (a
server SSLContext) to serve HTTPS. A request in absolute form (``POST http://host/...``) is
recorded with ``proxied_host`` set, so the server doubles as an HTTP proxy for proxy tests.

Usage::

    with PyroscopeStandIn(tenant="team-a") as pyroscope:
        pyroscope.answer(503)
        ...  # push to pyroscope.url
        assert pyroscope.requests[-1].series[0].labels == [...]
"""

from __future__ import annotations

import base64
import email.policy
import gzip
import json
import ssl
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf.message import DecodeError

from scraper._proto import profile_pb2, push_pb2

PUSH_PATH = "/push.v1.PusherService/Push"
INGEST_PATHS = ("/ingest", "/pyroscope/ingest")


@dataclass
class Sample:
    id: str
    raw_profile: bytes
    #: the decoded pprof profile
    profile: profile_pb2.Profile


@dataclass
class Series:
    #: label pairs in the order they were sent
    labels: list[tuple[str, str]]
    samples: list[Sample]

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    #: header names lower-cased
    headers: dict[str, str]
    body: bytes
    #: the status the stand-in answered
    status: int = 0
    #: decoded push series (push API)
    series: list[Series] = field(default_factory=list)
    #: the decoded profile (ingest API)
    profile: profile_pb2.Profile | None = None
    #: the labels Pyroscope would store the ingested profile with (ingest API)
    ingest_labels: dict[str, str] = field(default_factory=dict)
    #: the host of an absolute-form request line: this request came through as a proxy
    proxied_host: str | None = None
    #: the subject of the client's TLS certificate, when it presented one
    client_cert_subject: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def ids(self) -> list[str]:
        return [sample.id for series in self.series for sample in series.samples]

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_pprof(raw: bytes) -> profile_pb2.Profile:
    """Decode a pprof profile as Pyroscope would: gunzip when gzip, then protobuf.

    Raises ValueError saying what is wrong.
    """
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"raw_profile is not valid gzip: {exc}") from None
    profile = profile_pb2.Profile()
    try:
        profile.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"raw_profile is not a pprof profile: {exc}") from None
    if not profile.sample_type or not profile.string_table:
        raise ValueError("raw_profile is not a pprof profile: no sample types")
    return profile


def connect_error(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; everything is recorded instead

    def do_POST(self) -> None:
        standin = self.server.standin
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        request = RecordedRequest(
            method="POST",
            path=target.path,
            query=parse_qs(target.query),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            proxied_host=target.netloc or None,
        )
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
            if cert:
                request.client_cert_subject = ",".join(f"{k}={v}" for rdn in cert["subject"] for k, v in rdn)
        answer = standin._judge(request)
        request.status = answer.status
        with standin._lock:
            standin.requests.append(request)
        standin._release.wait(timeout=30)
        self._answer(answer)

    def do_GET(self) -> None:
        self._answer(_Answer(404, {}, b"404 page not found\n"))

    def _answer(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up (a timeout test); nothing to answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, standin: PyroscopeStandIn, tls: ssl.SSLContext | None, host: str) -> None:
        self.standin = standin
        self.tls = tls
        super().__init__((host, 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake runs in the handler's thread, so a failing client cannot stall accept().
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # failed TLS handshakes and dropped clients are what some tests provoke


class PyroscopeStandIn:
    """A Pyroscope stand-in on a free port of ``host`` (127.0.0.1); use as a context manager."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        tenant: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.tenant = tenant
        self.requests: list[RecordedRequest] = []
        self._answers: deque[_Answer] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._release.set()
        self._server = _Server(self, tls, host)
        # a short poll interval keeps shutdown() quick
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="pyroscope-standin", daemon=True
        )
        scheme = "https" if tls is not None else "http"
        self.port = self._server.server_address[1]
        self.url = f"{scheme}://{host}:{self.port}"

    def __enter__(self) -> PyroscopeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        code: str | None = None,
        message: str = "",
    ) -> None:
        """Answer the next request (after those queued before) with ``status`` instead of judging it;
        with ``code``, the body is a Connect error ``{"code": code, "message": message}``."""
        if code is not None:
            body = connect_error(code, message)
            headers = {"Content-Type": "application/json", **(headers or {})}
        with self._lock:
            self._answers.append(_Answer(status, headers or {}, body))

    def hold(self) -> threading.Event:
        """Hold every answer until the returned event is set (which ``__exit__`` also does)."""
        self._release.clear()
        return self._release

    @property
    def pushes(self) -> list[RecordedRequest]:
        """The requests the stand-in took (answered 200)."""
        return [r for r in self.requests if r.status == 200]

    def _judge(self, request: RecordedRequest) -> _Answer:
        problem = self._auth_problem(request)
        if problem:
            return _Answer(401, {"Content-Type": "application/json"}, connect_error("unauthenticated", problem))
        with self._lock:
            queued = self._answers.popleft() if self._answers else None
        if queued is not None:
            return queued
        if request.path == PUSH_PATH:
            return self._push(request)
        if request.path in INGEST_PATHS:
            return self._ingest(request)
        return _Answer(404, {"Content-Type": "text/plain"}, b"404 page not found\n")

    def _auth_problem(self, request: RecordedRequest) -> str | None:
        if self.tenant is not None and request.headers.get("x-scope-orgid") != self.tenant:
            return "no org id"
        if self.basic_auth is not None and request.basic_auth != self.basic_auth:
            return "invalid basic auth credentials"
        if self.bearer_token is not None and request.headers.get("authorization") != f"Bearer {self.bearer_token}":
            return "invalid bearer token"
        return None

    def _push(self, request: RecordedRequest) -> _Answer:
        if request.content_type != "application/proto":
            return _Answer(415, {}, b"")
        push = push_pb2.PushRequest()
        try:
            push.ParseFromString(request.body)
        except DecodeError as exc:
            return _invalid(f"cannot decode PushRequest: {exc}")
        for series in push.series:
            samples = []
            for sample in series.samples:
                try:
                    profile = parse_pprof(sample.raw_profile)
                except ValueError as exc:
                    return _invalid(str(exc))
                samples.append(Sample(sample.ID, sample.raw_profile, profile))
            request.series.append(Series([(pair.name, pair.value) for pair in series.labels], samples))
        return _Answer(200, {"Content-Type": "application/proto"}, push_pb2.PushResponse().SerializeToString())

    def _ingest(self, request: RecordedRequest) -> _Answer:
        if not request.query.get("name"):
            return _Answer(400, {}, b"name: required\n")
        display: dict[str, dict[str, str]] = {}
        if request.query.get("format") == ["pprof"]:
            raw = request.body
        elif "multipart/form-data" in request.content_type and "format" not in request.query:
            parts = _form_parts(request.content_type, request.body)
            if "profile" not in parts:
                return _Answer(422, {}, b"no profile in the form\n")
            raw = parts["profile"]
            display = json.loads(parts.get("sample_type_config", b"{}"))
        else:
            return _Answer(422, {}, b"the stand-in takes format=pprof or a multipart pprof form\n")
        try:
            request.profile = parse_pprof(raw)
        except ValueError as exc:
            return _Answer(422, {}, f"{exc}\n".encode())
        app, _, rest = request.query["name"][0].partition("{")
        pairs = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if pair)
        sample_types = [request.profile.string_table[vt.type] for vt in request.profile.sample_type]
        request.ingest_labels = {"__name__": _ingest_metric_name(sample_types, display), "__delta__": "false",
                                 "pyroscope_spy": "unknown", "service_name": app.strip(),
                                 **{k.strip(): v.strip() for k, v in pairs.items()}}
        return _Answer(200, {}, b"")


def _form_parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _ingest_metric_name(sample_types: list[str], display: dict[str, dict[str, str]]) -> str:
    """The ``__name__`` Pyroscope gives a pprof profile on /ingest (pkg/og/convert/pprof metricName),
    with Pyroscope's default display names unless the form's sample_type_config gives others."""
    if "wall" in sample_types:
        return "wall"
    defaults = {"samples": "cpu", "goroutine": "goroutines", "contentions": "mutex_count", "delay": "mutex_duration"}
    name = ""
    for sample_type in sample_types:
        name = display.get(sample_type, {}).get("display-name") or defaults.get(sample_type, sample_type)
        if "cpu" in name:
            return "process_cpu"
        if "alloc_" in name or "inuse_" in name or name in ("space", "objects"):
            return "memory"
        for part, metric in (("mutex_", "mutex"), ("block_", "block"), ("goroutines", "goroutines")):
            if part in name:
                return metric
    return name


def _invalid(message: str) -> _Answer:
    return _Answer(400, {"Content-Type": "application/json"}, connect_error("invalid_argument", message))
