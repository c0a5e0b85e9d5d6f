"""The in-flight guard's own steps, against a real Redis: taken for a task, renewed for a late
request, released by its holder only."""

from __future__ import annotations

from pathlib import Path

import redis

from scraper import guard
from scraper.broker import NamedReplies
from scraper.config import load_config
from scraper.plan import ScrapeSpec, make_plan


def cpu_spec(tmp_path: Path) -> ScrapeSpec:
    config = tmp_path / "c.yaml"
    config.write_text(f"""scrape:
  demo:
    targets: [{{__address__: "127.0.0.1:6060"}}]
    forward_to: [files]
write:
  files: {{type: file, path: "{tmp_path}"}}
""")
    return next(s for s in make_plan(load_config(config)).specs if s.profile_type == "process_cpu")


def release(client: redis.Redis, spec: ScrapeSpec, token: str) -> None:
    """As a wave's record pipeline releases its guards."""
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        guard.queue_release(replies, [spec], token)
        replies.execute()


def test_a_guard_taken_for_a_task_is_not_taken_again_until_released(tmp_path: Path, redis_client: redis.Redis) -> None:
    spec = cpu_spec(tmp_path)

    assert guard.take(redis_client, [spec], "task-a") == {spec.key}
    assert guard.take(redis_client, [spec], "task-b") == set()
    release(redis_client, spec, "task-b")  # not its holder: nothing happens
    assert guard.take(redis_client, [spec], "task-b") == set()
    release(redis_client, spec, "task-a")
    assert guard.take(redis_client, [spec], "task-b") == {spec.key}


def test_a_late_request_renews_its_guard_to_a_full_expiry_from_when_it_starts(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    spec = cpu_spec(tmp_path)
    guard.take(redis_client, [spec], "task-a")
    redis_client.pexpire(guard.guard_key(spec), 500)  # as if most of its expiry had passed

    assert guard.renew(redis_client, spec, "task-a")
    assert redis_client.pttl(guard.guard_key(spec)) > (spec.timeout_s + 0.5) * 1000


def test_a_guard_that_expired_and_was_taken_by_another_is_not_renewed(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    spec = cpu_spec(tmp_path)
    guard.take(redis_client, [spec], "task-b")

    assert not guard.renew(redis_client, spec, "task-a")
    assert redis_client.get(guard.guard_key(spec)) == b"task-b"
