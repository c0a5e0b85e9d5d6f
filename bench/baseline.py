"""The floor: the least work that does the scraper's job in Python, to measure the real system against.

    python bench/baseline.py --config CONFIG --duration 120

One process, gevent, one requests session, one greenlet per scrape spec sleeping until the spec's
slot (the same plan and slots as beat). Each scrape fetches the URL, checks HTTP 200, validates the
body and takes the delta of a cumulative type (``scraper.scrape.check_body``, as a worker does, the
baseline kept in memory) and writes it with ``scraper.receivers.filestore.FileStore``
exactly as the system's push does, in a thread pool so that its sync does not stall the loop. No Celery,
no Redis, no status, no metrics.

On exit (after ``--duration`` or SIGTERM) it prints one JSON line of counters by outcome.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - gevent must patch before anything imports socket or ssl
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scraper.config import load_config  # noqa: E402
from scraper.delta import Baseline, cumulative_types_of  # noqa: E402
from scraper.errors import ScrapeError  # noqa: E402
from scraper.plan import ScrapeSpec, next_slot, plan  # noqa: E402
from scraper.receivers import Profile  # noqa: E402
from scraper.receivers.filestore import FileStore  # noqa: E402
from scraper.scrape import check_body, push_id  # noqa: E402

outcomes: Counter[str] = Counter()
#: the previous scrape of each cumulative series, by spec key
baselines: dict[str, Baseline] = {}


def scrape_loop(spec: ScrapeSpec, cumulative: tuple[str, ...], session: requests.Session, store: FileStore,
                until: float) -> None:
    """Scrape ``spec`` at each of its slots until ``until``; one greenlet per spec, so never overlapping."""
    slot = next_slot(spec, time.time())
    while slot < until:
        gevent.sleep(max(0.0, slot - time.time()))
        start = time.time()
        try:
            response = session.get(spec.url, timeout=spec.timeout_s)
            if response.status_code != 200:
                outcomes[f"http_{response.status_code}"] += 1
            else:
                # the same work as a worker: validation, and the delta of a cumulative type against the
                # series' previous scrape (kept here in this process's memory, not in Redis)
                # (not encoded: like a worker whose only receiver is a file store, which keeps the totals)
                _, delta = check_body(spec, response.content, slot, cumulative, baselines.get(spec.key),
                                      encode_delta=False)
                if delta is not None:
                    baselines[spec.key] = delta.baseline
                profile = Profile(id=push_id(spec, slot), labels=spec.labels, body=response.content,
                                  start=start, end=time.time(), url=spec.url,
                                  cumulative=list(delta.baseline.sample_types) if delta else [])
                # FileStore.push waits for the disk (three syncfs a push): in a thread, so the loop
                # keeps scraping while the disk works (the sync releases the GIL).
                gevent.get_hub().threadpool.apply(store.push, (profile,))
                outcomes["ok"] += 1
        except ScrapeError as exc:
            outcomes[exc.kind] += 1
        except requests.RequestException as exc:
            outcomes[type(exc).__name__] += 1
        slot = next_slot(spec, max(slot, time.time() - spec.interval_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="a pprof-scraper config with one file receiver")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--store-threads", type=int, default=8, help="threads writing the file store")
    args = parser.parse_args()

    config = load_config(args.config)
    specs = plan(config)
    receiver, settings = next(iter(config.write.items()))
    store = FileStore(receiver, settings)  # type: ignore[arg-type]
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc lookups per request, as the system's client
    targets = len({spec.address for spec in specs})
    # A pool per target, and room for a CPU long-poll beside a quick profile on each.
    session.mount("http://", HTTPAdapter(pool_connections=targets, pool_maxsize=4, max_retries=0))
    gevent.get_hub().threadpool.maxsize = args.store_threads
    until = time.time() + args.duration
    greenlets = [gevent.spawn(scrape_loop, spec, cumulative_types_of(config, spec), session, store, until) for spec in specs]
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.killall(greenlets, block=False))
    gevent.joinall(greenlets)
    print(json.dumps({"outcomes": dict(outcomes), "specs": len(specs)}), flush=True)


if __name__ == "__main__":
    main()
