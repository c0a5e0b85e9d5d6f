"""The Celery app: the only place Celery is configured."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery
from celery.exceptions import ImproperlyConfigured, SecurityError
from celery.signals import after_setup_logger
from kombu import Exchange, Queue

from scraper.broker import SENTINEL_SOCKET_TIMEOUT_S, broker_url, is_sentinel
from scraper.defaults import log_format
from scraper.errors import ConfigError
from scraper.keys import PUSH_QUEUE, SCRAPE_QUEUE
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
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in (SCRAPE_QUEUE, PUSH_QUEUE)],
        task_default_queue=SCRAPE_QUEUE,
        task_routes={"scraper.scrape": {"queue": SCRAPE_QUEUE}, "scraper.push": {"queue": PUSH_QUEUE}},
        # One message reserved per greenlet slot: a deep prefetch would let scrapes age in
        # memory past their expiry, and late-acked pushes sit unacked in Redis meanwhile.
        worker_prefetch_multiplier=1,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Greenlets that publish push tasks share the producer pool.
        broker_pool_limit=max(10, min(settings.concurrency, 100)),
        worker_cancel_long_running_tasks_on_connection_loss=True,
        beat_scheduler="beat.scheduler:PlanScheduler",
        beat_max_loop_interval=1,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        # one format for every process, run's own included, each line naming its process
        worker_log_format=log_format(settings.process_name or f"{socket.gethostname()}:{os.getpid()}"),
        worker_task_log_format=log_format(settings.process_name or f"{socket.gethostname()}:{os.getpid()}"),
    )
    _sign_messages_if_asked(app, settings)
    return app


def _transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu's options for the broker connection; with Sentinel, the master's name and timeouts that
    let a connection to a dead master fail, so that the worker asks the sentinels for the new one."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if is_sentinel(broker_url(settings)):
        # health_check_interval also bounds how long a BRPOP may wait on a silent master (kombu drops
        # it after brpop_timeout + twice this): the default 25 s would keep a worker away for 51 s.
        options.update(master_name=settings.sentinel_master, socket_timeout=SENTINEL_SOCKET_TIMEOUT_S,
                       socket_connect_timeout=SENTINEL_SOCKET_TIMEOUT_S, health_check_interval=SENTINEL_SOCKET_TIMEOUT_S,
                       sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
                                        "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S})
    return options


def _sign_messages_if_asked(app: Celery, settings: Settings) -> None:
    """With ``SCRAPER_SECURITY_*`` set, sign every task message and accept only signed ones.

    Unsigned, anyone who can write to Redis can have workers scrape whatever their configs
    allow, with their credentials, and fill the stores. Celery's ``auth`` serializer signs (it
    does not encrypt); it needs the ``cryptography`` package and an RSA key.
    """
    files = {"SCRAPER_SECURITY_KEY": settings.security_key,
             "SCRAPER_SECURITY_CERTIFICATE": settings.security_certificate,
             "SCRAPER_SECURITY_CERT_STORE": settings.security_cert_store}
    if all(path is None for path in files.values()):
        return
    missing = [name for name, path in files.items() if path is None]
    if missing:
        raise ConfigError([f"{name} is not set: signing needs {', '.join(files)}" for name in missing], "environment")
    app.conf.update(task_serializer="auth", accept_content=["auth"], security_key=str(settings.security_key),
                    security_certificate=str(settings.security_certificate),
                    security_cert_store=str(settings.security_cert_store), security_digest="sha256")
    try:
        app.setup_security()
    except ImproperlyConfigured:  # celery.security says so when cryptography is missing
        raise ConfigError(["message signing needs the cryptography package: pip install cryptography"],
                          "environment") from None
    except (OSError, ValueError, SecurityError) as exc:
        raise ConfigError([f"message signing cannot start: {exc}"], "environment") from None


#: Celery's per-message INFO lines ("Task ... received", "... succeeded in"). At hundreds of
#: scrapes a second they cost the gevent worker two thirds of its consume rate (a no-op task
#: drained at 209/s with them, 670/s without; docs/benchmarks.md); failures still log at ERROR.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.worker.request", "celery.app.trace")


@after_setup_logger.connect
def quiet_per_task_logs(**_: Any) -> None:
    """Log at ``SCRAPER_LOG_LEVEL`` (INFO) unless ``-l`` asks for more: Celery's own default, WARNING,
    made a standalone worker or beat look dead. Keep per-message logs out of INFO;
    ``SCRAPER_LOG_LEVEL=DEBUG`` brings them back."""
    root = logging.getLogger()
    wanted = logging.getLevelName(Settings().log_level.upper())
    if isinstance(wanted, int) and wanted < root.level:
        root.setLevel(wanted)
    if root.level > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


app = create_app()
