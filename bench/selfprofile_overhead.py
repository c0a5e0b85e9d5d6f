"""What the self-profiling CPU sampler costs, with the process monkey-patched like a gevent worker.

    python bench/selfprofile_overhead.py                       # 500 busy greenlets, 100 Hz, 3 rounds of 5 s
    python bench/selfprofile_overhead.py --hz 250 --seconds 10
    python -X tracemalloc=16 bench/selfprofile_overhead.py     # the same under allocation tracing

Each round runs the same greenlet workload twice: once alone, once while a ``CPUSampler``
samples the process. It reports, as one JSON line (medians over rounds):

- ``sampler_cpu_percent_of_core``: CPU the sampling thread itself used, as a share of one
  core over the sampled wall time (its own thread CPU clock);
- ``process_cpu_percent_without`` / ``_with``: process CPU (``getrusage``) over wall time;
- ``work_per_second_without`` / ``_with`` and ``throughput_change_percent``: greenlet work done,
  the cost as the application sees it (the sampler competes for the GIL);
- ``samples``: stacks the profile recorded, so the sampler is known to have sampled;
- ``heap_profile_seconds``: when tracemalloc traces (``-X tracemalloc=N``), how long one
  ``heap_profile()`` takes at the end, with the workload's greenlets still alive. Compare
  ``work_per_second_without`` with a run without ``-X tracemalloc`` for the cost of tracing.

Run it on an otherwise idle machine: other load skews the throughput figures, not the
sampler's own CPU.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (after patching, as in a worker)
import gzip  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import gevent  # noqa: E402

from scraper._proto import profile_pb2  # noqa: E402
from scraper.selfprofile import CPUSampler, heap_profile  # noqa: E402


def parse_message(depth: int) -> int:
    # a few frames deep, so the sampler walks stacks of a realistic size
    return parse_message(depth - 1) if depth else sum(range(300))


def busy_greenlet(done: list[int], stop: list[bool]) -> None:
    while not stop[0]:
        parse_message(8)
        done[0] += 1
        gevent.sleep(0)


def timed_heap_profile(greenlets: int) -> float:
    done, stop = [0], [False]
    workers = [gevent.spawn(busy_greenlet, done, stop) for _ in range(greenlets)]
    gevent.sleep(0.2)
    start = time.monotonic()
    heap_profile()
    elapsed = time.monotonic() - start
    stop[0] = True
    gevent.joinall(workers)
    return round(elapsed, 2)


def run_workload(greenlets: int, seconds: float, hz: int | None) -> dict[str, float]:
    done, stop = [0], [False]
    workers = [gevent.spawn(busy_greenlet, done, stop) for _ in range(greenlets)]
    gevent.sleep(0.2)  # every greenlet started and looping
    sampler = CPUSampler(hz) if hz else None
    usage_before, wall_before, done_before = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), done[0]
    if sampler:
        sampler.start()
    gevent.sleep(seconds)
    body = sampler.stop() if sampler else None
    usage_after, wall_after, done_after = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), done[0]
    stop[0] = True
    gevent.joinall(workers)
    wall = wall_after - wall_before
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    result = {"wall": wall, "process_cpu_percent": 100 * cpu / wall, "work_per_second": (done_after - done_before) / wall}
    if sampler and body is not None:
        profile = profile_pb2.Profile.FromString(gzip.decompress(body))
        result["sampler_cpu_percent_of_core"] = 100 * sampler.sampler_cpu_seconds / wall
        result["samples"] = sum(sample.value[0] for sample in profile.sample)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--greenlets", type=int, default=500)
    parser.add_argument("--hz", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    without, with_sampler = [], []
    for _ in range(args.rounds):
        without.append(run_workload(args.greenlets, args.seconds, None))
        with_sampler.append(run_workload(args.greenlets, args.seconds, args.hz))

    def median(runs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(run[key] for run in runs), 2)

    work_without, work_with = median(without, "work_per_second"), median(with_sampler, "work_per_second")
    figures = {
        "greenlets": args.greenlets,
        "hz": args.hz,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "sampler_cpu_percent_of_core": median(with_sampler, "sampler_cpu_percent_of_core"),
        "process_cpu_percent_without": median(without, "process_cpu_percent"),
        "process_cpu_percent_with": median(with_sampler, "process_cpu_percent"),
        "work_per_second_without": work_without,
        "work_per_second_with": work_with,
        "throughput_change_percent": round(100 * (work_with - work_without) / work_without, 2),
        "samples": median(with_sampler, "samples"),
    }
    if tracemalloc.is_tracing():
        figures["tracemalloc_frames"] = tracemalloc.get_traceback_limit()
        figures["heap_profile_seconds"] = timed_heap_profile(args.greenlets)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
