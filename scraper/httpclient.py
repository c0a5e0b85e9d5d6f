"""Every outgoing HTTP request: scrapes, HTTP service discovery and pushes to Pyroscope go through
:class:`HTTPClient`, built from one ``HTTPClientConfig`` (Alloy's squashed HTTP client block).

    HTTPClient.request   one request: headers, credentials, proxy choice, redirects as configured
    Deadline             the whole request's time limit; every connect, wait and read gets what is left
    translated           the one place where requests, urllib3, socket and ssl errors become ScrapeErrors
    _Credentials         the Authorization header, built afresh for every request (``*_file`` secrets rotate)
    _OAuth2Tokens        the client-credentials grant, its token cached until shortly before expiry
    _TLS                 the SSLContext of a tls_config, rebuilt when one of its files changes
    _Transport           a requests adapter whose TLS is that context; sends one request, never follows

Trust: without ``ca_file``/``ca_pem`` the system's CA store is trusted (``ssl.create_default_context``),
as Go's crypto/tls does; with one, only that CA. Never certifi's bundle: a scrape and a push to
the same host trust the same certificates.

Everything here blocks in plain stdlib/requests calls, which gevent patches in the workers.
"""

from __future__ import annotations

import base64
import http.client
import importlib.metadata
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import (
    SplitResult,
    parse_qs,
    quote_plus,
    unquote,
    unquote_plus,
    urljoin,
    urlsplit,
    urlunsplit,
)

import requests
import socks
import urllib3
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from urllib3.util.ssl_match_hostname import CertificateError

from .errors import (
    ConfigError,
    ConnectFailed,
    HTTPStatusError,
    ScrapeError,
    ScrapeTimeout,
    SecretFileError,
    TLSError,
    TooManyRedirects,
)
from .httpconfig import HTTPClientConfig, OAuth2, TLSConfig

log = logging.getLogger(__name__)

try:
    _VERSION = importlib.metadata.version("pprof-scraper")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    _VERSION = "dev"

DEFAULT_USER_AGENT = f"pprof-scraper/{_VERSION}"

#: Go's http.Client gives up after 10 redirects; so do we.
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The redirects after which Go re-sends a POST's body; after the others it would send a GET without it.
_BODY_KEEPING_REDIRECTS = frozenset({307, 308})
_CHUNK = 64 * 1024
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
#: Credentials shorter than this are not cut out of messages: replacing every "1" would garble them.
_MIN_HIDDEN_LENGTH = 4

# urllib3 warns on every request whose certificate it did not verify; with insecure_skip_verify
# that is the operator's choice, said once when the client is made, not once per request.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

#: Secret files already warned about for being readable by group or others, so each is named once.
_warned_open_files: set[Path] = set()


# --------------------------------------------------------------------------- deadline and errors


