"""Worker life-cycle hooks: count expired scrapes, serve /metrics and friends when asked to."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked, worker_init, worker_ready

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
