"""Fetch one URL for one scrape job, honouring every option of the job's ``http_client_config``.

    TargetClient.fetch       the whole-request deadline, redirects, status check, body size limit
    _Credentials             the Authorization header, built afresh for every request
    _OAuth2Tokens            the client-credentials grant, its token cached until shortly before expiry
    _Transport               a requests.Session whose adapter applies tls_config and proxy_url
    _translated              the one place where requests, urllib3, socket and ssl errors become ScrapeErrors

Everything here blocks in plain stdlib/requests calls, which gevent patches in the workers.
"""

from __future__ import annotations

import base64
import http.client
import importlib.metadata
import json
import logging
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, unquote_plus, urljoin, urlsplit, urlunsplit

import requests
import socks
import urllib3
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from urllib3.util.ssl_match_hostname import CertificateError

from .config import HTTPClientConfig, OAuth2, TLSConfig
from .errors import (
    BodyTooLarge,
    ConfigError,
    ConnectFailed,
    HTTPStatusError,
    ScrapeError,
    ScrapeTimeout,
    SecretFileError,
    TLSError,
    TooManyRedirects,
)

log = logging.getLogger(__name__)

try:
    _VERSION = importlib.metadata.version("pprof-scraper")
except importlib.metadata.PackageNotFoundError:
    _VERSION = "dev"

DEFAULT_USER_AGENT = f"pprof-scraper/{_VERSION}"

#: Go's http.Client gives up after 10 redirects; so do we.
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
#: How much of a non-200 body is read to quote its first line.
_ERROR_BODY_PEEK = 1024
_TOKEN_BODY_LIMIT = 1024 * 1024
#: A cached oauth2 token is refreshed this long before it expires (as golang.org/x/oauth2 does) ...
_TOKEN_EXPIRY_MARGIN_S = 10.0
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: What may not appear in a header value: control characters (a line break would split the request).
_NOT_IN_HEADER = re.compile(r"[^\t\x20-\x7e\x80-\xff]")

# urllib3 warns on every request whose certificate it did not verify; with insecure_skip_verify
# that is the operator's choice, said once per job when its client is made, not once per scrape.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

#: Secret files already warned about for being readable by group or others, so each is named once.
_warned_open_files: set[Path] = set()


@dataclass(frozen=True)
class FetchedBody:
    """A 200 answer, its body read whole (and decoded only if the server set Content-Encoding)."""

    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)
    content_type: str
    elapsed_s: float


# --------------------------------------------------------------------------- deadline and errors


class _Deadline:
    """The end of one fetch: every connect, wait and read gets only the time left until it."""

    def __init__(self, timeout_s: float, url: str) -> None:
        self.timeout_s = timeout_s
        self.url = url
        self._end = time.monotonic() + timeout_s

    def timed_out(self, stage: str, prefix: str = "") -> ScrapeTimeout:
        return ScrapeTimeout(
            f"{prefix}no complete answer within the scrape timeout of {self.timeout_s:g}s ({stage}); "
            "raise scrape_timeout if the target is just slow", self.url,
        )

    def remaining(self, stage: str) -> float:
        """Seconds left; raises ScrapeTimeout once there are none."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.timed_out(stage)
        return left


def _redact(url: str) -> str:
    """``url`` without the password of its userinfo, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and all it wraps: requests puts urllib3's error in args, urllib3 the cause in ``reason``."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        inner = [getattr(current, "reason", None), *current.args, current.__cause__, current.__context__]
        todo.extend(e for e in inner if isinstance(e, BaseException))
    return found


def _first(causes: list[BaseException], *types: type[BaseException]) -> BaseException | None:
    return next((c for c in causes if isinstance(c, types)), None)


def _is_timeout(exc: BaseException) -> bool:
    # urllib3 makes NewConnectionError (a refused connection, say) a subclass of ConnectTimeoutError.
    timeouts = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    return isinstance(exc, timeouts) and not isinstance(exc, urllib3.exceptions.NewConnectionError)


