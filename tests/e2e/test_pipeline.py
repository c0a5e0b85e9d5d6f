"""The whole flow with real processes: config → beat → Redis → gevent worker → file store."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import redis

from scraper import keys
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import PprofTarget, pprof_target

pytestmark = pytest.mark.slow

INTERVAL_S = 3


def write_config(path: Path, store: Path, addresses: list[str], **job: str) -> Path:
    targets = "\n".join(f'      - {{__address__: "{a}", app: demo{i}}}' for i, a in enumerate(addresses))
    extra = "\n".join(f"    {k}: {v}" for k, v in job.items())
    path.write_text(f"""
scrape:
  demo:
    targets:
{targets}
    forward_to: [files]
    scrape_interval: {INTERVAL_S}s
    scrape_timeout: 5s
{extra}
write:
  files: {{type: file, path: "{store}"}}
""")
    return path


def stored(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in store.rglob("*.json")]


def start_system(tmp_path: Path, redis_url: str, procs: list[Proc], addresses: list[str]) -> Path:
    """A worker and a beat scraping ``addresses`` into a file store; return the store's path."""
    store = tmp_path / "profiles"
    env = scraper_env(redis_url, write_config(tmp_path / "c.yaml", store, addresses))
    procs.append(start_worker(env, tmp_path))
    procs.append(start_beat(env, tmp_path))
    return store


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


