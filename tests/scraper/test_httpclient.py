"""The HTTP client options that scrapes and pushes share (scraper.httpclient), each tried both ways
against real servers on 127.0.0.1: a scrape (TargetClient.fetch) and a push (PyroscopeReceiver.push)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from scraper.client import TargetClient
from scraper.config import HTTPClientConfig, parse_config
from scraper.errors import ConfigError, ConnectFailed, PushRejected, PushUnavailable, ScrapeError, SecretFileError
from scraper.httpclient import _NoProxy
from scraper.receivers import Profile, build_receiver
from scraper.receivers.pyroscope import PUSH_PATH, PyroscopeReceiver
from tests.conftest import DATA
from tests.scraper.client_servers import Exchange, ForwardProxy, Target

PROFILE = (DATA / "go" / "allocs_1.pb.gz").read_bytes()
PATH = "/debug/pprof/allocs"
#: a name only the test proxies know: a request that reaches its server went through a proxy
PROXIED_HOST = "pprof-target.test"


def _answer(exchange: Exchange) -> None:
    if exchange.command == "POST":
        exchange.reply(200, b"", {"Content-Type": "application/proto"})
    else:
        exchange.reply(200, PROFILE, {"Content-Type": "application/octet-stream"})


class Sender:
    """Sends one request to a server as a scrape or as a push, with the given HTTP client options."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._closers: list[Callable[[], None]] = []

    def send(self, base_url: str, **options: Any) -> None:
        """A scrape of ``base_url`` + PATH or a push to ``base_url``; raises what either raises."""
        if self.kind == "scrape":
            client = TargetClient(HTTPClientConfig.model_validate(options))
            self._closers.append(client.close)
            assert client.fetch(base_url + PATH, timeout_s=5, body_size_limit=1 << 20).body == PROFILE
        else:
            config = parse_config({"write": {"pyro": {"type": "pyroscope", "url": base_url, **options}}})
            receiver = build_receiver("pyro", config.write["pyro"])
            assert isinstance(receiver, PyroscopeReceiver)
            self._closers.append(receiver.close)
            receiver.push(Profile(id="p1", labels={"service_name": "api", "__name__": "memory"}, body=PROFILE,
                                  start=1.0, end=2.0, url="http://10.0.0.1:6060" + PATH))

    @property
    def path(self) -> str:
        return PATH if self.kind == "scrape" else PUSH_PATH

    def close(self) -> None:
        for close in self._closers:
            close()


@pytest.fixture(params=["scrape", "push"])
def sender(request: pytest.FixtureRequest) -> Iterator[Sender]:
    made = Sender(request.param)
    yield made
    made.close()


@pytest.fixture
def server() -> Iterator[Target]:
    target = Target()
    target.route(PATH, _answer)
    target.route(PUSH_PATH, _answer)
    yield target
    target.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[Callable[..., Target]]:
    started: list[Target] = []

    def start(client_ca: trustme.CA | None = None) -> Target:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", PROXIED_HOST).configure_cert(context)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(context)
        target = Target(tls=context)
        target.route(PATH, _answer)
        target.route(PUSH_PATH, _answer)
        started.append(target)
        return target

    yield start
    for target in started:
        target.close()


@pytest.fixture
def proxy(server: Target) -> Iterator[ForwardProxy]:
    forward = ForwardProxy(hosts={PROXIED_HOST: "127.0.0.1"})
    yield forward
    forward.close()


def base(target: Target, host: str = "127.0.0.1") -> str:
    return target.url("", host=host)


# --------------------------------------------------------------------------- headers


def test_http_headers_go_with_every_request_several_values_joined(sender: Sender, server: Target) -> None:
    sender.send(base(server), http_headers={"X-Scope-OrgID": ["team-a"], "X-Tags": ["a", "b"]})

    [seen] = server.requests
    assert (seen.headers["x-scope-orgid"], seen.headers["x-tags"]) == ("team-a", "a, b")


def test_http_headers_may_not_set_what_the_client_sets() -> None:
    with pytest.raises(ConfigError, match="http_headers: setting header 'Authorization' is not allowed"):
        parse_config({"scrape": {"api": {"targets": [{"__address__": "a:1"}], "forward_to": ["f"],
                                          "http_client_config": {"http_headers": {"Authorization": ["x"]}}}},
                      "write": {"f": {"type": "file"}}})


# --------------------------------------------------------------------------- proxies


