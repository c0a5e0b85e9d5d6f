"""A store down for longer than all retries: its pushes are dead-lettered with the error, listed
by ``pprof-scraper deadletter list``, delivered by ``deadletter replay`` once the store is back,
and none is lost; ``deadletter purge`` empties the list. Dead letters keep no secret."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from scraper import delivery, keys
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import PprofTarget
from tests.faults.support import BUILTIN_OFF, status_of, stored_ids, write_config
from tests.pyroscope_standin import PyroscopeStandIn

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "pprof-scraper")
INTERVAL_S = 2
PASSWORD = "hunter2-not-for-logs"


@dataclass
class Bench:
    store: Path
    env: dict[str, str]
    redis: redis.Redis
    worker: Proc
    beat: Proc

    def cli(self, *args: str) -> str:
        done = subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    def dead_letters(self) -> list[dict[str, object]]:
        """What ``pprof-scraper deadletter list`` prints, parsed."""
        return [json.loads(line) for line in self.cli("deadletter", "list").splitlines()]

    def dead_letter_ids(self, receiver: str) -> list[str]:
        """Straight from Redis: cheaper than the command for waiting on."""
        return [e.id for e in delivery.list_dead_letters(self.redis, limit=10_000) if e.receiver == receiver]


@pytest.fixture(scope="module")
def bench(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("deadletter")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = tmp / "profiles"
    store.write_text("a file where the store's directory should be: the store is down")
    target = PprofTarget().start()
    with PyroscopeStandIn(basic_auth=("scraper", "the-right-one")) as pyroscope:
        job = {"targets": [{"__address__": target.address}], "scrape_interval": f"{INTERVAL_S}s",
               "profiling_config": {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}}
        config = write_config(
            tmp / "config.yaml",
            {"demo": {**job, "forward_to": ["files"]}, "secretive": {**job, "forward_to": ["pyroscope"]}},
            {"files": {"type": "file", "path": str(store)},
             "pyroscope": {"type": "pyroscope", "url": pyroscope.url,
                           "basic_auth": {"username": "scraper", "password": PASSWORD}}})
        # A short visibility timeout caps each retry's wait at 2 s: five attempts take seconds, not a minute.
        env = scraper_env(redis_url, config, SCRAPER_VISIBILITY_TIMEOUT="4")
        worker = start_worker(env, tmp)
        beat = start_beat(env, tmp)
        try:
            yield Bench(store, env, client, worker, beat)
        finally:
            beat.stop()
            worker.stop()
            target.stop()
            client.close()


def test_a_push_refused_by_the_store_is_dead_lettered_with_the_error_and_no_secret(bench: Bench) -> None:
    wait_until(lambda: bench.dead_letter_ids("pyroscope"), timeout=4 * INTERVAL_S + 10,
               message="a dead letter for Pyroscope")
    entry = next(e for e in bench.dead_letters() if e["receiver"] == "pyroscope")
    assert "401" in entry["error"] and entry["attempts"] == 1
    assert entry["body_bytes"] > 0
    assert PASSWORD not in json.dumps(entry)
    assert not any(PASSWORD.encode() in raw for raw in bench.redis.lrange(keys.DEADLETTER, 0, -1))
    assert PASSWORD not in bench.worker.output()


def test_pushes_to_a_store_down_past_all_retries_are_dead_lettered_then_replayed_with_none_lost(bench: Bench) -> None:
    wait_until(lambda: len(bench.dead_letter_ids("files")) >= 2, timeout=6 * INTERVAL_S + 20,
               message="two dead letters for the file store")
    for entry in [e for e in bench.dead_letters() if e["receiver"] == "files"]:
        assert entry["attempts"] == 5
        assert f"cannot write {bench.store}" in entry["error"]
    bench.beat.stop()  # no new scrapes: the set of profiles to account for is fixed from here
    wait_until(lambda: bench.redis.llen("scrape") == 0 and bench.redis.zcard(keys.PENDING) == 0, timeout=30,
               message="every scrape done and every push delivered or dead-lettered")
    scraped = status_of(bench.redis, "demo", "goroutine").successes
    dead = bench.dead_letter_ids("files")
    assert len(dead) == len(set(dead)) == scraped, "every profile scraped is in the dead-letter list, once"

    bench.store.unlink()  # the store is back
    replayed = bench.cli("deadletter", "replay")
    assert replayed.startswith("replayed ") and int(replayed.split()[1]) >= len(dead), replayed
    wait_until(lambda: set(stored_ids(bench.store)) == set(dead), timeout=20,
               message="every dead-lettered profile in the store")
    assert set(stored_ids(bench.store).values()) == {1}
    assert not bench.dead_letter_ids("files")


def test_purge_empties_the_dead_letter_list(bench: Bench) -> None:
    count = wait_until(lambda: bench.redis.llen(keys.DEADLETTER), timeout=20, message="a dead letter to purge")
    assert bench.cli("deadletter", "purge").strip() == f"purged {count} dead letters"
    assert bench.dead_letters() == []
