"""Bad targets and bad bodies, against one real gevent worker and beat: each failure leaves its
(target, profile type) ``down`` with a ``last_error`` that says why, nothing of it is stored, and
the same target's good profile keeps flowing the whole time.

The validator alone is fuzzed in tests/scraper/test_pprof.py: Hypothesis-mutated Go profiles,
gzipped or raw, only ever raise InvalidProfile or BodyTooLarge, and whatever it accepts keeps
every rule of pprof's parser (checked by an independent rule checker).
"""

from __future__ import annotations

import datetime as dt
import itertools
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme

from scraper.status import TargetHealth, read_statuses
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.faults.hostile import GOOD_PATH, HostileTarget, TLSTarget
from tests.faults.support import BUILTIN_OFF, memory_kib, sidecars, status_of, stored_ids, write_config

pytestmark = pytest.mark.slow

INTERVAL_S = 2
TIMEOUT_S = 1.5
BODY_SIZE_LIMIT = 16 * 1024 * 1024

#: Custom profile type (and path on the hostile target) -> words its last_error must contain.
HOSTILE = {
    "html_200": ["HTML page, not a pprof profile", "502 Bad Gateway"],
    "html_502": ["HTTP 502 Bad Gateway"],
    "json_200": ["JSON, not a pprof profile", "missing bearer token"],
    "json_503": ["HTTP 503 Service Unavailable"],
    "cpu_in_use_500": ["HTTP 500", "cpu profiling already in use"],
    "plain_text_200": ["plain text, not a pprof profile", "cpu profiling already in use"],
    "empty_body": ["empty body"],
    "truncated_gzip": ["truncated gzip"],
    "gzip_bad_crc": ["gzip with a bad CRC"],
    "gzip_of_garbage": ["gzip-compressed binary data, not a pprof profile"],
    "double_gzip": ["gzipped twice"],
    "protobuf_not_a_profile": ["not a pprof profile"],
    "legacy_text": ["pprof's text format (debug=1)"],
    "redirect_loop": ["redirect loop"],
    "never_answers": ["scrape timeout of 1.5s", "waiting for the response"],
    "stalls_mid_body": ["scrape timeout of 1.5s", "reading the body, 100 bytes so far"],
    "trickles": ["scrape timeout of 1.5s", "reading the body"],
    "huge_content_length": ["Content-Length is 1099511627776 bytes, over body_size_limit"],
    "short_body": ["connection closed after 100 bytes of the body"],
    "connection_reset": ["reset by the other side"],
}
TIMEOUTS = {"never_answers", "stalls_mid_body", "trickles"}
BOMB = "gzip_bomb"

#: Job of an https target -> words its last_error must contain.
TLS = {
    "tls_wrong_name": ["certificate is for other.example, not 127.0.0.1"],
    "tls_expired": ["certificate expired"],
    "tls_unknown_ca": ["signed by an unknown authority", "tls_config.ca_file"],
}


@dataclass
class Bench:
    store: Path
    redis: redis.Redis
    worker: Proc
    hostile: HostileTarget
    files: dict[str, Path]
    started: float


def _tls_target(leaf: trustme.LeafCert) -> TLSTarget:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return TLSTarget(context).start()