def test_profiles_of_every_enabled_type_reach_the_file_store_with_their_labels(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    store = start_system(tmp_path, redis_url, procs, [target.address])

    wanted = {"memory", "block", "goroutine", "mutex", "process_cpu"}
    wait_until(lambda: {s["labels"]["__name__"] for s in stored(store)} >= wanted, timeout=2 * INTERVAL_S + 10,
               message="a profile of every enabled type in the file store")

    sidecar = next(s for s in stored(store) if s["labels"]["__name__"] == "process_cpu")
    assert sidecar["labels"] == {"app": "demo0", "job": "demo", "instance": target.address,
                                 "service_name": "demo", "__name__": "process_cpu"}
    assert sidecar["url"] == f"http://{target.address}/debug/pprof/profile?seconds=2"
    profile = next(store.rglob("*.pb.gz"))
    assert profile.read_bytes()[:2] == b"\x1f\x8b"
    assert target.cpu_overlaps == 0


def test_stored_profiles_are_the_exact_bytes_the_target_served(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    store = start_system(tmp_path, redis_url, procs, [target.address])
    wait_until(lambda: any(s["labels"]["__name__"] == "goroutine" for s in stored(store)), timeout=2 * INTERVAL_S + 10,
               message="a goroutine profile")
    goroutine = next(p for p in store.rglob("*.pb.gz") if "/goroutine/" in str(p))
    assert goroutine.read_bytes() == (Path(__file__).parents[1] / "data/go/goroutine_1.pb.gz").read_bytes()


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    store = tmp_path / "profiles"
    env = scraper_env(redis_url, write_config(tmp_path / "c.yaml", store, [target.address]), SCRAPER_BEAT_LOCK_TTL="2")
    procs.append(start_worker(env, tmp_path))
    first = start_beat(env, tmp_path, "beat1")
    procs.append(first)
    first.wait_for_output("beat holds the lock")
    second = start_beat(env, tmp_path, "beat2")
    procs.append(second)

    # While both live, only one emits: every slot of every spec is scraped at most once.
    wait_until(lambda: len(stored(store)) >= 10, timeout=4 * INTERVAL_S + 10, message="ten stored profiles")
    slots = [(s["labels"]["__name__"], s["start"][:19]) for s in stored(store)]
    assert "beat holds the lock" not in second.output()

    first.kill(signal.SIGKILL)
    second.wait_for_output("beat holds the lock", timeout=2 * INTERVAL_S + 2)
    ids = [s["id"] for s in stored(store)]
    assert len(ids) == len(set(ids))
    count = len(stored(store))
    wait_until(lambda: len(stored(store)) > count + 3, timeout=2 * INTERVAL_S + 10,
               message="profiles scheduled by the standby beat")
    assert len(slots) <= len(stored(store))


def test_a_reloaded_config_scrapes_new_targets_and_stops_removed_ones(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, procs: list[Proc]) -> None:
    store = tmp_path / "profiles"
    with pprof_target() as old, pprof_target() as new:
        config = write_config(tmp_path / "c.yaml", store, [old.address])
        env = scraper_env(redis_url, config)
        procs.append(start_worker(env, tmp_path))
        beat = start_beat(env, tmp_path)
        procs.append(beat)
        wait_until(lambda: old.served, timeout=2 * INTERVAL_S + 10, message="the first target to be scraped")

        write_config(config, store, [new.address])
        beat.wait_for_output("reloaded", timeout=10)
        wait_until(lambda: sum(new.served.values()) >= 5, timeout=2 * INTERVAL_S + 10,
                   message="the new target to be scraped")
        # Scrapes of the old target already queued may still finish; after one interval none start.
        served_after_reload = sum(old.served.values())
        wait_until(lambda: sum(new.served.values()) >= 15, timeout=3 * INTERVAL_S + 10,
                   message="more scrapes of the new target")
        assert sum(old.served.values()) == served_after_reload
        statuses = redis_client.hkeys(keys.STATUS)
        assert len(statuses) == 5  # the old target's status records are gone


def test_an_invalid_config_change_is_refused_and_the_last_good_one_keeps_running(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    store = tmp_path / "profiles"
    config = write_config(tmp_path / "c.yaml", store, [target.address])
    env = scraper_env(redis_url, config)
    procs.append(start_worker(env, tmp_path))
    beat = start_beat(env, tmp_path)
    procs.append(beat)
    # "beat: Starting" comes before beat reads its config: a config broken before then is refused at
    # start (beat exits), not as a change
    beat.wait_for_output("scrape specs from", timeout=60)
    config.write_text(config.read_text().replace("scrape_interval", "scrape_intervall"))
    beat.wait_for_output("refused the changed config", timeout=10)
    assert "scrape_intervall: unknown key" in beat.output()
    count = sum(target.served.values())
    wait_until(lambda: sum(target.served.values()) > count + 4, timeout=2 * INTERVAL_S + 10,
               message="scrapes to go on under the last good config")
    assert redis_client.hget(keys.BEAT_STATE, "reload_error")


def test_a_scrape_for_a_job_this_workers_config_does_not_know_fails_saying_so(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    from scraper.settings import Settings
    from worker.celery_app import create_app

    config = write_config(tmp_path / "c.yaml", tmp_path / "profiles", [target.address])
    worker = start_worker(scraper_env(redis_url, config), tmp_path)
    procs.append(worker)
    app = create_app(Settings(broker_url=redis_url, config=config))
    app.send_task("scraper.scrape", args=("gone", ["goroutine"], {"__address__": target.address}, 1.0), queue="scrape")
    worker.wait_for_output("job 'gone' is not in this process's config", timeout=20)
    assert "keep the config in step across beat and workers" in worker.output()
    assert worker.process.poll() is None
    assert not target.served


def test_one_task_carrying_several_targets_stores_each_targets_profiles_at_its_own_slot(
        tmp_path: Path, redis_url: str, procs: list[Proc]) -> None:
    from scraper.settings import Settings
    from worker.celery_app import create_app

    with pprof_target() as first, pprof_target() as second:
        store = tmp_path / "profiles"
        config = write_config(tmp_path / "c.yaml", store, [first.address, second.address])
        procs.append(start_worker(scraper_env(redis_url, config), tmp_path))
        app = create_app(Settings(broker_url=redis_url, config=config))
        targets = [{"__address__": first.address, "app": "demo0"}, {"__address__": second.address, "app": "demo1"}]
        app.send_task("scraper.scrape", args=("demo", ["goroutine", "memory"], targets, [100.0, 200.0]),
                      queue="scrape")
        wait_until(lambda: len(stored(store)) == 4, timeout=30, message="two profiles of each target stored")
    from scraper.config import load_config
    from scraper.plan import spec_for
    from scraper.scrape import push_id

    # a profile's id derives from its target, type and slot: each target kept its own slot
    plan = load_config(config)
    assert {p["id"] for p in stored(store)} == {
        push_id(spec_for(plan, "demo", labels, name), slot)
        for labels, slot in zip(targets, [100.0, 200.0]) for name in ("goroutine", "memory")}


def test_a_push_task_sends_its_profiles_to_pyroscope_side_by_side_not_one_after_another(
        tmp_path: Path, redis_url: str, procs: list[Proc]) -> None:
    from scraper.settings import Settings
    from tests.pyroscope_standin import PyroscopeStandIn
    from worker.celery_app import create_app

    with pprof_target() as first, pprof_target() as second, PyroscopeStandIn() as pyroscope:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
scrape:
  demo:
    targets: [{{__address__: "{first.address}"}}, {{__address__: "{second.address}"}}]
    forward_to: [pyroscope]
write:
  pyroscope: {{type: pyroscope, url: "{pyroscope.url}"}}
""")
        procs.append(start_worker(scraper_env(redis_url, config), tmp_path))
        released = pyroscope.hold()
        targets = [{"__address__": first.address}, {"__address__": second.address}]
        create_app(Settings(broker_url=redis_url, config=config)).send_task(
            "scraper.scrape", args=("demo", ["goroutine", "memory"], targets, [1.0, 1.0]), queue="scrape")
        # every answer is held: the four pushes of the task can only all arrive if they overlap
        wait_until(lambda: len(pyroscope.pushes) == 4, timeout=20, message="four pushes in flight at once")
        released.set()


def test_an_expired_task_of_several_targets_counts_each_scrape_it_carried_as_dropped(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget, procs: list[Proc]) -> None:
    from datetime import datetime, timedelta

    from scraper.settings import Settings
    from worker.celery_app import create_app

    config = write_config(tmp_path / "c.yaml", tmp_path / "profiles", [target.address])
    procs.append(start_worker(scraper_env(redis_url, config), tmp_path))
    app = create_app(Settings(broker_url=redis_url, config=config))
    targets = [{"__address__": target.address, "app": "demo0"}, {"__address__": "127.0.0.1:9", "app": "demo1"}]
    app.send_task("scraper.scrape", args=("demo", ["goroutine", "memory", "block"], targets, [1.0, 2.0]),
                  queue="scrape", expires=datetime.now(UTC) - timedelta(seconds=1))
    wait_until(lambda: redis_client.hget(keys.COUNTERS, "scrapes_dropped") is not None, timeout=20,
               message="the expired task to be counted")
    assert int(redis_client.hget(keys.COUNTERS, "scrapes_dropped")) == 2 * 3
    assert not target.served


def test_a_worker_asked_to_trace_allocations_serves_its_heap_profile(
        tmp_path: Path, redis_url: str, target: PprofTarget, procs: list[Proc]) -> None:
    import urllib.request

    from scraper.pprof import validate_profile
    from tests.conftest import free_port

    port = free_port()
    config = write_config(tmp_path / "c.yaml", tmp_path / "profiles", [target.address])
    procs.append(start_worker(scraper_env(redis_url, config, SCRAPER_TRACEMALLOC="1", SCRAPER_HTTP_PORT=str(port)),
                              tmp_path))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/pprof/heap", timeout=60) as answer:
        assert answer.status == 200
        info = validate_profile(answer.read())
    assert ("inuse_space", "bytes") in info.sample_types
