"""Grafana Pyroscope as a receiver: its Connect push API, or the legacy ``/ingest`` API.

One call of :meth:`PyroscopeReceiver.push` is one attempt; the push task retries with
:func:`scraper.receivers.retry.retry_delay`. Before sending, the profile is checked against
Pyroscope's default limits, so that a profile the server would refuse fails at once with a
message saying why, instead of after a round trip (or ten, if the refusal looked retryable).
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import ssl
import time
import zlib
from datetime import UTC
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from .._proto import push_pb2, types_pb2
from ..config import PyroscopeReceiverConfig, TLSConfig
from ..errors import PushRejected, PushUnavailable
from . import Profile

PUSH_PATH = "/push.v1.PusherService/Push"
#: The one label starting with ``__`` besides ``__name__`` that a push carries (as pyroscope.write keeps it).
DELTA_LABEL = "__delta__"
INGEST_PATH = "/ingest"

#: Pyroscope's default per-series and per-profile limits (validation.* flags of the distributor).
MAX_LABELS = 30
MAX_LABEL_NAME_BYTES = 1024
MAX_LABEL_VALUE_BYTES = 2048
MAX_PROFILE_BYTES = 4 * 1024 * 1024

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*")
# /ingest takes the series as "<app>{k=v,...}": the app name has its own alphabet, and a value
# cannot hold the characters that end it.
_INGEST_APP_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_INGEST_VALUE_FORBIDDEN = (",", "}")

_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_STEP = 256 * 1024
# An answer is an empty PushResponse or a short error; read no more than this of it.
_MAX_ANSWER_BYTES = 64 * 1024
_MAX_DETAIL_CHARS = 300
# Secrets shorter than this are not scrubbed from messages: replacing every "1" would garble them.
_MIN_SCRUB_LENGTH = 4

# Connect error codes that pyroscope.write retries even when the HTTP status is a 4xx other
# than 408/429 (Connect sends "aborted" as 409, for one).
_RETRYABLE_CONNECT_CODES = frozenset({"aborted", "unavailable", "deadline_exceeded", "unknown", "internal", "data_loss"})

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


def _user_agent() -> str:
    try:
        return f"pprof-scraper/{version('pprof-scraper')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "pprof-scraper/unknown"


USER_AGENT = _user_agent()


def series_labels(labels: dict[str, str], external_labels: dict[str, str]) -> list[tuple[str, str]]:
    """The labels of the pushed series: ``labels`` without names starting with ``__`` (except
    ``__name__``), then ``external_labels`` on top, sorted by name."""
    kept = {name: value for name, value in labels.items() if not name.startswith("__") or name == "__name__"}
    kept.update(external_labels)
    return sorted(kept.items())


def uncompressed_size(body: bytes, limit: int) -> int:
    """The size of ``body`` once gunzipped (every gzip member), or of ``body`` itself when it is
    not gzip. Stops counting past ``limit``: the answer is then some number above ``limit``.

    Raises ValueError when the gzip stream is corrupt or cut short.
    """
    if not body.startswith(_GZIP_MAGIC):
        return len(body)
    total = 0
    rest = body
    try:
        while rest:
            if not rest.startswith(_GZIP_MAGIC):
                raise ValueError("trailing bytes after the gzip stream")
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            pending = rest
            while not inflater.eof:
                chunk = inflater.decompress(pending, _INFLATE_STEP)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise ValueError("the gzip stream ends early")
                total += len(chunk)
                if total > limit:
                    return total
            rest = inflater.unused_data
    except zlib.error as exc:
        raise ValueError(f"not valid gzip: {exc}") from None
    return total


def limit_problems(labels: list[tuple[str, str]], body: bytes) -> list[str]:
    """What Pyroscope (with default limits) would refuse about a series with ``labels`` and
    profile ``body``, one sentence each; empty when it would take it."""
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{len(labels)} labels, more than the {MAX_LABELS} allowed")
    for name, value in labels:
        if len(name.encode()) > MAX_LABEL_NAME_BYTES:
            problems.append(f"label name {name[:40]!r}... is longer than {MAX_LABEL_NAME_BYTES} bytes")
        elif not _LABEL_NAME.fullmatch(name):
            problems.append(f"label name {name!r} does not match [a-zA-Z_][a-zA-Z0-9_.]*")
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            problems.append(f"the value of label {name[:40]!r} is longer than {MAX_LABEL_VALUE_BYTES} bytes")
    try:
        size = uncompressed_size(body, MAX_PROFILE_BYTES)
    except ValueError as exc:
        problems.append(f"the profile is {exc}")
    else:
        if size > MAX_PROFILE_BYTES:
            problems.append(f"the profile is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB uncompressed")
    return problems


def ingest_name(labels: list[tuple[str, str]]) -> str:
    """The ``name`` query parameter of ``/ingest``: ``<service_name>{k=v,...}`` over every label but
    ``service_name`` and ``__name__`` (the server derives the profile type from the profile).

    Raises ValueError when the labels cannot be written in that form.
    """
    values = dict(labels)
    service = values.get("service_name", "")
    if not _INGEST_APP_NAME.fullmatch(service):
        raise ValueError(
            f"the ingest API needs a service_name label of letters, digits and _ . / -, got {service!r}"
        )
    pairs = []
    for name, value in labels:
        if name in ("service_name", "__name__"):
            continue
        if any(ch in value for ch in _INGEST_VALUE_FORBIDDEN):
            raise ValueError(f"the value of label {name!r} contains ',' or '}}', which the ingest API cannot carry")
        pairs.append(f"{name}={value}")
    return f"{service}{{{','.join(pairs)}}}"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for (delay-seconds or an HTTP-date),
    or None when it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _tls_context(tls: TLSConfig) -> ssl.SSLContext:
    # Without ca_file, trust the bundle requests itself would use, so https:// works as users expect.
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else DEFAULT_CA_BUNDLE_PATH)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


class _TLSAdapter(HTTPAdapter):
    """An adapter whose every HTTPS connection uses one SSLContext (and, if set, one server name
    for SNI and certificate checks), instead of requests' ``verify``/``cert`` arguments."""

    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        self._context = context
        self._server_name = server_name
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs: dict[str, Any] = {"ssl_context": self._context, "cert_reqs": self._context.verify_mode}
        if self._server_name:
            pool_kwargs["server_hostname"] = self._server_name
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Leave verification to the SSLContext given at construction."""


def _session(config: PyroscopeReceiverConfig) -> requests.Session:
    session = requests.Session()
    # Like pyroscope.write, ignore *_PROXY and netrc from the environment: the config says it all.
    session.trust_env = False
    adapter = _TLSAdapter(_tls_context(config.tls_config), config.tls_config.server_name)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if config.proxy_url:
        session.proxies = {"http": config.proxy_url, "https": config.proxy_url}
    return session


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def _userinfo_secrets(url: str | None) -> list[str]:
    if not url:
        return []
    parts = urlsplit(url)
    return [s for s in (parts.username, parts.password, parts.netloc.rpartition("@")[0]) if s]


def _read_secret_file(field: str, path: Path, who: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        # The file may be a mounted secret that is being rotated: worth another try.
        raise PushUnavailable(f"{who}: cannot read {field} {path}: {exc.strerror or exc}") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 exception (say "[Errno 111] Connection refused")."""
    seen = exc
    while True:
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen)
    # urllib3 prefixes the connection object's repr ("<HTTPConnection(host=..., port=...) at 0x...>: ")
    return re.sub(r"^<[^>]*>: ", "", text) or type(seen).__name__


