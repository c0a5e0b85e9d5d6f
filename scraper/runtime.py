"""What one worker or beat process holds: its config (re-read when the file changes), its Redis
connection, one HTTP client per job and one receiver per ``write:`` entry.

Workers rebuild every request from this process's own config: a task message names the job,
target labels, profile type and slot, never a secret.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.pool
import redis

from . import baseline, delivery, metrics, status
from .client import TargetClient
from .broker import broker_url, connect_redis
from .config import Config, ConfigSource
from .delta import TARGET_DELTA_TYPES, Baseline, Outcome, cumulative_types_of
from .errors import ConfigError, PushError, PushRejected
from .plan import ScrapeSpec, spec_for
from .receivers import Profile, Receiver, build_receiver
from .receivers.filestore import FileStore
from .receivers.retry import retry_delay
from .scrape import ScrapeResult, scrape_once
from .settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads writing to file stores, and push batches loaded for them at once.
FILE_WRITERS = 8
#: Large bodies waiting for the validation thread at most.
VALIDATIONS_WAITING = 4
#: Profiles of one push task sent to a network receiver (Pyroscope) at once.
PUSHES_AT_ONCE = 8


class Runtime:
    """The scrape and push stages of one process, wired to its config, Redis and receivers."""

    def __init__(self, settings: Settings) -> None:
        if settings.config is None:
            raise ConfigError(["SCRAPER_CONFIG is not set: point it at the YAML config file"], "environment")
        self.settings = settings
        self.source = ConfigSource(settings.config)
        self.redis = connect_redis(broker_url(settings), settings.sentinel_master)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._clients: dict[str, tuple[object, TargetClient]] = {}
        self._receivers: dict[str, tuple[object, Receiver]] = {}
        # Past a few waiting bodies, validation runs in place: the event loop then slows, scrapes
        # start late and beat sheds, instead of bodies piling up behind one thread (1.9 GB at
        # 1,000 targets with 100 KB profiles).
        self.validate_off_hub = OffTheHub(threads=1, max_waiting=VALIDATIONS_WAITING)
        self.write_off_hub = OffTheHub(threads=FILE_WRITERS)
        self._file_batches = threading.BoundedSemaphore(FILE_WRITERS)
        #: fetches running now, and whether the process is stopping (see :meth:`abandon_scrapes`)
        self._fetching: set[gevent.Greenlet] = set()
        self._abandoning = False
        for warning in self.source.get().warnings():
            log.warning("%s", warning)

    @property
    def config(self) -> Config:
        return self.source.get()

    def client_for(self, job: str) -> TargetClient:
        """The HTTP client of ``job``, rebuilt when that job's HTTP settings change."""
        settings = self.config.scrape[job].http_client_config
        cached = self._clients.get(job)
        if cached is None or cached[0] != settings:
            cached = (settings, TargetClient(settings, pool_size=self.settings.concurrency))
            self._clients[job] = cached
        return cached[1]

    def receiver(self, name: str) -> Receiver:
        """The receiver configured under ``write: name``, rebuilt when its settings change."""
        settings = self.config.write.get(name)
        if settings is None:
            raise PushRejected(f"receiver {name!r} is not in this process's config; keep configs in step across hosts")
        cached = self._receivers.get(name)
        if cached is None or cached[0] != settings:
            if cached is not None and hasattr(cached[1], "close"):
                cached[1].close()  # its pooled connections would otherwise linger until exit
            cached = (settings, build_receiver(name, settings))
            self._receivers[name] = cached
        return cached[1]

    # ---------------------------------------------------------------- scrape stage

    def scrape(self, job: str, profile_types: list[str], targets: list[dict[str, str]],
               slots: list[float], recorded: Callable[[list[ScrapeResult]], None] | None = None,
               ) -> tuple[list[ScrapeResult], list[Exception]]:
        """Scrape every type of every target (``targets[i]`` at ``slots[i]``) concurrently, in greenlets.

        The quick types are recorded together as soon as they are in, the ones that hold for
        ``seconds`` (CPU, deltas) together when they are: two Redis round trips, and a target's
        status shows its quick types without waiting 14 s. ``recorded`` is called with each phase's
        results once they are stored, so their pushes need not wait for the slow phase either.
        What raised (an unknown job, Redis gone, ``recorded``)
        is returned beside the recorded results, so one target's or one phase's failure does not
        cost the others their pushes.
        """
        errors: list[Exception] = []
        quick: list[gevent.Greenlet] = []
        held: list[gevent.Greenlet] = []
        planned: list[tuple[ScrapeSpec, float]] = []
        abandoned = 0
        for labels, at in zip(targets, slots):
            try:
                specs = self.specs(job, labels, profile_types)
            except Exception as exc:  # noqa: BLE001 - the caller re-raises once the others are pushed
                errors.append(exc)
                continue
            if self._abandoning:
                abandoned += len(specs)
                continue
            planned += [(spec, at) for spec in specs]
        # The baselines of every cumulative series of the task, in one round trip. Without them the
        # scrapes still run: their profiles become new baselines and push no delta.
        try:
            baselines = baseline.read(self.redis, [spec for spec, _ in planned if self.cumulative(spec)])
        except redis.RedisError as exc:
            errors.append(exc)
            baselines = {}
        for spec, at in planned:
            (held if spec.delta_seconds else quick).append(
                gevent.spawn(outcome, self.fetch, spec, at, baselines.get(spec.key)))
        self._fetching.update(quick + held)
        results: list[ScrapeResult] = []
        for phase in (quick, held):
            gevent.joinall(phase)
            self._fetching.difference_update(phase)
            # a fetch killed by abandon_scrapes ends with GreenletExit, neither a result nor an error
            fetched = [g.value for g in phase if isinstance(g.value, ScrapeResult)]
            errors += [g.value for g in phase if isinstance(g.value, Exception)]
            abandoned += sum(1 for g in phase if not isinstance(g.value, (ScrapeResult, Exception)))
            try:
                self.record(fetched)
            except Exception as exc:  # noqa: BLE001 - as above
                errors.append(exc)
                continue
            results += fetched
            if recorded is not None and fetched:
                try:
                    recorded(fetched)
                except Exception as exc:  # noqa: BLE001 - as above
                    errors.append(exc)
        if abandoned:
            try:
                status.incr_counter(self.redis, "scrapes_abandoned", abandoned)
            except Exception as exc:  # noqa: BLE001 - as above
                errors.append(exc)
        return results, errors

    def abandon_scrapes(self) -> None:
        """The process is stopping: end the fetches in flight now (a CPU profile would hold a warm
        shutdown for its whole window) and start no more; :meth:`scrape` counts them as
        ``scrapes_abandoned`` and still records and pushes what was already in. Safe from a signal
        handler: the kills are scheduled, not waited for."""
        self._abandoning = True
        for greenlet in list(self._fetching):
            greenlet.kill(block=False)

    def specs(self, job: str, target_labels: dict[str, str], profile_types: list[str]) -> list[ScrapeSpec]:
        """The specs of ``profile_types`` of one target, rebuilt from this process's config (ConfigError
        when the job or a type is not in it)."""
        return [spec_for(self.config, job, target_labels, profile_type) for profile_type in profile_types]

    def cumulative(self, spec: ScrapeSpec) -> tuple[str, ...]:
        """The sample types of ``spec``'s profiles that are running totals, by this process's config."""
        return cumulative_types_of(self.config, spec)

    def fetch(self, spec: ScrapeSpec, scheduled_at: float, previous: Baseline | None = None) -> ScrapeResult:
        """Scrape ``spec`` once for the slot ``scheduled_at`` (a cumulative type's delta against
        ``previous``, its stored baseline); the outcome is in the result."""
        result = scrape_once(spec, self.client_for(spec.job), scheduled_at=scheduled_at, guard_client=self.redis,
                             offload=self.validate_off_hub, cumulative=self.cumulative(spec), baseline=previous)
        metrics.observe_scrape(spec, result, lag_s=max(0.0, result.start - scheduled_at))
        return result

    def record(self, results: list[ScrapeResult]) -> None:
        """Record how scrapes went and stash the valid bodies for their receivers, in one round trip."""
        if not results:
            return
        # Redis commands were a third of a busy worker's CPU when each went alone (docs/benchmarks.md).
        with self.redis.pipeline(transaction=False) as pipe:
            for result in results:
                status.record_scrape(pipe, result.spec, start=result.start, duration=result.duration,
                                     error=result.error, worker=self.worker,
                                     delta=result.delta.outcome.value if result.delta is not None else None)
            done = sum(result.ok for result in results)
            if done:
                status.incr_counter(pipe, "scrapes_done", done)
            if done < len(results):
                status.incr_counter(pipe, "scrapes_failed", len(results) - done)
            baselines = [result.delta.outcome for result in results if result.delta is not None]
            if any(outcome is not Outcome.DELTA for outcome in baselines):
                status.incr_counter(pipe, "deltas_baseline", sum(o is not Outcome.DELTA for o in baselines))
            stashed = [result for result in results if result.ok]
            for result in stashed:
                spec, delta = result.spec, result.delta
                profile = Profile(id=result.push_id, labels=spec.labels, body=result.body or b"",
                                  start=result.start, end=result.end, url=spec.url,
                                  cumulative=list(delta.baseline.sample_types) if delta is not None else [],
                                  is_delta=delta is not None or spec.profile_type in TARGET_DELTA_TYPES,
                                  delta=delta.body if delta is not None else None)
                if delta is None:
                    delivery.queue_stash(pipe, profile, list(spec.forward_to))
                else:
                    baseline.queue_stash(pipe, profile, list(spec.forward_to), spec, delta,
                                         self.settings.max_baseline_bytes)
            replies = pipe.execute()
        # the stashes went last: their replies are the pending totals
        for result, reply in zip(stashed, replies[len(replies) - len(stashed):]):
            total = reply
            if result.delta is not None:
                written = baseline.stashed(reply)
                total = written.pending_total
                metrics.observe_delta(result.spec, result.delta.outcome, written)
            delivery.keep_within_budget(self.redis, total, result.push_id, self.settings.max_pending_bytes,
                                        self.settings.max_deadletter_bytes)

    def scrape_dropped(self, job: str, count: int = 1) -> None:
        """Count ``count`` scrapes that expired before a worker could start them."""
        metrics.observe_dropped(job, count)
        status.incr_counter(self.redis, "scrapes_dropped", count)

    # ---------------------------------------------------------------- push stage

    def push(self, push_ids: list[str], receiver: str) -> dict[str, bool | PushError]:
        """Deliver pending profiles to one receiver. For each id: True when delivered, False when there
        was nothing left to deliver (a redelivered push whose profile every receiver already took, or
        one evicted to the dead-letter list), or the PushError it failed with.

        Loading, and releasing what was delivered, take one Redis round trip each, whatever the count.
        """
        try:
            target = self.receiver(receiver)
        except PushError as exc:
            metrics.observe_push(receiver, exc.kind, 0.0)
            return {push_id: exc for push_id in push_ids}
        if isinstance(target, FileStore):
            # A batch waits for the writer threads before it is loaded: batches queued behind a slow
            # disk (or a busy CPU) wait in Redis, within its pending budget, not in this process's memory.
            with self._file_batches:
                return self._deliver(push_ids, target, self.write_off_hub)
        return self._deliver(push_ids, target, None)

    def _deliver(self, push_ids: list[str], target: Receiver,
                 off_hub: OffTheHub | None) -> dict[str, bool | PushError]:
        profiles = delivery.load_many(self.redis, push_ids)
        outcomes: dict[str, bool | PushError] = {i: False for i, p in zip(push_ids, profiles) if p is None}
        # A cumulative profile whose scrape was a baseline has nothing for a store of deltas: done with it.
        nothing = {p.id for p in profiles if p is not None and p.body_for(target.wants_deltas) is None}
        pending = [p for p in profiles if p is not None and p.id not in nothing]
        if nothing:
            with self.redis.pipeline(transaction=False) as pipe:
                for push_id in nothing:
                    delivery.release(pipe, push_id, target.name)
                pipe.execute()
            outcomes |= {push_id: True for push_id in nothing}
        if not pending:
            return outcomes
        if off_hub is not None:
            pushed = off_hub(_push_each, target, pending)
        else:
            # A network receiver: a task carries up to targets_per_task × types profiles, and one
            # after the other each would wait out the store's round trip behind the last.
            pushed = {}
            for one in gevent.pool.Pool(PUSHES_AT_ONCE).imap_unordered(lambda p: _push_each(target, [p]), pending):
                pushed |= one
        for push_id, (error, seconds) in pushed.items():
            metrics.observe_push(target.name, "ok" if error is None else error.kind, seconds)
            outcomes[push_id] = True if error is None else error
        delivered = [i for i, (error, _) in pushed.items() if error is None]
        if delivered:
            with self.redis.pipeline(transaction=False) as pipe:
                for push_id in delivered:
                    delivery.release(pipe, push_id, target.name)
                status.incr_counter(pipe, "pushes_done", len(delivered))
                pipe.execute()
        return outcomes

    def retry_delay(self, receiver: str, attempt: int, error: PushError) -> float | None:
        """Seconds to wait before push attempt ``attempt + 1``, or None to give up."""
        settings = self.config.write.get(receiver)
        if settings is None:
            return None
        delay = retry_delay(settings, attempt, error)
        # A countdown past the visibility timeout would let Redis hand the waiting push to a
        # second worker, so a long Retry-After is honoured only up to half of it.
        return None if delay is None else min(delay, self.settings.visibility_timeout / 2)

    def give_up(self, push_id: str, receiver: str, error: PushError, attempts: int) -> None:
        """Move a push that cannot be delivered to the dead-letter list, body and all."""
        profile = delivery.load(self.redis, push_id)
        if profile is not None:
            delivery.dead_letter(self.redis, delivery.DeadLetter.of(profile, receiver, str(error), attempts),
                                 self.settings.max_deadletter_bytes)
            status.incr_counter(self.redis, "pushes_deadlettered")
            log.error("push %s to %s dead-lettered after %d attempts: %s", push_id, receiver, attempts, error)
        delivery.release(self.redis, push_id, receiver)
        status.incr_counter(self.redis, "pushes_failed")


