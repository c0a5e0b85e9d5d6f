"""A worker's Runtime in the test process: a scrape task's scrapes against a real pprof target and
real Redis, run side by side in threads where a worker uses greenlets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from scraper import delivery, keys, status
from scraper.concurrency import in_place
from scraper.plan import make_plan
from scraper.runtime import Runtime
from scraper.scrape import ScrapeResult
from scraper.settings import Settings
from tests.fakes import PprofTarget, pprof_target
from tests.inprocess import spawn_in, write_config

TYPES = ["goroutine", "memory", "process_cpu"]


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget) -> Iterator[Runtime]:
    config = write_config(tmp_path / "c.yaml", tmp_path / "profiles", target.address)
    with ThreadPoolExecutor(max_workers=8) as threads:
        yield Runtime(Settings(config=config, broker_url=redis_url), spawn=spawn_in(threads), validations=in_place,
                      writes=in_place)


def labels(target: PprofTarget) -> dict[str, str]:
    return {"__address__": target.address, "app": "demo", "service_name": "demo"}


def test_a_scrape_records_each_types_status_and_writes_its_profiles_to_this_hosts_file_store(
        runtime: Runtime, redis_client: redis.Redis, target: PprofTarget, tmp_path: Path) -> None:
    status.register_specs(redis_client, make_plan(runtime.config).specs)  # as beat does

    results, errors = runtime.scrape("demo", TYPES, [labels(target)], [time.time()])

    assert errors == []
    assert sorted((r.spec.profile_type, r.ok) for r in results) == [(t, True) for t in sorted(TYPES)]
    assert sorted((s.profile_type, s.health.value) for s in status.read_statuses(redis_client)) == \
        [(t, "up") for t in sorted(TYPES)]
    assert len(list((tmp_path / "profiles").rglob("*.pb.gz"))) == len(TYPES)
    for result in results:
        (path,) = (tmp_path / "profiles").rglob(f"*-{result.push_id}.pb.gz")
        assert path.read_bytes() == result.body
        # nothing is left in Redis for a push task: the profile went straight to the store
        assert delivery.load(redis_client, result.push_id) is None


def scrape_goroutine(config: Path, redis_url: str, target: PprofTarget,
                     ) -> tuple[list[ScrapeResult], list[Exception], list[dict[str, list[str]]]]:
    """One task's goroutine scrape of ``target`` by a runtime with ``config``: its results, its errors
    and what each wave left owed to push tasks."""
    owed: list[dict[str, list[str]]] = []
    with ThreadPoolExecutor(max_workers=8) as threads:
        runtime = Runtime(Settings(config=config, broker_url=redis_url), spawn=spawn_in(threads),
                          validations=in_place, writes=in_place)
        results, errors = runtime.scrape("demo", ["goroutine"], [labels(target)], [time.time()],
                                         recorded=lambda _, wave_owes: owed.append(wave_owes))
    return results, errors, owed


def test_a_profile_the_file_store_cannot_take_is_kept_in_redis_for_a_push_task_to_retry(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store's directory should be")
    config = write_config(tmp_path / "c.yaml", blocked / "profiles", target.address)

    results, errors, owed = scrape_goroutine(config, redis_url, target)

    assert errors == [] and [r.ok for r in results] == [True]
    assert owed == [{"files": [results[0].push_id]}]
    stored = delivery.load(redis_client, results[0].push_id)
    assert stored is not None and stored.body == results[0].body
    assert redis_client.smembers(keys.BODY_REFS.format(id=results[0].push_id)) == {b"files"}


def test_a_file_store_written_by_push_tasks_is_left_to_them(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "profiles", target.address)
    config.write_text(config.read_text().replace("type: file,", "type: file, written_by: push,"))

    results, errors, owed = scrape_goroutine(config, redis_url, target)

    assert errors == [] and owed == [{"files": [results[0].push_id]}]
    assert list((tmp_path / "profiles").rglob("*.pb.gz")) == []
    assert delivery.load(redis_client, results[0].push_id) is not None


def test_the_quick_types_are_handed_on_before_the_cpu_profile_is_in(
        runtime: Runtime, target: PprofTarget) -> None:
    phases: list[list[str]] = []

    def recorded(results: list[ScrapeResult], owed: object) -> None:
        phases.append(sorted(r.spec.profile_type for r in results))

    runtime.scrape("demo", TYPES, [labels(target)], [time.time()], recorded=recorded)

    assert phases == [["goroutine", "memory"], ["process_cpu"]]


def test_a_target_that_cannot_be_planned_is_an_error_beside_the_other_targets_results(
        runtime: Runtime, target: PprofTarget) -> None:
    results, errors = runtime.scrape("demo", ["goroutine"], [{"app": "no address"}, labels(target)],
                                     [time.time(), time.time()])

    assert len(errors) == 1
    assert [(r.spec.target_labels["__address__"], r.ok) for r in results] == [(target.address, True)]
