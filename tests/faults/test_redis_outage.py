"""Redis unreachable at start, and Redis restarted under load: beat and workers wait with clear
log lines instead of dying or spewing tracebacks, carry on when it is back, and no validated
profile waiting for its push is lost (Redis runs with its append-only file, as `run` starts it)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scraper import keys
from tests.conftest import free_port, wait_until
from tests.e2e.processes import Proc, scraper_env
from tests.fakes import PprofTarget, pprof_target
from tests.faults.support import BUILTIN_OFF, RedisServer, sidecars, write_config
from tests.pyroscope_standin import PyroscopeStandIn

pytestmark = pytest.mark.slow

INTERVAL_S = 2


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


def _config(path: Path, target: PprofTarget, store: Path, pyroscope_url: str | None = None) -> Path:
    receivers: dict[str, object] = {"files": {"type": "file", "path": str(store)}}
    if pyroscope_url:
        receivers["pyroscope"] = {"type": "pyroscope", "url": pyroscope_url, "remote_timeout": "4s"}
    profiling = {**BUILTIN_OFF, **{f"profile.{t}": {"enabled": True} for t in ("goroutine", "memory", "block", "mutex")}}
    return write_config(path, {"demo": {"targets": [{"__address__": target.address}], "forward_to": list(receivers),
                                        "scrape_interval": f"{INTERVAL_S}s", "profiling_config": profiling}}, receivers)


def _worker(env: dict[str, str], logdir: Path, name: str = "worker") -> Proc:
    return Proc(name, [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", "gevent", "-c", "20",
                       "-Q", "scrape,push", "-n", f"{name}@%h", "-l", "INFO", "--without-mingle", "--without-gossip"],
                env, logdir)


def _beat(env: dict[str, str], logdir: Path) -> Proc:
    return Proc("beat", [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO", "--pidfile="],
                env, logdir)


def test_beat_and_workers_started_before_redis_wait_with_clear_lines_and_proceed_once_it_answers(
        tmp_path: Path, target: PprofTarget) -> None:
    store = tmp_path / "profiles"
    redis_server = RedisServer(tmp_path / "redis", free_port())
    env = scraper_env(redis_server.url, _config(tmp_path / "config.yaml", target, store))
    worker, beat = _worker(env, tmp_path), _beat(env, tmp_path)
    try:
        worker.wait_for_output("Cannot connect to redis://")
        worker.wait_for_output("Trying again in 4.00 seconds... (2/None)", timeout=10)
        beat.wait_for_output("Redis does not answer")
        assert "retrying every 1s" in beat.output()
        assert worker.output().count("Traceback") == 0
        assert beat.output().count("Traceback") == 0

        redis_server.start()
        worker.wait_for_output("ready.", timeout=30)
        beat.wait_for_output("beat resumes", timeout=10)
        wait_until(lambda: sidecars(store), timeout=4 * INTERVAL_S + 10, message="a profile once Redis is up")
    finally:
        beat.stop()
        worker.stop()
        redis_server.stop()


def test_a_redis_restart_under_load_loses_no_waiting_profile_and_everything_resumes_within_30s(
        tmp_path: Path, target: PprofTarget) -> None:
    store = tmp_path / "profiles"
    redis_server = RedisServer(tmp_path / "redis", free_port()).start()
    client = redis_server.client()
    with PyroscopeStandIn() as pyroscope:
        env = scraper_env(redis_server.url, _config(tmp_path / "config.yaml", target, store, pyroscope.url),
                          SCRAPER_VISIBILITY_TIMEOUT="5")
        worker, beat = _worker(env, tmp_path), _beat(env, tmp_path)
        try:
            worker.wait_for_output("ready.")
            wait_until(lambda: len(sidecars(store)) >= 4, timeout=4 * INTERVAL_S + 10, message="profiles flowing")
            # Pyroscope stops answering, so validated profiles pile up waiting for their push.
            release = pyroscope.hold()
            waiting = wait_until(lambda: len(ids := client.zrange(keys.PENDING, 0, -1)) >= 6 and ids,
                                 timeout=4 * INTERVAL_S + 10, message="profiles waiting for their push")
            waiting_ids = {i.decode() for i in waiting}

            redis_server.stop()
            beat.wait_for_output("Redis does not answer", timeout=10)
            worker.wait_for_output("Connection to broker lost", timeout=10)
            redis_server.start()
            restarted = time.time()
            release.set()

            beat.wait_for_output("beat resumes", timeout=30)
            wait_until(lambda: any(dt.datetime.fromisoformat(s["start"]).timestamp() > restarted
                                   for s in sidecars(store)),
                       timeout=30, message="a profile scraped after the restart reaching the store")
            wait_until(lambda: waiting_ids <= {i for r in pyroscope.pushes for i in r.ids}, timeout=30,
                       message="every profile that was waiting before the restart to reach Pyroscope")
            assert waiting_ids <= {s["id"] for s in sidecars(store)}
        finally:
            beat.stop()
            worker.stop()
            redis_server.stop()
    assert "Traceback" not in beat.output()
    # Celery logs a traceback for each push it had to give up when the connection dropped (they are
    # redelivered, as checked above) and one for its remote-control greenlet; once reconnected, none.
    after_reconnect = worker.output().rsplit("Connected to redis://", 1)[1]
    assert "Traceback" not in after_reconnect, after_reconnect[-5000:]