def _describe_tls(causes: list[BaseException], url: str) -> str:
    mismatch = _first(causes, CertificateError)
    if mismatch is not None:
        cert = getattr(mismatch, "_peer_cert", None) or {}
        names = ", ".join(value for _, value in cert.get("subjectAltName", ())) or "no name"
        wanted = re.search(r"hostname '([^']*)'", str(mismatch))
        asked = wanted.group(1) if wanted else urlsplit(url).hostname
        return (f"certificate is for {names}, not {asked}; set tls_config.server_name to a name "
                "the certificate covers, or scrape the target by that name")
    verify = _first(causes, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        # OpenSSL's X509_V_ERR_*: 10 CERT_HAS_EXPIRED, 9 CERT_NOT_YET_VALID, 18-21 self-signed or unknown issuer.
        if verify.verify_code == 10:
            return "certificate expired; the target must renew it"
        if verify.verify_code == 9:
            return "certificate is not yet valid; check the clocks of the target and this worker"
        if verify.verify_code in (18, 19, 20, 21):
            return (f"certificate is signed by an unknown authority ({verify.verify_message}); "
                    "set tls_config.ca_file to the CA that signed it")
        return f"certificate verification failed: {verify.verify_message}"
    failure = _first(causes, ssl.SSLError)
    reason = getattr(failure, "reason", None) or ""
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return ("the target rejected our client certificate or wants one; "
                "set tls_config.cert_file and key_file to a certificate it trusts")
    if isinstance(failure, ssl.SSLEOFError) or "EOF" in reason:
        return ("the target closed the connection during the TLS handshake; if it requires a client "
                "certificate, set tls_config.cert_file and key_file")
    if reason == "WRONG_VERSION_NUMBER":
        return "the target does not speak TLS on this port; use scheme http"
    if "PROTOCOL_VERSION" in reason or reason == "UNSUPPORTED_PROTOCOL":
        return "no TLS version in common with the target; check tls_config.min_version"
    detail = reason or (failure.strerror if isinstance(failure, OSError) and failure.strerror else None)
    return f"TLS handshake failed: {detail or type(causes[-1]).__name__}"


def _describe_connection(causes: list[BaseException], url: str) -> str:
    incomplete = _first(causes, http.client.IncompleteRead)
    if isinstance(incomplete, http.client.IncompleteRead):
        got = incomplete.partial if isinstance(incomplete.partial, int) else len(incomplete.partial)
        more = f", {incomplete.expected} more were expected" if incomplete.expected is not None else ""
        return f"the connection closed after {got} bytes of the body{more}"
    if _first(causes, socket.gaierror, urllib3.exceptions.NameResolutionError):
        resolve = _first(causes, socket.gaierror)
        why = resolve.strerror if isinstance(resolve, socket.gaierror) else "name resolution failed"
        return f"cannot resolve {urlsplit(url).hostname}: {why}"
    refused_at_proxy = _first(causes, socks.SOCKS5Error)
    if isinstance(refused_at_proxy, socks.SOCKS5Error):
        return f"the SOCKS proxy could not reach the target ({refused_at_proxy.msg})"
    if _first(causes, ConnectionRefusedError):
        return "connection refused"
    if _first(causes, ConnectionResetError):
        return "the connection was reset by the other side"
    if _first(causes, http.client.RemoteDisconnected):
        return "the target closed the connection without answering"
    socks_error = _first(causes, socks.ProxyError)
    if isinstance(socks_error, socks.ProxyError):
        return f"SOCKS: {socks_error.msg}"
    if _first(causes, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
              requests.exceptions.InvalidURL, requests.exceptions.InvalidProxyURL):
        return f"invalid URL: {causes[0]}"
    os_error = _first(causes, OSError)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    return f"the connection failed ({type(causes[-1]).__name__})"


@contextmanager
def _translated(deadline: _Deadline, stage: str, *, prefix: str = "", proxy: str | None = None) -> Iterator[None]:
    """Turn whatever requests, urllib3, socket or ssl raise inside into the ScrapeError that names it.

    ``stage`` says what was going on, ``prefix`` whose request it was (the oauth2 token's, say).
    """
    try:
        yield
    except (ScrapeError, SecretFileError, ConfigError):
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
            OSError, ValueError) as exc:
        causes = _causes(exc)
        url = deadline.url
        if any(_is_timeout(c) for c in causes):
            connecting = _first(causes, requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)
            raise deadline.timed_out("connecting" if connecting else stage, prefix) from exc
        suffix = ""
        if proxy is not None and _first(causes, requests.exceptions.ProxyError, urllib3.exceptions.ProxyError,
                                        socks.ProxyConnectionError):
            prefix = f"{prefix}cannot use proxy {proxy}: "
        elif proxy is not None:
            suffix = f" (via proxy {proxy})"
        elif not prefix and _first(causes, ConnectionRefusedError):
            suffix = "; is the target running and listening on this port?"
        if _first(causes, ssl.SSLError, CertificateError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
            raise TLSError(f"{prefix}{_describe_tls(causes, url)}", url) from exc
        raise ConnectFailed(f"{prefix}{_describe_connection(causes, url)}{suffix}", url) from exc


# --------------------------------------------------------------------------- secrets


def _check_header_safe(value: str, where: str, from_file: Path | None) -> str:
    if _NOT_IN_HEADER.search(value):
        problem = f"{where} contains a line break or another character not allowed in an HTTP header"
        if from_file is not None:
            raise SecretFileError(f"{problem}; it must hold the secret alone on one line")
        raise ConfigError([problem])
    return value


def _read_secret_file(path: Path, where: str) -> str:
    """The stripped text of a secret file, read now so that a rotated secret applies at once."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(
            f"{where} {path} cannot be read: {exc.strerror or exc}; "
            "check the path and that this worker's user may read it"
        ) from exc
    except UnicodeDecodeError:
        raise SecretFileError(f"{where} {path} is not UTF-8 text") from None  # its bytes would be the secret
    _warn_if_open(path, mode, where)
    return text.strip()


def _warn_if_open(path: Path, mode: int, where: str) -> None:
    if mode & 0o077 and path not in _warned_open_files:
        _warned_open_files.add(path)
        log.warning("%s %s is readable by group or others (mode %03o); chmod 600 it", where, path, mode & 0o777)


def _secret(value: SecretStr | None, path: Path | None, where: str) -> str:
    """An inline secret or the content of its ``*_file`` (empty when neither is set); ``where`` names the field."""
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return ""
    text = _read_secret_file(path, f"{where}_file")
    if not text:
        raise SecretFileError(f"{where}_file {path} is empty")
    return text


def _header_secret(value: SecretStr | None, path: Path | None, where: str) -> str:
    """Like :func:`_secret`, for a secret that goes into a header as it is (not encoded first)."""
    secret = _secret(value, path, where)
    if value is None:
        return _check_header_safe(secret, f"{where}_file {path}", path)
    return _check_header_safe(secret, where, None)


# --------------------------------------------------------------------------- TLS and transport


class _TLSFiles:
    """The SSLContext of one tls_config, rebuilt when one of its files changes (rotated certificates apply)."""

    def __init__(self, config: TLSConfig, where: str) -> None:
        self._config = config
        self._where = where
        self._files = {name: path for name in ("ca_file", "cert_file", "key_file")
                       if (path := getattr(config, name)) is not None}
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        stamp = tuple(self._stat(name, path) for name, path in self._files.items())
        if self._context is None or stamp != self._stamp:
            self._context = self._build()
            self._stamp = stamp
        return self._context

    def _stat(self, name: str, path: Path) -> tuple[int, int, int]:
        try:
            st = path.stat()
        except OSError as exc:
            raise SecretFileError(f"{self._where}.{name} {path} cannot be read: {exc.strerror or exc}") from exc
        if name == "key_file":
            _warn_if_open(path, st.st_mode, f"{self._where}.key_file")
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _build(self) -> ssl.SSLContext:
        config = self._config
        try:
            # With a ca_file only that CA is trusted, as in Go; without one the system's CAs are.
            context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        except OSError as exc:
            raise SecretFileError(
                f"{self._where}.ca_file {config.ca_file} cannot be loaded: {exc.strerror or exc}") from exc
        # urllib3 then checks the name itself, against server_name when set, and its error names both sides.
        context.check_hostname = False
        if config.insecure_skip_verify:
            context.verify_mode = ssl.CERT_NONE
        if config.min_version is not None:
            with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated, but the config asks for them
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = _TLS_VERSIONS[config.min_version]
        if config.cert_file is not None and config.key_file is not None:
            try:
                # An empty password makes an encrypted key fail here instead of prompting on stdin.
                context.load_cert_chain(str(config.cert_file), str(config.key_file), password=b"")
            except OSError as exc:
                raise SecretFileError(
                    f"{self._where}.cert_file {config.cert_file} and key_file {config.key_file} cannot be "
                    f"loaded as a certificate and its unencrypted private key: {exc.strerror or exc}"
                ) from exc
        return context


class _Adapter(HTTPAdapter):
    """An HTTPAdapter whose TLS is one SSLContext, and whose server name (SNI and the name checked in
    the certificate) may differ from the URL's host."""

    def __init__(self, pool_size: int, server_name: str | None) -> None:
        self._context: ssl.SSLContext | None = None
        self._server_name = server_name
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def use_context(self, context: ssl.SSLContext) -> None:
        if context is self._context:
            return
        if self._context is not None:  # connections made with the old certificates must not be reused
            self.poolmanager.clear()
            for manager in self.proxy_manager.values():
                manager.clear()
            self.proxy_manager.clear()
        self._context = context

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: object, cert: object = None
    ) -> tuple[dict[str, object], dict[str, object]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs: dict[str, object] = {"ssl_context": self._context}
        if self._server_name:
            pool_kwargs["server_hostname"] = self._server_name
        return host_params, pool_kwargs

    def cert_verify(self, conn: object, url: str, verify: object, cert: object) -> None:
        """Do nothing: requests would add certifi's CAs to the pool; the SSLContext alone says what to trust."""

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> object:
        if proxy.lower().startswith("https:"):  # verify an https proxy as Go does, with the job's TLS settings
            proxy_kwargs.setdefault("proxy_ssl_context", self._context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


class _Transport:
    """A requests.Session with TLS and proxy settings; sends one request, never following redirects."""

    def __init__(self, tls: TLSConfig, proxy_url: str | None, where: str, pool_size: int) -> None:
        self._tls = _TLSFiles(tls, where)
        self._adapter = _Adapter(pool_size, tls.server_name)
        self.session = requests.Session()
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        self._proxies = {"http": proxy_url, "https": proxy_url} if proxy_url else {}
        self.proxy = _redact(proxy_url) if proxy_url else None
        self._https_proxy = bool(proxy_url and proxy_url.lower().startswith("https:"))

    def send(self, request: requests.PreparedRequest, deadline: _Deadline, stage: str) -> requests.Response:
        """Send ``request`` and return once the headers are in; the body is left to stream."""
        if urlsplit(request.url or "").scheme == "https" or self._https_proxy:
            # Built only when needed: loading the system's CAs takes a noticeable fraction of a second.
            self._adapter.use_context(self._tls.context())
        left = deadline.remaining(stage)
        # Not Session.send: it reads a redirect's whole body regardless of our deadline, keeps cookies and
        # consults the environment's proxies; here the config alone decides, as in Alloy.
        adapter = self.session.get_adapter(request.url or "")
        return adapter.send(request, stream=True, timeout=(left, left), proxies=self._proxies)

    def close(self) -> None:
        self.session.close()


def _read(response: requests.Response, deadline: _Deadline, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more; stops at the deadline.

    read1 returns whatever has arrived, so a body that trickles cannot hold a read past the deadline.
    """
    raw = response.raw
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decode = encoding in raw.CONTENT_DECODERS  # Go's gzip bodies come without Content-Encoding: kept as-is
    chunks: list[bytes] = []
    received = 0
    while received <= limit:
        stage = f"reading the body, {received} bytes so far"
        _set_read_timeout(raw, deadline.remaining(stage))
        with _translated(deadline, stage):
            chunk = raw.read1(min(_CHUNK, limit + 1 - received), decode_content=decode)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    body = b"".join(chunks)
    return body[:limit], received > limit


def _set_read_timeout(raw: urllib3.HTTPResponse, seconds: float) -> None:
    """Let the next socket read wait no longer than the time left.

    http.client keeps the socket only in the response's file object once the server says it will
    close the connection, so it is looked for there: HTTPResponse.fp -> BufferedReader -> SocketIO.
    """
    buffered = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(buffered, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


#: Credentials shorter than this are not cut out of messages: replacing every "1" would garble them.
_MIN_HIDDEN_LENGTH = 4


def _credential_parts(authorization: str | None) -> list[str]:
    """What of an Authorization header a server could echo: the header, its credentials and, for
    Basic, the decoded ``user:password`` and the password."""
    if not authorization:
        return []
    scheme, _, credentials = authorization.partition(" ")
    parts = [authorization, credentials]
    if scheme.lower() == "basic":
        try:
            user_password = base64.b64decode(credentials, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            user_password = ""
        parts += [user_password, user_password.partition(":")[2], unquote_plus(user_password.partition(":")[2])]
    return parts


def _first_line(body: bytes, hide: Iterable[str] = ()) -> str:
    """The body's first line for an error message, with ``hide`` cut out: a server may echo the
    credentials it was sent, and messages end up in status records, logs and Flower."""
    text = body.decode("utf-8", "replace")
    for secret in sorted(hide, key=len, reverse=True):
        if len(secret) >= _MIN_HIDDEN_LENGTH:
            text = text.replace(secret, "<secret>")
    lines = text.strip().splitlines()
    line = "".join(ch if ch.isprintable() else "?" for ch in (lines[0].strip() if lines else ""))
    return line if len(line) <= 200 else line[:199] + "…"


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers.get("content-length", ""))
    except ValueError:
        return None


# --------------------------------------------------------------------------- credentials


@dataclass
class _Token:
    value: str = field(repr=False)
    type: str
    expires_at: float | None  # time.monotonic(); None when the endpoint gave no expiry

    def fresh(self) -> bool:
        return self.expires_at is None or time.monotonic() < self.expires_at


class _OAuth2Tokens:
    """The client-credentials grant of RFC 6749 4.4, as Prometheus does it; one token shared by the job."""

    def __init__(self, config: OAuth2, user_agent: str) -> None:
        self._config = config
        self._user_agent = user_agent
        self._transport = _Transport(config.tls_config, config.proxy_url, "oauth2.tls_config", pool_size=2)
        # Resolved at construction, after gevent's monkey-patching: a greenlet waits here while another
        # fetches the token, so an expiry does not send every concurrent scrape to the token endpoint.
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def __repr__(self) -> str:
        return f"_OAuth2Tokens(token_url={self._config.token_url!r}, client_id={self._config.client_id!r})"

    def header(self, deadline: _Deadline) -> str:
        if not self._lock.acquire(timeout=deadline.remaining("waiting for the oauth2 token")):
            raise deadline.timed_out("waiting for another scrape's oauth2 token request")
        try:
            if self._token is None or not self._token.fresh():
                self._token = self._request(deadline)
            token = self._token
        finally:
            self._lock.release()
        return f"{token.type} {token.value}"

    def forget(self, header: str) -> None:
        """Drop the cached token if ``header`` carried it: the target refused it, so fetch another next time."""
        token = self._token
        if token is not None and header == f"{token.type} {token.value}":
            self._token = None

    def _request(self, deadline: _Deadline) -> _Token:
        config = self._config
        secret = _secret(config.client_secret, config.client_secret_file, "oauth2.client_secret")
        form = {"grant_type": "client_credentials"}
        if config.scopes:
            form["scope"] = " ".join(config.scopes)
        form.update(config.endpoint_params)
        # RFC 6749 2.3.1: id and secret are form-encoded before they go into HTTP basic auth, as Go does.
        basic = base64.b64encode(f"{quote_plus(config.client_id)}:{quote_plus(secret)}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Accept": "application/json", "User-Agent": self._user_agent}
        prefix = f"oauth2 token request to {config.token_url}: "
        asked_at = time.monotonic()
        with _translated(deadline, "waiting for the token endpoint", prefix=prefix, proxy=self._transport.proxy):
            request = requests.Request("POST", config.token_url, data=form, headers=headers).prepare()
            response = self._transport.send(request, deadline, "waiting for the token endpoint")
        try:
            body, _ = _read(response, deadline, _TOKEN_BODY_LIMIT)
        finally:
            response.close()
        if not 200 <= response.status_code < 300:
            raise HTTPStatusError(
                f"{prefix}HTTP {response.status_code} {response.reason}: "
                f"{_first_line(body, _credential_parts(headers['Authorization']))}; "
                "check oauth2.client_id, client_secret, scopes and endpoint_params",
                deadline.url, status=response.status_code,
            )
        return self._parse(body, response.headers.get("content-type", ""), asked_at, prefix, deadline.url)

    @staticmethod
    def _parse(body: bytes, content_type: str, asked_at: float, prefix: str, url: str) -> _Token:
        # Messages never quote the body: it holds the token.
        if content_type.startswith(("application/x-www-form-urlencoded", "text/plain")):
            fields: dict[str, object] = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        else:
            try:
                fields = json.loads(body)
            except ValueError:
                raise ScrapeError(f"{prefix}the answer is not a JSON token response "
                                  f"(Content-Type {content_type or 'not set'})", url) from None
        if not isinstance(fields, dict) or not isinstance(fields.get("access_token"), str) or not fields["access_token"]:
            raise ScrapeError(f"{prefix}the answer has no access_token", url)
        value = _check_header_safe(fields["access_token"], "the oauth2 access_token", None)
        token_type = str(fields.get("token_type") or "Bearer")
        if token_type.lower() == "bearer":
            token_type = "Bearer"
        try:
            lifetime = float(fields.get("expires_in") or 0)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            lifetime = 0.0
        # ... but a short-lived token is still used for at least half its life.
        expires_at = asked_at + lifetime - min(_TOKEN_EXPIRY_MARGIN_S, lifetime / 2) if lifetime > 0 else None
        return _Token(value, token_type, expires_at)

    def close(self) -> None:
        self._transport.close()


class _Credentials:
    """The Authorization header of one job, built afresh for every request so that rotated
    ``*_file`` secrets apply without a restart."""

    def __init__(self, config: HTTPClientConfig, user_agent: str) -> None:
        self._config = config
        self.oauth2 = _OAuth2Tokens(config.oauth2, user_agent) if config.oauth2 is not None else None
        names = ("bearer_token", "bearer_token_file", "basic_auth", "authorization", "oauth2")
        self.method = next((name for name in names if getattr(config, name) is not None), "none")

    def header(self, deadline: _Deadline) -> str | None:
        config = self._config
        if config.bearer_token is not None or config.bearer_token_file is not None:
            return "Bearer " + _header_secret(config.bearer_token, config.bearer_token_file, "bearer_token")
        if config.basic_auth is not None:
            basic = config.basic_auth
            password = _secret(basic.password, basic.password_file, "basic_auth.password")
            return "Basic " + base64.b64encode(f"{basic.username}:{password}".encode()).decode()
        if config.authorization is not None:
            auth = config.authorization
            return f"{auth.type} " + _header_secret(auth.credentials, auth.credentials_file, "authorization.credentials")
        if self.oauth2 is not None:
            return self.oauth2.header(deadline)
        return None


def _same_site(original: str, current: str) -> bool:
    """Whether credentials may go to ``current``: Go's rule for a redirect, the host or a subdomain of it."""
    first, now = urlsplit(original).hostname or "", urlsplit(current).hostname or ""
    return now == first or now.endswith("." + first)


# --------------------------------------------------------------------------- the client


#: Prepared requests a client keeps (~1.6 KB each, ~32 MB at most): a job of 4,000 targets × 5 profile types fits.
_PREPARED_CACHE_SIZE = 20_000


class TargetClient:
    """Fetches profiles for one scrape job; build it once per job and share it between greenlets."""

    def __init__(self, config: HTTPClientConfig, *, pool_size: int = 100, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self._config = config
        self._user_agent = user_agent
        # requests' default pool of 10 discards connections when more greenlets scrape at once.
        self._transport = _Transport(config.tls_config, config.proxy_url, "tls_config", pool_size)
        self._credentials = _Credentials(config, user_agent)
        self._prepared_requests: dict[tuple[str, str | None], requests.PreparedRequest] = {}
        if config.tls_config.insecure_skip_verify:
            log.warning("tls_config.insecure_skip_verify is set: the certificates of this job's targets are not verified")

    def __repr__(self) -> str:
        return (f"TargetClient(auth={self._credentials.method}, proxy={self._transport.proxy!r}, "
                f"server_name={self._config.tls_config.server_name!r}, "
                f"follow_redirects={self._config.follow_redirects})")

    def close(self) -> None:
        """Close pooled connections, the token endpoint's included."""
        self._transport.close()
        if self._credentials.oauth2 is not None:
            self._credentials.oauth2.close()

    def fetch(self, url: str, *, timeout_s: float, body_size_limit: int) -> FetchedBody:
        """GET ``url`` and return its body; anything but a whole 200 answer within ``timeout_s`` raises.

        Raises ScrapeTimeout, ConnectFailed, TLSError, TooManyRedirects, HTTPStatusError or BodyTooLarge
        (naming the URL), and SecretFileError when a ``*_file`` secret cannot be read.
        """
        started = time.monotonic()
        deadline = _Deadline(timeout_s, url)
        hops = [url]
        while True:
            current = hops[-1]
            authorization = self._credentials.header(deadline) if _same_site(url, current) else None
            response = self._send(current, authorization, deadline)
            try:
                status = response.status_code
                if status in _REDIRECT_STATUSES and "location" in response.headers:
                    hops.append(self._follow(response, hops))
                    continue
                if status != 200:
                    if status == 401 and authorization and self._credentials.oauth2 is not None:
                        self._credentials.oauth2.forget(authorization)
                    raise self._status_error(response, hops, deadline, authorization)
                body = self._read_body(response, deadline, body_size_limit)
                response.raw.release_conn()  # read to the end: the connection can serve the next scrape
            finally:
                response.close()
            headers = {name.lower(): value for name, value in response.headers.items()}
            return FetchedBody(status=status, headers=headers, body=body,
                               content_type=headers.get("content-type", ""),
                               elapsed_s=time.monotonic() - started)

    def _send(self, url: str, authorization: str | None, deadline: _Deadline) -> requests.Response:
        # No Accept-Encoding: the body must arrive as the target made it (Go's pprof is gzip already).
        with _translated(deadline, "waiting for the response", proxy=self._transport.proxy):
            return self._transport.send(self._prepared(url, authorization), deadline, "waiting for the response")

    def _prepared(self, url: str, authorization: str | None) -> requests.PreparedRequest:
        """The GET of ``url``, prepared once and copied per scrape: preparing (URL parsing, IDNA, quoting)
        cost a busy worker more CPU than the rest of the request's setup."""
        key = (url, authorization)
        prepared = self._prepared_requests.get(key)
        if prepared is None:
            if len(self._prepared_requests) >= _PREPARED_CACHE_SIZE:
                self._prepared_requests.clear()  # rotated tokens and departed targets do not pile up
            headers = {"User-Agent": self._user_agent}
            if authorization is not None:
                headers["Authorization"] = authorization
            prepared = requests.Request("GET", url, headers=headers).prepare()
            self._prepared_requests[key] = prepared
        return prepared.copy()

    def _follow(self, response: requests.Response, hops: list[str]) -> str:
        location = urljoin(hops[-1], response.headers["location"])
        if not self._config.follow_redirects:
            raise HTTPStatusError(
                f"HTTP {response.status_code} {response.reason} redirects to {location}, and follow_redirects "
                "is false; scrape that URL instead, or set follow_redirects: true",
                hops[0], status=response.status_code,
            )
        if location in hops:
            chain = " -> ".join([*hops[hops.index(location):], location])
            raise TooManyRedirects(f"redirect loop: {chain}", hops[0])
        if len(hops) > MAX_REDIRECTS:
            raise TooManyRedirects(f"stopped after {MAX_REDIRECTS} redirects, the last to {location}", hops[0])
        return location

    def _status_error(self, response: requests.Response, hops: list[str], deadline: _Deadline,
                      authorization: str | None) -> HTTPStatusError:
        try:
            peek, _ = _read(response, deadline, _ERROR_BODY_PEEK)
        except ScrapeError:
            peek = b""  # the status alone says what went wrong
        line = _first_line(peek, _credential_parts(authorization))
        where = f" from {hops[-1]} (redirected)" if len(hops) > 1 else ""
        message = f"HTTP {response.status_code} {response.reason}{where}" + (f": {line}" if line else "")
        return HTTPStatusError(message, hops[0], status=response.status_code)

    def _read_body(self, response: requests.Response, deadline: _Deadline, limit: int) -> bytes:
        length = _content_length(response)
        decoded = response.headers.get("content-encoding", "").strip().lower() in response.raw.CONTENT_DECODERS
        if length is not None and length > limit and not decoded:
            raise BodyTooLarge(f"Content-Length is {length} bytes, over body_size_limit of {limit} bytes; "
                               "raise body_size_limit if this profile is expected to be that large", deadline.url)
        body, more = _read(response, deadline, limit)
        if more:
            raise BodyTooLarge(f"body is over body_size_limit of {limit} bytes (stopped reading there); "
                               "raise body_size_limit if this profile is expected to be that large", deadline.url)
        return body
