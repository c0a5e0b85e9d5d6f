"""How fast one gevent Celery worker drains a queue of no-op tasks shaped like scrape messages.

    python bench/consume.py --messages 5000

The ceiling a worker's consumer puts on scrapes per second, whatever the task does: Celery's
receive -> pool -> ack path alone, on the embedded Redis. Prints one JSON line per setting
(concurrency, log level): messages per second, CPU ms per message, CPU % of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from celery import Celery
from kombu import Exchange, Queue

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

app = Celery("consume-bench", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(task_queues=[Queue("scrape", Exchange("scrape"), routing_key="scrape")], task_default_queue="scrape",
                worker_prefetch_multiplier=1, task_ignore_result=True, worker_hijack_root_logger=True)


@app.task(name="noop", ignore_result=True)
def noop(*_: object) -> None:
    """Nothing: only Celery's own cost remains."""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--settings", default="1000:INFO,1000:WARNING,100:WARNING",
                        help="comma-separated concurrency:loglevel pairs")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from scraper.broker import connect_redis
    from scraper.embedded_redis import EmbeddedRedis

    redis_server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="consume-bench-")))
    redis_server.start()
    app.conf.broker_url = redis_server.url
    client = connect_redis(redis_server.url)
    env = dict(os.environ, BENCH_BROKER=redis_server.url)
    try:
        for setting in args.settings.split(","):
            concurrency, level = setting.split(":")
            with app.producer_or_acquire() as producer:
                for _ in range(args.messages):
                    noop.apply_async(args=("fleet", "memory", {"__address__": "127.0.0.1:1"}, time.time()),
                                     producer=producer)
            worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.consume", "worker", "-P", "gevent",
                                       "-c", concurrency, "-Q", "scrape", "-l", level, "--without-mingle",
                                       "--without-gossip"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while client.llen("scrape") >= args.messages and worker.poll() is None:
                    time.sleep(0.05)
                began, left0, cpu0 = time.monotonic(), client.llen("scrape"), _cpu_s(worker.pid)
                while client.llen("scrape") and time.monotonic() - began < 60:
                    time.sleep(0.1)
                wall, done, cpu = time.monotonic() - began, left0 - client.llen("scrape"), _cpu_s(worker.pid) - cpu0
            finally:
                worker.terminate()
                worker.wait(timeout=20)
                client.delete("scrape")
            print(json.dumps({"concurrency": int(concurrency), "log_level": level, "messages_per_s": round(done / wall),
                              "cpu_ms_per_message": round(1000 * cpu / max(done, 1), 2),
                              "cpu_pct_of_one_core": round(100 * cpu / wall)}), flush=True)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