@pytest.fixture(scope="module")
def bench(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("bad-targets")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    ca, stranger = trustme.CA(), trustme.CA()
    now = dt.datetime.now(dt.UTC)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls_targets = {
        "tls_wrong_name": _tls_target(ca.issue_cert("other.example")),
        "tls_expired": _tls_target(ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=2),
                                                 not_after=now - dt.timedelta(days=1))),
        "tls_unknown_ca": _tls_target(stranger.issue_cert("127.0.0.1")),
    }
    files = {"missing": tmp / "no-such-token", "directory": tmp / "token-dir", "open": tmp / "open-token"}
    files["directory"].mkdir()
    files["open"].write_text("t0ken\n")
    files["open"].chmod(0o644)
    hostile = HostileTarget().start()
    store = tmp / "profiles"

    goroutine_only = {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}

    def job(address: str, **extra: object) -> dict[str, object]:
        return {"targets": [{"__address__": address}], "forward_to": ["files"], "scrape_interval": f"{INTERVAL_S}s",
                "scrape_timeout": f"{TIMEOUT_S}s", "profiling_config": goroutine_only, **extra}

    custom = {name: {"enabled": True, "path": f"/{name}"} for name in [*HOSTILE, BOMB]}
    scrape = {
        "hostile": job(hostile.address, body_size_limit=BODY_SIZE_LIMIT,
                       profiling_config={**goroutine_only, "profile.custom": custom}),
        "tls_wrong_name": job(tls_targets["tls_wrong_name"].address, scheme="https",
                              http_client_config={"tls_config": {"ca_file": str(ca_file)}}),
        "tls_expired": job(tls_targets["tls_expired"].address, scheme="https",
                           http_client_config={"tls_config": {"ca_file": str(ca_file)}}),
        "tls_unknown_ca": job(tls_targets["tls_unknown_ca"].address, scheme="https"),
        "tls_insecure": job(tls_targets["tls_unknown_ca"].address, scheme="https",
                            http_client_config={"tls_config": {"insecure_skip_verify": True}}),
        "nowhere": job("does-not-exist.invalid:6060"),
        **{f"secret_{name}": job(hostile.address, http_client_config={"bearer_token_file": str(path)})
           for name, path in files.items()},
    }
    # A receiver with verification off, to see its warning; nothing is sent to it.
    insecure_store = {"type": "pyroscope", "url": f"https://{tls_targets['tls_unknown_ca'].address}",
                      "tls_config": {"insecure_skip_verify": True}}
    config = write_config(tmp / "config.yaml", scrape,
                          {"files": {"type": "file", "path": str(store)}, "insecure_store": insecure_store})
    env = scraper_env(redis_url, config)
    worker = start_worker(env, tmp, concurrency=50)
    beat = start_beat(env, tmp)
    try:
        wait_until(lambda: (s := read_statuses(client)) and all(x.health != TargetHealth.UNKNOWN for x in s),
                   timeout=8 * INTERVAL_S, message="a first scrape of every target and profile type")
        yield Bench(store, client, worker, hostile, files, time.time())
    finally:
        beat.stop()
        worker.stop()
        hostile.stop()
        for target in tls_targets.values():
            target.stop()
        client.close()


def _down_saying(bench: Bench, job: str, profile_type: str, words: list[str]) -> str:
    status = status_of(bench.redis, job, profile_type)
    assert status is not None
    assert status.health == TargetHealth.DOWN, status
    assert status.last_error is not None
    for word in words:
        assert word in status.last_error, status.last_error
    return status.last_error


@pytest.mark.parametrize("profile_type", sorted(HOSTILE))
def test_a_bad_answer_leaves_its_profile_type_down_saying_why_and_stores_nothing(
        bench: Bench, profile_type: str) -> None:
    _down_saying(bench, "hostile", profile_type, HOSTILE[profile_type])
    assert not list((bench.store / "hostile" / profile_type).rglob("*")), "nothing of a failed scrape is stored"


@pytest.mark.parametrize("profile_type", sorted(TIMEOUTS))
def test_a_target_that_stalls_or_trickles_is_given_up_at_the_scrape_timeout(bench: Bench, profile_type: str) -> None:
    status = status_of(bench.redis, "hostile", profile_type)
    assert status is not None and status.last_scrape_duration is not None
    # The timeout bounds the whole request, not each read: a byte every 0.5 s would take 17 minutes.
    # (The margin is for a worker busy starting up all its greenlets at once.)
    assert TIMEOUT_S <= status.last_scrape_duration < TIMEOUT_S + 3


