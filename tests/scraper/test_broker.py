"""The Redis client every process uses: more callers at once than it has connections wait their turn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from scraper import broker
from scraper.broker import connect_redis
from scraper.errors import ConfigError
from scraper.settings import Settings
from tests.conftest import wait_until
from tests.sentinel import loopback_sentinel


def test_more_simultaneous_redis_calls_than_connections_wait_for_one_instead_of_failing(
        redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "MAX_CONNECTIONS", 4)
    client = connect_redis(redis_url)
    # 16 calls that each hold a connection for 0.3 s, on a pool of 4
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: client.blpop([f"empty-{i}"], timeout=0.3), range(16)))
    assert answers == [None] * 16
    assert len(client.connection_pool._connections) <= 4


def test_a_sentinel_url_names_every_sentinel_the_masters_password_and_the_database() -> None:
    where = broker.SentinelURL.parse("sentinel://:s3cret@10.0.0.1:26379;sentinel://:s3cret@10.0.0.2:26380;"
                                     "sentinel://10.0.0.3/2")
    assert where.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert where.password == "s3cret"
    assert where.db == 2


def test_a_malformed_sentinel_url_is_refused_naming_the_setting_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        broker.SentinelURL.parse("sentinel://:s3cret@10.0.0.1:26379;redis://:s3cret@10.0.0.2:6379")
    assert "SCRAPER_BROKER_URL" in str(refused.value)
    assert "redis://10.0.0.2:6379" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_celery_is_told_the_sentinel_master_by_scraper_sentinel_master() -> None:
    from worker.celery_app import create_app

    app = create_app(Settings(broker_url="sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379/0",
                              sentinel_master="scrapers"))
    assert app.conf.broker_transport_options["master_name"] == "scrapers"
    assert "master_name" not in create_app(Settings(broker_url="redis://10.0.0.1:6379/0")).conf.broker_transport_options


def test_a_sentinel_url_connects_to_the_master_the_sentinels_name(tmp_path: Path) -> None:
    with loopback_sentinel(tmp_path, "scrapers") as (url, master_port):
        client = connect_redis(url, "scrapers")

        def answers() -> bool:
            try:
                return bool(client.set("written-through-sentinel", "yes"))
            except redis.RedisError:
                return False

        wait_until(answers, timeout=15, message="the master through the sentinel")
        assert redis.Redis(port=master_port, db=3).get("written-through-sentinel") == b"yes"


def test_the_broker_password_comes_from_its_file_into_every_part_of_the_url(tmp_path: Path) -> None:
    (tmp_path / "redis_password").write_text("p@ss:w/rd\n")
    settings = Settings(broker_url="sentinel://s1:26379;sentinel://s2:26379/0",
                        broker_password_file=tmp_path / "redis_password")
    assert broker.SentinelURL.parse(broker.broker_url(settings)).password == "p@ss:w/rd"
    plain = Settings(broker_url="redis://redis:6379/0", broker_password_file=tmp_path / "redis_password")
    assert redis.connection.parse_url(broker.broker_url(plain))["password"] == "p@ss:w/rd"


def test_a_password_given_both_in_the_url_and_in_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "redis_password").write_text("from-the-file")
    with pytest.raises(ConfigError, match="give the password one way"):
        broker.broker_url(Settings(broker_url="redis://:inline@redis:6379/0",
                                   broker_password_file=tmp_path / "redis_password"))
