"""What one worker process holds: its config (re-read when the file changes), its Redis connection,
one HTTP client per job, the scrape stage's fan-out and its push stage (scraper.push).

Workers rebuild every request from this process's own config: a task message names the job,
target labels, profile type and slot, never a secret.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import redis

from . import baseline, delivery, metrics, status
from .broker import NamedReplies, broker_url, connect_redis
from .client import TargetClient
from .concurrency import Offload, Spawn, Started
from .config import Config, ConfigSource
from .delta import TARGET_DELTA_TYPES, Baseline, Outcome, cumulative_types_of
from .errors import ConfigError
from .plan import ScrapeSpec, spec_for
from .push import PushStage
from .receivers import Profile
from .scrape import ScrapeResult, scrape_once
from .settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    """The scrape stage of one process and its push stage (``pushes``), wired to its config and Redis.

    ``spawn`` runs a task's fetches (and a push's network pushes) side by side, ``validations`` the
    validation of a large body and ``writes`` the pushes of blocking receivers off the caller's event
    loop: the worker's pool (worker/pool.py) provides them.
    """

    def __init__(self, settings: Settings, *, spawn: Spawn, validations: Offload, writes: Offload) -> None:
        if settings.config is None:
            raise ConfigError(["SCRAPER_CONFIG is not set: point it at the YAML config file"], "environment")
        self.settings = settings
        self.source = ConfigSource(settings.config)
        self.redis = connect_redis(broker_url(settings), settings.sentinel_master)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._clients: dict[str, tuple[object, TargetClient]] = {}
        self._spawn = spawn
        self._validations = validations
        self.pushes = PushStage(self.redis, self.source.get, settings, spawn=spawn, writes=writes)
        #: fetches running now, and whether the process is stopping (see :meth:`abandon_scrapes`)
        self._fetching: set[Started[ScrapeResult]] = set()
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

    # ---------------------------------------------------------------- scrape stage

    def scrape(self, job: str, profile_types: list[str], targets: list[dict[str, str]],
               slots: list[float], recorded: Callable[[list[ScrapeResult]], None] | None = None,
               ) -> tuple[list[ScrapeResult], list[Exception]]:
        """Scrape every type of every target (``targets[i]`` at ``slots[i]``) concurrently (``spawn``).

        The quick types are recorded together as soon as they are in, the ones that hold for
        ``seconds`` (CPU, deltas) together when they are: two Redis round trips, and a target's
        status shows its quick types without waiting 14 s. ``recorded`` is called with each phase's
        results once they are stored, so their pushes need not wait for the slow phase either.
        What raised (an unknown job, Redis gone, ``recorded``)
        is returned beside the recorded results, so one target's or one phase's failure does not
        cost the others their pushes.
        """
        errors: list[Exception] = []
        quick: list[Started[ScrapeResult]] = []
        held: list[Started[ScrapeResult]] = []
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
            (held if spec.delta_seconds else quick).append(self._spawn(self.fetch, spec, at, baselines.get(spec.key)))
        self._fetching.update(quick + held)
        results: list[ScrapeResult] = []
        for phase in (quick, held):
            outcomes = [started.result() for started in phase]
            self._fetching.difference_update(phase)
            # a fetch cancelled by abandon_scrapes has neither a result nor an error
            fetched = [value for value in outcomes if isinstance(value, ScrapeResult)]
            errors += [value for value in outcomes if isinstance(value, Exception)]
            abandoned += sum(1 for value in outcomes if value is None)
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
        for started in list(self._fetching):
            started.cancel()

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
                             offload=self._validations, cumulative=self.cumulative(spec), baseline=previous)
        metrics.observe_scrape(spec, result, lag_s=max(0.0, result.start - scheduled_at))
        return result

    def record(self, results: list[ScrapeResult]) -> None:
        """Record how scrapes went and stash the valid bodies for their receivers, in one round trip."""
        if not results:
            return
        # Redis commands were a third of a busy worker's CPU when each went alone (docs/benchmarks.md).
        with self.redis.pipeline(transaction=False) as pipe:
            replies = NamedReplies(pipe)
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
                replies.name(result.push_id)  # the pending total (with a baseline's outcome for a delta)
            stash_replies = replies.execute()
        for result in stashed:
            reply = stash_replies[result.push_id]
            if result.delta is None:
                total = reply
            else:
                written = baseline.stashed(reply)
                total = written.pending_total
                metrics.observe_delta(result.spec, result.delta.outcome, written)
            delivery.keep_within_budget(self.redis, total, result.push_id, self.settings.max_pending_bytes,
                                        self.settings.max_deadletter_bytes)

    def scrape_dropped(self, job: str, count: int = 1) -> None:
        """Count ``count`` scrapes that expired before a worker could start them."""
        metrics.observe_dropped(job, count)
        status.incr_counter(self.redis, "scrapes_dropped", count)
