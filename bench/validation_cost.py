"""CPU time of validating one profile, per body the fleet serves, at a size.

    python bench/validation_cost.py --size 100k

Validates each of the fleet's bodies (the corpus, or padded to ``--size`` as ``bench/fleet.py``
pads them) ``--rounds`` times with ``scraper.pprof.validate_profile`` and prints one JSON line:
gzipped and decompressed bytes and milliseconds of CPU per validation, per path.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import SIZES, load_bodies  # noqa: E402
from scraper.pprof import validate_profile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="100k")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    report = {}
    for path, body in load_bodies(args.size).items():
        began = time.process_time()
        for _ in range(args.rounds):
            validate_profile(body, size_limit=64 << 20)
        report[path] = {"gzipped_bytes": len(body), "bytes": len(gzip.decompress(body)),
                        "cpu_ms": round((time.process_time() - began) / args.rounds * 1000, 3)}
    print(json.dumps({"size": args.size, "per_path": report}))


if __name__ == "__main__":
    main()
