"""What the per-target pages cost at fleet scale: ``/metrics`` (with its per-target gauges) and
``/targets``, served by a real HTTP server from a private Redis holding one status per (target,
profile type) — half of them up, a tenth down, the rest not scraped yet.

    python bench/status_scale.py --targets 10000 --types 5

Prints one JSON line: series and bytes of ``/metrics`` and of its per-target part, bytes of
``/targets``, and the median wall time of each of ``--rounds`` fetches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scraper.broker import NamedReplies, connect_redis
from scraper.config import parse_config
from scraper.embedded_redis import EmbeddedRedis
from scraper.errors import ConnectFailed
from scraper.httpserver import start_http_server
from scraper.plan import plan
from scraper.status import queue_records, register_specs, scrape_record

TYPES = ["process_cpu", "memory", "goroutine", "mutex", "block"]


def fill(client, targets: int, types: int) -> int:
    off = {"enabled": False}
    profiling = {f"profile.{t}": ({} if i < types else off) for i, t in enumerate(TYPES)}
    config = parse_config({
        "scrape": {"fleet": {"targets": [{"__address__": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:6060"}
                                         for i in range(targets)],
                             "forward_to": ["files"], "profiling_config": profiling}},
        "write": {"files": {"type": "file", "path": "/tmp/unused"}}})
    specs = plan(config)
    register_specs(client, specs)
    now = time.time()
    records = []
    for i, spec in enumerate(specs):
        if i % 10 < 5:
            records.append(scrape_record(spec, start=now, duration=0.05, error=None, worker="bench/1"))
        elif i % 10 == 5:
            records.append(scrape_record(spec, start=now, duration=2.0, worker="bench/1",
                                         error=ConnectFailed("connection refused", url=spec.url)))
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        queue_records(replies, records)
        replies.execute()
    return len(specs)


def timed_get(url: str, rounds: int) -> tuple[bytes, float]:
    times, body = [], b""
    for _ in range(rounds):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as response:
            body = response.read()
        times.append(time.perf_counter() - began)
    return body, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=5, choices=range(1, 6))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server_redis = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="status-bench-")))
    server_redis.start()
    try:
        client = connect_redis(server_redis.url)
        specs = fill(client, args.targets, args.types)
        server, port = start_http_server(0, redis_factory=lambda: client, host="127.0.0.1")
        metrics_body, metrics_s = timed_get(f"http://127.0.0.1:{port}/metrics", args.rounds)
        targets_body, targets_s = timed_get(f"http://127.0.0.1:{port}/targets", args.rounds)
        server.shutdown()
        per_target = [line for line in metrics_body.splitlines() if line.startswith(b"pprof_scraper_target_")]
        print(json.dumps({
            "targets": args.targets, "specs": specs,
            "metrics": {"bytes": len(metrics_body), "median_s": round(metrics_s, 3),
                        "per_target_series": len(per_target), "per_target_bytes": sum(len(x) + 1 for x in per_target)},
            "targets_page": {"bytes": len(targets_body), "median_s": round(targets_s, 3)},
        }))
    finally:
        server_redis.stop()


if __name__ == "__main__":
    main()