class Deadline:
    """The end of one request: every connect, wait and read gets only the time left until it.

    ``timeout_field`` names the option that set the limit, ``peer`` what was asked, for messages.
    """

    def __init__(self, timeout_s: float, url: str, *, timeout_field: str = "scrape_timeout",
                 peer: str = "target") -> None:
        self.timeout_s = timeout_s
        self.url = url
        self.timeout_field = timeout_field
        self.peer = peer
        self._end = time.monotonic() + timeout_s

    def timed_out(self, stage: str, prefix: str = "") -> ScrapeTimeout:
        return ScrapeTimeout(
            f"{prefix}no complete answer within the {self.timeout_field.replace('_', ' ')} of {self.timeout_s:g}s ({stage}); "
            f"raise {self.timeout_field} if the {self.peer} is just slow", self.url,
        )

    def remaining(self, stage: str) -> float:
        """Seconds left; raises ScrapeTimeout once there are none."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.timed_out(stage)
        return left


def redact(url: str) -> str:
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


def _describe_tls(causes: list[BaseException], url: str, peer: str) -> str:
    mismatch = _first(causes, CertificateError)
    if mismatch is not None:
        # urllib3 says "hostname 'x' doesn't match 'a'" or "... doesn't match either of 'a', 'b'".
        said = re.search(r"hostname '([^']*)' doesn't match (?:either of )?(.*)", str(mismatch))
        asked = said.group(1) if said else urlsplit(url).hostname
        names = ", ".join(re.findall(r"'([^']*)'", said.group(2))) if said else ""
        return (f"certificate is for {names or 'no name'}, not {asked}; set tls_config.server_name to a name "
                f"the certificate covers, or address the {peer} by that name")
    verify = _first(causes, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        # OpenSSL's X509_V_ERR_*: 10 CERT_HAS_EXPIRED, 9 CERT_NOT_YET_VALID, 18-21 self-signed or unknown issuer.
        if verify.verify_code == 10:
            return f"certificate expired; the {peer} must renew it"
        if verify.verify_code == 9:
            return f"certificate is not yet valid; check the clocks of the {peer} and this worker"
        if verify.verify_code in (18, 19, 20, 21):
            return (f"certificate is signed by an unknown authority ({verify.verify_message}); "
                    "set tls_config.ca_file to the CA that signed it")
        return f"certificate verification failed: {verify.verify_message}"
    failure = _first(causes, ssl.SSLError)
    reason = getattr(failure, "reason", None) or ""
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return (f"the {peer} rejected our client certificate or wants one; "
                "set tls_config.cert_file and key_file to a certificate it trusts")
    if isinstance(failure, ssl.SSLEOFError) or "EOF" in reason:
        return (f"the {peer} closed the connection during the TLS handshake; if it requires a client "
                "certificate, set tls_config.cert_file and key_file")
    if reason == "WRONG_VERSION_NUMBER":
        return f"the {peer} does not speak TLS on this port; use http://"
    if "PROTOCOL_VERSION" in reason or reason == "UNSUPPORTED_PROTOCOL":
        return f"no TLS version in common with the {peer}; check tls_config.min_version"
    detail = reason or (failure.strerror if isinstance(failure, OSError) and failure.strerror else None)
    return f"TLS handshake failed: {detail or type(causes[-1]).__name__}"


def _describe_connection(causes: list[BaseException], url: str, peer: str) -> str:
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
        return f"the SOCKS proxy could not reach the {peer} ({refused_at_proxy.msg})"
    if _first(causes, ConnectionRefusedError):
        return "connection refused"
    if _first(causes, ConnectionResetError):
        return "the connection was reset by the other side"
    if _first(causes, http.client.RemoteDisconnected):
        return f"the {peer} closed the connection without answering"
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
def translated(deadline: Deadline, stage: str, *, prefix: str = "", proxy: str | None = None) -> Iterator[None]:
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
            suffix = f"; is the {deadline.peer} running and listening on this port?"
        if _first(causes, ssl.SSLError, CertificateError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
            raise TLSError(f"{prefix}{_describe_tls(causes, url, deadline.peer)}", url) from exc
        raise ConnectFailed(f"{prefix}{_describe_connection(causes, url, deadline.peer)}{suffix}", url) from exc


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


class _TLS:
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
        ca_field = "ca_pem" if config.ca_pem is not None else "ca_file"
        try:
            # With a CA given only that CA is trusted, as in Go; without one the system's CAs are.
            context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None,
                                                 cadata=config.ca_pem)
        except (OSError, ValueError) as exc:
            what = f"{self._where}.ca_file {config.ca_file}" if ca_field == "ca_file" else f"{self._where}.ca_pem"
            raise SecretFileError(f"{what} cannot be loaded as PEM certificates: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from exc
        # urllib3 then checks the name itself, against server_name when set, and its error names both sides.
        context.check_hostname = False
        if config.insecure_skip_verify:
            context.verify_mode = ssl.CERT_NONE
        if config.min_version is not None:
            with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated, but the config asks for them
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = _TLS_VERSIONS[config.min_version]
        if (config.cert_file or config.cert_pem) is not None:
            self._load_client_certificate(context)
        return context

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        config = self._config
        cert = f"cert_file {config.cert_file}" if config.cert_file else "cert_pem"
        key = f"key_file {config.key_file}" if config.key_file else "key_pem"
        # ssl loads a certificate and key only from files: PEMs given inline go to a private
        # temporary directory for as long as loading takes.
        with tempfile.TemporaryDirectory(prefix="pprof-scraper-tls-") as tmp:
            cert_path = config.cert_file or _write_private(Path(tmp, "cert.pem"), config.cert_pem or "")
            key_path = config.key_file or _write_private(
                Path(tmp, "key.pem"), config.key_pem.get_secret_value() if config.key_pem else "")
            try:
                # An empty password makes an encrypted key fail here instead of prompting on stdin.
                context.load_cert_chain(str(cert_path), str(key_path), password=b"")
            except OSError as exc:
                raise SecretFileError(
                    f"{self._where}.{cert} and {key} cannot be loaded as a certificate and its unencrypted "
                    f"private key: {exc.strerror or exc}"
                ) from exc


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


class _Adapter(HTTPAdapter):
    """An HTTPAdapter whose TLS is one SSLContext, whose server name (SNI and the name checked in
    the certificate) may differ from the URL's host, and which sends proxy_connect_header to proxies."""

    def __init__(self, pool_size: int, server_name: str | None, proxy_connect_header: dict[str, str]) -> None:
        self._context: ssl.SSLContext | None = None
        self._server_name = server_name
        self._proxy_connect_header = proxy_connect_header
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
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> tuple[dict[str, object], dict[str, object]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs: dict[str, object] = {"ssl_context": self._context}
        if self._server_name:
            pool_kwargs["server_hostname"] = self._server_name
        return host_params, pool_kwargs

    def cert_verify(self, conn: object, url: str, verify: object, cert: object) -> None:
        """Do nothing: requests would add certifi's CAs to the pool; the SSLContext alone says what to trust."""

    def proxy_headers(self, proxy: str) -> dict[str, str]:
        # Sent in the CONNECT of an https request; urllib3 adds them to a plain http request it forwards.
        return {**super().proxy_headers(proxy), **self._proxy_connect_header}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> object:
        if proxy.lower().startswith("https:"):  # verify an https proxy as Go does, with the same TLS settings
            proxy_kwargs.setdefault("proxy_ssl_context", self._context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


class _Transport:
    """A requests adapter with TLS settings; sends one request, never following redirects."""

    def __init__(self, tls: TLSConfig, where: str, pool_size: int,
                 proxy_connect_header: dict[str, str] | None = None) -> None:
        self._tls = _TLS(tls, where)
        self._adapter = _Adapter(pool_size, tls.server_name, proxy_connect_header or {})

    def send(self, request: requests.PreparedRequest, deadline: Deadline, stage: str,
             proxy: str | None) -> requests.Response:
        """Send ``request`` (through ``proxy`` if given) and return once the headers are in; the body is left to stream."""
        if urlsplit(request.url or "").scheme == "https" or (proxy or "").lower().startswith("https:"):
            # Built only when needed: loading the system's CAs takes a noticeable fraction of a second.
            self._adapter.use_context(self._tls.context())
        left = deadline.remaining(stage)
        # Not Session.send: it reads a redirect's whole body regardless of our deadline, keeps cookies and
        # consults the environment's proxies; here the config alone decides, as in Alloy.
        proxies = {"http": proxy, "https": proxy} if proxy else {}
        return self._adapter.send(request, stream=True, timeout=(left, left), proxies=proxies)

    def close(self) -> None:
        self._adapter.close()


# --------------------------------------------------------------------------- proxies


class _Proxies:
    """Which proxy a URL goes through: ``proxy_url`` unless ``no_proxy`` excludes the host, or the
    environment's HTTP_PROXY/HTTPS_PROXY/NO_PROXY with ``proxy_from_environment``, as Go's
    golang.org/x/net/http/httpproxy decides (read at every request, as Go reads it once per process)."""

    def __init__(self, proxy_url: str | None, no_proxy: str | None, from_environment: bool) -> None:
        self._proxy_url = proxy_url
        self._no_proxy = _NoProxy(no_proxy or "") if no_proxy else None
        self._from_environment = from_environment

    def for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        if self._from_environment:
            environment = urllib.request.getproxies_environment()
            proxy = environment.get(parts.scheme)
            if proxy and _NoProxy(environment.get("no", "")).excludes(parts):
                return None
            return proxy or None
        if self._proxy_url and self._no_proxy is not None and self._no_proxy.excludes(parts):
            return None
        return self._proxy_url


class _NoProxy:
    """A NO_PROXY list: IPs and CIDRs, domains (``example.com`` and its subdomains, ``.example.com``
    subdomains only), each optionally with a port, ``*`` for all; localhost and loopback addresses
    are never proxied, as in Go's httpproxy."""

    def __init__(self, spec: str) -> None:
        self._all = False
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        self._domains: list[tuple[str, bool, str]] = []  # (domain, subdomains only, port)
        for entry in (e.strip().lower() for e in spec.split(",")):
            if not entry:
                continue
            if entry == "*":
                self._all = True
                continue
            host, port = _split_port(entry)
            try:
                self._networks.append((ipaddress.ip_network(host, strict=False), port))
                continue
            except ValueError:
                pass
            if host.startswith("*."):
                host = host[1:]
            self._domains.append((host.lstrip("."), host.startswith("."), port))

    def excludes(self, parts: SplitResult) -> bool:
        host = (parts.hostname or "").lower()
        port = str(parts.port or {"http": 80, "https": 443}.get(parts.scheme) or "")
        if host == "localhost" or self._all:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            return ip.is_loopback or any(ip in net and want in ("", port) for net, want in self._networks)
        return any((host.endswith("." + domain) or (host == domain and not subs_only)) and want in ("", port)
                   for domain, subs_only, want in self._domains)


def _split_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, rest.lstrip(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


# --------------------------------------------------------------------------- bodies and messages


def read_body(response: requests.Response, deadline: Deadline, limit: int) -> tuple[bytes, bool]:
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
        with translated(deadline, stage):
            chunk = raw.read1(min(_CHUNK, limit + 1 - received), decode_content=decode)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    body = b"".join(chunks)
    return body[:limit], received > limit


def _set_read_timeout(raw: urllib3.HTTPResponse, seconds: float) -> None:
    """Let the next socket read wait no longer than the time left.

    The one place that reads private attributes, for want of a public way: http.client keeps the
    socket only in the response's file object once the server says it will close the connection
    (HTTPResponse.fp -> BufferedReader -> SocketIO). Without it, a stalled body would hold a read
    for the whole timeout again after the deadline.
    """
    buffered = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(buffered, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def credential_parts(authorization: str | None) -> list[str]:
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


def hide(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret long enough to tell apart replaced by ``<secret>``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_HIDDEN_LENGTH:
            text = text.replace(secret, "<secret>")
    return text


def first_line(body: bytes, secrets: Iterable[str] = ()) -> str:
    """The body's first line for an error message, with ``secrets`` cut out: a server may echo the
    credentials it was sent, and messages end up in status records, logs and Flower."""
    lines = hide(body.decode("utf-8", "replace"), secrets).strip().splitlines()
    line = "".join(ch if ch.isprintable() else "?" for ch in (lines[0].strip() if lines else ""))
    return line if len(line) <= 200 else line[:199] + "…"


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: what goes on the wire (credentials go in a header) and in messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _userinfo(url: str | None) -> tuple[str, str] | None:
    parts = urlsplit(url or "")
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


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

    def __init__(self, config: OAuth2, user_agent: str, where: str) -> None:
        self._config = config
        self._where = where
        self._user_agent = user_agent
        self._transport = _Transport(config.tls_config, f"{where}oauth2.tls_config", pool_size=2,
                                     proxy_connect_header=_joined(config.proxy_connect_header))
        self._proxies = _Proxies(config.proxy_url, config.no_proxy, config.proxy_from_environment)
        # Resolved at construction, after gevent's monkey-patching: a greenlet waits here while another
        # fetches the token, so an expiry does not send every concurrent scrape to the token endpoint.
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def __repr__(self) -> str:
        return f"_OAuth2Tokens(token_url={self._config.token_url!r}, client_id={self._config.client_id!r})"

    def header(self, deadline: Deadline) -> str:
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

    def _request(self, deadline: Deadline) -> _Token:
        config = self._config
        secret = _secret(config.client_secret, config.client_secret_file, f"{self._where}oauth2.client_secret")
        form = {"grant_type": "client_credentials"}
        if config.scopes:
            form["scope"] = " ".join(config.scopes)
        form.update(config.endpoint_params)
        # RFC 6749 2.3.1: id and secret are form-encoded before they go into HTTP basic auth, as Go does.
        basic = base64.b64encode(f"{quote_plus(config.client_id)}:{quote_plus(secret)}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Accept": "application/json", "User-Agent": self._user_agent}
        prefix = f"oauth2 token request to {config.token_url}: "
        asked_at = time.monotonic()
        proxy = self._proxies.for_url(config.token_url)
        with translated(deadline, "waiting for the token endpoint", prefix=prefix, proxy=redact(proxy) if proxy else None):
            request = requests.Request("POST", config.token_url, data=form, headers=headers).prepare()
            response = self._transport.send(request, deadline, "waiting for the token endpoint", proxy)
        try:
            body, _ = read_body(response, deadline, _TOKEN_BODY_LIMIT)
        finally:
            response.close()
        if not 200 <= response.status_code < 300:
            raise HTTPStatusError(
                f"{prefix}HTTP {response.status_code} {response.reason}: "
                f"{first_line(body, credential_parts(headers['Authorization']))}; "
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
        access_token = fields.get("access_token") if isinstance(fields, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise ScrapeError(f"{prefix}the answer has no access_token", url)
        value = _check_header_safe(access_token, "the oauth2 access_token", None)
        token_type = str(fields.get("token_type") or "Bearer")
        if token_type.lower() == "bearer":
            token_type = "Bearer"  # noqa: S105 - a scheme name, not a secret
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
    """The Authorization header of one client, built afresh for every request so that rotated
    ``*_file`` secrets apply without a restart."""

    def __init__(self, config: HTTPClientConfig, user_agent: str, where: str) -> None:
        self._config = config
        self._where = where
        self.oauth2 = _OAuth2Tokens(config.oauth2, user_agent, where) if config.oauth2 is not None else None
        names = ("bearer_token", "bearer_token_file", "basic_auth", "authorization", "oauth2")
        self.method = next((name for name in names if getattr(config, name) is not None), "none")

    def header(self, deadline: Deadline, userinfo: tuple[str, str] | None) -> str | None:
        """The header for one request; ``userinfo`` (from the URL) is sent as basic auth when nothing
        else is configured, as Go's http.Client does."""
        config, where = self._config, self._where
        if config.bearer_token is not None or config.bearer_token_file is not None:
            return "Bearer " + _header_secret(config.bearer_token, config.bearer_token_file, f"{where}bearer_token")
        if config.basic_auth is not None:
            basic = config.basic_auth
            password = _secret(basic.password, basic.password_file, f"{where}basic_auth.password")
            return _basic(basic.username, password)
        if config.authorization is not None:
            auth = config.authorization
            return f"{auth.type} " + _header_secret(auth.credentials, auth.credentials_file,
                                                    f"{where}authorization.credentials")
        if self.oauth2 is not None:
            return self.oauth2.header(deadline)
        if userinfo is not None:
            return _basic(*userinfo)
        return None

    def close(self) -> None:
        if self.oauth2 is not None:
            self.oauth2.close()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _same_site(original: str, current: str) -> bool:
    """Whether credentials may go to ``current``: Go's rule for a redirect, the host or a subdomain of it."""
    first, now = urlsplit(original).hostname or "", urlsplit(current).hostname or ""
    return now == first or now.endswith("." + first)


# --------------------------------------------------------------------------- the client


def _joined(headers: dict[str, list[SecretStr]]) -> dict[str, str]:
    """Header values as sent: a header given several values is sent once, its values joined by
    ", " (RFC 9110 5.3 makes that the same as repeating it; requests sends each name once)."""
    return {name: ", ".join(v.get_secret_value() for v in values) for name, values in headers.items()}


#: Prepared GETs a client keeps (~1.6 KB each, ~32 MB at most): a job of 4,000 targets × 5 profile types fits.
_PREPARED_CACHE_SIZE = 20_000


@dataclass
class Reply:
    """The answer to :meth:`HTTPClient.request`: headers in, body left to stream (close ``response``)."""

    response: requests.Response
    #: the URL asked first, then every redirect followed
    hops: list[str]
    #: what of the request's credentials a server could echo: cut from any message that quotes the answer
    secrets: list[str] = field(repr=False)


class HTTPClient:
    """Makes the requests of one ``HTTPClientConfig`` (a scrape job's, an HTTP SD config's, a
    receiver's): one connection pool, one TLS context, one oauth2 token, shared by greenlets.

    ``where`` prefixes the config fields that messages name (``oauth2.``, say, for a nested block).
    """

    def __init__(self, config: HTTPClientConfig, *, pool_size: int = 10, user_agent: str = DEFAULT_USER_AGENT,
                 where: str = "") -> None:
        self.config = config
        self._user_agent = user_agent
        self._headers = _joined(config.http_headers)
        self._secrets = [*self._headers.values(), *_joined(config.proxy_connect_header).values()]
        # requests' default pool of 10 discards connections when more greenlets send at once.
        self._transport = _Transport(config.tls_config, f"{where}tls_config", pool_size,
                                     proxy_connect_header=_joined(config.proxy_connect_header))
        self._proxies = _Proxies(config.proxy_url, config.no_proxy, config.proxy_from_environment)
        self._credentials = _Credentials(config, user_agent, where)
        self._prepared_requests: dict[tuple[str, str | None], requests.PreparedRequest] = {}

    def __repr__(self) -> str:
        proxy = "environment" if self.config.proxy_from_environment else redact(self.config.proxy_url or "") or None
        return (f"HTTPClient(auth={self._credentials.method}, proxy={proxy!r}, "
                f"server_name={self.config.tls_config.server_name!r}, "
                f"follow_redirects={self.config.follow_redirects})")

    def close(self) -> None:
        """Close pooled connections, the token endpoint's included."""
        self._transport.close()
        self._credentials.close()

    def request(self, method: str, url: str, deadline: Deadline, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, params: list[tuple[str, str]] | None = None) -> Reply:
        """Send one request and return once the final answer's headers are in.

        Redirects are followed as Go's http.Client does when ``follow_redirects`` is true (credentials
        only to the same host or its subdomains; a POST only after 307 and 308, which keep its body);
        any other redirect is returned for the caller to report. Raises ScrapeTimeout, ConnectFailed,
        TLSError or TooManyRedirects naming ``deadline.url``, and SecretFileError when a secret cannot be read.
        """
        hops = [without_userinfo(url)]
        userinfo = _userinfo(url)
        stage = "waiting for the response"
        while True:
            current = hops[-1]
            authorization = self._credentials.header(deadline, userinfo) if _same_site(hops[0], current) else None
            prepared = self._prepared(method, current, authorization, body, headers, params)
            proxy = self._proxies.for_url(current)
            with translated(deadline, stage, proxy=redact(proxy) if proxy else None):
                response = self._transport.send(prepared, deadline, stage, proxy)
            status = response.status_code
            follow = self.config.follow_redirects and (body is None or status in _BODY_KEEPING_REDIRECTS)
            if status in REDIRECT_STATUSES and "location" in response.headers and follow:
                response.close()
                hops.append(self._next_hop(hops, urljoin(current, response.headers["location"])))
                params = None  # the Location is the whole next URL
                continue
            if status == 401 and authorization and self._credentials.oauth2 is not None:
                self._credentials.oauth2.forget(authorization)  # refused: fetch another token next time
            secrets = [*credential_parts(authorization), *self._secrets, *(userinfo or ())]
            return Reply(response, hops, secrets)

    @staticmethod
    def _next_hop(hops: list[str], location: str) -> str:
        if location in hops:
            chain = " -> ".join([*hops[hops.index(location):], location])
            raise TooManyRedirects(f"redirect loop: {chain}", hops[0])
        if len(hops) > MAX_REDIRECTS:
            raise TooManyRedirects(f"stopped after {MAX_REDIRECTS} redirects, the last to {location}", hops[0])
        return location

    def _prepared(self, method: str, url: str, authorization: str | None, body: bytes | None,
                  headers: dict[str, str] | None, params: list[tuple[str, str]] | None) -> requests.PreparedRequest:
        """The request, prepared once and copied per request when it is a plain GET: preparing (URL
        parsing, IDNA, quoting) cost a busy worker more CPU than the rest of a scrape's setup."""
        cacheable = method == "GET" and body is None and not headers and not params
        key = (url, authorization)
        prepared = self._prepared_requests.get(key) if cacheable else None
        if prepared is None:
            # No Accept-Encoding: a body must arrive as the server made it (Go's pprof is gzip already).
            all_headers = {"User-Agent": self._user_agent, **self._headers, **(headers or {})}
            if authorization is not None:
                all_headers["Authorization"] = authorization
            prepared = requests.Request(method, url, headers=all_headers, data=body, params=params).prepare()
            if cacheable:
                if len(self._prepared_requests) >= _PREPARED_CACHE_SIZE:
                    self._prepared_requests.clear()  # rotated tokens and departed targets do not pile up
                self._prepared_requests[key] = prepared
        return prepared.copy() if cacheable else prepared