def test_a_gzip_bomb_is_cut_at_body_size_limit_and_the_worker_memory_barely_moves(bench: Bench) -> None:
    pid = bench.worker.process.pid
    rss, peak = memory_kib(pid), memory_kib(pid, "VmHWM")
    bench.hostile.arm_bomb()
    wait_until(lambda: bench.hostile.bombs_sent >= 3, timeout=4 * INTERVAL_S + 5, message="three bombs served")
    wait_until(lambda: "decompresses to more than" in (status_of(bench.redis, "hostile", BOMB).last_error or ""),
               timeout=2 * INTERVAL_S + 5, message="the bomb's scrape to be recorded")
    last_error = _down_saying(bench, "hostile", BOMB, ["16.0 MiB body_size_limit", "gzip bomb"])
    assert "1019" in last_error  # KiB on the wire, for a GiB inflated
    assert not list((bench.store / "hostile" / BOMB).rglob("*"))
    # Inflating it whole would take 1 GiB. Cut at the limit, each validation holds about the limit;
    # a few run at once in the worker's thread pool, whose malloc arenas keep some of it.
    grown, peaked = memory_kib(pid) - rss, memory_kib(pid, "VmHWM") - peak
    assert grown < 8 * BODY_SIZE_LIMIT // 1024 and peaked < 8 * BODY_SIZE_LIMIT // 1024, (grown, peaked)


@pytest.mark.parametrize("job", sorted(TLS))
def test_a_certificate_that_does_not_verify_leaves_the_https_target_down_saying_why(bench: Bench, job: str) -> None:
    _down_saying(bench, job, "goroutine", TLS[job])
    assert not (bench.store / job).exists()


def test_insecure_skip_verify_scrapes_an_unverifiable_target_and_warns_once_per_job_and_receiver(
        bench: Bench) -> None:
    wait_until(lambda: len(list((bench.store / "tls_insecure").rglob("*.pb.gz"))) >= 3, timeout=4 * INTERVAL_S + 5,
               message="three profiles from the insecure job")
    assert status_of(bench.redis, "tls_insecure", "goroutine").health == TargetHealth.UP
    warnings = [line for line in bench.worker.output().splitlines() if "insecure_skip_verify" in line]
    assert any("scrape.tls_insecure" in line for line in warnings), warnings
    assert sum("write.insecure_store" in line for line in warnings) == 1, warnings
    # Not once per scrape: the warnings were logged when the config and the job's client were made.
    assert len(warnings) <= 3, warnings
    assert "InsecureRequestWarning" not in bench.worker.output()


def test_a_target_that_resolves_nowhere_is_down_with_the_dns_error(bench: Bench) -> None:
    _down_saying(bench, "nowhere", "goroutine", ["cannot resolve does-not-exist.invalid"])


@pytest.mark.parametrize(("file", "words"), [
    ("missing", ["bearer_token_file", "no-such-token", "No such file or directory"]),
    ("directory", ["bearer_token_file", "token-dir", "Is a directory"]),
])
def test_an_unreadable_secret_file_leaves_the_target_down_naming_the_file(
        bench: Bench, file: str, words: list[str]) -> None:
    error = _down_saying(bench, f"secret_{file}", "goroutine", words)
    assert str(bench.files[file]) in error


def test_a_secret_file_readable_by_others_is_used_and_warned_about_once_naming_it(bench: Bench) -> None:
    assert status_of(bench.redis, "secret_open", "goroutine").health == TargetHealth.UP
    warnings = [line for line in bench.worker.output().splitlines() if "readable by group or others" in line]
    assert len(warnings) == 1, warnings
    assert str(bench.files["open"]) in warnings[0] and "chmod 600" in warnings[0]


def test_through_it_all_the_good_profile_kept_flowing_and_the_worker_is_alive_and_small(bench: Bench) -> None:
    worker = bench.worker
    assert worker.process.poll() is None, worker.output()[-3000:]
    assert memory_kib(worker.process.pid) < 400 * 1024
    assert "Traceback" not in worker.output()
    starts = sorted(dt.datetime.fromisoformat(s["start"]).timestamp() for s in sidecars(bench.store / "hostile"))
    assert starts[-1] > time.time() - 3 * INTERVAL_S, "the last good profile is recent"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < 2.5 * INTERVAL_S, "a good profile every interval, from the first scrape to now"
    assert {path.parent.parent.parent.parent.name for path in (bench.store / "hostile").rglob("*.pb.gz")} == {"goroutine"}
    assert set(stored_ids(bench.store).values()) == {1}
    assert bench.hostile.requests[GOOD_PATH] >= len(starts)
