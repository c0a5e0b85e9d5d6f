"""The two tasks called in the test process: ``scraper.scrape`` stores profiles and sends their
pushes, ``scraper.push`` delivers them or dead-letters them."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from scraper import delivery, keys
from tests.fakes import PprofTarget
from tests.worker.conftest import pushes_sent
from worker.tasks import push, scrape


def labels(target: PprofTarget) -> dict[str, str]:
    return {"__address__": target.address, "app": "demo", "service_name": "demo"}


def profile_type(client: redis.Redis, push_id: str) -> str:
    """The profile type of the profile stored under ``push_id``."""
    stored = delivery.load(client, push_id)
    assert stored is not None, f"{push_id} is not pending"
    return stored.labels["__name__"]


def test_a_scrape_task_sends_one_push_per_receiver_elsewhere_naming_the_profiles_it_stored(
        store: Path, redis_client: redis.Redis, target: PprofTarget) -> None:
    scrape.run("demo", ["goroutine", "memory"], [labels(target)], [time.time()])

    [(ids, receiver)] = pushes_sent(redis_client)
    assert receiver == "pyro"
    assert sorted(profile_type(redis_client, i) for i in ids) == ["goroutine", "memory"]
    assert redis_client.zcard(keys.UNPUBLISHED) == 0, "the sweep for orphans has nothing to send"


def test_a_scrape_task_sends_the_quick_types_and_the_cpu_profile_in_two_pushes(
        store: Path, redis_client: redis.Redis, target: PprofTarget) -> None:
    scrape.run("demo", ["goroutine", "memory", "process_cpu"], [labels(target)], [time.time()])

    sent = [sorted(profile_type(redis_client, i) for i in ids)
            for ids, _ in pushes_sent(redis_client)]
    assert sent == [["goroutine", "memory"], ["process_cpu"]]


def test_a_scrape_task_writes_this_hosts_file_store_itself(
        store: Path, redis_client: redis.Redis, target: PprofTarget) -> None:
    scrape.run("demo", ["goroutine", "memory"], [labels(target)], [time.time()])

    assert len(list(store.rglob("*.pb.gz"))) == 2
    assert [receiver for _, receiver in pushes_sent(redis_client)] == ["pyro"]


def test_a_scrape_task_says_how_each_type_went(store: Path, target: PprofTarget) -> None:
    outcome = scrape.run("demo", ["goroutine"], [labels(target)], [time.time()])

    assert outcome.startswith("goroutine up: ")


def test_a_push_task_delivers_its_profiles_to_the_file_store(
        store: Path, redis_client: redis.Redis, target: PprofTarget) -> None:
    scrape.run("demo", ["goroutine", "memory"], [labels(target)], [time.time()])
    [(ids, _)] = pushes_sent(redis_client)
    for path in store.rglob("*"):  # as if the scrape's own write had failed: the push task writes them
        if path.is_file():
            path.unlink()
    for push_id in ids:
        delivery.stash(redis_client, delivery.load(redis_client, push_id), ["files"], 2**30, 2**30)  # type: ignore[arg-type]

    assert push.run(ids, "files") == "delivered; delivered"
    assert len(list(store.rglob("*.pb.gz"))) == 2


def test_a_push_task_for_a_receiver_not_in_the_config_dead_letters_its_profile(
        store: Path, redis_client: redis.Redis, target: PprofTarget) -> None:
    scrape.run("demo", ["goroutine"], [labels(target)], [time.time()])
    [(ids, _)] = pushes_sent(redis_client)

    outcome = push.run(ids, "elsewhere")

    assert outcome.startswith("dead-lettered after 1 attempts: receiver 'elsewhere' is not in this process's config")
    assert [(letter.id, letter.receiver) for letter in delivery.list_dead_letters(redis_client)] == \
        [(ids[0], "elsewhere")]
