"""CPU time of validating one profile, per body the fleet serves, at a size; or of one sample bomb.

    python bench/validation_cost.py --size 100k
    python bench/validation_cost.py --bomb [--tree OTHER_CHECKOUT] [--sample-limit N]

Validates each of the fleet's bodies (the corpus, or padded to ``--size`` as ``bench/fleet.py``
pads them) ``--rounds`` times with ``scraper.pprof.validate_profile`` and prints one JSON line:
gzipped and decompressed bytes and milliseconds of CPU per validation, per path.

``--bomb`` validates :func:`sample_bomb` (16.7 million one-value samples in 64 MiB, ~65 KB of gzip)
once, in a child process so that its peak RSS is the validation's, with the job defaults
(``--sample-limit``, else the code's default), and prints CPU seconds, peak RSS and the outcome.
``--tree`` runs another checkout's ``scraper`` instead (a ``git worktree`` of an older commit), to
compare with before.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import SIZES, load_bodies  # noqa: E402

#: A valid 60-byte profile (one sample type, sample, location, function) that the bomb's samples extend.
BOMB_BASE = bytes.fromhex(
    "0a04080110021204080110052208080122040801100a2a060801100320043200320773616d706c65733205636f756e74"
    "32046d61696e3204662e676f"
)
ONE_VALUE_SAMPLE = bytes.fromhex("12021001")  # location none, value 1: the smallest sample a type allows


def sample_bomb(size: int = 64 << 20) -> bytes:
    """A valid gzip profile of ``size`` bytes that is nearly all samples: 16.7 million in 64 MiB."""
    samples = (size - len(BOMB_BASE)) // len(ONE_VALUE_SAMPLE)
    return gzip.compress(BOMB_BASE + ONE_VALUE_SAMPLE * samples, compresslevel=9, mtime=0)


_CHILD = """
import inspect, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from scraper.pprof import validate_profile
body = sys.stdin.buffer.read()
kwargs = {"size_limit": 64 << 20}
if sys.argv[2] != "default" and "sample_limit" in inspect.signature(validate_profile).parameters:
    kwargs["sample_limit"] = int(sys.argv[2])
elif "sample_limit" in inspect.signature(validate_profile).parameters:
    from scraper.pprof import DEFAULT_SAMPLE_LIMIT
    kwargs["sample_limit"] = DEFAULT_SAMPLE_LIMIT
began = time.process_time()
try:
    outcome = f"accepted: {validate_profile(body, **kwargs).sample_count} samples"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
print(json.dumps({"cpu_s": round(time.process_time() - began, 2), "peak_rss_mib":
                  round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "outcome": outcome}))
"""


def bomb_cost(tree: Path, sample_limit: str) -> dict[str, object]:
    body = sample_bomb()
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tree), sample_limit], input=body,
                          capture_output=True, check=True)
    return {"tree": str(tree), "gzipped_bytes": len(body), **json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="100k")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--bomb", action="store_true", help="validate one sample bomb instead")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose scraper validates (--bomb)")
    parser.add_argument("--sample-limit", default="default", help="sample_limit for --bomb (0: none)")
    args = parser.parse_args()
    if args.bomb:
        print(json.dumps(bomb_cost(args.tree, args.sample_limit)))
        return
    from scraper.pprof import validate_profile

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
