"""Server time and size of the profile pages on a large profile (about 1 MB gzipped).

    python bench/profile_page.py [--target-bytes 1000000] [--rounds 5] [--browser]

Builds a synthetic Go-like CPU profile (seeded, so every run gets the same one): a few thousand
functions in a call graph, tens of thousands of distinct stacks, grown until the gzipped profile
reaches ``--target-bytes``. Stores it twice (the second slightly changed) in a file store, serves
the pages from a real HTTP server on loopback, and prints one JSON line: the profile's size and
stacks, then per page the server time (first request, which parses the file, and the median of the
next ``--rounds``, which reuse the parse) and the HTML size. ``--browser`` also times the flame
graph's first drawing in headless Chromium.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scraper import profile_view
from scraper._proto import profile_pb2
from scraper.config import parse_config
from scraper.httpserver import start_http_server
from scraper.receivers import Profile, build_receiver

INSTANCE = "10.1.2.3:6060"


def synthetic_profile(target_bytes: int, seed: int) -> tuple[bytes, int]:
    """A CPU profile of about ``target_bytes`` gzipped, and its number of samples: the same call graph
    whatever ``seed``, which chooses the samples."""
    rng = random.Random(0)
    p = profile_pb2.Profile()
    strings = [""]

    def s(text: str) -> int:
        strings.append(text)
        return len(strings) - 1

    p.sample_type.add(type=s("samples"), unit=s("count"))
    p.sample_type.add(type=s("cpu"), unit=s("nanoseconds"))
    p.period_type.type, p.period_type.unit = 5, 4  # cpu, nanoseconds
    p.period = 10_000_000
    p.duration_nanos = 14_000_000_000
    functions = 4000
    for i in range(1, functions + 1):
        name = f"github.com/acme/shop/pkg{i % 97}.(*Type{i % 31}).Method{i}"
        p.function.add(id=i, name=s(name), system_name=s(name), filename=s(f"/src/pkg{i % 97}/file{i % 13}.go"))
        p.location.add(id=i, address=0x400000 + i * 16).line.add(function_id=i, line=10 + i % 500)
    # callees of each function: a few, so stacks share prefixes as real ones do
    callees = {i: [rng.randint(1, functions) for _ in range(rng.randint(2, 6))] for i in range(1, functions + 1)}
    roots = [rng.randint(1, functions) for _ in range(20)]
    rng = random.Random(seed)
    samples = 0
    while True:
        for _ in range(5000):
            stack = [rng.choice(roots)]
            for _ in range(rng.randint(8, 40)):
                stack.append(rng.choice(callees[stack[-1]]))
            count = rng.randint(1, 20)
            p.sample.add(location_id=list(reversed(stack)), value=[count, count * p.period])
            samples += 1
        p.ClearField("string_table")
        p.string_table.extend(strings)
        body = gzip.compress(p.SerializeToString(), compresslevel=6, mtime=0)
        if len(body) >= target_bytes:
            return body, samples


def timed_get(url: str) -> tuple[float, int]:
    began = time.perf_counter()
    with urllib.request.urlopen(url) as response:
        size = len(response.read())
    return time.perf_counter() - began, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-bytes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time the first drawing in headless Chromium")
    args = parser.parse_args()
    before, _ = synthetic_profile(args.target_bytes, seed=1)
    after, samples = synthetic_profile(args.target_bytes, seed=2)
    with tempfile.TemporaryDirectory() as root:
        config = parse_config({"scrape": {"shop": {"targets": [{"__address__": INSTANCE}], "forward_to": ["files"]}},
                               "write": {"files": {"type": "file", "path": root}}})
        store = build_receiver("files", config.write["files"])
        labels = {"job": "shop", "instance": INSTANCE, "service_name": "shop", "__name__": "process_cpu"}
        now = time.time()
        paths = []
        for i, body in enumerate((before, after)):
            profile = Profile(id=f"p{i}", labels=labels, body=body, start=now - 60 + 15 * i, end=now - 50 + 15 * i,
                              url=f"http://{INSTANCE}/debug/pprof/profile?seconds=14")
            store.push(profile)
            paths.append(str(store.paths(profile)[0].relative_to(root)))
        server, port = start_http_server(0, redis_factory=None, host="127.0.0.1", config=lambda: config)
        base = f"http://127.0.0.1:{port}"
        pages = {
            "profile": f"{base}/profile?{urlencode({'store': 'files', 'path': paths[1]})}",
            "diff": f"{base}/profile/diff?{urlencode({'store': 'files', 'base': paths[0], 'path': paths[1]})}",
            "history": f"{base}/profile/history?{urlencode({'store': 'files', 'job': 'shop', 'name': 'process_cpu', 'instance': INSTANCE})}",
        }
        report: dict[str, object] = {
            "profile_gzipped_bytes": len(after), "profile_bytes": len(gzip.decompress(after)), "samples": samples,
        }
        stacks = profile_view._load(Path(root) / paths[1]).stacks
        report["distinct_stacks"] = len(stacks)
        profile_view._parsed.cache_clear()
        for name, url in pages.items():
            first, size = timed_get(url)
            warm = [timed_get(url)[0] for _ in range(args.rounds)]
            report[name] = {"first_s": round(first, 3), "median_s": round(statistics.median(warm), 3), "html_bytes": size}
        if args.browser:
            report["browser_draw_s"] = browser_draw(pages["profile"])
        server.shutdown()
        server.server_close()
    print(json.dumps(report))


def browser_draw(url: str) -> float:
    """Seconds from navigation start to the flame graph's first drawing, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        began = time.perf_counter()
        page.goto(url, timeout=120_000)
        page.wait_for_function("document.getElementById('flame').dataset.frames > 0", timeout=120_000)
        took = time.perf_counter() - began
        browser.close()
    return round(took, 3)


if __name__ == "__main__":
    main()
