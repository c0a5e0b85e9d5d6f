"""`pprof-scraper deadletter list` shows each entry's age; `replay` leaves what the store would refuse as
too old (Pyroscope's reject_older_than) instead of sending it to be dead-lettered again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from scraper import delivery
from scraper.receivers import Profile
from tests.e2e.processes import scraper_env

CLI = str(Path(sys.executable).parent / "pprof-scraper")
HOUR = 3600.0


def dead_letter(client: redis.Redis, id: str, receiver: str, age_s: float) -> None:
    scraped = time.time() - age_s
    profile = Profile(id=id, labels={"job": "j", "service_name": "j", "__name__": "goroutine"}, body=b"\x1f\x8b...",
                      start=scraped, end=scraped + 0.1, url="http://t:1/debug/pprof/goroutine")
    delivery.dead_letter(client, delivery.DeadLetter.of(profile, receiver, "HTTP 503", 10), 10**9)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_replay_leaves_dead_letters_older_than_their_receivers_window_and_says_so(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("""
scrape: {}
write:
  pyroscope: {type: pyroscope, url: "http://127.0.0.1:9"}
  files: {type: file, path: ./profiles}
""")
    env = scraper_env(redis_url, config)
    dead_letter(redis_client, "stale", "pyroscope", age_s=2 * HOUR)
    dead_letter(redis_client, "old-file", "files", age_s=2 * HOUR)
    dead_letter(redis_client, "fresh", "pyroscope", age_s=60)

    listed = {e["id"]: e for e in map(json.loads, cli(env, "deadletter", "list").splitlines())}
    assert 2 * HOUR <= listed["stale"]["age_s"] < 2 * HOUR + 60
    assert 60 <= listed["fresh"]["age_s"] < 120

    out = cli(env, "deadletter", "replay").splitlines()
    assert out[0] == "replayed 2 dead letters (sent again as push tasks)"
    assert out[1].startswith("left 1 dead letters older than their receiver's reject_older_than")
    assert "pyroscope (3600s)" in out[1]
    assert [e.id for e in delivery.list_dead_letters(redis_client)] == ["stale"]
    assert sorted(delivery.load(redis_client, i).id for i in ("old-file", "fresh")) == ["fresh", "old-file"]


def test_a_receiver_without_a_window_replays_every_entry(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('write:\n  pyroscope: {type: pyroscope, url: "http://127.0.0.1:9", reject_older_than: "0"}\n')
    dead_letter(redis_client, "ancient", "pyroscope", age_s=30 * 24 * HOUR)
    out = cli(scraper_env(redis_url, config), "deadletter", "replay")
    assert out == "replayed 1 dead letters (sent again as push tasks)\n"
    assert delivery.list_dead_letters(redis_client) == []
