"""A worker killed with SIGKILL in the middle of a scrape and of a push: the push is redone by
another worker, once in the file store and at least once in Pyroscope under the same id; the
scrape in flight is lost (it was acknowledged when it started) and the next slot scrapes again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scraper import delivery, keys
from scraper.receivers import Profile
from scraper.status import TargetHealth
from tests.conftest import wait_until
from tests.e2e.processes import scraper_env, start_beat, start_worker
from tests.fakes import PprofTarget, pprof_target
from tests.faults.support import BUILTIN_OFF, status_of, stored_ids, write_config
from tests.pyroscope_standin import PyroscopeStandIn
from tests.scraper.test_delivery import BIG

pytestmark = pytest.mark.slow

INTERVAL_S = 3
VISIBILITY_TIMEOUT_S = 5


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


def test_pushes_in_flight_when_a_worker_is_killed_are_redone_by_another_exactly_once_in_the_file_store(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget) -> None:
    store = tmp_path / "profiles"
    with PyroscopeStandIn() as pyroscope:
        profiling = {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}, "profile.process_cpu": {"enabled": True}}
        config = write_config(
            tmp_path / "config.yaml",
            {"demo": {"targets": [{"__address__": target.address}], "forward_to": ["files", "pyroscope"],
                      "scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": "2s", "profiling_config": profiling}},
            {"files": {"type": "file", "path": str(store)},
             # An attempt (4 s) shorter than the visibility timeout, as the settings ask.
             "pyroscope": {"type": "pyroscope", "url": pyroscope.url, "remote_timeout": "4s",
                           "min_backoff_period": "200ms", "max_backoff_period": "1s"}})
        env = scraper_env(redis_url, config, SCRAPER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S))
        release = pyroscope.hold()
        first = start_worker(env, tmp_path, "worker1")
        beat = start_beat(env, tmp_path)
        try:
            cpu_in_flight = keys.PROFILE_INFLIGHT.format(url=f"http://{target.address}/debug/pprof/profile")
            wait_until(lambda: pyroscope.requests and redis_client.exists(cpu_in_flight), timeout=4 * INTERVAL_S,
                       message="a push held by Pyroscope while a CPU profile is being taken")
            first.kill()
            killed_at = time.time()
            in_flight = {i for request in pyroscope.requests for i in request.ids}
            seen = len(pyroscope.requests)
            release.set()

            second = start_worker(env, tmp_path, "worker2")
            try:
                wait_until(lambda: in_flight <= {i for r in pyroscope.pushes[seen:] for i in r.ids},
                           timeout=VISIBILITY_TIMEOUT_S + 25,
                           message="the killed worker's pushes to be redone by the second worker")
                wait_until(lambda: in_flight <= set(stored_ids(store)), timeout=10,
                           message="the killed worker's profiles in the file store")
                # The slot whose CPU profile was being taken is lost; the next ones are not blocked by it.
                wait_until(lambda: (s := status_of(redis_client, "demo", "process_cpu")) and s.last_success
                           and s.last_success > killed_at, timeout=4 * INTERVAL_S + 6,
                           message="a CPU profile scraped after the kill")
            finally:
                second.stop()
        finally:
            beat.stop()
            first.stop()
    assert set(stored_ids(store).values()) == {1}, "one file per profile id, redone pushes included"
    assert status_of(redis_client, "demo", "goroutine").health == TargetHealth.UP


def test_a_profile_stashed_by_a_worker_killed_before_publishing_its_push_is_sent_by_a_sweep(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    store = tmp_path / "profiles"
    config = write_config(tmp_path / "config.yaml",
                          {"demo": {"targets": [{"__address__": "127.0.0.1:9"}], "forward_to": ["files"],
                                    "profiling_config": BUILTIN_OFF}},
                          {"files": {"type": "file", "path": str(store)}})
    body = (Path(__file__).parents[1] / "data" / "go" / "goroutine_1.pb.gz").read_bytes()
    orphan = Profile(id=str(uuid.uuid4()), labels={"job": "demo", "instance": "127.0.0.1:9", "__name__": "goroutine"},
                     body=body, start=time.time() - 70, end=time.time() - 70, url="http://127.0.0.1:9/debug/pprof/goroutine")
    delivery.stash(redis_client, orphan, ["files"], BIG, BIG)  # ... and its worker died before publishing
    # stored long enough ago that no push task of it can still be on its way
    redis_client.zadd(keys.UNPUBLISHED, {orphan.id: time.time() - delivery.ORPHAN_AFTER_S - 1})

    worker = start_worker(scraper_env(redis_url, config, SCRAPER_VISIBILITY_TIMEOUT="2"), tmp_path)
    try:
        wait_until(lambda: orphan.id in stored_ids(store), timeout=60, message="the orphan in the file store")
        wait_until(lambda: redis_client.zcard(keys.PENDING) == 0, timeout=30, message="nothing left pending")
    finally:
        worker.stop()
    assert "sent the pushes of 1 stored profiles whose worker died before sending them" in worker.output()
    assert redis_client.hget(keys.COUNTERS, "orphans_sent") == b"1"
