"""The in-flight guard against a Go-like target: two CPU profiles of one target never run at once,
however the scrape tasks that ask for them are spread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from scraper import keys
from scraper.concurrency import in_place
from scraper.runtime import Runtime
from scraper.scrape import ScrapeResult
from scraper.settings import Settings
from tests.conftest import wait_until
from tests.fakes import PprofTarget, pprof_target
from tests.inprocess import spawn_in


def cpu_runtime(tmp_path: Path, redis_url: str, threads: ThreadPoolExecutor, targets: list[PprofTarget],
                profiling: str = "{}") -> Runtime:
    """A worker's runtime for a job scraping ``targets`` every 3 s (a delta profile holds 2 s), with
    ``profiling`` as its profiling_config."""
    config = tmp_path / "c.yaml"
    listed = ", ".join(f'{{__address__: "{t.address}"}}' for t in targets)
    config.write_text(f"""scrape:
  demo:
    targets: [{listed}]
    forward_to: [files]
    scrape_interval: 3s
    profiling_config: {profiling}
write:
  files: {{type: file, path: "{tmp_path / 'profiles'}"}}
""")
    return Runtime(Settings(config=config, broker_url=redis_url), spawn=spawn_in(threads), validations=in_place,
                   writes=in_place)


def scrape_in_thread(runtime: Runtime, profile_type: str, target: PprofTarget, at: float) -> list[ScrapeResult]:
    results: list[ScrapeResult] = []

    def scrape() -> None:
        results.extend(runtime.scrape("demo", [profile_type], [{"__address__": target.address}], [at])[0])

    threading.Thread(target=scrape, daemon=True).start()
    return results


def cpu_started(target: PprofTarget) -> bool:
    return any(path == "/debug/pprof/profile" for path, _ in target.requests)


def test_a_cpu_scrape_waits_for_the_targets_running_cpu_profile_then_takes_its_own(
        tmp_path: Path, redis_url: str) -> None:
    with pprof_target() as target, ThreadPoolExecutor(8) as threads:
        runtime = cpu_runtime(tmp_path, redis_url, threads, [target])
        late = scrape_in_thread(runtime, "process_cpu", target, at=1.0)
        wait_until(lambda: cpu_started(target), timeout=5, message="the first CPU profile to start")
        (on_time,), _ = runtime.scrape("demo", ["process_cpu"], [{"__address__": target.address}], [time.time()])
        wait_until(lambda: bool(late), timeout=10, message="the first scrape to end")
    assert late[0].ok and on_time.ok
    assert on_time.start >= late[0].end
    assert target.served["/debug/pprof/profile"] == 2
    assert target.cpu_overlaps == 0


def test_a_cpu_scrape_still_blocked_at_the_end_of_its_interval_is_skipped_saying_why(
        tmp_path: Path, redis_url: str) -> None:
    with pprof_target() as target, ThreadPoolExecutor(8) as threads:
        runtime = cpu_runtime(tmp_path, redis_url, threads, [target])
        running = scrape_in_thread(runtime, "process_cpu", target, at=time.time())
        wait_until(lambda: cpu_started(target), timeout=5, message="the first CPU profile to start")
        # a slot whose interval ends in 0.5 s, while the running profile holds 2 s
        (skipped,), _ = runtime.scrape("demo", ["process_cpu"], [{"__address__": target.address}],
                                       [time.time() - 2.5])
        wait_until(lambda: bool(running), timeout=10, message="the running scrape to end")
    assert skipped.error is not None and skipped.error.kind == "skipped"
    assert "still in flight at the end of this slot's interval" in str(skipped.error)
    assert running[0].ok
    assert target.cpu_overlaps == 0


def test_a_custom_delta_type_is_guarded_too_like_a_node_wall_profile_at_the_cpu_path(
        tmp_path: Path, redis_url: str) -> None:
    with pprof_target() as target, ThreadPoolExecutor(8) as threads:  # refuses a second concurrent profile, as Node does
        runtime = cpu_runtime(tmp_path, redis_url, threads, [target], profiling=(
            "{profile.process_cpu: {enabled: false}, "
            "profile.custom: {wall: {enabled: true, path: /debug/pprof/profile, delta: true}}}"))
        late = scrape_in_thread(runtime, "wall", target, at=1.0)
        wait_until(lambda: cpu_started(target), timeout=5, message="the first wall profile to start")
        (on_time,), _ = runtime.scrape("demo", ["wall"], [{"__address__": target.address}], [time.time()])
        wait_until(lambda: bool(late), timeout=10, message="the first scrape to end")
    assert late[0].ok and on_time.ok
    assert on_time.start >= late[0].end
    assert target.cpu_overlaps == 0


def test_a_task_leaves_no_guard_held_once_its_profiles_are_in(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    with pprof_target() as one, pprof_target() as two, ThreadPoolExecutor(8) as threads:
        runtime = cpu_runtime(tmp_path, redis_url, threads, [one, two])
        results, errors = runtime.scrape("demo", ["process_cpu"], [{"__address__": one.address},
                                                                   {"__address__": two.address}], [time.time()] * 2)
    assert errors == [] and [r.ok for r in results] == [True, True]
    assert list(redis_client.scan_iter(keys.PROFILE_INFLIGHT.format(url="*"))) == []


def test_a_cpu_profile_that_runs_long_does_not_hold_back_the_rest_of_its_task(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    with pprof_target() as quick, pprof_target() as slow, ThreadPoolExecutor(8) as threads:
        slow.cpu_extra_s = 3.0
        runtime = cpu_runtime(tmp_path, redis_url, threads, [quick, slow])
        waves: list[tuple[list[str], bool]] = []

        def recorded(results: list[ScrapeResult], owed: object) -> None:
            # whether the quick target's guard is free once its wave is recorded, while the slow one runs
            free = redis_client.get(keys.PROFILE_INFLIGHT.format(url=f"http://{quick.address}/debug/pprof/profile"))
            waves.append(([r.spec.address for r in results], free is None))

        runtime.scrape("demo", ["process_cpu"], [{"__address__": quick.address}, {"__address__": slow.address}],
                       [time.time()] * 2, recorded=recorded)
    assert waves == [([quick.address], True), ([slow.address], True)]
