"""The Celery app: the only place Celery is configured."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger
from kombu import Exchange, Queue

from scraper.broker import broker_url
from scraper.settings import Settings


def create_app(settings: Settings | None = None) -> Celery:
    """The Celery app for ``settings`` (``SCRAPER_*`` from the environment when not given)."""
    settings = settings or Settings()
    app = Celery("pprof-scraper", broker=broker_url(settings), include=["worker.tasks", "worker.signals"])
    app.conf.update(
        # The broker is the trust boundary: JSON only, never pickle. Messages are small (no
        # profile bytes travel: see scraper.delivery), so JSON costs little.
        task_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        # Each queue its own exchange and routing key: with the defaults both would bind to the
        # default exchange under the key "scrape", and Redis would copy every message into both.
        task_queues=[Queue("scrape", Exchange("scrape"), routing_key="scrape"),
                     Queue("push", Exchange("push"), routing_key="push")],
        task_default_queue="scrape",
        task_routes={"scraper.scrape": {"queue": "scrape"}, "scraper.push": {"queue": "push"}},
        # One message reserved per greenlet slot: a deep prefetch would let scrapes age in
        # memory past their expiry, and late-acked pushes sit unacked in Redis meanwhile.
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Greenlets that publish push tasks share the producer pool.
        broker_pool_limit=max(10, min(settings.concurrency, 100)),
        worker_cancel_long_running_tasks_on_connection_loss=True,
        beat_scheduler="beat.scheduler:PlanScheduler",
        beat_max_loop_interval=1,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )
    return app


#: Celery's per-message INFO lines ("Task ... received", "... succeeded in"). At hundreds of
#: scrapes a second they cost the gevent worker two thirds of its consume rate (a no-op task
#: drained at 209/s with them, 670/s without; docs/benchmarks.md); failures still log at ERROR.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.worker.request", "celery.app.trace")


@after_setup_logger.connect
def quiet_per_task_logs(**_: Any) -> None:
    """Keep per-message logs out of INFO; ``SCRAPER_LOG_LEVEL=DEBUG`` brings them back."""
    if logging.getLogger().level > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


app = create_app()
