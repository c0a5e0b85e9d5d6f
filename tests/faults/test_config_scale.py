"""Configs that push beat: 10,000 targets (checked, planned and emitted in time), and a config
rewritten every second for a minute (beat emits only what the current one says, and its memory
stays flat). The minute of reloads is a soak test (``-m soak``), on its own Redis database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from scraper.status import read_statuses
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat
from tests.faults.support import BUILTIN_OFF, memory_kib
from tests.queued import scrapes_of

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "pprof-scraper")
FLEET = 10_000
FLEET_INTERVAL_S = 5
RELOAD_FOR_S = 60
RELOAD_TARGETS = 100
RELOAD_INTERVAL_S = 2
GOROUTINE_ONLY = {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}


def _config(targets: list[dict[str, str]], interval_s: int, store: Path) -> str:
    # JSON is YAML, and much quicker to write for 10,000 targets.
    return json.dumps({
        "scrape": {"fleet": {"targets": targets, "forward_to": ["files"], "scrape_interval": f"{interval_s}s",
                             "profiling_config": GOROUTINE_ONLY}},
        "write": {"files": {"type": "file", "path": str(store)}}})


def _with_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def drain(client: redis.Redis) -> list[list[object]]:
    """Take every scrape message out of the queue, as a worker would; return the args of each target
    they carry, oldest first.

    Emptying it as it fills keeps the backlog small, so beat never sheds load for lack of workers.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.lrange("scrape", 0, -1)
        pipe.delete("scrape")
        raw, _ = pipe.execute()
    return [scrape for m in reversed(raw) for scrape in scrapes_of(m)]


# ---------------------------------------------------------------- a config rewritten every second


@dataclass
class Reloads:
    """A beat whose config is rewritten every second, each time with a new generation of targets."""

    beat: Proc
    redis: redis.Redis
    generation: int = 0
    rss_kib: dict[int, int] = field(default_factory=dict)
    #: (generation written last, generation of an emitted scrape), for every scrape emitted
    emitted: list[tuple[int, int]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _targets(generation: int) -> list[dict[str, str]]:
    return [{"__address__": f"10.9.{i}.1:6060", "generation": str(generation)} for i in range(RELOAD_TARGETS)]


@pytest.fixture(scope="module")
def reloads(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reloads]:
    tmp = tmp_path_factory.mktemp("reloads")
    url = _with_db(redis_url, 3)
    client = redis.Redis.from_url(url)
    client.flushdb()
    config = tmp / "config.yaml"

    def write(generation: int) -> None:
        # As a config manager does: a reader sees the old file or the new one, never half of one.
        partial = tmp / ".config.yaml.tmp"
        partial.write_text(_config(_targets(generation), RELOAD_INTERVAL_S, tmp / "profiles"))
        os.replace(partial, config)

    write(0)
    state = Reloads(start_beat(scraper_env(url, config), tmp), client)
    stop = threading.Event()

    def rewrite_every_second() -> None:
        began = time.monotonic()
        while not stop.wait(1.0):
            elapsed = time.monotonic() - began
            for mark in (10, RELOAD_FOR_S):
                if elapsed >= mark and mark not in state.rss_kib:
                    state.rss_kib[mark] = memory_kib(state.beat.process.pid)
            state.emitted += [(state.generation, int(args[2]["generation"])) for args in drain(client)]
            if elapsed >= RELOAD_FOR_S:
                break
            state.generation += 1
            write(state.generation)
        state.done.set()

    rewriter = threading.Thread(target=rewrite_every_second, daemon=True)
    rewriter.start()
    try:
        yield state
    finally:
        stop.set()
        rewriter.join(timeout=5)
        state.beat.stop()
        client.close()


# ---------------------------------------------------------------- 10,000 targets


@pytest.fixture(scope="module")
def fleet_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fleet")
    targets = [{"__address__": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:6060"} for i in range(FLEET)]
    path = tmp / "config.yaml"
    path.write_text(_config(targets, FLEET_INTERVAL_S, tmp / "profiles"))
    return path


def _timed(*args: str) -> tuple[float, str]:
    began = time.monotonic()
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, check=True)
    return time.monotonic() - began, done.stdout


def test_check_and_plan_of_10000_targets_finish_in_seconds(fleet_config: Path) -> None:
    took, out = _timed("check", str(fleet_config))
    assert f"{FLEET} targets, {FLEET} scrapes per interval" in out
    assert took < 20, f"check took {took:.1f}s"
    took, out = _timed("plan", "--json", str(fleet_config))
    assert len({json.loads(line)["key"] for line in out.splitlines()}) == FLEET
    assert took < 20, f"plan took {took:.1f}s"


def test_beat_emits_each_of_10000_targets_once_in_its_first_interval(
        fleet_config: Path, redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    beat = start_beat(scraper_env(redis_url, fleet_config), tmp_path)
    scrapes: list[list[object]] = []
    try:
        beat.wait_for_output(f"planned {FLEET} scrape specs", timeout=30)
        wait_until(lambda: scrapes.extend(drain(redis_client)) or len(scrapes) >= FLEET,
                   timeout=FLEET_INTERVAL_S + 10, interval=0.2, message=f"{FLEET} scrapes emitted")
    finally:
        beat.stop()
    first_interval = scrapes[:FLEET]
    assert len({args[2]["__address__"] for args in first_interval}) == FLEET
    slots = [args[3] for args in first_interval]
    assert max(slots) - min(slots) < FLEET_INTERVAL_S, "spread over one interval, each target once"


# ---------------------------------------------------------------- the reloads: they need their minute


@pytest.mark.soak
def test_a_config_rewritten_every_second_for_a_minute_leaves_beat_correct_and_its_memory_flat(
        reloads: Reloads) -> None:
    wait_until(reloads.done.is_set, timeout=RELOAD_FOR_S + 15, message="a minute of rewrites")
    assert reloads.beat.process.poll() is None
    assert "refused the changed config" not in reloads.beat.output()
    # Beat looks at the file's mtime once a second, so two rewrites within one look are one reload.
    assert reloads.beat.output().count("reloaded (version") >= 0.8 * reloads.generation
    assert reloads.rss_kib[RELOAD_FOR_S] - reloads.rss_kib[10] < 4 * 1024, reloads.rss_kib

    # Every scrape emitted came from a config at most a few seconds old: the one written last, or
    # one the beat had not yet seen replaced (it looks once a second).
    assert reloads.emitted
    assert all(written - 3 <= emitted <= written for written, emitted in reloads.emitted)

    # From now on the config stays; whatever beat emits must be of its last generation.
    last = str(reloads.generation)
    wait_until(lambda: {s.labels["generation"] for s in read_statuses(reloads.redis)} == {last}, timeout=5,
               message="beat to plan the last config")
    drain(reloads.redis)
    scrapes: list[list[object]] = []
    wait_until(lambda: scrapes.extend(drain(reloads.redis)) or len(scrapes) >= 2 * RELOAD_TARGETS,
               timeout=3 * RELOAD_INTERVAL_S + 5, message="two intervals of scrapes under the last config")
    assert {args[2]["generation"] for args in scrapes} == {last}
    assert len({args[2]["__address__"] for args in scrapes}) == RELOAD_TARGETS
