"""The worker's tasks and signal handlers run in the test process, against real Redis as broker and
store, with the config of tests.inprocess scraping a real pprof target."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scraper.keys import PUSH_QUEUE
from tests.fakes import PprofTarget, pprof_target
from tests.inprocess import write_config
from worker.celery_app import app
from worker.tasks import runtime


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


@pytest.fixture
def store(tmp_path: Path, redis_url: str, redis_client: redis.Redis, target: PprofTarget,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The file store the worker's config writes to; the worker's runtime and Celery app use the test's Redis."""
    store = tmp_path / "profiles"
    # a Pyroscope nobody listens at: profiles for it wait in Redis for push tasks, as for any receiver elsewhere
    monkeypatch.setenv("SCRAPER_CONFIG", str(write_config(tmp_path / "c.yaml", store, target.address,
                                                          pyroscope="http://127.0.0.1:9")))
    monkeypatch.setenv("SCRAPER_BROKER_URL", redis_url)
    app.close()  # its connections, if any, lead to the broker it was made with
    monkeypatch.setitem(app.conf, "broker_url", redis_url)
    runtime.cache_clear()
    yield store
    runtime.cache_clear()
    app.close()


def pushes_sent(client: redis.Redis) -> list[tuple[list[str], str]]:
    """The (push ids, receiver) of every push task waiting in the broker, oldest first."""
    messages = [json.loads(raw) for raw in reversed(client.lrange(PUSH_QUEUE, 0, -1))]
    return [tuple(json.loads(base64.b64decode(m["body"]))[0]) for m in messages]  # type: ignore[misc]
