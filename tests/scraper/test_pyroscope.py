"""The Pyroscope receiver against a real HTTP stand-in: what goes on the wire, how answers map to
PushRejected/PushUnavailable, the limits checked before sending, auth, TLS, proxy, and the
backoff policy."""

from __future__ import annotations

import gzip
import random
import socket
import ssl
import time
import tracemalloc
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from scraper._proto import profile_pb2
from scraper.config import FileReceiverConfig, PyroscopeReceiverConfig, parse_config
from scraper.errors import PushError, PushRejected, PushUnavailable
from scraper.receivers import Profile, build_receiver
from scraper.receivers.pyroscope import MAX_PROFILE_BYTES, USER_AGENT, PyroscopeReceiver
from scraper.receivers.retry import retry_delay
from tests.pyroscope_standin import PUSH_PATH, PyroscopeStandIn, parse_pprof

GO = Path(__file__).parent.parent / "data" / "go"
CPU = (GO / "cpu_1.pb.gz").read_bytes()

PLAN_LABELS = {
    "job": "api",
    "instance": "10.0.0.7:6060",
    "service_name": "api",
    "team": "core",
    "__name__": "process_cpu",
}


def receiver_config(url: str, **options: Any) -> PyroscopeReceiverConfig:
    """A ``write:`` entry as the YAML would give it, validated by the real config schema."""
    config = parse_config({"write": {"pyro": {"type": "pyroscope", "url": url, **options}}})
    return config.write["pyro"]


def receiver(url: str, **options: Any) -> PyroscopeReceiver:
    built = build_receiver("pyro", receiver_config(url, **options))
    assert isinstance(built, PyroscopeReceiver)
    return built