def test_no_proxy_sends_a_listed_host_directly_and_others_through_proxy_url(
    sender: Sender, server: Target, proxy: ForwardProxy
) -> None:
    sender.send(base(server, PROXIED_HOST), proxy_url=proxy.url, no_proxy="other.test,10.0.0.0/8")
    assert [urlsplit(r.path).hostname for r in proxy.requests] == [PROXIED_HOST]

    # listed: sent directly, where the name does not resolve, so the proxy sees nothing more
    with pytest.raises((ConnectFailed, PushUnavailable), match=f"cannot resolve {PROXIED_HOST}"):
        sender.send(base(server, PROXIED_HOST), proxy_url=proxy.url, no_proxy=f".example,{PROXIED_HOST}")
    assert len(proxy.requests) == 1


def test_proxy_from_environment_uses_http_proxy_and_no_proxy(
    sender: Sender, server: Target, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "elsewhere.test")
    monkeypatch.delenv("no_proxy", raising=False)
    sender.send(base(server, PROXIED_HOST), proxy_from_environment=True)
    # Go's rule: a loopback address is never proxied
    sender.send(base(server), proxy_from_environment=True)

    assert [urlsplit(r.path).hostname for r in proxy.requests] == [PROXIED_HOST]
    assert len(server.requests) == 2


def test_without_proxy_from_environment_the_environment_is_ignored(
    sender: Sender, server: Target, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("http_proxy", proxy.url)
    sender.send(base(server))

    assert proxy.requests == []


def test_proxy_connect_header_goes_to_the_proxy_in_the_connect_of_an_https_request(
    sender: Sender, tls_server: Callable[..., Target], ca: trustme.CA, proxy: ForwardProxy
) -> None:
    target = tls_server()
    sender.send(base(target, PROXIED_HOST), proxy_url=proxy.url,
                proxy_connect_header={"X-Proxy-Tenant": ["t1"]},
                tls_config={"ca_pem": ca.cert_pem.bytes().decode()})

    [connect] = proxy.requests
    assert (connect.method, connect.path) == ("CONNECT", f"{PROXIED_HOST}:{target.port}")
    assert connect.headers["x-proxy-tenant"] == "t1"
    assert "x-proxy-tenant" not in target.requests[0].headers


@pytest.mark.parametrize(("options", "message"), [
    ({"no_proxy": "a.test"}, "no_proxy requires proxy_url"),
    ({"proxy_from_environment": True, "proxy_url": "http://p:1"}, "must not be set with proxy_from_environment"),
    ({"proxy_connect_header": {"X-A": ["1"]}}, "proxy_connect_header requires proxy_url"),
])
def test_proxy_options_that_contradict_each_other_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"write.pyro: .*{message}"):
        parse_config({"write": {"pyro": {"type": "pyroscope", "url": "http://p:4040", **options}}})


@pytest.mark.parametrize(("entry", "url", "excluded"), [
    ("example.com", "http://example.com/", True),
    ("example.com", "http://api.example.com/", True),
    ("example.com", "http://notexample.com/", False),
    (".example.com", "http://example.com/", False),
    (".example.com", "http://api.example.com/", True),
    ("*.example.com", "http://api.example.com/", True),
    ("example.com:8080", "http://example.com:8080/", True),
    ("example.com:8080", "http://example.com/", False),
    ("10.0.0.0/8", "http://10.1.2.3:6060/", True),
    ("10.0.0.0/8", "http://11.1.2.3:6060/", False),
    ("192.168.1.1", "https://192.168.1.1/", True),
    ("[2001:db8::1]:443", "https://[2001:db8::1]/", True),
    ("*", "http://anything.test/", True),
    ("other.test", "http://localhost:6060/", True),
    ("other.test", "http://127.0.0.2:6060/", True),
])
def test_no_proxy_matches_as_gos_httpproxy(entry: str, url: str, excluded: bool) -> None:
    assert _NoProxy(entry).excludes(urlsplit(url)) is excluded


# --------------------------------------------------------------------------- inline PEMs and the CA policy


def test_ca_pem_trusts_that_ca_alone(sender: Sender, tls_server: Callable[..., Target], ca: trustme.CA) -> None:
    target = tls_server()
    sender.send(base(target), tls_config={"ca_pem": ca.cert_pem.bytes().decode()})

    with pytest.raises((ScrapeError, PushUnavailable), match="signed by an unknown authority"):
        sender.send(base(target), tls_config={"ca_pem": trustme.CA().cert_pem.bytes().decode()})


