"""Beat's plan scheduler, in process against a real Redis: what it emits, and when it holds back."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import redis

from beat.scheduler import MIN_BACKLOG_LIMIT, PlanScheduler
from scraper import keys, status
from scraper.keys import SCRAPE_QUEUE
from tests.conftest import wait_until
from tests.queued import scrapes_of
from worker.celery_app import create_app


def configure_fleet(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, interval: str) -> None:
    """Point beat at a config of 10 targets scraped every ``interval``."""
    targets = ", ".join(f'{{__address__: "10.0.0.{i}:6060"}}' for i in range(10))
    config = tmp_path / "c.yaml"
    config.write_text(f"scrape:\n  fleet:\n    targets: [{targets}]\n    forward_to: [files]\n"
                      f"    scrape_interval: {interval}\nwrite:\n  files: {{type: file}}\n")
    monkeypatch.setenv("SCRAPER_BROKER_URL", redis_url)
    monkeypatch.setenv("SCRAPER_CONFIG", str(config))


@pytest.fixture
def scheduler(tmp_path: Path, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch):
    configure_fleet(tmp_path, redis_url, monkeypatch, "2s")
    sched = PlanScheduler(app=create_app())
    yield sched
    sched.close()


def scrape_args(client: redis.Redis) -> list[list]:
    """The arguments of every queued scrape message (kombu keeps the body base64-encoded JSON)."""
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0] for raw in client.lrange(SCRAPE_QUEUE, 0, -1)]


def scrapes_sent(client: redis.Redis) -> list[list]:
    """[job, profile types, target labels, slot] of every target in every queued scrape message."""
    return [scrape for raw in client.lrange(SCRAPE_QUEUE, 0, -1) for scrape in scrapes_of(raw)]


def test_beat_sends_every_target_once_per_slot_with_all_its_profile_types(
        scheduler: PlanScheduler, redis_client: redis.Redis) -> None:
    wait_until(lambda: scheduler.tick() is not None and len(scrapes_sent(redis_client)) >= 10, timeout=5,
               message="one interval of scrapes")
    sent = scrapes_sent(redis_client)
    slots = [(job, labels["__address__"], slot) for job, _, labels, slot in sent]
    assert len(slots) == len(set(slots))
    assert len({slot[:2] for slot in slots}) == 10
    assert all(sorted(types) == ["block", "goroutine", "memory", "mutex", "process_cpu"] for _, types, _, _ in sent)
    assert all(set(labels) == {"__address__", "service_name"} for _, _, labels, _ in sent)  # no __meta_*


def test_targets_due_in_the_same_tick_share_one_task_up_to_the_limit(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    configure_fleet(tmp_path, redis_url, monkeypatch, "60s")
    monkeypatch.setenv("SCRAPER_TARGETS_PER_TASK", "4")
    sched = PlanScheduler(app=create_app())
    try:
        sched.tick()
        # a minute later every target of the 60 s interval is due at once
        sched._emit_due(time.time() + 60)
    finally:
        sched.close()
    sizes = sorted(len(targets) for _, _, targets, _ in scrape_args(redis_client))
    assert sizes == [2, 4, 4]
    assert len({labels["__address__"] for _, _, labels, _ in scrapes_sent(redis_client)}) == 10


def test_with_one_target_per_task_each_message_lists_one_target_and_its_slot(
        scheduler: PlanScheduler, redis_client: redis.Redis) -> None:
    scheduler.targets_per_task = 1
    scheduler.tick()
    scheduler._emit_due(time.time() + 2)
    sent = scrape_args(redis_client)
    assert len(sent) >= 10
    assert all(isinstance(types, list) and len(labels) == len(slots) == 1 for _, types, labels, slots in sent)


def test_beat_drops_due_scrapes_while_workers_are_far_behind_and_counts_them(
        scheduler: PlanScheduler, redis_client: redis.Redis) -> None:
    redis_client.rpush(SCRAPE_QUEUE, *[b"queued"] * (MIN_BACKLOG_LIMIT + 1))
    wait_until(lambda: scheduler.tick() is not None and int(redis_client.hget(keys.COUNTERS, "scrapes_dropped") or 0) >= 50,
               timeout=5, message="an interval of scrapes dropped at the source")
    assert redis_client.llen(SCRAPE_QUEUE) == MIN_BACKLOG_LIMIT + 1

    redis_client.delete(SCRAPE_QUEUE)  # the workers caught up
    wait_until(lambda: scheduler.tick() is not None and redis_client.llen(SCRAPE_QUEUE) >= 10, timeout=5,
               message="emission to resume")


def sharded_scheduler(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, shard: int) -> PlanScheduler:
    """A beat of shard ``shard`` of 2, keeping its half of a 10-target fleet by hashmod relabeling."""
    targets = ", ".join(f'{{__address__: "10.0.0.{i}:6060"}}' for i in range(10))
    config = tmp_path / f"shard{shard}.yaml"
    config.write_text(f"""scrape:
  fleet:
    targets: [{targets}]
    relabel_configs:
      - {{source_labels: [__address__], modulus: 2, target_label: __tmp_shard, action: hashmod}}
      - {{source_labels: [__tmp_shard], regex: "{shard}", action: keep}}
    forward_to: [files]
    scrape_interval: 2s
write:
  files: {{type: file}}
""")
    monkeypatch.setenv("SCRAPER_BROKER_URL", redis_url)
    monkeypatch.setenv("SCRAPER_CONFIG", str(config))
    monkeypatch.setenv("SCRAPER_BEAT_SHARD", f"shard{shard}")
    return PlanScheduler(app=create_app())


def test_beats_of_different_shards_split_a_fleet_on_one_redis(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    beats = [sharded_scheduler(tmp_path, redis_url, monkeypatch, shard) for shard in (0, 1)]
    try:
        def one_interval_sent() -> bool:
            for beat in beats:
                beat.tick()
            return redis_client.llen(SCRAPE_QUEUE) >= 10

        wait_until(one_interval_sent, timeout=5, message="both shards to emit")
        addresses = [labels["__address__"] for _, _, labels, _ in scrapes_sent(redis_client)[:10]]
        assert sorted(addresses) == sorted(f"10.0.0.{i}:6060" for i in range(10))
        assert all(beat.lock.held for beat in beats)
        assert len(redis_client.hkeys(keys.STATUS)) == 50

        # A shard whose plan empties prunes only its own records; the other shard's stay.
        status.register_specs(redis_client, [], "shard0")
        remaining = status.read_statuses(redis_client)
        assert 0 < len(remaining) < 50
        assert {s.key for s in remaining} == {spec.key for spec in beats[1]._specs}
    finally:
        for beat in beats:
            beat.close()
