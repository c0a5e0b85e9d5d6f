"""The Redis client every process uses: more callers at once than it has connections wait their turn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from scraper import broker
from scraper.broker import connect_redis


def test_more_simultaneous_redis_calls_than_connections_wait_for_one_instead_of_failing(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "MAX_CONNECTIONS", 4)
    client = connect_redis(redis_url)
    # 16 calls that each hold a connection for 0.3 s, on a pool of 4
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: client.blpop([f"empty-{i}"], timeout=0.3), range(16)))
    assert answers == [None] * 16
    assert len(client.connection_pool._connections) <= 4
