"""Cumulative profiles reach Pyroscope as what the target added in each interval, whichever of two
workers scraped the slots, across a target restart and a worker killed mid-scrape; the file store
keeps what the target served."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scraper import keys
from scraper.status import read_statuses
from tests.conftest import wait_until
from tests.e2e.growing_target import GrowingTarget
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.faults.support import write_config
from tests.pyroscope_standin import PyroscopeStandIn, parse_pprof

pytestmark = pytest.mark.slow

INTERVAL_S = 2
PATHS = {"memory": "/debug/pprof/allocs", "mutex": "/debug/pprof/mutex", "block": "/debug/pprof/block"}


@pytest.fixture
def target() -> Iterator[GrowingTarget]:
    with GrowingTarget() as t:
        yield t


@pytest.fixture
def pyroscope() -> Iterator[PyroscopeStandIn]:
    with PyroscopeStandIn() as p:
        yield p


def start_system(tmp_path: Path, redis_url: str, procs: list[Proc], target: GrowingTarget,
                 pyroscope: PyroscopeStandIn) -> tuple[Path, list[Proc]]:
    """Two workers and a beat scraping ``target`` every 2 s into Pyroscope and a file store."""
    store = tmp_path / "profiles"
    off = {"enabled": False}
    config = write_config(tmp_path / "config.yaml", {
        "go": {"targets": [{"__address__": target.address, "service_name": "shop"}],
               "forward_to": ["pyroscope", "files"], "scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": "1500ms",
               "profiling_config": {"profile.goroutine": off, "profile.process_cpu": off}},
        "go-delta": {"targets": [{"__address__": target.address, "service_name": "shop"}],
                     "forward_to": ["pyroscope"], "scrape_interval": f"{INTERVAL_S}s",
                     "profiling_config": {"profile.memory": off, "profile.mutex": off, "profile.block": off,
                                          "profile.goroutine": off, "profile.process_cpu": off,
                                          "profile.godeltaprof_mutex": {"enabled": True}}},
    }, {"pyroscope": {"type": "pyroscope", "url": pyroscope.url}, "files": {"type": "file", "path": str(store)}})
    env = scraper_env(redis_url, config)
    workers = [start_worker(env, tmp_path, "worker1"), start_worker(env, tmp_path, "worker2")]
    procs.extend(workers)
    procs.append(start_beat(env, tmp_path))
    return store, workers


def pushed(pyroscope: PyroscopeStandIn, name: str, job: str = "go") -> list[tuple[dict[str, str], object]]:
    """The (labels, decoded profile) of every push of ``name`` from ``job``."""
    return [(series.label_dict, sample.profile) for request in pyroscope.pushes for series in request.series
            for sample in series.samples
            if series.label_dict.get("__name__") == name and series.label_dict.get("job") == job]


def totals(profile) -> dict[str, int]:
    names = [profile.string_table[t.type] for t in profile.sample_type]
    return {n: sum(s.value[i] for s in profile.sample) for i, n in enumerate(names)}


def check_push(target: GrowingTarget, name: str, labels: dict[str, str], profile) -> None:
    """A push of ``name`` holds exactly what the target added between two of its scrapes, and its gauges."""
    path = PATHS[name]
    until, since = profile.time_nanos, profile.time_nanos - profile.duration_nanos
    assert labels["__delta__"] == "false"
    assert until in target.served[path] and since in target.served[path], "a window between two scrapes"
    assert target.life_of(since) == target.life_of(until), "no delta across a restart"
    got = totals(profile)
    assert all(v >= 0 for s in profile.sample for v in s.value)
    for type_name, added in target.totals_added(path, since, until).items():
        assert got[type_name] == added, f"{name} {type_name}: pushed {got[type_name]}, the target added {added}"
    for type_name, value in target.gauges(path).items():
        assert got[type_name] == value, f"{name} {type_name} is a gauge: pushed as the target holds it"


def enough(pyroscope: PyroscopeStandIn, count: int, after_ns: int = 0) -> bool:
    return all(sum(p.time_nanos > after_ns for _, p in pushed(pyroscope, name)) >= count for name in PATHS)


def test_pyroscope_gets_what_the_target_added_in_each_interval_whichever_worker_scraped(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: GrowingTarget,
        pyroscope: PyroscopeStandIn, procs: list[Proc]) -> None:
    store, workers = start_system(tmp_path, redis_url, procs, target, pyroscope)
    scraped_by: set[str] = set()
    both = {f"{socket.gethostname()}:{w.process.pid}" for w in workers}

    def four_deltas_of_each_type_from_both_workers() -> bool:
        # which worker takes a slot is the broker's choice: wait until each has taken some
        scraped_by.update(s.worker for s in read_statuses(redis_client, job="go") if s.worker)
        return enough(pyroscope, 4) and both <= scraped_by

    wait_until(four_deltas_of_each_type_from_both_workers, timeout=30 * INTERVAL_S + 30,
               message="four deltas of each type, with slots taken by both workers")

    for name in PATHS:
        pushes = pushed(pyroscope, name)
        for labels, profile in pushes:
            check_push(target, name, labels, profile)
        # the first scrape of the series was its baseline: nothing of it went to Pyroscope
        assert target.served[PATHS[name]][0] not in {p.time_nanos for _, p in pushes}
    assert int(redis_client.hget(keys.COUNTERS, "deltas_baseline")) >= len(PATHS)

    # godeltaprof profiles are deltas already: pushed as served, marked so Pyroscope leaves them be
    godeltaprof = pushed(pyroscope, "mutex", job="go-delta")
    assert godeltaprof and all(labels["__delta__"] == "false" for labels, _ in godeltaprof)

    # the file store keeps what the target served: running totals, said so in the sidecar
    sidecar_path = next(p for p in store.rglob("*.json") if "/memory/" in str(p))
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["cumulative"] == ["alloc_objects", "alloc_space"]
    assert "__delta__" not in sidecar["labels"]
    kept = parse_pprof(sidecar_path.with_name(sidecar_path.name.replace(".json", ".pb.gz")).read_bytes())
    assert totals(kept) == target.totals_at(PATHS["memory"], kept.time_nanos)


def test_a_target_restart_pushes_no_negative_value_and_the_deltas_go_on(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: GrowingTarget,
        pyroscope: PyroscopeStandIn, procs: list[Proc]) -> None:
    start_system(tmp_path, redis_url, procs, target, pyroscope)
    wait_until(lambda: enough(pyroscope, 2), timeout=20 * INTERVAL_S + 30, message="two deltas of each type")
    target.restart()
    restarted = target.started_ns[-1]
    wait_until(lambda: enough(pyroscope, 2, after_ns=restarted), timeout=20 * INTERVAL_S + 30,
               message="two deltas of each type after the restart")

    for name, path in PATHS.items():
        for labels, profile in pushed(pyroscope, name):
            check_push(target, name, labels, profile)
        # the first scrape after the restart saw the totals fall: a new baseline, nothing pushed
        first_after = min(t for t in target.served[path] if t >= restarted)
        assert first_after not in {p.time_nanos for _, p in pushed(pyroscope, name)}


def test_a_worker_killed_mid_scrape_does_not_break_the_next_deltas(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: GrowingTarget,
        pyroscope: PyroscopeStandIn, procs: list[Proc]) -> None:
    _, workers = start_system(tmp_path, redis_url, procs, target, pyroscope)
    wait_until(lambda: enough(pyroscope, 2), timeout=20 * INTERVAL_S + 30, message="two deltas of each type")

    release = target.hold_next(PATHS["memory"])
    wait_until(target.held.is_set, timeout=4 * INTERVAL_S + 10, message="a memory scrape held by the target")
    holder = next(w for w in workers if target.held_client_port in local_ports(w.process.pid))
    holder.kill()
    killed_ns = time.time_ns()
    release.set()

    wait_until(lambda: enough(pyroscope, 3, after_ns=killed_ns), timeout=20 * INTERVAL_S + 30,
               message="three deltas of each type after the kill")
    for name in PATHS:
        for labels, profile in pushed(pyroscope, name):
            check_push(target, name, labels, profile)


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
