"""A Celery beat scheduler whose entries are the plan: every target's profile types at every slot.

The stock scheduler compares every entry on every tick (O(N) per tick, O(N²) per cycle), which
cannot serve thousands of targets. The scheduling itself (the heap of slots, grouping due targets
into tasks, shedding) is :mod:`scraper.schedule`'s, without Celery or a clock; this adapter holds
the beat lock, reads the clock and the queue's backlog, publishes the plan's state to Redis and
sends each :class:`~scraper.schedule.ScrapeTask` as one ``scraper.scrape`` message. Celery costs
a worker about as much per message as a scrape costs, so grouping by target, then by tick, is what
lets two workers keep up with a thousand targets (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery.beat import Scheduler
from kombu import Queue
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.uuid import uuid

from scraper import keys, status
from scraper.broker import broker_url, connect_redis
from scraper.config import Config, ConfigSource
from scraper.discovery.runner import DiscoveryRunner
from scraper.plan import Plan, ScrapeSpec, describe, make_plan
from scraper.schedule import MIN_BACKLOG_LIMIT, Schedule, ScrapeTask
from scraper.settings import Settings

from .lock import BeatLock

log = logging.getLogger(__name__)

__all__ = ["MIN_BACKLOG_LIMIT", "PlanScheduler"]

#: Publishes sent to Redis in one pipeline.
PUBLISH_BATCH = 500

#: Longest sleep between ticks: how quickly a config change, SIGHUP or lost lock is noticed.
MAX_SLEEP_S = 1.0
#: Shortest sleep between ticks: scrapes due within it go out together, in one pipeline and in as
#: few tasks as targets_per_task allows, at most this late. Without it a fleet's spread-out slots
#: mean a tick (and its Redis round trips) per scrape; 0.25 s rather than 0.1 s made tasks 2.5 times
#: larger and a scrape 8% cheaper for 0.15 s more lag at p99 (docs/benchmarks.md).
MIN_SLEEP_S = 0.25
#: Sleep between attempts while Redis does not answer.
REDIS_RETRY_S = 1.0
#: While Redis stays unreachable, one log line per this many seconds, not one per attempt.
REDIS_LOG_EVERY_S = 30.0
#: What an unreachable, restarting or still-loading Redis raises, through redis-py or kombu (a
#: publish batch cut short raises BatchPublishError).
REDIS_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OperationalError, BatchPublishError, ConnectionError)


class PlanScheduler(Scheduler):
    """Emits every spec once per interval, at its slot, in ``scraper.scrape`` tasks (one per job and
    tick, up to ``targets_per_task`` targets each), while holding the beat lock."""

    #: the wall clock: the one place beat reads it
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = Schedule()
        self._specs: list[ScrapeSpec] = []
        self._hup = threading.Event()
        self._heap_stale = True
        self._queue: Queue | None = None
        self._shed_logged = 0.0
        self._unpublished: tuple[Plan, dict[str, str]] | None = None
        self._redis_down_since: float | None = None
        self._redis_logged = 0.0
        self.emitted = 0
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------------- Celery's hooks

    def setup_schedule(self) -> None:
        settings = Settings()
        if settings.config is None:
            raise SystemExit("SCRAPER_CONFIG is not set: point it at the YAML config file")
        self.redis = connect_redis(broker_url(settings), settings.sentinel_master)
        self.shard = settings.beat_shard
        self.slots.targets_per_task = settings.targets_per_task
        self.lock = BeatLock(self.redis, settings.beat_lock_ttl, key=keys.sharded(keys.BEAT_LOCK, self.shard))
        self.source = ConfigSource(settings.config)
        self.discovery = DiscoveryRunner(self.source.get())
        self.discovery.start()
        self._discovery_seen = -1
        self._reported_error: str | None = None
        try:
            self._apply(self.source.get())
        except REDIS_UNREACHABLE as exc:
            self._redis_unreachable(exc)  # tick publishes the plan once Redis answers
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda *_: self._hup.set())
        if settings.http_port is not None:
            from scraper.httpserver import start_http_server

            _, port = start_http_server(settings.http_port, redis_factory=lambda: self.redis, ready=self.ready,
                                        config=self.source.get, host=str(settings.http_address))
            log.info("serving /metrics, /targets, /-/healthy and /-/ready on %s port %d", settings.http_address, port)

    def _key(self, key: str) -> str:
        return keys.sharded(key, self.shard)

    def ready(self) -> tuple[bool, str]:
        """Not ready while the last config change is refused: the reason says which problems to fix."""
        ok, reason = self.source.ready()
        if not ok:
            return ok, reason
        return True, "emitting" if self.lock.held else "standing by"

    def get_schedule(self) -> dict[str, Any]:
        return {}

    def set_schedule(self, schedule: dict[str, Any]) -> None:
        pass

    schedule = property(get_schedule, set_schedule)

    @property
    def info(self) -> str:
        # Celery builds a lazy instance (no setup_schedule) just for its banner.
        return f"    . plan: scrape specs from {Settings().config}, slots pinned to absolute time"

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send every scrape that is due, then say how long to sleep; while Redis does not answer,
        wait for it instead of dying (Celery's beat loop would exit on the exception)."""
        try:
            if self._unpublished is not None:
                self._publish()
            delay = self._tick(self.clock())
        except REDIS_UNREACHABLE as exc:
            return self._redis_unreachable(exc)
        if self._redis_down_since is not None:
            log.warning("Redis answers again after %.0fs; beat resumes", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
        return delay

    def _redis_unreachable(self, exc: Exception) -> float:
        # Slots are rebuilt from where emission stopped, so a short outage delays scrapes rather than losing them.
        self._heap_stale = True
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = self._redis_logged = now
            log.error("Redis does not answer (%s); beat emits nothing until it does, retrying every %gs",
                      exc, REDIS_RETRY_S)
        elif now - self._redis_logged >= REDIS_LOG_EVERY_S:
            self._redis_logged = now
            log.error("Redis still does not answer after %.0fs (%s); retrying", now - self._redis_down_since, exc)
        return REDIS_RETRY_S

    def _tick(self, now: float) -> float:
        if not self.lock.hold():
            self._heap_stale = True
            self._maybe_reload()
            return MAX_SLEEP_S
        if self._heap_stale:
            self.slots.restart(after=self._resume_point(now))
            self._heap_stale = False
        self._emit_due(now)
        # Everything due up to now is sent: a reload or a beat taking over resumes from here.
        self.redis.set(self._key(keys.BEAT_EMITTED_UNTIL), repr(now))
        self._maybe_reload()
        return self.slots.sleep_s(self.clock(), MIN_SLEEP_S, MAX_SLEEP_S)

    def close(self) -> None:
        self.discovery.stop()
        try:
            self.lock.release()
        except REDIS_UNREACHABLE:
            pass  # the lock expires on its own
        super().close()

    # ---------------------------------------------------------------- the plan

    def _resume_point(self, now: float) -> float:
        """Where emission resumes: where the last emitting beat stopped, if that was moments ago
        (a reload, a takeover), else now (a fresh start does not replay old slots)."""
        emitted_until = float(self.redis.get(self._key(keys.BEAT_EMITTED_UNTIL)) or 0)
        return emitted_until if 0 <= now - emitted_until <= 2 * self.lock.ttl_ms / 1000 else now

    @property
    def targets_per_task(self) -> int:
        return self.slots.targets_per_task

    @targets_per_task.setter
    def targets_per_task(self, value: int) -> None:
        self.slots.targets_per_task = value

    def _emit_due(self, now: float) -> None:
        next_due = self.slots.next_due
        if next_due is None or next_due > now:
            return
        if self._queue is None:
            self._queue = self.app.amqp.queues[keys.SCRAPE_QUEUE]
            self.producer.maybe_declare(self._queue)
        backlog = self.redis.llen(keys.SCRAPE_QUEUE)
        emission = self.slots.due(now, backlog)
        for late in emission.late:
            log.warning("slot of %s %s %s is over an interval late; skipped", late.target.first.job,
                        late.target.first.url, late.slot)
        # One Redis pipeline per batch instead of a round trip (and a new client) per message
        with self.producer.batch(max_size=PUBLISH_BATCH):
            for task in emission.tasks:
                self._send(task)
        if emission.shed:
            status.incr_counter(self.redis, "scrapes_dropped", emission.shed)
            if time.monotonic() - self._shed_logged >= REDIS_LOG_EVERY_S:
                self._shed_logged = time.monotonic()
                log.warning("workers are behind: %d scrape tasks queued (limit %d); dropping due scrapes "
                            "until they catch up (add workers or lengthen intervals)",
                            backlog, self.slots.backlog_limit())

    def _send(self, task: ScrapeTask) -> None:
        """Send ``task`` as one ``scraper.scrape(job, profile_types, [target labels], [slots])`` message:
        lists always, even of one target."""
        # Celery's own message builder and sender, without app.send_task's per-call routing and
        # option merging: at 10,000 specs per interval that overhead is most of beat's CPU.
        amqp = self.app.amqp
        slots = [due.slot for due in task.due]
        targets = [due.target.first.target_labels for due in task.due]
        instances = [due.target.first.labels.get("instance", "") for due in task.due]
        message = amqp.create_task_message(
            uuid(), "scraper.scrape", (task.job, list(task.profile_types), targets, slots), {},
            # A scrape that cannot start within its interval is dropped rather than run late.
            expires=datetime.fromtimestamp(task.expires_at, tz=UTC),
            argsrepr=describe(task.job, instances, list(task.profile_types), min(slots)),
            kwargsrepr="{}", ignore_result=True,
        )
        amqp.send_task_message(self.producer, "scraper.scrape", message, queue=self._queue, declare=[])
        self.emitted += task.specs

    def _apply(self, config: Config) -> None:
        """Plan ``config`` with the targets discovered so far, and publish what it implies."""
        version, discovered, errors = self.discovery.snapshot()
        self._discovery_seen = version
        planned = make_plan(config, discovered)
        self._specs = planned.specs
        self.slots.plan(self._specs, after=self.clock())
        self._heap_stale = True  # the next tick restarts it where emission stopped
        self._unpublished = (planned, errors)  # until Redis has it: tick retries if Redis fails
        self._publish()

    def _publish(self) -> None:
        """Write the plan's status records, dropped targets and beat state to Redis."""
        assert self._unpublished is not None
        planned, errors = self._unpublished
        status.register_specs(self.redis, self._specs, self.shard)
        with self.redis.pipeline() as pipe:
            pipe.delete(self._key(keys.DROPPED))
            dropped = {job: json.dumps([d.as_dict() for d in targets]) for job, targets in planned.dropped.items() if targets}
            if dropped:
                pipe.hset(self._key(keys.DROPPED), mapping=dropped)  # type: ignore[arg-type]  # redis-py: invariant key type
            pipe.hset(self._key(keys.BEAT_STATE), mapping={"config_version": self.source.version, "specs": len(self._specs),
                                                "discovery_errors": json.dumps(errors)})
            pipe.execute()
        self._unpublished = None
        log.info("planned %d scrape specs from %s (%d targets dropped by relabeling)", len(self._specs),
                 self.source.path, sum(len(d) for d in planned.dropped.values()))

    def _maybe_reload(self) -> None:
        version = self.source.version
        config = self.source.get(force_check=self._hup.is_set())
        self._hup.clear()
        if self.source.version != version:
            self.discovery.stop()
            self.discovery = DiscoveryRunner(config)
            self.discovery.start()
            self._apply(config)  # first: were Redis to fail below, the new config must still be in force
            self.redis.hset(self._key(keys.BEAT_STATE), "reload_error", "")
        elif self.discovery.version != self._discovery_seen:
            self._apply(config)
        if self.source.last_error and self.source.last_error != self._reported_error:
            self.redis.hset(self._key(keys.BEAT_STATE), "reload_error", self.source.last_error)
        self._reported_error = self.source.last_error
