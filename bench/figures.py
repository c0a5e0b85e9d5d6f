"""Every figure of issues 6 and 20 in one command: runs the benchmarks below one after the other
and prints their JSON lines, then a table of goal, measured value and whether it was met.

    python bench/figures.py            # ~14 minutes on a 2-core machine

1. ``bench/run.py --mode all --targets 1000``: the bare loop, the baseline, then the system, at
   1,000 targets x 5 types / 15 s with deltas on (stored, lag, overlaps, RSS, CPU per scrape and its
   ratio to each floor, Redis's CPU and commands per scrape, and the targets one Redis core carries);
2. ``bench/beat_emit.py --targets 2000``: beat alone at 10,000 specs;
3. ``bench/run.py --size 100k --targets 1000``: the same fleet with ~100 KB profiles.

Run it on a quiet machine: every figure is CPU time or a deadline on this machine, and only the
ratios to the floors measured in the same run compare across days.
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
    *_, system = json_lines("run.py", "--mode", "all", "--targets", "1000")
    (beat,) = json_lines("beat_emit.py", "--targets", "2000")
    (large,) = json_lines("run.py", "--size", "100k", "--targets", "1000")
    rss = max(v for k, v in system["peak_rss_mb"].items() if k.startswith("worker"))
    rows = [
        ("stored, 1,000 targets x 5 / 15 s", ">= 99.9%", f"{system['stored_pct']}%", system["stored_pct"] >= 99.9),
        ("schedule lag p99", "< 1 s", f"{system['lag_p99_s']} s", system["lag_p99_s"] < 1),
        ("CPU overlaps", "0", str(system["cpu_overlaps"]), system["cpu_overlaps"] == 0),
        ("worker peak RSS", "< 500 MB", f"{rss} MB", rss < 500),
        ("CPU per scrape / bare loop", "<= 1.3x", f"{system['cpu_ratio_to_bare']}x",
         system["cpu_ratio_to_bare"] <= 1.3),
        ("CPU per scrape / baseline", "<= 2x", f"{system['cpu_ratio_to_baseline']}x",
         system["cpu_ratio_to_baseline"] <= 2),
        ("beat alone, 10,000 specs", "< 25% of a core", f"{beat['steady_cpu_pct_of_one_core']}%",
         beat["steady_cpu_pct_of_one_core"] < 25),
        ("stored with 100 KB profiles", ">= 99.9%", f"{large['stored_pct']}%", large["stored_pct"] >= 99.9),
    ]
    redis_ms = system["cpu_ms_per_scrape"]["redis"]
    # a target's 5 types every 15 s are 1/3 scrape a second; a core is 1,000 ms of CPU a second
    per_core = int(1000 / (redis_ms * 5 / system["interval_s"]))
    rows += [
        ("Redis CPU per scrape", "reported", f"{redis_ms} ms", None),
        ("Redis commands per scrape", "reported", str(system["redis_commands_per_scrape"]), None),
        ("targets x 5 types one Redis core carries", "reported", f"{per_core:,}", None),
    ]
    width = max(len(name) for name, *_ in rows)
    print()
    for name, goal, measured, met in rows:
        verdict = "" if met is None else "met" if met else "NOT MET"
        print(f"{name:<{width}}  {goal:<16} {measured:<10} {verdict}".rstrip())


if __name__ == "__main__":
    main()
