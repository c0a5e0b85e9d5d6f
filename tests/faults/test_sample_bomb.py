"""A sample bomb (a valid 65 KB gzip profile of 16.7 million samples) is refused by sample_limit,
while the same worker keeps scraping another target on time: real worker, beat, Redis and HTTP."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from pathlib import Path

import pytest
import redis

from bench.validation_cost import sample_bomb
from scraper.status import TargetHealth
from tests.conftest import wait_until
from tests.e2e.processes import scraper_env, start_beat, start_worker
from tests.faults.hostile import HostileTarget, _answer
from tests.faults.support import BUILTIN_OFF, sidecars, status_of, write_config

pytestmark = pytest.mark.slow

INTERVAL_S = 2
BOMBS = 3


def test_a_worker_keeps_scraping_another_target_on_time_while_a_sample_bomb_is_refused(
    redis_url: str, tmp_path: Path
) -> None:
    bomb = sample_bomb()
    assert len(bomb) < 64 * 1024, "small on the wire: the size that used to be validated on the event loop"
    hostile = HostileTarget()
    hostile.routes["/sample_bomb"] = _answer("200 OK", bomb)
    hostile.start()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    goroutine_only = {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}
    job = {"targets": [{"__address__": hostile.address}], "forward_to": ["files"],
           "scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": "1.5s"}
    scrape = {
        "good": {**job, "profiling_config": goroutine_only},
        "bomb": {**job, "profiling_config": {
            **goroutine_only, "profile.goroutine": {"enabled": False},
            "profile.custom": {"sample_bomb": {"enabled": True, "path": "/sample_bomb"}}}},
    }
    store = tmp_path / "profiles"
    config = write_config(tmp_path / "config.yaml", scrape, {"files": {"type": "file", "path": str(store)}})
    env = scraper_env(redis_url, config)
    worker = start_worker(env, tmp_path, concurrency=8)
    beat = start_beat(env, tmp_path)
    try:
        wait_until(lambda: hostile.requests["/sample_bomb"] >= BOMBS, timeout=20 * INTERVAL_S,
                   message=f"{BOMBS} sample bombs served")
        began = time.time()
        wait_until(lambda: (s := status_of(client, "bomb", "sample_bomb")) is not None
                   and (s.last_scrape or 0) > began - INTERVAL_S,
                   timeout=20 * INTERVAL_S, message="the last bomb's scrape to be recorded")
        # Every scrape of the other target succeeded within its 1.5 s timeout, one every interval.
        good = status_of(client, "good", "goroutine")
        assert good is not None and good.failures == 0 and good.successes >= BOMBS, good
        starts = sorted(dt.datetime.fromisoformat(str(s["start"])).timestamp() for s in sidecars(store / "good"))
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert max(gaps) < 2 * INTERVAL_S, gaps

        bombed = status_of(client, "bomb", "sample_bomb")
        assert bombed.health == TargetHealth.DOWN
        assert "more than 1000000 samples, over the job's sample_limit" in (bombed.last_error or "")
        assert worker.process.poll() is None and "Traceback" not in worker.output()
    finally:
        beat.stop()
        worker.stop()
        hostile.stop()
        client.close()