def test_without_a_ca_the_systems_store_is_trusted_not_certifis(
    sender: Sender, tls_server: Callable[..., Target], ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tls_server()
    with pytest.raises((ScrapeError, PushUnavailable), match="signed by an unknown authority"):
        sender.send(base(target))

    # OpenSSL's default store, which SSL_CERT_FILE replaces; certifi's bundle would ignore it
    store = tmp_path / "system-ca.pem"
    ca.cert_pem.write_to_path(str(store))
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    sender.send(base(target))


def test_cert_pem_and_key_pem_present_a_client_certificate(
    sender: Sender, tls_server: Callable[..., Target], ca: trustme.CA
) -> None:
    target = tls_server(client_ca=ca)
    leaf = ca.issue_cert("scraper@example.com")
    tls = {"ca_pem": ca.cert_pem.bytes().decode(), "cert_pem": leaf.cert_chain_pems[0].bytes().decode(),
           "key_pem": leaf.private_key_pem.bytes().decode()}
    sender.send(base(target), tls_config=tls)

    assert len(target.requests) == 1


def test_an_encrypted_client_key_is_refused_alike_for_scrapes_and_pushes(
    sender: Sender, tls_server: Callable[..., Target], ca: trustme.CA, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue_cert("scraper@example.com")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pass"))
    tls = {"ca_pem": ca.cert_pem.bytes().decode(), "cert_pem": leaf.cert_chain_pems[0].bytes().decode(),
           "key_pem": encrypted.decode()}

    with pytest.raises((SecretFileError, PushUnavailable), match="unencrypted private key"):
        sender.send(base(tls_server(client_ca=ca)), tls_config=tls)


def test_a_pem_that_is_not_one_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="write.pyro.tls_config: .*ca_pem must hold PEM certificates"):
        parse_config({"write": {"pyro": {"type": "pyroscope", "url": "https://p:4040",
                                         "tls_config": {"ca_pem": "/etc/ssl/ca.pem"}}}})


# --------------------------------------------------------------------------- receivers: auth and redirects


def test_a_receiver_sends_authorization_credentials(server: Target, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("from-a-file\n")
    credentials.chmod(0o600)
    push = Sender("push")
    try:
        push.send(base(server), authorization={"type": "Token", "credentials": "inline"})
        push.send(base(server), authorization={"credentials_file": str(credentials)})
    finally:
        push.close()

    assert [r.headers["authorization"] for r in server.requests] == ["Token inline", "Bearer from-a-file"]


def test_a_receiver_gets_an_oauth2_token_and_sends_it(server: Target) -> None:
    def token(exchange: Exchange) -> None:
        assert b"grant_type=client_credentials" in exchange.seen.body
        exchange.reply(200, json.dumps({"access_token": "tok-1", "token_type": "bearer", "expires_in": 3600}).encode(),
                       {"Content-Type": "application/json"})

    server.route("/token", token)
    oauth2 = {"client_id": "pusher", "client_secret": "s3cret", "token_url": server.url("/token")}
    config = parse_config({"write": {"pyro": {"type": "pyroscope", "url": base(server), "oauth2": oauth2}}})
    receiver = build_receiver("pyro", config.write["pyro"])
    try:
        for _ in range(2):
            receiver.push(Profile(id="p1", labels={"service_name": "api", "__name__": "memory"}, body=PROFILE,
                                  start=1.0, end=2.0, url="http://10.0.0.1:6060" + PATH))
    finally:
        receiver.close()

    # one token, cached for the second push
    assert [urlsplit(r.path).path for r in server.requests] == ["/token", PUSH_PATH, PUSH_PATH]
    assert server.requests[-1].headers["authorization"] == "Bearer tok-1"


@pytest.mark.parametrize("status", [307, 308])
def test_a_receiver_follows_a_redirect_that_keeps_the_body(server: Target, status: int) -> None:
    server.route("/old" + PUSH_PATH, lambda exchange: exchange.reply(status, headers={"Location": PUSH_PATH}))
    push = Sender("push")
    try:
        push.send(server.url("/old"))
    finally:
        push.close()

    moved, pushed = server.requests
    assert (moved.method, pushed.method, pushed.path) == ("POST", "POST", PUSH_PATH)
    assert pushed.body == moved.body and pushed.body


def test_a_receiver_with_follow_redirects_false_reports_the_redirect(server: Target) -> None:
    server.route("/old" + PUSH_PATH, lambda exchange: exchange.reply(308, headers={"Location": PUSH_PATH}))
    push = Sender("push")
    try:
        with pytest.raises(PushRejected, match=f"redirected to '{PUSH_PATH}' \\(follow_redirects is false\\)"):
            push.send(server.url("/old"), follow_redirects=False)
    finally:
        push.close()

    assert len(server.requests) == 1
