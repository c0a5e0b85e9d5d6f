"""The HTTP client of a scrape job: one GET within one deadline, every http_client_config option honoured,
every failure a named error. Real servers on 127.0.0.1, certificates made by trustme."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import logging
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
import trustme

from scraper.client import FetchedBody, TargetClient
from scraper.config import HTTPClientConfig
from scraper.errors import (
    BodyTooLarge,
    ConnectFailed,
    HTTPStatusError,
    ScrapeTimeout,
    SecretFileError,
    TLSError,
    TooManyRedirects,
)
from tests.conftest import DATA, free_port, wait_until
from tests.scraper.client_servers import Exchange, ForwardProxy, RawServer, Socks5Proxy, Target, read_request_head

PROFILE = (DATA / "go" / "allocs_1.pb.gz").read_bytes()
CPU_IN_USE = (DATA / "bad" / "text_cpu_profiling_in_use.txt").read_bytes()
PATH = "/debug/pprof/allocs"
LIMIT = 10 * 1024 * 1024


def serve_profile(exchange: Exchange) -> None:
    exchange.reply(200, PROFILE, {"Content-Type": "application/octet-stream"})


def requiring(header: str, expected: str) -> Callable[[Exchange], None]:
    """A route that serves the profile only when the request's ``header`` is ``expected``."""

    def answer(exchange: Exchange) -> None:
        if exchange.headers.get(header) == expected:
            serve_profile(exchange)
        else:
            exchange.reply(401, b"Unauthorized\n")

    return answer


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_file(path: Path, content: str) -> Path:
    path.write_text(content)
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    server.route(PATH, serve_profile)
    yield server
    server.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., TargetClient]]:
    clients: list[TargetClient] = []

    def make(**http_client_config: object) -> TargetClient:
        client = TargetClient(HTTPClientConfig.model_validate(http_client_config))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def fetch(client: TargetClient, url: str, timeout_s: float = 2.0, limit: int = LIMIT) -> FetchedBody:
    return client.fetch(url, timeout_s=timeout_s, body_size_limit=limit)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def client_cert(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    leaf = ca.issue_cert("scraper@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return {"cert_file": str(cert), "key_file": str(key)}


@pytest.fixture
def tls_target(ca: trustme.CA) -> Iterator[Callable[..., Target]]:
    """Start an HTTPS target serving the profile with a certificate from ``ca`` for ``names``."""
    servers: list[Target] = []

    def start(*names: str, expired: bool = False, client_ca: trustme.CA | None = None,
              max_version: ssl.TLSVersion | None = None, sni_seen: list[str] | None = None) -> Target:
        now = datetime.datetime.now(datetime.UTC)
        dates = {"not_before": now - datetime.timedelta(days=2), "not_after": now - datetime.timedelta(days=1)}
        leaf = ca.issue_cert(*(names or ("127.0.0.1",)), **(dates if expired else {}))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(context)
        if max_version is not None:
            context.maximum_version = max_version
        if sni_seen is not None:
            context.sni_callback = lambda sock, name, ctx: sni_seen.append(name)  # type: ignore[assignment, misc, return-value]
        server = Target(tls=context)
        server.route(PATH, serve_profile)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# --------------------------------------------------------------------------- a plain scrape


def test_returns_the_body_of_a_200_byte_for_byte(target: Target, make_client: Callable[..., TargetClient]) -> None:
    fetched = fetch(make_client(), target.url(PATH))

    assert fetched.body == PROFILE
    assert fetched.content_type == "application/octet-stream"


def test_asks_for_no_compression_and_names_itself(target: Target, make_client: Callable[..., TargetClient]) -> None:
    fetch(make_client(), target.url(PATH))

    headers = target.requests[0].headers
    assert "gzip" not in headers.get("accept-encoding", "")
    assert headers["user-agent"].startswith("pprof-scraper/")
    assert "authorization" not in headers


def test_decodes_a_body_only_when_the_server_sets_content_encoding(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/encoded", lambda ex: ex.reply(200, gzip.compress(PROFILE), {"Content-Encoding": "gzip"}))
    client = make_client()

    assert fetch(client, target.url("/encoded")).body == PROFILE
    assert fetch(client, target.url(PATH)).body == PROFILE  # gzip without Content-Encoding stays gzip


def test_reuses_the_connection_for_the_next_scrape(target: Target, make_client: Callable[..., TargetClient]) -> None:
    client = make_client()
    fetch(client, target.url(PATH))
    fetch(client, target.url(PATH))

    assert target.requests[0].client_port == target.requests[1].client_port


GEVENT_WORKER = """
from gevent import monkey; monkey.patch_all()
import json, sys, time
import gevent
from scraper.client import TargetClient
from scraper.config import HTTPClientConfig
from scraper.errors import ScrapeTimeout

ok_url, stall_url = sys.argv[1:]
client = TargetClient(HTTPClientConfig(), pool_size=50)

def scrape(url, timeout_s):
    started = time.monotonic()
    try:
        result = len(client.fetch(url, timeout_s=timeout_s, body_size_limit=10**7).body)
    except ScrapeTimeout:
        result = "timeout"
    return result, started, time.monotonic()

jobs = [gevent.spawn(scrape, ok_url, 10) for _ in range(50)] + [gevent.spawn(scrape, stall_url, 0.5) for _ in range(10)]
gevent.joinall(jobs)
print(json.dumps([job.value for job in jobs]))
"""


def test_greenlets_under_gevent_share_the_client_and_a_stalled_target_holds_up_no_one(
    target: Target,
) -> None:
    def stall(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Length": "100"})
        target.stopping.wait()

    target.route("/stall", stall)
    repo = Path(__file__).resolve().parents[2]

    run = subprocess.run([sys.executable, "-c", GEVENT_WORKER, target.url(PATH), target.url("/stall")],
                         cwd=repo, capture_output=True, text=True, timeout=30, check=True)

    outcome = json.loads(run.stdout)
    assert [result for result, _, _ in outcome] == [len(PROFILE)] * 50 + ["timeout"] * 10
    # the ten stalled scrapes waited at the same time: the last began before the first ended
    stalled = outcome[50:]
    assert max(began for _, began, _ in stalled) < min(ended for _, _, ended in stalled)


# --------------------------------------------------------------------------- status


def test_go_refusing_a_second_cpu_profile_is_a_status_error_quoting_its_text(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/debug/pprof/profile", lambda ex: ex.reply(500, CPU_IN_USE, {"Content-Type": "text/plain"}))
    url = target.url("/debug/pprof/profile?seconds=14")

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(), url)

    assert caught.value.status == 500
    assert caught.value.url == url
    assert "HTTP 500 Internal Server Error: Could not enable CPU profiling: cpu profiling already in use" in str(caught.value)


def test_a_status_error_quotes_only_the_first_200_characters_of_the_first_line(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/long", lambda ex: ex.reply(503, b"x" * 500 + b"\nsecond line\n"))

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(), target.url("/long"))

    assert "x" * 199 + "…" in str(caught.value)
    assert "x" * 201 not in str(caught.value)
    assert "second line" not in str(caught.value)


def test_a_success_other_than_200_is_a_status_error(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route("/empty", lambda ex: ex.reply(204))

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(), target.url("/empty"))

    assert caught.value.status == 204


# --------------------------------------------------------------------------- body size


def test_a_body_exactly_at_the_limit_is_accepted(target: Target, make_client: Callable[..., TargetClient]) -> None:
    assert fetch(make_client(), target.url(PATH), limit=len(PROFILE)).body == PROFILE


def test_a_content_length_over_the_limit_fails_before_the_body_is_read(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    def huge_header_short_body(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Length": str(10 * 1024**3)})
        exchange.wfile.write(b"short")
        exchange.wfile.flush()
        target.stopping.wait()

    target.route("/huge", huge_header_short_body)

    with pytest.raises(BodyTooLarge, match=r"Content-Length is 10737418240 bytes, over body_size_limit of 1024 bytes"):
        fetch(make_client(), target.url("/huge"), timeout_s=5, limit=1024)


def test_a_chunked_body_over_the_limit_fails_and_reading_stops_at_the_limit(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    hung_up = threading.Event()

    def endless_chunks(exchange: Exchange) -> None:
        exchange.start(200, {"Transfer-Encoding": "chunked"})
        try:
            while not target.stopping.is_set():
                exchange.wfile.write(b"4000\r\n" + b"p" * 0x4000 + b"\r\n")
                exchange.wfile.flush()
        except OSError:
            hung_up.set()

    target.route("/endless", endless_chunks)

    with pytest.raises(BodyTooLarge, match="over body_size_limit of 100000 bytes"):
        fetch(make_client(), target.url("/endless"), timeout_s=5, limit=100_000)
    wait_until(hung_up.is_set, timeout=5, message="the server to see the client hang up")


def test_a_body_cut_short_of_its_content_length_is_a_connection_failure(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    def cut_short(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Length": "1000", "Connection": "close"})
        exchange.wfile.write(PROFILE[:10])
        exchange.close_connection = True

    target.route("/cut", cut_short)

    with pytest.raises(ConnectFailed, match="closed after 10 bytes of the body, 990 more were expected"):
        fetch(make_client(), target.url("/cut"))


# --------------------------------------------------------------------------- the whole-request deadline


def test_a_server_that_accepts_and_never_answers_times_out(make_client: Callable[..., TargetClient]) -> None:
    silent = RawServer(lambda conn, stopping: stopping.wait())
    try:
        # the server never answers: only the deadline can end the request
        with pytest.raises(ScrapeTimeout, match=r"within the scrape timeout of 0\.5s \(waiting for the response\)"):
            fetch(make_client(), silent.url(PATH), timeout_s=0.5)
    finally:
        silent.close()


def test_a_body_that_trickles_after_late_headers_times_out_at_the_deadline(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    def late_then_trickle(exchange: Exchange) -> None:
        target.stopping.wait(1.6)
        exchange.start(200, {"Content-Length": str(len(PROFILE))})
        try:
            # a byte every 0.5 s: no read ever waits its own 2 s, so only the request's deadline can end it
            for i in range(len(PROFILE)):
                exchange.wfile.write(PROFILE[i:i + 1])
                exchange.wfile.flush()
                if target.stopping.wait(0.5):
                    return
        except OSError:
            return  # the client gave up, as it should

    target.route("/trickle", late_then_trickle)
    with pytest.raises(ScrapeTimeout, match="reading the body"):
        fetch(make_client(), target.url("/trickle"), timeout_s=2.0)


def test_the_timeout_covers_the_whole_request_even_when_bytes_keep_trickling(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    def trickle(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Length": str(len(PROFILE))})
        for byte in PROFILE:
            if target.stopping.wait(0.2):
                return
            exchange.wfile.write(bytes([byte]))
            exchange.wfile.flush()

    target.route("/trickle", trickle)

    with pytest.raises(ScrapeTimeout, match=r"reading the body, (\d+) bytes so far") as caught:
        fetch(make_client(), target.url("/trickle"), timeout_s=1.0)
    # cut off while the body was still arriving, a byte every 0.2 s
    received = int(re.search(r"(\d+) bytes so far", str(caught.value)).group(1))  # type: ignore[union-attr]
    assert received < len(PROFILE)


# --------------------------------------------------------------------------- connections


def test_a_refused_connection_is_a_connection_failure(make_client: Callable[..., TargetClient]) -> None:
    url = f"http://127.0.0.1:{free_port()}{PATH}"

    with pytest.raises(ConnectFailed, match="connection refused") as caught:
        fetch(make_client(), url)

    assert caught.value.url == url


def test_a_reset_connection_is_a_connection_failure(make_client: Callable[..., TargetClient]) -> None:
    def reset(conn: socket.socket, stopping: threading.Event) -> None:
        read_request_head(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = RawServer(reset)
    try:
        with pytest.raises(ConnectFailed, match="reset"):
            fetch(make_client(), server.url(PATH))
    finally:
        server.close()


def test_an_unresolvable_name_is_a_connection_failure(make_client: Callable[..., TargetClient]) -> None:
    with pytest.raises(ConnectFailed, match="cannot resolve no-such-target.invalid"):
        fetch(make_client(), f"http://no-such-target.invalid:6060{PATH}")


# --------------------------------------------------------------------------- TLS


def test_verifies_the_target_against_ca_file(tls_target: Callable[..., Target], ca_file: str,
                                             make_client: Callable[..., TargetClient]) -> None:
    server = tls_target("127.0.0.1")

    assert fetch(make_client(tls_config={"ca_file": ca_file}), server.url(PATH)).body == PROFILE


def test_a_certificate_from_an_unknown_authority_is_a_tls_error(
    tls_target: Callable[..., Target], make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("127.0.0.1")

    with pytest.raises(TLSError, match="signed by an unknown authority.*set tls_config.ca_file"):
        fetch(make_client(), server.url(PATH))


def test_server_name_sets_sni_and_the_name_checked_in_the_certificate(
    tls_target: Callable[..., Target], ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    sni: list[str] = []
    server = tls_target("pprof.internal", sni_seen=sni)
    client = make_client(tls_config={"ca_file": ca_file, "server_name": "pprof.internal"})

    assert fetch(client, server.url(PATH)).body == PROFILE
    assert sni == ["pprof.internal"]


def test_without_server_name_a_certificate_for_another_name_is_a_tls_error_naming_both(
    tls_target: Callable[..., Target], ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("pprof.internal")

    with pytest.raises(TLSError, match="certificate is for pprof.internal, not 127.0.0.1"):
        fetch(make_client(tls_config={"ca_file": ca_file}), server.url(PATH))


def test_an_expired_certificate_is_a_tls_error_saying_so(
    tls_target: Callable[..., Target], ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("127.0.0.1", expired=True)

    with pytest.raises(TLSError, match="certificate expired"):
        fetch(make_client(tls_config={"ca_file": ca_file}), server.url(PATH))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_skip_verify_accepts_any_certificate_and_warns_once(
    tls_target: Callable[..., Target], make_client: Callable[..., TargetClient], caplog: pytest.LogCaptureFixture
) -> None:
    server = tls_target("pprof.internal", expired=True)
    with caplog.at_level(logging.WARNING, logger="scraper.client"):
        client = make_client(tls_config={"insecure_skip_verify": True})
        fetch(client, server.url(PATH))
        fetch(client, server.url(PATH))

    assert [r.message for r in caplog.records if "insecure_skip_verify" in r.message] == [
        "tls_config.insecure_skip_verify is set: the certificates of this job's targets are not verified"
    ]


def test_presents_the_client_certificate_a_target_requires(
    tls_target: Callable[..., Target], ca: trustme.CA, ca_file: str, client_cert: dict[str, str],
    make_client: Callable[..., TargetClient],
) -> None:
    server = tls_target("127.0.0.1", client_ca=ca)

    assert fetch(make_client(tls_config={"ca_file": ca_file, **client_cert}), server.url(PATH)).body == PROFILE


def test_without_a_client_certificate_a_target_requiring_one_is_a_tls_error(
    tls_target: Callable[..., Target], ca: trustme.CA, ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("127.0.0.1", client_ca=ca)

    with pytest.raises(TLSError, match="client certificate"):
        fetch(make_client(tls_config={"ca_file": ca_file}), server.url(PATH))


def test_min_version_refuses_an_older_tls(
    tls_target: Callable[..., Target], ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("127.0.0.1", max_version=ssl.TLSVersion.TLSv1_2)

    assert fetch(make_client(tls_config={"ca_file": ca_file, "min_version": "TLS12"}), server.url(PATH)).body == PROFILE
    with pytest.raises(TLSError, match="no TLS version in common"):
        fetch(make_client(tls_config={"ca_file": ca_file, "min_version": "TLS13"}), server.url(PATH))


def test_a_replaced_ca_file_applies_without_a_new_client(
    tls_target: Callable[..., Target], ca_file: str, tmp_path: Path, make_client: Callable[..., TargetClient]
) -> None:
    server = tls_target("127.0.0.1")
    rotating = tmp_path / "rotating-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(rotating))
    client = make_client(tls_config={"ca_file": str(rotating)})
    with pytest.raises(TLSError):
        fetch(client, server.url(PATH))

    rotating.write_bytes(Path(ca_file).read_bytes())

    assert fetch(client, server.url(PATH)).body == PROFILE


def test_a_missing_ca_file_is_a_secret_file_error_naming_it(
    tls_target: Callable[..., Target], tmp_path: Path, make_client: Callable[..., TargetClient]
) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"

    with pytest.raises(SecretFileError, match=f"tls_config.ca_file {missing} cannot be read: No such file"):
        fetch(make_client(tls_config={"ca_file": str(missing)}), tls_target().url(PATH))


# --------------------------------------------------------------------------- authentication


def test_bearer_token_is_sent_as_a_bearer_authorization(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route(PATH, requiring("authorization", "Bearer s3cr3t"))

    assert fetch(make_client(bearer_token="s3cr3t"), target.url(PATH)).body == PROFILE


def test_bearer_token_file_is_read_at_every_request(
    target: Target, tmp_path: Path, make_client: Callable[..., TargetClient]
) -> None:
    token = secret_file(tmp_path / "token", "first-token\n")
    client = make_client(bearer_token_file=str(token))
    fetch(client, target.url(PATH))
    secret_file(token, "rotated-token\n")
    fetch(client, target.url(PATH))

    assert [r.headers["authorization"] for r in target.requests] == ["Bearer first-token", "Bearer rotated-token"]


def test_a_missing_secret_file_is_a_secret_file_error_naming_the_path(
    target: Target, tmp_path: Path, make_client: Callable[..., TargetClient]
) -> None:
    missing = tmp_path / "no-token"

    with pytest.raises(SecretFileError, match=f"bearer_token_file {missing} cannot be read: No such file"):
        fetch(make_client(bearer_token_file=str(missing)), target.url(PATH))
    assert target.requests == []


def test_a_secret_file_with_more_than_one_line_is_refused_without_quoting_it(
    target: Target, tmp_path: Path, make_client: Callable[..., TargetClient]
) -> None:
    token = secret_file(tmp_path / "token", "sekrit-line-one\nsekrit-line-two\n")

    with pytest.raises(SecretFileError, match=f"bearer_token_file {token} contains a line break") as caught:
        fetch(make_client(bearer_token_file=str(token)), target.url(PATH))
    assert "sekrit" not in str(caught.value)
    assert target.requests == []


def test_a_secret_file_readable_by_others_is_used_with_one_warning(
    target: Target, tmp_path: Path, make_client: Callable[..., TargetClient], caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "open-token"
    token.write_text("t0ken")
    token.chmod(0o644)
    client = make_client(bearer_token_file=str(token))
    with caplog.at_level(logging.WARNING, logger="scraper.client"):
        fetch(client, target.url(PATH))
        fetch(client, target.url(PATH))

    warned = [r.message for r in caplog.records if str(token) in r.message]
    assert warned == [f"bearer_token_file {token} is readable by group or others (mode 644); chmod 600 it"]
    assert target.requests[-1].headers["authorization"] == "Bearer t0ken"


def test_basic_auth_with_a_password(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route(PATH, requiring("authorization", basic("scraper", "pa:ss")))

    assert fetch(make_client(basic_auth={"username": "scraper", "password": "pa:ss"}), target.url(PATH)).body == PROFILE


def test_basic_auth_with_a_password_file(target: Target, tmp_path: Path, make_client: Callable[..., TargetClient]) -> None:
    target.route(PATH, requiring("authorization", basic("scraper", "from-file")))
    password = secret_file(tmp_path / "password", "from-file\n")

    client = make_client(basic_auth={"username": "scraper", "password_file": str(password)})

    assert fetch(client, target.url(PATH)).body == PROFILE


def test_authorization_sends_its_type_and_credentials(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route(PATH, requiring("authorization", "Token abc123"))

    assert fetch(make_client(authorization={"type": "Token", "credentials": "abc123"}), target.url(PATH)).body == PROFILE


def test_authorization_credentials_file(target: Target, tmp_path: Path, make_client: Callable[..., TargetClient]) -> None:
    target.route(PATH, requiring("authorization", "Bearer from-file"))
    credentials = secret_file(tmp_path / "credentials", "from-file")

    assert fetch(make_client(authorization={"credentials_file": str(credentials)}), target.url(PATH)).body == PROFILE


def test_secrets_never_appear_in_errors_logs_or_repr(
    target: Target, make_client: Callable[..., TargetClient], caplog: pytest.LogCaptureFixture
) -> None:
    target.route(PATH, lambda ex: ex.reply(401, b"Unauthorized\n"))
    clients = [
        make_client(bearer_token="sekrit-bearer"),
        make_client(basic_auth={"username": "u", "password": "sekrit-password"}),
        make_client(authorization={"type": "Token", "credentials": "sekrit-credentials"}),
        make_client(proxy_url="http://user:sekrit-proxy@127.0.0.1:1"),
    ]
    texts = []
    with caplog.at_level(logging.DEBUG):
        for client in clients:
            with pytest.raises((HTTPStatusError, ConnectFailed)) as caught:
                fetch(client, target.url(PATH))
            texts += [str(caught.value), repr(caught.value), repr(client)]
    texts.append(caplog.text)

    assert not [text for text in texts if "sekrit" in text]
    assert "http://user:***@127.0.0.1:1" in texts[-2]


def test_credentials_a_target_echoes_in_its_error_body_are_cut_from_the_message(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route(PATH, lambda ex: ex.reply(403, f"forbidden: {ex.headers['authorization']}\n".encode()))

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(bearer_token="sekrit-bearer"), target.url(PATH))

    assert str(caught.value).startswith("HTTP 403 Forbidden: forbidden: <secret>")


# --------------------------------------------------------------------------- oauth2


class TokenEndpoint:
    """An OAuth2 token endpoint: checks the client-credentials grant and counts the tokens it issues."""

    def __init__(self, server: Target, expires_in: int = 3600) -> None:
        self.issued: list[str] = []
        self.expires_in = expires_in
        server.route("/token", self._answer)
        self.url = server.url("/token")

    def _answer(self, exchange: Exchange) -> None:
        user, _, password = base64.b64decode(exchange.headers["authorization"].removeprefix("Basic ")).decode().partition(":")
        form = {name: values[0] for name, values in parse_qs(exchange.seen.body.decode()).items()}
        if (unquote_plus(user), unquote_plus(password)) != ("scraper", "client secret&more"):
            exchange.reply(401, b'{"error":"invalid_client"}\n', {"Content-Type": "application/json"})
            return
        if form != {"grant_type": "client_credentials", "scope": "profiles:read metrics:read", "audience": "pprof"}:
            exchange.reply(400, b'{"error":"invalid_request"}\n', {"Content-Type": "application/json"})
            return
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        answer = f'{{"access_token":"{token}","token_type":"bearer","expires_in":{self.expires_in}}}'
        exchange.reply(200, answer.encode(), {"Content-Type": "application/json"})

    def accepts_last_token(self, exchange: Exchange) -> None:
        """A target route that serves the profile only to the newest token."""
        if self.issued and exchange.headers.get("authorization") == f"Bearer {self.issued[-1]}":
            serve_profile(exchange)
        else:
            exchange.reply(401, b"Unauthorized\n")


def oauth2(token_url: str, secret: str = "client secret&more", **extra: object) -> dict[str, object]:
    return {"oauth2": {"client_id": "scraper", "client_secret": secret, "token_url": token_url,
                       "scopes": ["profiles:read", "metrics:read"], "endpoint_params": {"audience": "pprof"}, **extra}}


def test_oauth2_fetches_a_token_with_client_credentials_and_caches_it(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    tokens = TokenEndpoint(target)
    target.route(PATH, tokens.accepts_last_token)
    client = make_client(**oauth2(tokens.url))

    fetch(client, target.url(PATH))
    fetch(client, target.url(PATH))

    assert tokens.issued == ["token-1"]
    assert [r.headers.get("authorization") for r in target.requests if r.path == PATH] == ["Bearer token-1"] * 2


def test_oauth2_fetches_a_new_token_once_the_cached_one_expires(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    tokens = TokenEndpoint(target, expires_in=1)
    target.route(PATH, tokens.accepts_last_token)
    client = make_client(**oauth2(tokens.url))
    fetch(client, target.url(PATH))
    fetch(client, target.url(PATH))
    assert tokens.issued == ["token-1"]

    wait_until(lambda: fetch(client, target.url(PATH)) and len(tokens.issued) == 2, timeout=5,
               message="a second token after the first expired")


def test_oauth2_fetches_a_new_token_after_the_target_refuses_the_cached_one(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    tokens = TokenEndpoint(target)
    target.route(PATH, tokens.accepts_last_token)
    client = make_client(**oauth2(tokens.url))
    fetch(client, target.url(PATH))
    tokens.issued.append("token-revoked-the-first")  # the target now accepts only a newer token

    with pytest.raises(HTTPStatusError):
        fetch(client, target.url(PATH))
    tokens.issued.pop()

    assert fetch(client, target.url(PATH)).body == PROFILE
    assert tokens.issued == ["token-1", "token-2"]


def test_oauth2_refused_by_the_token_endpoint_names_it_and_not_the_secret(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    tokens = TokenEndpoint(target)

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(**oauth2(tokens.url, secret="wrong-sekrit")), target.url(PATH))

    assert f"oauth2 token request to {tokens.url}: HTTP 401 Unauthorized" in str(caught.value)
    assert "sekrit" not in str(caught.value)
    assert all(r.path == "/token" for r in target.requests)


def test_oauth2_a_client_secret_the_token_endpoint_echoes_is_cut_from_the_message(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/token", lambda ex: ex.reply(401, f"bad client {ex.headers['authorization']} "
                                                     f"({unquote_plus(ex.seen.body.decode())})\n".encode()))

    with pytest.raises(HTTPStatusError) as caught:
        fetch(make_client(oauth2={"client_id": "scraper", "client_secret": "sekrit&secret",
                                  "token_url": target.url("/token")}), target.url(PATH))

    assert "bad client <secret>" in str(caught.value)
    assert "sekrit" not in str(caught.value)


def test_oauth2_client_secret_file_and_its_own_tls_config(
    target: Target, tls_target: Callable[..., Target], ca_file: str, tmp_path: Path,
    make_client: Callable[..., TargetClient],
) -> None:
    tokens = TokenEndpoint(tls_target("127.0.0.1"))
    target.route(PATH, tokens.accepts_last_token)
    secret = secret_file(tmp_path / "client-secret", "client secret&more\n")
    config = oauth2(tokens.url, tls_config={"ca_file": ca_file})
    del config["oauth2"]["client_secret"]  # type: ignore[attr-defined]
    config["oauth2"]["client_secret_file"] = str(secret)  # type: ignore[index]

    assert fetch(make_client(**config), target.url(PATH)).body == PROFILE
    assert tokens.issued == ["token-1"]


# --------------------------------------------------------------------------- redirects


def redirect(location: str, status: int = 302) -> Callable[[Exchange], None]:
    return lambda exchange: exchange.reply(status, b"", {"Location": location})


def test_follows_a_redirect(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route("/old", redirect(PATH))

    assert fetch(make_client(), target.url("/old")).body == PROFILE
    assert [r.path for r in target.requests] == ["/old", PATH]


def test_with_follow_redirects_false_a_redirect_is_a_status_error_naming_the_location(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/old", redirect(PATH, 301))

    with pytest.raises(HTTPStatusError, match=f"redirects to {target.url(PATH)}, and follow_redirects is false") as caught:
        fetch(make_client(follow_redirects=False), target.url("/old"))

    assert caught.value.status == 301
    assert [r.path for r in target.requests] == ["/old"]


def test_a_redirect_loop_is_too_many_redirects(target: Target, make_client: Callable[..., TargetClient]) -> None:
    target.route("/a", redirect("/b"))
    target.route("/b", redirect("/a"))

    with pytest.raises(TooManyRedirects, match=f"redirect loop: {target.url('/a')} -> {target.url('/b')} -> "):
        fetch(make_client(), target.url("/a"))


def test_a_chain_of_more_than_ten_redirects_is_too_many(target: Target, make_client: Callable[..., TargetClient]) -> None:
    for hop in range(12):
        target.route(f"/hop{hop}", redirect(f"/hop{hop + 1}"))

    with pytest.raises(TooManyRedirects, match="stopped after 10 redirects"):
        fetch(make_client(), target.url("/hop0"))
    assert len(target.requests) == 11


def test_credentials_are_not_sent_to_another_host_on_a_redirect(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    target.route("/elsewhere", redirect(target.url(PATH, host="localhost")))

    fetch(make_client(bearer_token="for-127"), target.url("/elsewhere"))

    assert [r.headers.get("authorization") for r in target.requests] == ["Bearer for-127", None]


# --------------------------------------------------------------------------- proxies


def test_an_http_proxy_forwards_the_request(target: Target, make_client: Callable[..., TargetClient]) -> None:
    proxy = ForwardProxy()
    try:
        fetched = fetch(make_client(proxy_url=f"http://127.0.0.1:{proxy.port}"), target.url(PATH))
    finally:
        proxy.close()

    assert fetched.body == PROFILE
    assert [r.path for r in proxy.requests] == [target.url(PATH)]
    assert [r.path for r in target.requests] == [PATH]


def test_credentials_in_proxy_url_authenticate_to_the_proxy(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    proxy = ForwardProxy(credentials=basic("scraper", "proxy-pass"))
    try:
        fetched = fetch(make_client(proxy_url=f"http://scraper:proxy-pass@127.0.0.1:{proxy.port}"), target.url(PATH))
    finally:
        proxy.close()

    assert fetched.body == PROFILE


def test_an_https_proxy_is_verified_with_the_jobs_tls_config(
    target: Target, ca: trustme.CA, ca_file: str, make_client: Callable[..., TargetClient]
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    proxy = ForwardProxy(tls=context)
    try:
        fetched = fetch(make_client(proxy_url=f"https://127.0.0.1:{proxy.port}", tls_config={"ca_file": ca_file}),
                        target.url(PATH))
        with pytest.raises(TLSError, match=f"cannot use proxy https://127.0.0.1:{proxy.port}: certificate is signed"):
            fetch(make_client(proxy_url=f"https://127.0.0.1:{proxy.port}"), target.url(PATH))
    finally:
        proxy.close()

    assert fetched.body == PROFILE
    assert [r.path for r in proxy.requests] == [target.url(PATH)]


def test_an_unreachable_proxy_is_a_connection_failure_naming_the_proxy(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    port = free_port()

    with pytest.raises(ConnectFailed, match=f"cannot use proxy http://127.0.0.1:{port}: connection refused"):
        fetch(make_client(proxy_url=f"http://127.0.0.1:{port}"), target.url(PATH))
    assert target.requests == []


def test_socks5h_lets_the_proxy_resolve_the_target_name(
    target: Target, make_client: Callable[..., TargetClient]
) -> None:
    proxy = Socks5Proxy(hosts={"pprof.internal": "127.0.0.1"})
    try:
        fetched = fetch(make_client(proxy_url=f"socks5h://127.0.0.1:{proxy.port}"),
                        target.url(PATH, host="pprof.internal"))
    finally:
        proxy.close()

    assert fetched.body == PROFILE
    assert proxy.destinations == [("pprof.internal", target.port)]


def test_socks5_resolves_the_target_name_locally(target: Target, make_client: Callable[..., TargetClient]) -> None:
    proxy = Socks5Proxy()
    try:
        fetch(make_client(proxy_url=f"socks5://127.0.0.1:{proxy.port}"), target.url(PATH, host="localhost"))
    finally:
        proxy.close()

    assert proxy.destinations == [("127.0.0.1", target.port)]
