"""What one worker process holds: its config (re-read when the file changes), its Redis connection,
one HTTP client per job, the scrape stage's fan-out and its push stage (scraper.push).

Workers rebuild every request from this process's own config: a task message names the job,
target labels, profile type and slot, never a secret.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import redis

from . import baseline, delivery, guard, metrics, status
from .broker import NamedReplies, broker_url, connect_redis
from .client import TargetClient
from .concurrency import Offload, Spawn, Started
from .config import Config, ConfigSource
from .delta import TARGET_DELTA_TYPES, Baseline, Outcome, cumulative_types_of
from .errors import ConfigError, PushError
from .plan import ScrapeSpec, spec_for
from .push import PushStage
from .receivers import Profile
from .scrape import ScrapeResult, scrape_once
from .settings import Settings

log = logging.getLogger(__name__)

#: Seconds a wave of held scrapes waits, after the first one ends, for the others that end with it.
WAVE_S = 0.05

#: Specs a process keeps built at most (a fleet's; past it, targets that came and went are let go).
MAX_SPECS_KEPT = 100_000

#: Push ids a wave's scrapes still owe each receiver, by receiver: what push tasks deliver.
Owed = dict[str, list[str]]


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
        #: specs already built from the config ``_specs_of``, by (job, target labels, profile type)
        self._specs_of: Config | None = None
        self._specs: dict[tuple[str, tuple[tuple[str, str], ...], str], ScrapeSpec] = {}
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
               slots: list[float], recorded: Callable[[list[ScrapeResult], Owed], None] | None = None,
               ) -> tuple[list[ScrapeResult], list[Exception]]:
        """Scrape every type of every target (``targets[i]`` at ``slots[i]``) concurrently (``spawn``).

        Results are recorded in waves (:meth:`_waves`): the quick types together as soon as they are
        in, the ones that hold for ``seconds`` (CPU, deltas) together when they end, so a target's
        status and profiles do not wait 14 s for its CPU profile, nor one target for another's
        timeout. Each wave is one Redis round trip, and its profiles are written to this host's file
        stores from here (:meth:`record`); ``recorded`` is called with each wave's results and what
        is owed to receivers by push tasks, so their pushes need not wait for the next wave either.
        What raised (an unknown job, Redis gone, ``recorded``) is returned beside the recorded
        results, so one target's or one wave's failure does not cost the others their pushes.
        """
        errors: list[Exception] = []
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
        # The baselines of every cumulative series and the in-flight guards of every held type of the
        # task, in one round trip each. Without baselines the scrapes still run: their profiles become
        # new baselines and push no delta; a guard not taken here is waited for by its scrape.
        try:
            baselines = baseline.read(self.redis, [spec for spec, _ in planned if self.cumulative(spec)])
        except redis.RedisError as exc:
            errors.append(exc)
            baselines = {}
        token = guard.new_token()
        try:
            guarded = guard.take(self.redis, [spec for spec, _ in planned if spec.delta_seconds], token)
        except redis.RedisError as exc:
            errors.append(exc)
            guarded = set()
        taken_at = time.monotonic()
        started = [self._spawn(self.fetch, spec, at, baselines.get(spec.key), token,
                               taken_at if spec.key in guarded else None)
                   for spec, at in planned]
        self._fetching.update(started)
        results: list[ScrapeResult] = []
        for wave in self._waves(started, [spec.delta_seconds is None for spec, _ in planned]):
            outcomes = [started[i].result() for i in wave]
            self._fetching.difference_update(started[i] for i in wave)
            # a fetch cancelled by abandon_scrapes has neither a result nor an error
            fetched = [value for value in outcomes if isinstance(value, ScrapeResult)]
            errors += [value for value in outcomes if isinstance(value, Exception)]
            abandoned += sum(1 for value in outcomes if value is None)
            try:
                owed = self.record(fetched, release=[planned[i][0] for i in wave if planned[i][0].delta_seconds],
                                   token=token)
            except Exception as exc:  # noqa: BLE001 - as above
                errors.append(exc)
                continue
            results += fetched
            if recorded is not None and fetched:
                try:
                    recorded(fetched, owed)
                except Exception as exc:  # noqa: BLE001 - as above
                    errors.append(exc)
        if abandoned:
            try:
                status.incr_counter(self.redis, "scrapes_abandoned", abandoned)
            except Exception as exc:  # noqa: BLE001 - as above
                errors.append(exc)
        return results, errors

    def _waves(self, started: list[Started[ScrapeResult]], quick: list[bool]) -> Iterator[list[int]]:
        """The fetches (by index) in the waves they are recorded in: every quick one together, then
        the held ones as they end, each with those ending within :data:`WAVE_S` of it. Held profiles
        started together end together, so a task's CPU profiles are one wave, while one that runs to
        its timeout is a wave of its own."""
        quick_ones = [i for i, is_quick in enumerate(quick) if is_quick]
        if quick_ones:
            for i in quick_ones:
                started[i].result()
            yield quick_ones
        waiting = {i: started[i] for i, is_quick in enumerate(quick) if not is_quick}
        while waiting:
            wave: list[int] = []
            settle: float | None = None
            while waiting and (settle is None or settle > time.monotonic()):
                left = None if settle is None else settle - time.monotonic()
                ended = {id(call) for call in self._spawn.ended(list(waiting.values()), timeout=left)}
                wave += [i for i, call in waiting.items() if id(call) in ended]
                waiting = {i: call for i, call in waiting.items() if id(call) not in ended}
                if settle is None:
                    settle = time.monotonic() + WAVE_S
            yield wave

    def abandon_scrapes(self) -> None:
        """The process is stopping: end the fetches in flight now (a CPU profile would hold a warm
        shutdown for its whole window) and start no more; :meth:`scrape` counts them as
        ``scrapes_abandoned`` and still records and pushes what was already in. Safe from a signal
        handler: the kills are scheduled, not waited for."""
        self._abandoning = True
        for started in list(self._fetching):
            started.cancel()

    def specs(self, job: str, target_labels: dict[str, str], profile_types: list[str]) -> list[ScrapeSpec]:
        """The specs of ``profile_types`` of one target, built from this process's config (ConfigError
        when the job or a type is not in it); kept while the config stays, since a target comes back
        every interval."""
        config = self.config
        if config is not self._specs_of or len(self._specs) > MAX_SPECS_KEPT:
            self._specs_of, self._specs = config, {}
        labels = tuple(sorted(target_labels.items()))
        specs = []
        for profile_type in profile_types:
            key = (job, labels, profile_type)
            spec = self._specs.get(key)
            if spec is None:
                spec = self._specs[key] = spec_for(config, job, target_labels, profile_type)
            specs.append(spec)
        return specs

    def cumulative(self, spec: ScrapeSpec) -> tuple[str, ...]:
        """The sample types of ``spec``'s profiles that are running totals, by this process's config."""
        return cumulative_types_of(self.config, spec)

    def fetch(self, spec: ScrapeSpec, scheduled_at: float, previous: Baseline | None = None, token: str = "",
              guarded_at: float | None = None) -> ScrapeResult:
        """Scrape ``spec`` once for the slot ``scheduled_at`` (a cumulative type's delta against
        ``previous``, its stored baseline); the outcome is in the result. A held type's in-flight guard
        was taken for ``token`` at ``guarded_at`` (monotonic seconds), or is waited for and taken now;
        the caller releases it."""
        wait = None
        if spec.delta_seconds:
            wait = functools.partial(self._guard, spec, token, guarded_at, wait_until=scheduled_at + spec.interval_s)
        result = scrape_once(spec, self.client_for(spec.job), scheduled_at=scheduled_at, guard=wait,
                             offload=self._validations, cumulative=self.cumulative(spec), baseline=previous,
                             encode_delta=self.wants_deltas(spec.forward_to))
        metrics.observe_scrape(spec, result, lag_s=max(0.0, result.start - scheduled_at))
        return result

    def _guard(self, spec: ScrapeSpec, token: str, guarded_at: float | None, *, wait_until: float) -> None:
        """Hold ``spec``'s guard for the request about to start: the task's, renewed when this fetch
        starts long after the task took it (else it could expire mid-request), or one waited for."""
        if guarded_at is not None:
            if time.monotonic() - guarded_at < guard.RENEW_AFTER_S or guard.renew(self.redis, spec, token):
                return
        guard.wait_for(self.redis, spec, token, wait_until=wait_until)

    def wants_deltas(self, receivers: Sequence[str]) -> bool:
        """Whether one of ``receivers`` stores the deltas of cumulative profiles (one not in this
        process's config is taken to, so that its dead letter keeps the delta for a replay)."""
        for name in receivers:
            try:
                if self.pushes.receiver(name).wants_deltas:
                    return True
            except PushError:
                return True
        return False

    def record(self, results: list[ScrapeResult], *, release: Sequence[ScrapeSpec] = (), token: str = "") -> Owed:
        """Write the valid profiles to this host's file stores, then, in one round trip, record how the
        scrapes went, release the in-flight guards of ``release`` held by ``token``, and stash what
        other receivers (or a file store that failed) are owed; return that, by receiver, for the
        caller to send push tasks for."""
        valid = [result for result in results if result.ok]
        profiles = {result.push_id: _profile(result) for result in valid}
        by_receiver: dict[str, list[Profile]] = {}
        for result in valid:
            for name in result.spec.forward_to:
                by_receiver.setdefault(name, []).append(profiles[result.push_id])
        written = self.pushes.write_here(by_receiver)
        owed: Owed = {}
        # Redis commands were a third of a busy worker's CPU when each went alone (docs/benchmarks.md).
        with self.redis.pipeline(transaction=False) as pipe:
            replies = NamedReplies(pipe)
            guard.queue_release(replies, list(release), token)
            status.queue_records(replies, [
                status.scrape_record(result.spec, start=result.start, duration=result.duration, error=result.error,
                                     worker=self.worker,
                                     delta=result.delta.outcome.value if result.delta is not None else None)
                for result in results])
            done = len(valid)
            if done:
                status.incr_counter(pipe, "scrapes_done", done)
            if done < len(results):
                status.incr_counter(pipe, "scrapes_failed", len(results) - done)
            outcomes = [result.delta.outcome for result in results if result.delta is not None]
            if any(outcome is not Outcome.DELTA for outcome in outcomes):
                status.incr_counter(pipe, "deltas_baseline", sum(o is not Outcome.DELTA for o in outcomes))
            if any(written.values()):
                status.incr_counter(pipe, "pushes_done", sum(len(ids) for ids in written.values()))
            queued, stashed_ids = [], set()
            for result in valid:
                spec, delta, profile = result.spec, result.delta, profiles[result.push_id]
                receivers = [name for name in spec.forward_to if profile.id not in written.get(name, ())]
                for name in receivers:
                    owed.setdefault(name, []).append(profile.id)
                    stashed_ids.add(profile.id)
                if delta is not None:
                    if self.wants_deltas(receivers):
                        profile = replace(profile, delta=delta.body)
                    baseline.queue_stash(replies, profile, receivers, spec, delta, self.settings.max_baseline_bytes)
                elif receivers:
                    delivery.queue_stash(replies, profile, receivers)
                else:
                    continue
                queued.append(result)
            stash_replies = replies.execute()
        for result in queued:
            reply = stash_replies[result.push_id]
            if result.delta is None:
                total = reply
            else:
                stashed = baseline.stashed(reply)
                total = stashed.pending_total
                metrics.observe_delta(result.spec, result.delta.outcome, stashed)
            if result.push_id in stashed_ids:
                delivery.keep_within_budget(self.redis, total, result.push_id, self.settings.max_pending_bytes,
                                            self.settings.max_deadletter_bytes)
        return owed

    def scrape_dropped(self, job: str, count: int = 1) -> None:
        """Count ``count`` scrapes that expired before a worker could start them."""
        metrics.observe_dropped(job, count)
        status.incr_counter(self.redis, "scrapes_dropped", count)


def _profile(result: ScrapeResult) -> Profile:
    """The profile a valid scrape hands to its receivers, without its delta (added for those that want it)."""
    spec, delta = result.spec, result.delta
    return Profile(id=result.push_id, labels=spec.labels, body=result.body or b"", start=result.start, end=result.end,
                   url=spec.url, cumulative=list(delta.baseline.sample_types) if delta is not None else [],
                   is_delta=delta is not None or spec.profile_type in TARGET_DELTA_TYPES)
