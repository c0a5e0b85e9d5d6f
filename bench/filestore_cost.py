"""CPU time of storing one profile in the file store: ``push`` one at a time vs ``push_batch``.

    python bench/filestore_cost.py [--profiles 1400] [--batch 35] [--rounds 3] [--dir DIR] [--tree OTHER_CHECKOUT]

Stores ``--profiles`` real-size profiles (tests/data/go/cpu_1.pb.gz, 2.6 KB; 7 instances × 5 profile
types, as a push task carries them) into a fresh store under ``--dir`` (default: a temporary directory;
put it on the file system to measure), once with ``FileStore.push`` per profile and once with
``FileStore.push_batch`` of ``--batch``, interleaved ``--rounds`` times, and prints one JSON line per
way with the median, per profile, of:

- ``cpu_us``: this process's CPU time (user + system);
- ``wall_us``: elapsed time;
- ``host_cpu_us``: CPU time of the whole host (``/proc/stat``, 10 ms ticks), which counts the kernel's
  write-back threads: ``syncfs`` has them write the data back while the caller waits, where ``fsync``
  writes it in the caller. It counts everything else running on the host too.

``--tree`` runs another checkout's ``scraper`` instead (a ``git worktree`` of an older commit), to
compare with before; one without ``push_batch`` is measured one at a time only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BODY = (ROOT / "tests" / "data" / "go" / "cpu_1.pb.gz").read_bytes()
TYPES = ("process_cpu", "memory", "goroutine", "mutex", "block")
INSTANCES = 7


def host_busy_s() -> float:
    """Seconds of CPU the host has spent busy (not idle, not waiting for I/O) since boot."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / 100


def profiles(receivers: ModuleType, count: int, round_: int, way: str) -> list[Any]:
    start = time.time()
    return [
        receivers.Profile(
            id=f"{way}{round_}-{i}", body=BODY, start=start + i // (INSTANCES * len(TYPES)), end=start + 1,
            url="http://10.0.0.7:6060/debug/pprof/profile?seconds=14",
            labels={"job": "bench", "instance": f"10.0.0.{i % INSTANCES}:6060",
                    "__name__": TYPES[i // INSTANCES % len(TYPES)], "service_name": "bench"},
        )
        for i in range(count)
    ]


def measure(store: Any, batch: int | None, todo: list[Any]) -> dict[str, float]:
    cpu, wall, host = time.process_time(), time.perf_counter(), host_busy_s()
    if batch is None:
        for profile in todo:
            store.push(profile)
    else:
        for at in range(0, len(todo), batch):
            failed = {i: e for i, e in store.push_batch(todo[at:at + batch]).items() if e}
            assert not failed, failed
    n = len(todo)
    return {"cpu_us": (time.process_time() - cpu) / n * 1e6, "wall_us": (time.perf_counter() - wall) / n * 1e6,
            "host_cpu_us": (host_busy_s() - host) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1400, help="profiles stored per way and round")
    parser.add_argument("--batch", type=int, default=35)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the stores (default: a temporary directory)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose scraper to measure")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from scraper import receivers
    from scraper.config import parse_config

    base = Path(tempfile.mkdtemp(prefix="filestore-cost-", dir=args.dir))
    try:
        config = parse_config({"write": {"files": {"type": "file", "path": str(base / "store")}}})
        store = receivers.build_receiver("files", config.write["files"])
        ways: dict[str, int | None] = {"push": None}
        if hasattr(store, "push_batch"):
            ways[f"push_batch of {args.batch}"] = args.batch
        results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
        measure(store, None, profiles(receivers, 50, 0, "warmup"))
        for round_ in range(args.rounds):
            for i, (way, batch) in enumerate(ways.items()):
                results[way].append(measure(store, batch, profiles(receivers, args.profiles, round_, f"w{i}-")))
        for way, runs in results.items():
            print(json.dumps({"tree": str(args.tree), "way": way, "profiles": args.profiles, "rounds": args.rounds,
                              **{k: round(statistics.median(r[k] for r in runs)) for k in runs[0]}}))
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
