"""Every self-metric of the scraper, named ``pprof_scraper_*`` (plus the seed's ``phlare_fanout_latency``).

Workers call the ``observe_*`` helpers; the HTTP server calls :func:`exposition`.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before prometheus_client is
first imported*, every process writes its samples to files in that directory and
:func:`exposition` sums the files of all processes of the host. ``pprof-scraper run`` empties
the directory and sets the variable before it starts its children, which inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from . import keys

if TYPE_CHECKING:
    from .baseline import Stashed
    from .delta import Outcome
    from .plan import ScrapeSpec
    from .scrape import ScrapeResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# A scrape job's name is the `scrape_job` label, as in Prometheus' own scrape pool metrics: `job`
# is the label Prometheus gives the scrape of /metrics itself (ours would become `exported_job`).

_KIB = 1024

SCRAPES = Counter(
    "pprof_scraper_scrapes",
    "Scrapes attempted, by result: ok or the error kind (timeout, connection, http_status, ...).",
    ["scrape_job", "profile_type", "result"],
)
SCRAPE_DURATION = Histogram(
    "pprof_scraper_scrape_duration_seconds",
    "Time from the start of a scrape request to a validated profile or an error.",
    ["scrape_job", "profile_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60),
)
PROFILE_SIZE = Histogram(
    "pprof_scraper_profile_size_bytes",
    "Size of scraped profiles as received (usually gzipped).",
    ["scrape_job", "profile_type"],
    buckets=tuple(_KIB * 4**i for i in range(9)),  # 1 KiB ... 64 MiB
)
SCRAPES_DROPPED = Counter(
    "pprof_scraper_scrapes_dropped",
    "Scrapes not attempted because they expired before a worker could start them.",
    ["scrape_job"],
)
SCHEDULE_LAG = Histogram(
    "pprof_scraper_schedule_lag_seconds",
    "Time from a scrape's scheduled slot to the start of its request.",
    ["scrape_job"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PUSHES = Counter(
    "pprof_scraper_pushes",
    "Pushes of a profile to a receiver, by result: ok or the error kind (rejected, unavailable, ...).",
    ["receiver", "result"],
)
RETENTION_REMOVED = Counter(
    "pprof_scraper_retention_removed_profiles",
    "Profiles (with their sidecars) the file store's retention removed, by reason: age or size.",
    ["receiver", "reason"],
)
RETENTION_REMOVED_BYTES = Counter(
    "pprof_scraper_retention_removed_bytes",
    "Bytes of profiles and sidecars the file store's retention removed, by reason: age or size.",
    ["receiver", "reason"],
)
DELTAS = Counter(
    "pprof_scraper_deltas",
    "Scrapes of cumulative profiles (memory, mutex, block) by what their delta came to: delta (pushed), "
    "first, expired, restart, changed (each a new baseline, nothing pushed), stale or superseded (a later "
    "slot was recorded first), over_budget (no baseline kept: SCRAPER_MAX_BASELINE_BYTES).",
    ["scrape_job", "profile_type", "outcome"],
)
# The seed component's name, so existing dashboards keep working.
PUSH_LATENCY = Histogram(
    "phlare_fanout_latency",
    "Write latency for sending profiles to a receiver.",
    ["receiver"],
)


def observe_scrape(spec: ScrapeSpec, result: ScrapeResult, *, lag_s: float) -> None:
    """Count one scrape by result, and record its duration, its profile's size when one came back,
    and how late after its scheduled slot it started (``lag_s``)."""
    outcome = "ok" if result.error is None else result.error.kind
    SCRAPES.labels(spec.job, spec.profile_type, outcome).inc()
    SCRAPE_DURATION.labels(spec.job, spec.profile_type).observe(result.duration)
    if result.body is not None:
        PROFILE_SIZE.labels(spec.job, spec.profile_type).observe(len(result.body))
    SCHEDULE_LAG.labels(spec.job).observe(max(0.0, lag_s))


def observe_delta(spec: ScrapeSpec, outcome: Outcome, written: Stashed) -> None:
    """Count one cumulative profile by what its delta (``outcome``) and the write of its baseline came to."""
    if written.baseline == "over_budget":
        result = "over_budget"
    elif outcome.value == "delta" and not written.delta_stashed:
        result = "superseded"
    else:
        result = outcome.value
    DELTAS.labels(spec.job, spec.profile_type, result).inc()


def observe_dropped(job: str, count: int = 1) -> None:
    """Count ``count`` scrapes dropped because they expired before they could start."""
    SCRAPES_DROPPED.labels(job).inc(count)


def observe_push(receiver: str, result: str, duration: float) -> None:
    """Count one push attempt to ``receiver`` by ``result`` (``ok`` or a PushError kind) and record its latency."""
    PUSHES.labels(receiver, result).inc()
    PUSH_LATENCY.labels(receiver).observe(duration)


def observe_retention(receiver: str, reason: str, profiles: int, size: int) -> None:
    """Count ``profiles`` (``size`` bytes with their sidecars) that retention removed for ``reason``."""
    RETENTION_REMOVED.labels(receiver, reason).inc(profiles)
    RETENTION_REMOVED_BYTES.labels(receiver, reason).inc(size)


class DeadletterCollector:
    """``pprof_scraper_deadletter_size`` (entries in the dead-letter list) and ``pprof_scraper_baseline_bytes``,
    read from Redis on each collect.

    When Redis does not answer the sample is left out, rather than reported as 0.
    """

    def __init__(self, redis_factory: Callable[[], redis.Redis]) -> None:
        self._redis_factory = redis_factory

    def describe(self) -> list[Metric]:
        # Registering must not touch Redis.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with self._redis_factory().pipeline(transaction=False) as pipe:
                pipe.llen(keys.DEADLETTER)
                pipe.get(keys.BASELINE_BYTES)
                size, baseline_bytes = pipe.execute()
        except redis.RedisError:
            return
        yield GaugeMetricFamily(
            "pprof_scraper_deadletter_size",
            "Pushes that used up their retries and wait in the dead-letter list.",
            value=size,
        )
        yield GaugeMetricFamily(
            "pprof_scraper_baseline_bytes",
            "Bytes the baselines of cumulative profiles take in Redis (budget: SCRAPER_MAX_BASELINE_BYTES).",
            value=int(baseline_bytes or 0),
        )


class TargetCollector:
    """Per (job, instance, profile type), from the target statuses in Redis on each collect, the way
    Prometheus' ``up`` works: ``pprof_scraper_target_up`` (1 after a good scrape, 0 after a failed one;
    absent until the first) and ``pprof_scraper_target_last_success_timestamp_seconds``, so "down for
    5 minutes" is one alert rule.

    The job goes in ``scrape_job``: a ``job`` label would collide with the one Prometheus sets for the
    scrape of /metrics itself. Two series per planned (target, type): at 10,000 targets with 5 types
    each, 100,000 series (bench/metrics_targets.py; docs/watching.md has the figures).
    """

    LABELS = ("scrape_job", "instance", "profile_type")

    def __init__(self, redis_factory: Callable[[], redis.Redis]) -> None:
        self._redis_factory = redis_factory

    def describe(self) -> list[Metric]:
        return []  # registering must not touch Redis

    def collect(self) -> Iterator[Metric]:
        from .status import TargetHealth, read_statuses

        try:
            statuses = read_statuses(self._redis_factory())
        except redis.RedisError:
            return
        up = GaugeMetricFamily("pprof_scraper_target_up",
                               "1 if the last scrape of this target and profile type succeeded, 0 if it failed.",
                               labels=self.LABELS)
        last_success = GaugeMetricFamily("pprof_scraper_target_last_success_timestamp_seconds",
                                         "Start of the last successful scrape of this target and profile type.",
                                         labels=self.LABELS)
        for s in statuses:
            labels = [s.job, s.labels.get("instance", ""), s.profile_type]
            if s.health is not TargetHealth.UNKNOWN:
                up.add_metric(labels, 1.0 if s.health is TargetHealth.UP else 0.0)
            if s.last_success is not None:
                last_success.add_metric(labels, s.last_success)
        yield up
        yield last_success


def exposition(redis_factory: Callable[[], redis.Redis] | None = None) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer: this process's metrics, or in multiprocess
    mode those of every process sharing the directory, plus the dead-letter size and each target's
    health when Redis is given."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(REGISTRY)
    if redis_factory is not None:
        registry.register(DeadletterCollector(redis_factory))
        registry.register(TargetCollector(redis_factory))
    return generate_latest(registry), CONTENT_TYPE_LATEST
