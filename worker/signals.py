"""Worker life-cycle hooks: count expired scrapes, give a dead worker's unacknowledged pushes back,
serve /metrics and friends when asked to, and say not ready when the worker has stopped taking
work that is waiting for it."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import redis
from celery.signals import (
    task_received,
    task_revoked,
    worker_init,
    worker_ready,
    worker_shutting_down,
)
from kombu.exceptions import OperationalError

from scraper.defaults import trace_allocations
from scraper.errors import ConfigError
from scraper.settings import Settings

log = logging.getLogger(__name__)


class ConsumptionWatch:
    """When this worker last received a task, and the queues it was started to consume.

    Celery workers are known to sometimes stop consuming after a broker reconnect while looking
    alive (celery#8030, #8091, #10205, #10302). Idle with empty queues is fine; idle while its
    queues hold messages is that failure (or a consumer cancelled by hand), and makes /-/ready fail.
    """

    def __init__(self, idle_limit_s: float) -> None:
        self.idle_limit_s = idle_limit_s
        self.queues: tuple[str, ...] = ()
        self.received_at = time.monotonic()

    def received(self) -> None:
        self.received_at = time.monotonic()

    def ready(self, client: redis.Redis) -> tuple[bool, str]:
        """(ready, reason) for /-/ready."""
        idle = time.monotonic() - self.received_at
        if idle < self.idle_limit_s:
            return True, "consuming"
        try:
            waiting = {queue: int(client.llen(queue)) for queue in self.queues}
        except redis.RedisError as exc:
            return False, f"Redis does not answer: {exc}"
        backlog = ", ".join(f"{queue} holds {count}" for queue, count in waiting.items() if count)
        if not backlog:
            return True, "idle: its queues are empty"
        return False, (f"received no task for {idle:.0f}s (SCRAPER_READY_IDLE_S is {self.idle_limit_s:g}) while "
                       f"its queues hold work ({backlog}); it may have stopped consuming after a broker "
                       "reconnect: restart it")


#: this process's watch, made when the worker is ready
watch: ConsumptionWatch | None = None


@worker_init.connect
def load_config_before_consuming(**_: Any) -> None:
    """Load the config before the first task: a worker with an invalid config stops with its problems
    listed, instead of failing every task; a later bad change is refused and the last good one kept."""
    from .tasks import runtime

    trace_allocations(Settings().tracemalloc)  # before the first allocation worth showing
    try:
        runtime()
    except ConfigError as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from None


#: The garbage collector's thresholds in a worker (Python's defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)


@worker_ready.connect
def collect_less_often(**_: Any) -> None:
    """Collect cyclic garbage less often, and never walk what startup made (modules, config, Celery's
    app). With Python's defaults a busy worker spent about a tenth of its CPU in the collector,
    walking a heap that every greenlet, request and profile object grows by hundreds of objects;
    with these, 11% less CPU per scrape and the same peak memory (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@worker_shutting_down.connect
def abandon_scrapes_in_flight(**_: Any) -> None:
    """On SIGTERM or Ctrl-C end the scrapes in flight at once, counted, instead of letting a warm
    shutdown wait out a 14 s CPU profile (a cold one, under gevent, dies with BlockingSwitchOutError).
    Pushes in flight finish; those that cannot are redone, being acknowledged late."""
    from .tasks import runtime

    if runtime.cache_info().currsize:  # built: a worker that never started has nothing in flight
        runtime().abandon_scrapes()


@task_revoked.connect
def count_expired_scrape(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """A scrape that could not start within its interval is dropped, and counted, not run late."""
    if expired and getattr(sender, "name", None) == "scraper.scrape" and request is not None:
        from .tasks import runtime

        args = list(request.args or [])
        job = args[0] if args else "unknown"
        # a message names its profile types and its targets each as one or as a list
        count = _count(args[1] if len(args) > 1 else None) * _count(args[2] if len(args) > 2 else None)
        runtime().scrape_dropped(job, count=count)


def _count(items: object) -> int:
    """How many profile types or targets a scrape message's argument names: a list, or one."""
    return len(items) if isinstance(items, list) and items else 1


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
                send_orphans()
            except (OperationalError, redis.RedisError, OSError) as exc:  # the consumer reports outages
                log.debug("sweep for unacknowledged messages failed: %s", exc)

    threading.Thread(target=sweep, name="restore-unacked", daemon=True).start()


def send_orphans() -> None:
    """Publish the pushes of profiles a worker stashed and died before sending (killed between the
    two): without this they would stay pending in Redis forever, and never reach their receivers."""
    from scraper import delivery, status

    from .tasks import push, runtime

    client = runtime().redis
    orphans = delivery.claim_orphans(client)
    for push_id, receivers in orphans.items():
        for receiver in receivers:
            push.apply_async(args=([push_id], receiver), argsrepr=f"{receiver} orphan {push_id}")
    if orphans:
        status.incr_counter(client, "orphans_sent", len(orphans))
        log.warning("sent the pushes of %d stored profiles whose worker died before sending them", len(orphans))


@task_received.connect
@task_revoked.connect
def note_message_taken(**_: Any) -> None:
    """Every message taken from the broker shows the consumer is alive, one dropped as expired too
    (Celery sends task_received only for those it will run): catching up on a backlog is consuming."""
    if watch is not None:
        watch.received()


@worker_ready.connect
def serve_http(sender: Any = None, **_: Any) -> None:
    """Serve /metrics, /targets, /-/healthy, /-/ready and self-profiles when SCRAPER_HTTP_PORT is set."""
    global watch
    settings = Settings()
    if settings.http_port is None:
        return
    from scraper.httpserver import start_http_server

    from . import pool
    from .tasks import runtime

    consumption = watch = ConsumptionWatch(settings.ready_idle_s)
    # The queues given at start: a consumer cancelled later still counts as one that should consume.
    consumption.queues = tuple(sender.app.amqp.queues.consume_from)

    def ready() -> tuple[bool, str]:
        config_ok, config_reason = runtime().source.ready()
        if not config_ok:
            return config_ok, config_reason
        return consumption.ready(runtime().redis)

    host = str(settings.http_address)
    _server, port = start_http_server(settings.http_port, redis_factory=lambda: runtime().redis, ready=ready, host=host,
                                      config=lambda: runtime().config, pages=pool.profile_pages)
    log.info("serving /metrics, /targets, /-/healthy, /-/ready and /debug/pprof on %s port %d", host, port)