def _connect_error(body: bytes) -> tuple[str | None, str]:
    """The Connect error code (if the body is a Connect error) and a one-line description."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        code = data["code"]
        message = str(data.get("message", ""))
        return code, f"{code}: {message}" if message else code
    first_line = text.splitlines()[0] if text else ""
    return None, first_line


class PyroscopeReceiver:
    """A Receiver that sends each profile to Pyroscope, one attempt per call."""

    #: Pyroscope 2.x computes no deltas: cumulative profiles must arrive as their change.
    wants_deltas = True

    def __init__(self, name: str, config: PyroscopeReceiverConfig) -> None:
        self.name = name
        self.config = config
        self._session: requests.Session | None = None
        self._path = INGEST_PATH if config.api == "ingest" else PUSH_PATH
        self._endpoint = config.url + self._path
        #: the endpoint as messages show it: no userinfo
        self.display_url = _without_userinfo(self._endpoint)
        self._who = f"pyroscope receiver {name!r} ({self.display_url})"

    def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            self._session.close()

    def _connection(self) -> requests.Session:
        # Built at the first push, so that a TLS file that is missing or bad fails a push (which
        # is retried and, in the end, dead-lettered) rather than whatever built the receiver.
        if self._session is None:
            tls = self.config.tls_config
            try:
                self._session = _session(self.config)
            except OSError as exc:  # ssl.SSLError included
                files = ", ".join(str(f) for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
                raise PushUnavailable(
                    f"{self._who}: cannot load tls_config files ({files}): {exc.strerror or exc}"
                ) from None
        return self._session

    def push(self, profile: Profile) -> None:
        """Send ``profile`` once. Raises PushRejected when the server refused it (or would, by its
        limits) and PushUnavailable when it could not take it now."""
        labels = series_labels(profile.labels, self.config.external_labels)
        if profile.is_delta:
            # Pyroscope 1.x deltas memory again unless told not to; 2.x drops the label.
            labels = sorted([*labels, (DELTA_LABEL, "false")])
        raw_profile = profile.body_for(self.wants_deltas)
        if raw_profile is None:
            raise PushRejected(f"{self._who}: a cumulative profile without a delta (a baseline) has nothing to send")
        problems = limit_problems(labels, raw_profile)
        params: list[tuple[str, str]] | None = None
        if self.config.api == "ingest":
            try:
                params = [
                    ("name", ingest_name(labels)),
                    ("from", str(int(profile.start))),
                    ("until", str(math.ceil(profile.end))),
                    ("format", "pprof"),
                ]
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise PushRejected(f"{self._who}: not sent, Pyroscope would refuse it: {'; '.join(problems)}")

        headers, auth, secrets = self._credentials()
        timeout_s = self.config.remote_timeout.total_seconds()
        if params is None:
            body = _push_request(labels, profile, raw_profile).SerializeToString()
            headers.update({
                "Content-Type": "application/proto",
                "Connect-Protocol-Version": "1",
                "Connect-Timeout-Ms": str(max(1, int(timeout_s * 1000))),
            })
        else:
            body = raw_profile
            headers["Content-Type"] = "application/octet-stream"
        self._send(body, headers, auth, params, timeout_s, secrets)

    def _credentials(self) -> tuple[dict[str, str], HTTPBasicAuth | None, list[str]]:
        """Headers and auth for one request, reading ``*_file`` secrets now so that a rotated
        secret is picked up; also every secret value, to keep them out of messages."""
        config = self.config
        secrets = _userinfo_secrets(config.url) + _userinfo_secrets(config.proxy_url)
        headers = {"User-Agent": USER_AGENT}
        for name, value in config.headers.items():
            headers[name] = value.get_secret_value()
            secrets.append(headers[name])
        auth = None
        if config.basic_auth is not None:
            basic = config.basic_auth
            if basic.password_file is not None:
                password = _read_secret_file("basic_auth.password_file", basic.password_file, self._who)
            else:
                password = basic.password.get_secret_value() if basic.password is not None else ""
            auth = HTTPBasicAuth(basic.username, password)
            secrets.append(password)
        token = None
        if config.bearer_token is not None:
            token = config.bearer_token.get_secret_value()
        elif config.bearer_token_file is not None:
            token = _read_secret_file("bearer_token_file", config.bearer_token_file, self._who)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        return headers, auth, secrets

    def _send(
        self,
        body: bytes,
        headers: dict[str, str],
        auth: HTTPBasicAuth | None,
        params: list[tuple[str, str]] | None,
        timeout_s: float,
        secrets: list[str],
    ) -> None:
        def scrub(text: str) -> str:
            for secret in secrets:
                if len(secret) >= _MIN_SCRUB_LENGTH:
                    text = text.replace(secret, "<secret>")
            return text

        try:
            # total= bounds connecting and waiting for the answer together, not each on its own.
            response = self._connection().post(
                self._endpoint,
                data=body,
                params=params,
                headers=headers,
                auth=auth,
                timeout=urllib3.Timeout(total=timeout_s),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise PushUnavailable(f"{self._who}: no answer within remote_timeout ({timeout_s:g}s)") from None
        except requests.exceptions.SSLError as exc:
            raise PushUnavailable(f"{self._who}: TLS failed: {scrub(_root_cause(exc))}") from None
        except requests.exceptions.ProxyError as exc:
            raise PushUnavailable(f"{self._who}: the proxy failed: {scrub(_root_cause(exc))}") from None
        except requests.RequestException as exc:
            raise PushUnavailable(f"{self._who}: cannot connect: {scrub(_root_cause(exc))}") from None

        with response:
            try:
                answer = response.raw.read(_MAX_ANSWER_BYTES, decode_content=True) or b""
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise PushUnavailable(f"{self._who}: the answer broke off: {scrub(_root_cause(exc))}") from None
        status = response.status_code
        if status == 200:
            return

        code, detail = _connect_error(answer)
        message = f"{self._who}: HTTP {status}"
        if detail:
            message += f": {scrub(detail[:_MAX_DETAIL_CHARS])}"
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            if self.config.retry_on_http_429:
                raise PushUnavailable(message, retry_after=retry_after)
            raise PushRejected(f"{message} (not retried: retry_on_http_429 is false)")
        if status == 408 or status >= 500:
            raise PushUnavailable(message, retry_after=retry_after)
        if 400 <= status < 500:
            if params is None and code in _RETRYABLE_CONNECT_CODES:
                raise PushUnavailable(message, retry_after=retry_after)
            raise PushRejected(message)
        if 300 <= status < 400:
            location = scrub(_without_userinfo(response.headers.get("Location", "")))
            raise PushRejected(f"{message}: redirected to {location!r}; set url to the address that answers")
        raise PushRejected(f"{message}: only 200 means the profile was taken")


def _push_request(labels: list[tuple[str, str]], profile: Profile,
                  raw_profile: bytes | None = None) -> push_pb2.PushRequest:
    """The push of ``raw_profile`` (default: ``profile.body``) as ``profile``'s sample, with ``labels``."""
    return push_pb2.PushRequest(
        series=[
            push_pb2.RawProfileSeries(
                labels=[types_pb2.LabelPair(name=name, value=value) for name, value in labels],
                samples=[push_pb2.RawSample(raw_profile=raw_profile or profile.body, ID=profile.id)],
            )
        ]
    )
