"""Beat's lock against a real Redis: one beat emits, the others stand by."""

from __future__ import annotations

import redis

from beat.lock import BeatLock
from scraper import keys
from tests.conftest import wait_until


def test_one_beat_holds_the_lock_and_the_other_stands_by(redis_client: redis.Redis) -> None:
    first, second = BeatLock(redis_client, 30), BeatLock(redis_client, 30)

    assert first.hold() and not second.hold()
    assert first.hold()  # renewing


def test_a_released_lock_is_taken_by_a_standby_at_once(redis_client: redis.Redis) -> None:
    first, second = BeatLock(redis_client, 30), BeatLock(redis_client, 30)
    first.hold()

    first.release()

    assert second.hold() and not first.held


def test_a_standby_takes_over_once_the_holders_ttl_runs_out(redis_client: redis.Redis) -> None:
    dead, standby = BeatLock(redis_client, 0.3), BeatLock(redis_client, 30)
    dead.hold()  # and never renews it

    wait_until(standby.hold, timeout=10, message="the standby to take the expired lock")


def test_a_beat_that_lost_its_lock_stops_holding_it_and_leaves_the_new_holders_key(redis_client: redis.Redis) -> None:
    old, new = BeatLock(redis_client, 0.3), BeatLock(redis_client, 30)
    old.hold()
    wait_until(new.hold, timeout=10, message="the lock to pass to the other beat")

    wait_until(lambda: not old.hold(), timeout=10, message="the old holder to notice")
    old.release()

    assert redis_client.exists(keys.BEAT_LOCK) and new.hold()
