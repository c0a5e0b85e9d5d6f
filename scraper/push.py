"""The push stage: deliver stashed profiles to one receiver, decide what to retry and when, and
dead-letter what cannot be delivered.

A push task names push ids and a receiver (see :mod:`scraper.delivery` for the claim check); the
worker's task calls :meth:`PushStage.attempt` and re-queues itself with what it says to retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis

from . import delivery, metrics, status
from .broker import NamedReplies
from .concurrency import Offload, Spawn
from .config import Config, ReceiverConfig
from .errors import PushError, PushRejected, PushUnavailable
from .receivers import BatchReceiver, Profile, Receiver, build_receiver
from .receivers.retry import retry_delay
from .settings import Settings

log = logging.getLogger(__name__)

#: Threads writing to receivers whose pushes block (file stores), and push batches loaded for them at once.
WRITER_THREADS = 8
#: Profiles of one push task sent to a network receiver (Pyroscope) at once.
PUSHES_AT_ONCE = 8

#: What a push of one id came to: delivered (True), nothing left to deliver (False), or its error.
Delivered = bool | PushError


@dataclass
class Attempt:
    """What one attempt of a push task came to, for the task to report and re-queue."""

    #: one line per id that is done with: delivered, nothing to deliver, or dead-lettered
    report: list[str] = field(default_factory=list)
    #: ids to try again, after ``delay`` seconds
    retry: list[str] = field(default_factory=list)
    delay: float = 0.0
    #: the error of the last id to retry
    error: PushError | None = None


class PushStage:
    """Pushes for one process: its receivers (rebuilt when their settings change), delivery, retries
    and dead letters.

    ``spawn`` runs network pushes side by side; ``writes`` runs the pushes of receivers whose pushes
    block a thread (``receiver.blocks``), each batch waiting for one of :data:`WRITER_THREADS`.
    """

    def __init__(self, client: redis.Redis, config: Callable[[], Config], settings: Settings, *,
                 spawn: Spawn, writes: Offload,
                 build: Callable[[str, ReceiverConfig], Receiver] = build_receiver) -> None:
        self.redis = client
        self._config = config
        self.settings = settings
        self._spawn = spawn
        self._writes = writes
        self._build = build
        self._receivers: dict[str, tuple[ReceiverConfig, Receiver]] = {}
        self._writer_batches = threading.BoundedSemaphore(WRITER_THREADS)

    def receiver(self, name: str) -> Receiver:
        """The receiver configured under ``write: name``, rebuilt when its settings change."""
        settings = self._config().write.get(name)
        if settings is None:
            raise PushRejected(f"receiver {name!r} is not in this process's config; keep configs in step across hosts")
        cached = self._receivers.get(name)
        # identity first: every scrape asks, and comparing pydantic models field by field is not free
        if cached is None or (cached[0] is not settings and cached[0] != settings):
            if cached is not None and hasattr(cached[1], "close"):
                cached[1].close()  # its pooled connections would otherwise linger until exit
            cached = (settings, self._build(name, settings))
            self._receivers[name] = cached
        return cached[1]

    def attempt(self, push_ids: list[str], receiver: str, attempt: int) -> Attempt:
        """Attempt ``attempt`` (1 the first time) of delivering ``push_ids`` to ``receiver``: what was
        delivered, what to retry and when, and the dead letters of those whose retries ran out or
        that the receiver refused."""
        done = Attempt()
        delays: list[float] = []
        for push_id, delivered in self.deliver(push_ids, receiver).items():
            if not isinstance(delivered, PushError):
                done.report.append("delivered" if delivered else "nothing to deliver")
                continue
            delay = self.retry_delay(receiver, attempt, delivered)
            if delay is None:
                self.give_up(push_id, receiver, delivered, attempt)
                done.report.append(f"dead-lettered after {attempt} attempts: {delivered}")
            else:
                done.retry.append(push_id)
                delays.append(delay)
                done.error = delivered
        done.delay = max(delays, default=0.0)
        return done

    def deliver(self, push_ids: list[str], receiver: str) -> dict[str, Delivered]:
        """Deliver pending profiles to one receiver. For each id: True when delivered, False when there
        was nothing left to deliver (a redelivered push whose profile every receiver already took, or
        one evicted to the dead-letter list), or the PushError it failed with.

        Loading, and releasing what was delivered, take one Redis round trip each, whatever the count.
        """
        try:
            target = self.receiver(receiver)
        except PushError as exc:
            metrics.observe_push(receiver, exc.kind, 0.0)
            return dict.fromkeys(push_ids, exc)
        if target.blocks:
            # A batch waits for the writer threads before it is loaded: batches queued behind a slow
            # disk (or a busy CPU) wait in Redis, within its pending budget, not in this process's memory.
            with self._writer_batches:
                return self._deliver(push_ids, target)
        return self._deliver(push_ids, target)

    def _deliver(self, push_ids: list[str], target: Receiver) -> dict[str, Delivered]:
        profiles = delivery.load_many(self.redis, push_ids)
        outcomes: dict[str, Delivered] = {i: False for i, p in zip(push_ids, profiles) if p is None}
        # A cumulative profile whose scrape was a baseline has nothing for a store of deltas: done with it.
        nothing = {p.id for p in profiles if p is not None and p.body_for(target.wants_deltas) is None}
        pending = [p for p in profiles if p is not None and p.id not in nothing]
        if nothing:
            delivery.release(self.redis, sorted(nothing), target.name)
            outcomes |= dict.fromkeys(nothing, True)
        if not pending:
            return outcomes
        pushed = self._write_batch(cast(BatchReceiver, target), pending) if target.blocks else self._push_side_by_side(target, pending)
        for push_id, (error, _) in pushed.items():
            outcomes[push_id] = True if error is None else error
        delivered = [i for i, (error, _) in pushed.items() if error is None]
        if delivered:
            with self.redis.pipeline(transaction=False) as pipe:
                replies = NamedReplies(pipe)
                for push_id in delivered:
                    delivery.queue_release(replies, push_id, target.name)
                status.incr_counter(pipe, "pushes_done", len(delivered))
                replies.execute()
        return outcomes

    def write_here(self, profiles: dict[str, list[Profile]]) -> dict[str, set[str]]:
        """Write ``profiles`` (by receiver name) to those receivers that store on this host (file
        stores), a batch each, from the scrape itself: no stash in Redis, no push task. The ids each
        took, by receiver; what one did not take is the caller's to stash for push tasks, which retry
        and dead-letter as usual."""
        taken: dict[str, set[str]] = {}
        for name, batch in profiles.items():
            try:
                target = self.receiver(name)
            except PushError:
                continue  # not in this process's config: its push task dead-letters it, saying so
            here = cast(BatchReceiver, target)
            if not target.blocks or not here.written_by_scrape:
                continue
            written = self._write_batch(here, batch)
            taken[name] = {push_id for push_id, (error, _) in written.items() if error is None}
            for push_id, (error, _) in written.items():
                if error is not None:
                    log.warning("profile %s not written to %s, a push task will retry it: %s", push_id, name, error)
        return taken

    def _write_batch(self, target: BatchReceiver, profiles: list[Profile]) -> dict[str, tuple[PushError | None, float]]:
        """Write ``profiles`` to a blocking receiver in one batch, in a writer thread; for each id, the
        PushError it failed with (or None) and its share of the batch's seconds."""
        began = time.monotonic()
        try:
            errors = self._writes(target.push_batch, profiles)
        except Exception as exc:  # a bug in a store must not lose the batch: push tasks retry it
            log.exception("writing %d profiles to %s failed", len(profiles), target.name)
            errors = dict.fromkeys((p.id for p in profiles), PushUnavailable(f"writing to {target.name} failed: {exc}"))
        seconds = (time.monotonic() - began) / max(1, len(profiles))
        for error in errors.values():
            metrics.observe_push(target.name, "ok" if error is None else error.kind, seconds)
        return {push_id: (error, seconds) for push_id, error in errors.items()}

    def _push_side_by_side(self, target: Receiver,
                           profiles: list[Profile]) -> dict[str, tuple[PushError | None, float]]:
        """Push ``profiles`` :data:`PUSHES_AT_ONCE` at a time: a task carries up to targets_per_task ×
        types profiles, and one after the other each would wait out the store's round trip behind the last."""
        waiting = deque(profiles)

        def lane() -> dict[str, tuple[PushError | None, float]]:
            pushed: dict[str, tuple[PushError | None, float]] = {}
            while True:
                try:
                    profile = waiting.popleft()  # atomic: lanes may be threads
                except IndexError:
                    return pushed
                pushed[profile.id] = _push_one(target, profile)

        lanes = [self._spawn(lane) for _ in range(min(PUSHES_AT_ONCE, len(profiles)))]
        pushed: dict[str, tuple[PushError | None, float]] = {}
        for started in lanes:
            result = started.result()
            if isinstance(result, Exception):
                raise result
            pushed |= result or {}  # None: cancelled, which nothing does to a push
        return pushed

    def retry_delay(self, receiver: str, attempt: int, error: PushError) -> float | None:
        """Seconds to wait before push attempt ``attempt + 1``, or None to give up."""
        settings = self._config().write.get(receiver)
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
        delivery.release(self.redis, [push_id], receiver)
        status.incr_counter(self.redis, "pushes_failed")



def _push_one(target: Receiver, profile: Profile) -> tuple[PushError | None, float]:
    """Push ``profile``: the PushError it failed with (or None) and the seconds it took."""
    began = time.monotonic()
    error: PushError | None = None
    try:
        target.push(profile)
    except PushError as exc:
        error = exc
    seconds = time.monotonic() - began
    metrics.observe_push(target.name, "ok" if error is None else error.kind, seconds)
    return error, seconds