def make_profile(body: bytes = CPU, labels: dict[str, str] | None = None, id: str = "a1b2c3") -> Profile:
    return Profile(
        id=id,
        labels=dict(PLAN_LABELS if labels is None else labels),
        body=body,
        start=1_767_225_600.25,
        end=1_767_225_614.75,
        url="http://10.0.0.7:6060/debug/pprof/profile?seconds=14",
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def pyroscope() -> Any:
    with PyroscopeStandIn() as standin:
        yield standin


# --------------------------------------------------------------------------- the wire


def test_a_push_posts_one_connect_request_with_the_profile_bytes_and_id(pyroscope: PyroscopeStandIn) -> None:
    receiver(pyroscope.url).push(make_profile(id="push-1"))

    [request] = pyroscope.pushes
    assert request.path == PUSH_PATH
    assert request.content_type == "application/proto"
    assert request.headers["connect-protocol-version"] == "1"
    assert request.headers["connect-timeout-ms"] == "10000"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("pprof-scraper/")
    [series] = request.series
    [sample] = series.samples
    assert sample.raw_profile == CPU
    assert sample.id == "push-1"
    assert [t.type for t in sample.profile.sample_type]  # the stand-in parsed it as pprof


def test_the_wire_format_uses_pyroscopes_field_numbers() -> None:
    """Encoded by hand from push.v1/types.v1 field numbers, independent of our .proto file."""
    def field(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128
        return bytes([number << 3 | 2, len(payload)]) + payload

    from scraper.receivers.pyroscope import _push_request

    profile = make_profile(body=b"\x1f\x8bPROFILE", labels={"__name__": "memory", "a": "b"}, id="X")
    wire = _push_request([("__name__", "memory"), ("a", "b")], profile).SerializeToString()

    label1 = field(1, b"__name__") + field(2, b"memory")
    label2 = field(1, b"a") + field(2, b"b")
    sample = field(1, b"\x1f\x8bPROFILE") + field(2, b"X")
    series = field(1, label1) + field(1, label2) + field(2, sample)
    assert wire == field(1, series)


def test_every_go_profile_in_the_corpus_is_taken_by_the_stand_in(pyroscope: PyroscopeStandIn) -> None:
    push = receiver(pyroscope.url)
    paths = sorted(GO.glob("*.pb.gz"))
    for path in paths:
        push.push(make_profile(body=path.read_bytes(), id=path.stem))
    assert [r.ids[0] for r in pyroscope.pushes] == [p.stem for p in paths]


def test_an_uncompressed_profile_is_sent_as_it_came(pyroscope: PyroscopeStandIn) -> None:
    raw = gzip.decompress(CPU)
    receiver(pyroscope.url).push(make_profile(body=raw))
    assert pyroscope.pushes[0].series[0].samples[0].raw_profile == raw


def test_labels_drop_double_underscore_names_except___name___and_are_sorted(pyroscope: PyroscopeStandIn) -> None:
    labels = {**PLAN_LABELS, "__address__": "10.0.0.7:6060", "__meta_kubernetes_pod_name": "api-0", "zone": "b"}
    receiver(pyroscope.url).push(make_profile(labels=labels))

    assert pyroscope.pushes[0].series[0].labels == [
        ("__name__", "process_cpu"),
        ("instance", "10.0.0.7:6060"),
        ("job", "api"),
        ("service_name", "api"),
        ("team", "core"),
        ("zone", "b"),
    ]


def test_external_labels_are_added_and_override_scraped_labels(pyroscope: PyroscopeStandIn) -> None:
    push = receiver(pyroscope.url, external_labels={"team": "platform", "cluster": "eu-1"})
    push.push(make_profile())

    labels = pyroscope.pushes[0].series[0].labels
    assert dict(labels)["team"] == "platform"
    assert dict(labels)["cluster"] == "eu-1"
    assert labels == sorted(labels)


# --------------------------------------------------------------------------- auth and headers


def test_configured_headers_carry_the_tenant() -> None:
    with PyroscopeStandIn(tenant="team-a") as pyroscope:
        receiver(pyroscope.url, headers={"X-Scope-OrgID": "team-a"}).push(make_profile())
        assert pyroscope.pushes[0].headers["x-scope-orgid"] == "team-a"

        with pytest.raises(PushRejected, match="HTTP 401: unauthenticated: no org id"):
            receiver(pyroscope.url).push(make_profile())


def test_basic_auth_sends_the_username_and_password() -> None:
    with PyroscopeStandIn(basic_auth=("123456", "glc_secret")) as pyroscope:
        receiver(pyroscope.url, basic_auth={"username": "123456", "password": "glc_secret"}).push(make_profile())
        assert pyroscope.pushes[0].basic_auth == ("123456", "glc_secret")


def test_basic_auth_password_file_is_read_at_every_push(pyroscope: PyroscopeStandIn, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("first-token\n")
    push = receiver(pyroscope.url, basic_auth={"username": "123456", "password_file": str(password_file)})
    pyroscope.basic_auth = ("123456", "first-token")
    push.push(make_profile())

    password_file.write_text("rotated-token\n")
    pyroscope.basic_auth = ("123456", "rotated-token")
    push.push(make_profile())

    assert [r.basic_auth for r in pyroscope.pushes] == [("123456", "first-token"), ("123456", "rotated-token")]


def test_a_missing_password_file_is_unavailable_and_names_the_file(pyroscope: PyroscopeStandIn, tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted-yet"
    push = receiver(pyroscope.url, basic_auth={"username": "u", "password_file": str(missing)})
    with pytest.raises(PushUnavailable, match=f"basic_auth.password_file {missing}"):
        push.push(make_profile())
    assert pyroscope.requests == []


def test_bearer_token_and_bearer_token_file_send_an_authorization_header(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    with PyroscopeStandIn(bearer_token="inline-token") as pyroscope:
        receiver(pyroscope.url, bearer_token="inline-token").push(make_profile())
        pyroscope.bearer_token = "from-a-file"
        receiver(pyroscope.url, bearer_token_file=str(token_file)).push(make_profile())

    assert [r.headers["authorization"] for r in pyroscope.pushes] == ["Bearer inline-token", "Bearer from-a-file"]


def test_userinfo_in_the_url_is_sent_as_basic_auth(pyroscope: PyroscopeStandIn) -> None:
    url = pyroscope.url.replace("http://", "http://stack:url-secret@")
    receiver(url).push(make_profile())
    assert pyroscope.pushes[0].basic_auth == ("stack", "url-secret")


# --------------------------------------------------------------------------- answers


def test_200_is_success_and_nothing_is_raised(pyroscope: PyroscopeStandIn) -> None:
    receiver(pyroscope.url).push(make_profile())
    assert [r.status for r in pyroscope.requests] == [200]


def test_503_is_unavailable(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(503, code="unavailable", message="ingester ring is empty")
    push = receiver(pyroscope.url)
    with pytest.raises(PushUnavailable, match="HTTP 503: unavailable: ingester ring is empty") as caught:
        push.push(make_profile())
    assert caught.value.retry_after is None
    push.push(make_profile())  # the next attempt gets through
    assert len(pyroscope.pushes) == 1


@pytest.mark.parametrize("status", [500, 502, 504, 408])
def test_408_and_5xx_are_unavailable(pyroscope: PyroscopeStandIn, status: int) -> None:
    pyroscope.answer(status, body=b"upstream trouble\nsecond line")
    with pytest.raises(PushUnavailable, match=f"HTTP {status}: upstream trouble$"):
        receiver(pyroscope.url).push(make_profile())


def test_429_with_retry_after_seconds_is_unavailable_with_retry_after(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(429, headers={"Retry-After": "7"}, code="resource_exhausted", message="push rate limit")
    with pytest.raises(PushUnavailable, match="HTTP 429: resource_exhausted: push rate limit") as caught:
        receiver(pyroscope.url).push(make_profile())
    assert caught.value.retry_after == 7.0


def test_429_with_an_http_date_retry_after_waits_until_that_date(pyroscope: PyroscopeStandIn) -> None:
    when = datetime.fromtimestamp(time.time() + 120, tz=UTC)
    pyroscope.answer(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(PushUnavailable) as caught:
        receiver(pyroscope.url).push(make_profile())
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


def test_503_with_retry_after_carries_it_too(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(503, headers={"Retry-After": "30"})
    with pytest.raises(PushUnavailable) as caught:
        receiver(pyroscope.url).push(make_profile())
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize("value", ["soon", "inf", "nan", ""])
def test_an_unreadable_retry_after_is_ignored(pyroscope: PyroscopeStandIn, value: str) -> None:
    pyroscope.answer(429, headers={"Retry-After": value})
    with pytest.raises(PushUnavailable) as caught:
        receiver(pyroscope.url).push(make_profile())
    assert caught.value.retry_after is None


def test_429_is_rejected_when_retry_on_http_429_is_false(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(429, headers={"Retry-After": "7"}, code="resource_exhausted", message="push rate limit")
    with pytest.raises(PushRejected, match="retry_on_http_429 is false"):
        receiver(pyroscope.url, retry_on_http_429=False).push(make_profile())


def test_400_is_rejected_with_the_servers_message_and_not_retried(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(400, code="invalid_argument", message='invalid labels: service name is required')
    config = receiver_config(pyroscope.url)
    with pytest.raises(PushRejected) as caught:
        PyroscopeReceiver("pyro", config).push(make_profile())
    message = str(caught.value)
    assert "HTTP 400: invalid_argument: invalid labels: service name is required" in message
    assert "'pyro'" in message and pyroscope.url + PUSH_PATH in message
    assert retry_delay(config, 1, caught.value) is None
    assert len(pyroscope.requests) == 1


def test_a_profile_the_server_could_not_parse_is_rejected_before_sending(pyroscope: PyroscopeStandIn) -> None:
    not_pprof = (Path(__file__).parent.parent / "data" / "bad" / "gzip_of_garbage.pb.gz").read_bytes()
    with pytest.raises(PushRejected, match="not sent, Pyroscope would refuse it: the profile is not a pprof profile"):
        receiver(pyroscope.url).push(make_profile(body=not_pprof))
    assert pyroscope.requests == []


def test_a_4xx_whose_connect_code_is_retryable_is_unavailable(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(409, code="aborted", message="conflict, try again")
    with pytest.raises(PushUnavailable, match="HTTP 409: aborted"):
        receiver(pyroscope.url).push(make_profile())


def test_a_redirect_is_rejected_not_followed(pyroscope: PyroscopeStandIn) -> None:
    pyroscope.answer(302, headers={"Location": "https://login.example/sso"})
    with pytest.raises(PushRejected, match="redirected to 'https://login.example/sso'"):
        receiver(pyroscope.url).push(make_profile())
    assert len(pyroscope.requests) == 1


def test_a_refused_connection_is_unavailable() -> None:
    url = closed_port_url()
    with pytest.raises(PushUnavailable, match="cannot connect: .*(refused|Connection)") as caught:
        receiver(url).push(make_profile())
    assert url in str(caught.value)


def test_no_answer_within_remote_timeout_is_unavailable(pyroscope: PyroscopeStandIn) -> None:
    release = pyroscope.hold()
    started = time.monotonic()
    with pytest.raises(PushUnavailable, match=r"no answer within remote_timeout \(0.3s\)"):
        receiver(pyroscope.url, remote_timeout="300ms").push(make_profile())
    waited = time.monotonic() - started
    release.set()
    assert waited > 0.25  # it gave the receiver its remote_timeout; only that deadline ended the wait
    assert len(pyroscope.requests) == 1  # it did arrive; the answer did not


# --------------------------------------------------------------------------- limits checked before sending


def _labels_with(**extra: str) -> dict[str, str]:
    return {**PLAN_LABELS, **extra}


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({**PLAN_LABELS, **{f"l{i:02d}": "v" for i in range(26)}}, "31 labels, more than the 30 allowed"),
        (_labels_with(**{"n" * 1025: "v"}), "is longer than 1024 bytes"),
        (_labels_with(big="v" * 2049), "the value of label 'big' is longer than 2048 bytes"),
        (_labels_with(big="é" * 1025), "the value of label 'big' is longer than 2048 bytes"),  # bytes, not characters
        (_labels_with(service_name=""), "the service_name label is empty"),
        (_labels_with(__name__=""), "the profile has no name (__name__ is empty)"),
    ],
    ids=["31-labels", "long-name", "long-value", "long-utf8-value", "no-service-name", "no-profile-name"],
)
def test_labels_over_pyroscopes_limits_are_rejected_before_sending(
    pyroscope: PyroscopeStandIn, labels: dict[str, str], reason: str
) -> None:
    with pytest.raises(PushRejected, match="not sent, Pyroscope would refuse it") as caught:
        receiver(pyroscope.url).push(make_profile(labels=labels))
    assert reason in str(caught.value)
    assert pyroscope.requests == []


def test_any_utf8_label_name_is_sent_as_pyroscope_2_takes_it(pyroscope: PyroscopeStandIn) -> None:
    labels = _labels_with(**{"bad-name": "v", "1st": "v", "ünïcode": "v"})
    receiver(pyroscope.url).push(make_profile(labels=labels))
    assert {"bad-name", "1st", "ünïcode"} <= pyroscope.pushes[0].series[0].label_dict.keys()


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (_labels_with(**{"bad-name": "v"}), "label name 'bad-name' does not match [a-zA-Z_][a-zA-Z0-9_.]*"),
        (_labels_with(**{"1st": "v"}), "label name '1st' does not match"),
        (_labels_with(__name__="app.heap"), "the profile name (__name__) 'app.heap' does not match"),
    ],
    ids=["dash-in-name", "digit-first", "dot-in-profile-name"],
)
def test_strict_label_names_refuses_what_pyroscope_1_refuses(
    pyroscope: PyroscopeStandIn, labels: dict[str, str], reason: str
) -> None:
    with pytest.raises(PushRejected, match="not sent, Pyroscope would refuse it") as caught:
        receiver(pyroscope.url, strict_label_names=True).push(make_profile(labels=labels))
    assert reason in str(caught.value)
    assert pyroscope.requests == []


def test_strict_label_names_takes_dots_which_pyroscope_1_turns_into_underscores(pyroscope: PyroscopeStandIn) -> None:
    receiver(pyroscope.url, strict_label_names=True).push(make_profile(labels=_labels_with(**{"k8s.pod": "p"})))
    assert len(pyroscope.pushes) == 1


def _profile_with(samples: int, sample_type: str = "samples") -> bytes:
    """A gzipped pprof profile of ``samples`` samples of one sample type."""
    profile = profile_pb2.Profile(string_table=["", sample_type, "count", "main"])
    profile.sample_type.add(type=1, unit=2)
    profile.function.add(id=1, name=3)
    profile.location.add(id=1).line.add(function_id=1)
    for value in range(1, samples + 1):
        profile.sample.add(location_id=[1], value=[value])
    return gzip.compress(profile.SerializeToString())


def test_a_profile_over_16000_samples_is_rejected_before_sending(pyroscope: PyroscopeStandIn) -> None:
    push = receiver(pyroscope.url)
    push.push(make_profile(body=_profile_with(16_000)))
    with pytest.raises(PushRejected, match=r"16001 samples, more than max_samples \(16000\)"):
        push.push(make_profile(body=_profile_with(16_001)))
    assert len(pyroscope.requests) == 1


def test_max_samples_sets_the_limit_and_0_lifts_it(pyroscope: PyroscopeStandIn) -> None:
    with pytest.raises(PushRejected, match=r"more than max_samples \(10\)"):
        receiver(pyroscope.url, max_samples=10).push(make_profile(body=_profile_with(11)))
    receiver(pyroscope.url, max_samples=0).push(make_profile(body=_profile_with(20_000)))
    assert len(pyroscope.pushes) == 1


def test_a_profile_in_several_gzip_members_is_measured_whole(pyroscope: PyroscopeStandIn) -> None:
    raw = gzip.decompress(_profile_with(16_001))
    two_members = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])  # the last trailer states only part
    with pytest.raises(PushRejected, match="16001 samples"):
        receiver(pyroscope.url).push(make_profile(body=two_members))
    receiver(pyroscope.url, max_samples=0).push(make_profile(body=two_members))
    assert parse_pprof(pyroscope.pushes[0].series[0].samples[0].raw_profile) == parse_pprof(raw)


def test_a_sample_type_name_with_a_dash_is_rejected_before_sending(pyroscope: PyroscopeStandIn) -> None:
    with pytest.raises(PushRejected, match="sample type 'inuse-space' contains '-'"):
        receiver(pyroscope.url).push(make_profile(body=_profile_with(3, "inuse-space")))
    assert pyroscope.requests == []


def test_labels_at_pyroscopes_limits_are_sent(pyroscope: PyroscopeStandIn) -> None:
    labels = {**PLAN_LABELS, **{f"l{i:02d}": "v" for i in range(24)}, "n" * 1024: "é" * 1024}
    receiver(pyroscope.url).push(make_profile(labels=labels))
    assert len(pyroscope.pushes[0].series[0].labels) == 30


def test_external_labels_count_toward_the_label_limit(pyroscope: PyroscopeStandIn) -> None:
    labels = {**PLAN_LABELS, **{f"l{i:02d}": "v" for i in range(25)}}
    with pytest.raises(PushRejected, match="31 labels"):
        receiver(pyroscope.url, external_labels={"cluster": "eu-1"}).push(make_profile(labels=labels))
    assert pyroscope.requests == []


def _profile_of_size(size: int) -> bytes:
    """A valid pprof profile (cpu_1 plus one padding string) of exactly ``size`` bytes uncompressed."""
    profile = profile_pb2.Profile()
    profile.ParseFromString(gzip.decompress(CPU))
    base = len(profile.SerializeToString())
    padding = size - base - 1 - 4  # tag byte, 4-byte length varint, then the string
    profile.string_table.append("x" * padding)
    raw = profile.SerializeToString()
    assert len(raw) == size
    return raw


def test_a_profile_over_4_mib_uncompressed_is_rejected_before_sending(pyroscope: PyroscopeStandIn) -> None:
    raw = _profile_of_size(MAX_PROFILE_BYTES + 1)
    compressed = gzip.compress(raw)
    assert len(compressed) < 100_000  # small on the wire, too big once inflated: the check must inflate
    push = receiver(pyroscope.url)
    for body in (compressed, raw):
        with pytest.raises(PushRejected, match="larger than 4 MiB uncompressed"):
            push.push(make_profile(body=body))
    assert pyroscope.requests == []


def test_a_profile_of_exactly_4_mib_uncompressed_is_sent(pyroscope: PyroscopeStandIn) -> None:
    raw = _profile_of_size(MAX_PROFILE_BYTES)
    receiver(pyroscope.url).push(make_profile(body=gzip.compress(raw)))
    assert len(pyroscope.pushes) == 1
    assert len(parse_pprof(pyroscope.pushes[0].series[0].samples[0].raw_profile).string_table[-1]) > 4_000_000


def test_a_gzip_bomb_is_measured_without_inflating_it_all(pyroscope: PyroscopeStandIn) -> None:
    bomb = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=1)
    push = receiver(pyroscope.url)
    tracemalloc.start()
    try:
        with pytest.raises(PushRejected, match="larger than 4 MiB"):
            push.push(make_profile(body=bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024  # inflated a slice at a time, never 4 MiB at once
    assert pyroscope.requests == []


# --------------------------------------------------------------------------- secrets stay out of messages


def test_no_error_message_contains_a_secret(tmp_path: Path) -> None:
    secrets = {
        "url-password": "pw-in-the-url-77",
        "header": "tenant-secret-header-88",
        "password": "glc_basic_password_99",
        "token": "bearer-token-value-66",
        "file-token": "token-from-file-55",
        "proxy-password": "proxy-pass-44",
    }
    token_file = tmp_path / "token"
    token_file.write_text(secrets["file-token"])
    messages: list[str] = []

    def collect(push: PyroscopeReceiver, profile: Profile | None = None) -> None:
        with pytest.raises(PushError) as caught:
            push.push(profile or make_profile())
        error = caught.value
        # no chained exception for a traceback to leak through
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
        messages.extend([str(error), repr(error), *map(str, error.args)])

    with PyroscopeStandIn() as pyroscope:
        authed_url = pyroscope.url.replace("http://", f"http://stack:{secrets['url-password']}@")
        pushes = [
            (
                receiver(
                    authed_url,
                    headers={"X-Scope-OrgID": secrets["header"]},
                    basic_auth={"username": "123", "password": secrets["password"]},
                ),
                [secrets["url-password"], secrets["header"], secrets["password"]],
            ),
            (receiver(pyroscope.url, bearer_token=secrets["token"]), [secrets["token"]]),
            (receiver(pyroscope.url, bearer_token_file=str(token_file)), [secrets["file-token"]]),
        ]
        for push, own in pushes:
            # a server that echoes the credentials it got must not get them into our messages either
            pyroscope.answer(400, code="invalid_argument", message=f"bad credentials {' '.join(own)}")
            collect(push)
            pyroscope.answer(503, body=f"down; you sent {' '.join(own)}".encode())
            collect(push)
            pyroscope.answer(302, headers={"Location": f"http://u:{own[0]}@elsewhere/"})
            collect(push)
            pyroscope.answer(429, headers={"Retry-After": "1"})
            collect(push)
            collect(push, make_profile(labels=_labels_with(**{"n" * 1025: "v"})))
        release = pyroscope.hold()
        collect(receiver(authed_url, remote_timeout="100ms", headers={"X-Scope-OrgID": secrets["header"]}))
        release.set()

    closed = closed_port_url()
    collect(receiver(closed.replace("http://", f"http://stack:{secrets['url-password']}@"),
                     basic_auth={"username": "123", "password": secrets["password"]}))
    collect(receiver(
        "http://pyroscope.invalid:4040",
        proxy_url=closed.replace("http://", f"http://proxyuser:{secrets['proxy-password']}@"),
        bearer_token=secrets["token"],
    ))

    assert len(messages) >= 18 * 3
    for message in messages:
        for name, secret in secrets.items():
            assert secret not in message, f"{name} leaked into: {message}"


# --------------------------------------------------------------------------- the legacy /ingest API


def test_ingest_api_posts_the_profile_as_a_form_with_name_from_and_until(pyroscope: PyroscopeStandIn) -> None:
    push = receiver(pyroscope.url, api="ingest", headers={"X-Scope-OrgID": "team-a"},
                    external_labels={"cluster": "eu-1"})
    push.push(make_profile())

    [request] = pyroscope.pushes
    assert request.path == "/ingest"
    assert request.content_type.startswith("multipart/form-data; boundary=")
    assert request.query == {
        "name": ["api{cluster=eu-1,instance=10.0.0.7:6060,job=api,team=core}"],
        "from": ["1767225600"],
        "until": ["1767225615"],
    }
    assert request.headers["x-scope-orgid"] == "team-a"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.profile == parse_pprof(CPU)


#: Go profiles and the name each is pushed under.
GO_NAMES = {"cpu_1": "process_cpu", "allocs_1": "memory", "heap_1": "memory", "block_1": "block",
            "mutex_1": "mutex", "goroutine_1": "goroutine", "fgprof_1": "fgprof", "block_delta_1": "block"}


@pytest.mark.parametrize(("file", "name"), sorted(GO_NAMES.items()))
def test_ingest_api_stores_every_type_under_the_name_and_values_the_push_api_does(file: str, name: str) -> None:
    body = (GO / f"{file}.pb.gz").read_bytes()
    profile = make_profile(body=body, labels=_labels_with(__name__=name))
    with PyroscopeStandIn() as pyroscope:
        receiver(pyroscope.url).push(profile)
        receiver(pyroscope.url, api="ingest").push(profile)
        pushed, ingested = pyroscope.pushes
    assert ingested.ingest_labels == {**pushed.series[0].label_dict, "__delta__": "false", "pyroscope_spy": "unknown"}
    assert ingested.profile == pushed.series[0].samples[0].profile == parse_pprof(body)


@pytest.mark.parametrize(("file", "filed_as"), [("block_1", "mutex"), ("goroutine_1", "goroutines"),
                                                ("fgprof_1", "process_cpu"), ("mutex_1", "mutex")])
def test_the_stand_in_names_a_bare_ingested_profile_as_pyroscope_does(
    pyroscope: PyroscopeStandIn, file: str, filed_as: str
) -> None:
    requests.post(f"{pyroscope.url}/ingest", params={"name": "api{}", "format": "pprof"},
                  data=(GO / f"{file}.pb.gz").read_bytes(), timeout=10)
    assert pyroscope.pushes[0].ingest_labels["__name__"] == filed_as


@pytest.mark.parametrize(("name", "filed_as"), [("my_cpu", "process_cpu"), ("alloc_rate", "memory"),
                                                ("objects", "memory"), ("block_waits", "block")])
def test_ingest_api_refuses_before_sending_a_name_the_server_would_replace(
    pyroscope: PyroscopeStandIn, name: str, filed_as: str
) -> None:
    with pytest.raises(PushRejected, match=f"stores profile '{name}' .* as '{filed_as}' whatever the client says"):
        receiver(pyroscope.url, api="ingest").push(make_profile(labels=_labels_with(__name__=name)))
    assert pyroscope.requests == []


def test_ingest_api_leaves_double_underscore_labels_to_the_server(pyroscope: PyroscopeStandIn) -> None:
    receiver(pyroscope.url, api="ingest").push(make_profile(labels=_labels_with(__delta__="false")))
    assert pyroscope.pushes[0].query["name"] == ["api{instance=10.0.0.7:6060,job=api,team=core}"]


def test_ingest_api_counts_the_labels_the_server_adds(pyroscope: PyroscopeStandIn) -> None:
    labels = {**PLAN_LABELS, **{f"l{i:02d}": "v" for i in range(24)}}  # 29: fits the push API
    receiver(pyroscope.url).push(make_profile(labels=labels))
    with pytest.raises(PushRejected, match="31 labels, more than the 30 allowed"):
        receiver(pyroscope.url, api="ingest").push(make_profile(labels=labels))
    assert len(pyroscope.requests) == 1


def test_ingest_api_uses_the_same_auth_and_answer_mapping() -> None:
    with PyroscopeStandIn(basic_auth=("123", "pw-1234")) as pyroscope:
        push = receiver(pyroscope.url, api="ingest", basic_auth={"username": "123", "password": "pw-1234"})
        push.push(make_profile())
        assert pyroscope.pushes[0].basic_auth == ("123", "pw-1234")

        pyroscope.answer(503)
        with pytest.raises(PushUnavailable, match="/ingest.*HTTP 503"):
            push.push(make_profile())
        pyroscope.answer(422, body=b"pprof: failed to parse profile\n")
        with pytest.raises(PushRejected, match="HTTP 422: pprof: failed to parse profile"):
            push.push(make_profile())
        pyroscope.answer(204)
        with pytest.raises(PushRejected, match="only 200 means the profile was taken"):
            push.push(make_profile())


def test_ingest_api_rejects_labels_it_cannot_carry_before_sending(pyroscope: PyroscopeStandIn) -> None:
    push = receiver(pyroscope.url, api="ingest")
    with pytest.raises(PushRejected, match=r"the value of label 'team' contains ',' or '}'"):
        push.push(make_profile(labels=_labels_with(team="a,b")))
    with pytest.raises(PushRejected, match="needs a service_name label"):
        push.push(make_profile(labels=_labels_with(service_name="my app")))
    with pytest.raises(PushRejected, match="label name 'k8s-pod' is not letters, digits, _ and ."):
        push.push(make_profile(labels=_labels_with(**{"k8s-pod": "p"})))
    with pytest.raises(PushRejected, match="the value of label 'team' starts or ends with a space"):
        push.push(make_profile(labels=_labels_with(team="core ")))
    assert pyroscope.requests == []


# --------------------------------------------------------------------------- TLS and proxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_https_with_the_servers_ca_file_is_verified_and_sent(ca: trustme.CA, tmp_path: Path) -> None:
    with PyroscopeStandIn(tls=_server_context(ca, "127.0.0.1")) as pyroscope:
        receiver(pyroscope.url, tls_config={"ca_file": _ca_file(ca, tmp_path)}).push(make_profile())
        assert len(pyroscope.pushes) == 1


def test_https_with_an_unknown_ca_is_a_tls_failure(ca: trustme.CA) -> None:
    with PyroscopeStandIn(tls=_server_context(ca, "127.0.0.1")) as pyroscope:
        with pytest.raises(PushUnavailable, match="TLS failed: certificate is signed by an unknown authority"):
            receiver(pyroscope.url).push(make_profile())
        assert pyroscope.requests == []


def test_a_missing_ca_file_fails_the_push_as_unavailable_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "ca-not-mounted.pem"
    push = receiver("https://127.0.0.1:1", tls_config={"ca_file": str(missing)})  # building it does not fail
    with pytest.raises(PushUnavailable, match=f"tls_config.ca_file {missing} cannot be read"):
        push.push(make_profile())


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_skip_verify_accepts_any_certificate(ca: trustme.CA) -> None:
    with PyroscopeStandIn(tls=_server_context(ca, "somewhere.else")) as pyroscope:
        receiver(pyroscope.url, tls_config={"insecure_skip_verify": True}).push(make_profile())
        assert len(pyroscope.pushes) == 1


def test_server_name_is_used_for_sni_and_the_certificate_check(ca: trustme.CA, tmp_path: Path) -> None:
    with PyroscopeStandIn(tls=_server_context(ca, "pyroscope.internal")) as pyroscope:
        ca_file = _ca_file(ca, tmp_path)
        with pytest.raises(PushUnavailable, match="TLS failed"):
            receiver(pyroscope.url, tls_config={"ca_file": ca_file}).push(make_profile())
        receiver(pyroscope.url, tls_config={"ca_file": ca_file, "server_name": "pyroscope.internal"}).push(make_profile())
        assert len(pyroscope.pushes) == 1


def test_a_client_certificate_is_presented_when_configured(ca: trustme.CA, tmp_path: Path) -> None:
    server = _server_context(ca, "127.0.0.1")
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    client = ca.issue_cert("scraper.example")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    tls = {"ca_file": _ca_file(ca, tmp_path), "cert_file": str(cert_file), "key_file": str(key_file)}

    with PyroscopeStandIn(tls=server) as pyroscope:
        receiver(pyroscope.url, tls_config=tls).push(make_profile())
        assert "Testing cert" in (pyroscope.pushes[0].client_cert_subject or "")
        with pytest.raises(PushUnavailable, match="TLS failed|cannot connect|broke off"):
            receiver(pyroscope.url, tls_config={"ca_file": tls["ca_file"]}).push(make_profile())


def test_min_version_refuses_an_older_server(ca: trustme.CA, tmp_path: Path) -> None:
    server = _server_context(ca, "127.0.0.1")
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    with PyroscopeStandIn(tls=server) as pyroscope:
        ca_file = _ca_file(ca, tmp_path)
        receiver(pyroscope.url, tls_config={"ca_file": ca_file, "min_version": "TLS12"}).push(make_profile())
        with pytest.raises(PushUnavailable, match="TLS failed"):
            receiver(pyroscope.url, tls_config={"ca_file": ca_file, "min_version": "TLS13"}).push(make_profile())
        assert len(pyroscope.requests) == 1


def test_proxy_url_routes_the_push_through_the_proxy(pyroscope: PyroscopeStandIn) -> None:
    proxy = pyroscope.url.replace("http://", "http://puser:ppass@")
    receiver("http://pyroscope.invalid:4040", proxy_url=proxy).push(make_profile())

    [request] = pyroscope.pushes
    assert request.proxied_host == "pyroscope.invalid:4040"
    assert request.path == PUSH_PATH
    assert request.headers["proxy-authorization"].startswith("Basic ")


# --------------------------------------------------------------------------- backoff policy


def _unavailable(retry_after: float | None = None) -> PushUnavailable:
    return PushUnavailable("down", retry_after=retry_after)


def test_retry_delay_doubles_with_jitter_inside_its_window_and_stops_at_the_cap() -> None:
    config = receiver_config("http://pyroscope:4040", min_backoff_period="500ms", max_backoff_period="5m",
                             max_backoff_retries=0)
    rand = random.Random(20261124)
    for attempt in range(1, 40):
        low = 0.5 * 2 ** (attempt - 1)
        for _ in range(200):
            delay = retry_delay(config, attempt, _unavailable(), rand)
            assert delay is not None
            if low >= 300:
                assert delay == 300
            else:
                assert low <= delay < min(2 * low, 300) or delay == 300
                assert delay <= 300


def test_retry_delay_spreads_over_its_window() -> None:
    config = receiver_config("http://pyroscope:4040")
    rand = random.Random(7)
    delays = [retry_delay(config, 3, _unavailable(), rand) for _ in range(2000)]
    assert min(delays) < 2.1 and max(delays) > 3.9  # window [2, 4) for the 3rd attempt with min 500ms


def test_retry_delay_is_none_for_a_rejected_push() -> None:
    config = receiver_config("http://pyroscope:4040")
    assert retry_delay(config, 1, PushRejected("HTTP 400")) is None


def test_retry_delay_is_none_once_max_backoff_retries_attempts_were_made() -> None:
    config = receiver_config("http://pyroscope:4040", max_backoff_retries=10)
    rand = random.Random(1)
    assert all(retry_delay(config, attempt, _unavailable(), rand) is not None for attempt in range(1, 10))
    assert retry_delay(config, 10, _unavailable(), rand) is None
    assert retry_delay(config, 11, _unavailable(), rand) is None


def test_retry_delay_never_gives_up_when_max_backoff_retries_is_0() -> None:
    config = receiver_config("http://pyroscope:4040", max_backoff_retries=0)
    assert retry_delay(config, 100_000, _unavailable(), random.Random(1)) == 300


def test_retry_delay_waits_at_least_retry_after_even_beyond_the_cap() -> None:
    config = receiver_config("http://pyroscope:4040", max_backoff_period="10s")
    rand = random.Random(3)
    assert retry_delay(config, 1, _unavailable(retry_after=42), rand) == 42
    delay = retry_delay(config, 4, _unavailable(retry_after=0.1), rand)
    assert delay is not None and 4 <= delay < 8


def test_retry_delay_of_the_file_store_is_1_2_4_8_seconds_then_stop() -> None:
    config = FileReceiverConfig(type="file")
    rand = random.Random(5)
    for attempt, low in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        delay = retry_delay(config, attempt, _unavailable(), rand)
        assert delay is not None and low <= delay < 2 * low
    assert retry_delay(config, 5, _unavailable(), rand) is None

