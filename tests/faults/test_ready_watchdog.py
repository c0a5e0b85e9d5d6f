"""A worker that stops consuming while work waits for it (as Celery workers sometimes do after a
broker reconnect) says so on /-/ready, and says ready again once it consumes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from scraper.settings import Settings
from tests.conftest import free_port, wait_until
from tests.e2e.processes import Proc, scraper_env, start_worker
from tests.faults.support import BUILTIN_OFF, http_get, write_config
from worker.celery_app import create_app

pytestmark = pytest.mark.slow

IDLE_S = 2


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[Proc, str, Celery]]:
    tmp_path = tmp_path_factory.mktemp("watchdog")
    redis.Redis.from_url(redis_url).flushdb()
    config = write_config(
        tmp_path / "config.yaml",
        {"demo": {"targets": [{"__address__": "127.0.0.1:9"}], "forward_to": ["files"],
                  "profiling_config": {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}}},
        {"files": {"type": "file", "path": str(tmp_path / "profiles")}})
    port = free_port()
    proc = start_worker(scraper_env(redis_url, config, SCRAPER_HTTP_PORT=str(port), SCRAPER_READY_IDLE_S=str(IDLE_S)),
                        tmp_path, "watched")
    try:
        yield proc, f"http://127.0.0.1:{port}/-/ready", create_app(Settings(broker_url=redis_url, config=config))
    finally:
        proc.stop()


def test_an_idle_worker_with_empty_queues_is_ready(worker: tuple[Proc, str, Celery]) -> None:
    _, ready, _ = worker
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > IDLE_S + 0.5, timeout=IDLE_S + 2, message="the idle limit to pass")
    assert http_get(ready) == (200, "ready\n")


def test_a_worker_that_takes_nothing_while_its_queue_holds_work_is_not_ready_and_says_why(
        worker: tuple[Proc, str, Celery]) -> None:
    _, ready, app = worker
    destination = [f"watched@{socket.gethostname()}"]
    for queue in ("scrape", "push"):
        assert app.control.cancel_consumer(queue, destination=destination, reply=True)
    # Two: a BRPOP already waiting when the consumer was cancelled may still take one.
    for _ in range(2):
        app.send_task("scraper.scrape", args=("demo", "goroutine", {"__address__": "127.0.0.1:9"}, time.time()),
                      queue="scrape")

    _, reason = wait_until(lambda: (answer := http_get(ready))[0] == 503 and answer, timeout=IDLE_S + 8,
                                message="/-/ready to say 503")
    assert "received no task for" in reason and "scrape holds" in reason and "restart it" in reason

    app.control.add_consumer("scrape", destination=destination, reply=True)
    wait_until(lambda: http_get(ready)[0] == 200, timeout=10, message="/-/ready to recover once the worker consumes")
