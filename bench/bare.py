"""The bare loop: the least work a Python program can do to scrape the fleet, the floor the system's
CPU per scrape is measured against (issue 20).

    python bench/bare.py --config CONFIG --store DIR --duration 120

One process, gevent, one ``requests`` session, one greenlet per scrape spec sleeping until the spec's
slot (the same plan and slots as beat). Each scrape GETs the URL, checks HTTP 200, gunzips the body and
parses it once with protobuf (``profile.proto``), and writes it under ``--store`` as
``<__name__>/<instance>-<slot>.pb.gz``: a temporary file renamed into place, no fsync, no sidecar.
No validation beyond that parse, no deltas, no Celery, no Redis, no status, no metrics.

On exit (after ``--duration`` or SIGTERM) it prints one JSON line of counters by outcome.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - gevent must patch before anything imports socket or ssl
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scraper._proto.profile_pb2 import Profile  # noqa: E402
from scraper.config import load_config  # noqa: E402
from scraper.plan import ScrapeSpec, next_slot, plan  # noqa: E402

outcomes: Counter[str] = Counter()


def stored_name(spec: ScrapeSpec, slot: float) -> str:
    """The file a scrape of ``spec`` at ``slot`` is stored as, under ``--store`` (bench/run.py reads it back)."""
    return f"{spec.labels['__name__']}/{spec.labels['instance'].replace(':', '_')}-{slot:.3f}.pb.gz"


def scrape_loop(spec: ScrapeSpec, session: requests.Session, store: Path, until: float) -> None:
    """Scrape ``spec`` at each of its slots until ``until``; one greenlet per spec, so never overlapping."""
    slot = next_slot(spec, time.time())
    while slot < until:
        gevent.sleep(max(0.0, slot - time.time()))
        try:
            response = session.get(spec.url, timeout=spec.timeout_s)
            if response.status_code != 200:
                outcomes[f"http_{response.status_code}"] += 1
            else:
                body = response.content
                Profile.FromString(zlib.decompress(body, wbits=31) if body[:2] == b"\x1f\x8b" else body)
                path = store / stored_name(spec, slot)
                tmp = path.with_name("." + path.name)
                tmp.write_bytes(body)
                os.replace(tmp, path)
                outcomes["ok"] += 1
        except (requests.RequestException, DecodeError, zlib.error) as exc:
            outcomes[type(exc).__name__] += 1
        slot = next_slot(spec, max(slot, time.time() - spec.interval_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="a pprof-scraper config (its jobs' targets)")
    parser.add_argument("--store", type=Path, required=True, help="the directory profiles are written to")
    parser.add_argument("--duration", type=float, default=120.0)
    args = parser.parse_args()

    specs = plan(load_config(args.config))
    for name in {spec.labels["__name__"] for spec in specs}:
        (args.store / name).mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc lookups per request
    targets = len({spec.address for spec in specs})
    # A pool per target, and room for a CPU long-poll beside a quick profile on each.
    session.mount("http://", HTTPAdapter(pool_connections=targets, pool_maxsize=4, max_retries=0))
    until = time.time() + args.duration
    greenlets = [gevent.spawn(scrape_loop, spec, session, args.store, until) for spec in specs]
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.killall(greenlets, block=False))
    gevent.joinall(greenlets)
    print(json.dumps({"outcomes": dict(outcomes), "specs": len(specs)}), flush=True)


if __name__ == "__main__":
    main()
