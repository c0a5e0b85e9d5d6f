"""Every figure of issue 6 in one command: runs the benchmarks below one after the other and
prints their JSON lines, then a table of goal, measured value and whether it was met.

    python bench/figures.py            # ~12 minutes on a 2-core machine

1. ``bench/run.py --mode both --targets 1000``: the baseline, then the system, at 1,000 targets
   x 5 types / 15 s (stored, lag, overlaps, RSS, CPU ratio to the baseline);
2. ``bench/beat_emit.py --targets 2000``: beat alone at 10,000 specs;
3. ``bench/run.py --size 100k --targets 1000``: the same fleet with ~100 KB profiles.

Run it on a quiet machine: every figure is CPU time or a deadline on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def json_lines(script: str, *args: str) -> list[dict]:
    """Run ``bench/<script>`` with ``args``; its JSON lines, each also printed as it comes."""
    done = subprocess.run([sys.executable, str(BENCH / script), *args], stdout=subprocess.PIPE, text=True,
                          check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for line in lines:
        print(json.dumps(line), flush=True)
    return lines


def main() -> None:
    *_, system = json_lines("run.py", "--mode", "both", "--targets", "1000")
    (beat,) = json_lines("beat_emit.py", "--targets", "2000")
    (large,) = json_lines("run.py", "--size", "100k", "--targets", "1000")
    rss = max(v for k, v in system["peak_rss_mb"].items() if k.startswith("worker"))
    rows = [
        ("stored, 1,000 targets x 5 / 15 s", ">= 99.9%", f"{system['stored_pct']}%", system["stored_pct"] >= 99.9),
        ("schedule lag p99", "< 1 s", f"{system['lag_p99_s']} s", system["lag_p99_s"] < 1),
        ("CPU overlaps", "0", str(system["cpu_overlaps"]), system["cpu_overlaps"] == 0),
        ("worker peak RSS", "< 500 MB", f"{rss} MB", rss < 500),
        ("CPU per scrape / baseline", "<= 2x", f"{system['cpu_ratio_to_baseline']}x",
         system["cpu_ratio_to_baseline"] <= 2),
        ("beat alone, 10,000 specs", "< 25% of a core", f"{beat['steady_cpu_pct_of_one_core']}%",
         beat["steady_cpu_pct_of_one_core"] < 25),
        ("stored with 100 KB profiles", ">= 99.9%", f"{large['stored_pct']}%", large["stored_pct"] >= 99.9),
    ]
    width = max(len(name) for name, *_ in rows)
    print()
    for name, goal, measured, met in rows:
        print(f"{name:<{width}}  {goal:<16} {measured:<10} {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
