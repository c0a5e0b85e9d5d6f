"""Worker life-cycle hooks: count expired scrapes, give a dead worker's unacknowledged pushes back,
and serve /metrics and friends when asked to."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery.signals import task_revoked, worker_init, worker_ready
from kombu.exceptions import OperationalError

from scraper.errors import ConfigError
from scraper.settings import Settings

log = logging.getLogger(__name__)


@worker_init.connect
def load_config_before_consuming(**_: Any) -> None:
    """Load the config before the first task: a worker with an invalid config stops with its problems
    listed, instead of failing every task; a later bad change is refused and the last good one kept."""
    from .tasks import runtime

    try:
        runtime()
    except ConfigError as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from None


@task_revoked.connect
def count_expired_scrape(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """A scrape that could not start within its interval is dropped, and counted, not run late."""
    if expired and getattr(sender, "name", None) == "scraper.scrape" and request is not None:
        from .tasks import runtime

        job = request.args[0] if request.args else "unknown"
        runtime().scrape_dropped(job)


def restore_period(visibility_timeout: float) -> float:
    """Seconds between sweeps for unacknowledged messages: a dead worker's pushes come back between
    one visibility timeout and one and a half after it died (at most 30 s late for long timeouts)."""
    return max(1.0, min(visibility_timeout / 2, 30.0))


@worker_ready.connect
def restore_unacked_messages(sender: Any = None, **_: Any) -> None:
    """Put messages that a dead worker took and never acknowledged back in their queue.

    kombu's Redis transport does this sweep itself only from an event loop: under gevent the
    consumer's blocking loop never reaches it (its 1 s BRPOP always answers before the 2 s poll
    times out), so a push in flight in a killed worker was never redone. The sweep holds kombu's
    own mutex, so workers doing it at once do not restore a message twice.
    """
    app = sender.app
    period = restore_period(Settings().visibility_timeout)

    def sweep() -> None:
        while True:
            time.sleep(period)
            try:
                with app.connection_for_write() as connection:
                    channel = connection.default_channel
                    channel.qos.restore_visible(num=channel.unacked_restore_limit, interval=1)
            except (OperationalError, redis.RedisError, OSError) as exc:  # the consumer reports outages
                log.debug("sweep for unacknowledged messages failed: %s", exc)

    threading.Thread(target=sweep, name="restore-unacked", daemon=True).start()


@worker_ready.connect
def serve_http(sender: Any = None, **_: Any) -> None:
    """Serve /metrics, /targets, /-/healthy, /-/ready and self-profiles when SCRAPER_HTTP_PORT is set."""
    settings = Settings()
    if settings.http_port is None:
        return
    from scraper.httpserver import start_http_server

    from .tasks import runtime

    _, port = start_http_server(settings.http_port, redis_factory=lambda: runtime().redis)
    log.info("serving /metrics, /targets, /-/healthy, /-/ready and /debug/pprof on port %d", port)