def _push_each(target: Receiver, profiles: list[Profile]) -> dict[str, tuple[PushError | None, float]]:
    """Push ``profiles`` one after the other; for each id, the PushError it failed with (or None)
    and the seconds it took."""
    pushed: dict[str, tuple[PushError | None, float]] = {}
    for profile in profiles:
        began = time.monotonic()
        try:
            target.push(profile)
        except PushError as exc:
            pushed[profile.id] = (exc, time.monotonic() - began)
        else:
            pushed[profile.id] = (None, time.monotonic() - began)
    return pushed


class OffTheHub:
    """Runs calls that are not cooperative in a small thread pool of its own when this process runs
    gevent (else in place), so the hub keeps every other greenlet, and its deadlines, moving.

    The file store fsyncs each file and its directory: in a greenlet that stops the whole worker
    for the disk's latency (~9 ms a profile here: at most 107 profiles/s); in threads the disk
    takes 588 profiles/s (docs/benchmarks.md). Validating a large body is CPU-bound: in a thread
    zlib releases the GIL and the interpreter's switch interval lets the hub run. Each pool is
    its own, and small, because glibc gives every thread a malloc arena that keeps what it
    freed: one validation thread retains at most about one body_size_limit, not one per thread.
    """

    def __init__(self, threads: int, max_waiting: int | None = None) -> None:
        self.threads = threads
        #: calls that may wait for a thread; past them a call runs in place
        self.max_waiting = max_waiting
        self._pool: Any = None
        self._in_pool = 0

    def __call__(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from gevent.monkey import is_module_patched

        if not is_module_patched("socket"):
            return func(*args, **kwargs)
        if self.max_waiting is not None and self._in_pool >= self.threads + self.max_waiting:
            return func(*args, **kwargs)
        if self._pool is None:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self.threads)
        self._in_pool += 1
        try:
            value = self._pool.apply(outcome, (func, *args), kwargs)
        finally:
            self._in_pool -= 1
        if isinstance(value, Exception):
            raise value
        return value


def outcome(func: Callable[..., T], *args: Any, **kwargs: Any) -> T | Exception:
    """``func``'s result, or the exception it raised, as a value: for calls run elsewhere (a thread,
    a greenlet) whose caller re-raises in its own context. gevent prints the traceback of anything
    that escapes a greenlet or a pool thread, and a failed scrape or an invalid body is an outcome,
    not a crash."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller
        return exc
