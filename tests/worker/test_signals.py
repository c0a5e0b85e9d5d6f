"""The worker's signal handlers called in the test process: expired scrapes are counted, and the
sweep sends the pushes a dead worker stored but never sent."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import redis

from scraper import delivery, keys, status
from scraper.receivers import Profile
from tests.worker.conftest import pushes_sent
from worker.signals import count_expired_scrape, send_orphans
from worker.tasks import scrape


def test_an_expired_scrape_task_counts_one_dropped_scrape_per_type_and_target(
        store: Path, redis_client: redis.Redis) -> None:
    expired = SimpleNamespace(args=["demo", ["goroutine", "memory"], [{"__address__": "a"}, {"__address__": "b"},
                                                                      {"__address__": "c"}], [1.0, 2.0, 3.0]])

    count_expired_scrape(sender=scrape, request=expired, expired=True)

    assert status.read_counters(redis_client)["scrapes_dropped"] == 6


def test_the_sweep_sends_the_pushes_of_a_profile_whose_worker_died_before_sending_them(
        store: Path, redis_client: redis.Redis) -> None:
    profile = Profile(id="orphan", labels={"job": "demo", "__name__": "goroutine"}, body=b"pprof", start=1.0,
                      end=2.0, url="http://t/debug/pprof/goroutine")
    delivery.stash(redis_client, profile, ["files"], 10**9, 10**9)
    redis_client.zadd(keys.UNPUBLISHED, {"orphan": time.time() - delivery.ORPHAN_AFTER_S - 1})  # stored a while ago

    send_orphans()

    assert pushes_sent(redis_client) == [(["orphan"], "files")]
    assert status.read_counters(redis_client)["orphans_sent"] == 1
