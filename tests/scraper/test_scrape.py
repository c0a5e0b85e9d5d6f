"""One scrape against a Go-like target: two CPU profiles of one target never run at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from scraper.client import TargetClient
from scraper.config import load_config
from scraper.plan import ScrapeSpec, make_plan
from scraper.scrape import ScrapeResult, scrape_once
from tests.conftest import wait_until
from tests.fakes import PprofTarget, pprof_target


def cpu_spec(tmp_path: Path, target: PprofTarget, interval: str, profiling: str = "{}",
             profile_type: str = "process_cpu") -> ScrapeSpec:
    """The ``profile_type`` spec of ``target`` in a job with ``interval`` (a delta profile holds
    interval - 1 s) and ``profiling`` as its profiling_config."""
    config = tmp_path / "c.yaml"
    config.write_text(f"""scrape:
  demo:
    targets: [{{__address__: "{target.address}"}}]
    forward_to: [files]
    scrape_interval: {interval}
    profiling_config: {profiling}
write:
  files: {{type: file, path: "{tmp_path}"}}
""")
    plan = make_plan(load_config(config))
    return next(s for s in plan.specs if s.profile_type == profile_type)


def scrape_in_thread(spec: ScrapeSpec, client: TargetClient, guard: redis.Redis, at: float) -> list[ScrapeResult]:
    results: list[ScrapeResult] = []
    threading.Thread(target=lambda: results.append(scrape_once(spec, client, scheduled_at=at, guard_client=guard)),
                     daemon=True).start()
    return results


def test_a_cpu_scrape_waits_for_the_targets_running_cpu_profile_then_takes_its_own(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    with pprof_target() as target:
        spec = cpu_spec(tmp_path, target, "3s")  # each CPU profile holds 2 s
        client = TargetClient(load_config(tmp_path / "c.yaml").scrape["demo"].http_client_config)
        late = scrape_in_thread(spec, client, redis_client, at=1.0)
        wait_until(lambda: any(path == "/debug/pprof/profile" for path, _ in target.requests), timeout=5,
                   message="the first CPU profile to start")
        on_time = scrape_once(spec, client, scheduled_at=time.time(), guard_client=redis_client)
        wait_until(lambda: bool(late), timeout=10, message="the first scrape to end")
    assert late[0].ok and on_time.ok
    assert on_time.start >= late[0].end
    assert target.served["/debug/pprof/profile"] == 2
    assert target.cpu_overlaps == 0


def test_a_cpu_scrape_still_blocked_at_the_end_of_its_interval_is_skipped_saying_why(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    with pprof_target() as target:
        spec = cpu_spec(tmp_path, target, "3s")
        client = TargetClient(load_config(tmp_path / "c.yaml").scrape["demo"].http_client_config)
        running = scrape_in_thread(spec, client, redis_client, at=time.time())
        wait_until(lambda: any(path == "/debug/pprof/profile" for path, _ in target.requests), timeout=5,
                   message="the first CPU profile to start")
        # a slot whose interval ends in 0.5 s, while the running profile holds 2 s
        skipped = scrape_once(spec, client, scheduled_at=time.time() - 2.5, guard_client=redis_client)
        wait_until(lambda: bool(running), timeout=10, message="the running scrape to end")
    assert skipped.error is not None and skipped.error.kind == "skipped"
    assert "still in flight at the end of this slot's interval" in str(skipped.error)
    assert running[0].ok
    assert target.cpu_overlaps == 0


def test_a_custom_delta_type_is_guarded_too_like_a_node_wall_profile_at_the_cpu_path(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    with pprof_target() as target:  # refuses a second concurrent request to /debug/pprof/profile, as Node does
        spec = cpu_spec(tmp_path, target, "3s", profile_type="wall", profiling=(
            "{profile.process_cpu: {enabled: false}, "
            "profile.custom: {wall: {enabled: true, path: /debug/pprof/profile, delta: true}}}"))
        client = TargetClient(load_config(tmp_path / "c.yaml").scrape["demo"].http_client_config)
        late = scrape_in_thread(spec, client, redis_client, at=1.0)
        wait_until(lambda: any(path == "/debug/pprof/profile" for path, _ in target.requests), timeout=5,
                   message="the first wall profile to start")
        on_time = scrape_once(spec, client, scheduled_at=time.time(), guard_client=redis_client)
        wait_until(lambda: bool(late), timeout=10, message="the first scrape to end")
    assert late[0].ok and on_time.ok
    assert on_time.start >= late[0].end
    assert target.cpu_overlaps == 0
