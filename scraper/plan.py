"""The plan: a pure function from a config (and its targets) to scrape specs, one per
(job, target, enabled profile type), each with its URL, labels, timeout and stable offset.

No I/O and no clock here: beat calls :func:`plan` and :func:`next_slot`; a worker calls
:func:`spec_for` to rebuild one spec from the public part of a task message.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from dataclasses import dataclass, field
from urllib.parse import urlencode

from .config import Config, ScrapeJob
from .errors import UnknownJobError

ADDRESS = "__address__"
SCHEME = "__scheme__"
PROFILE_PATH = "__profile_path__"
PROFILE_PATH_PREFIX = "__profile_path_prefix__"
PARAM_PREFIX = "__param_"
META_PREFIX = "__meta_"
NAME = "__name__"

#: Target labels that Alloy reads to name a service when the target has no ``service_name``, in order.
_SERVICE_NAME_SOURCES = (
    ("__meta_kubernetes_pod_annotation_pyroscope_io_service_name",),
    ("__meta_kubernetes_namespace", "__meta_kubernetes_pod_container_name"),
    ("__meta_docker_container_name",),
    ("__meta_dockerswarm_container_label_service_name",),
    ("__meta_dockerswarm_service_name",),
)


@dataclass(frozen=True)
class ScrapeSpec:
    """Everything needed to scrape one profile type of one target, and to schedule it."""

    #: the job's key under ``scrape:`` in the config
    job: str
    #: the config key of the profile type (``process_cpu``, ``godeltaprof_memory``, a custom name)
    profile_type: str
    url: str
    #: labels of the stored profile: public target labels, job, instance, service_name, __name__
    labels: dict[str, str]
    #: the target's labels without ``__meta_*``: what a task message carries to rebuild this spec
    target_labels: dict[str, str]
    interval_s: float
    timeout_s: float
    #: position inside the interval, stable across restarts and config reloads
    offset_s: float
    forward_to: tuple[str, ...]
    #: the ``seconds`` query parameter of a delta profile type, else None
    delta_seconds: int | None = None
    body_size_limit: int = 64 * 1024 * 1024
    #: a stable identity of (job, public labels, profile type)
    key: str = field(default="")

    @property
    def address(self) -> str:
        return self.target_labels[ADDRESS]

    def as_dict(self) -> dict[str, object]:
        """The spec as plain JSON-able values (what ``pprof-scraper plan --json`` prints)."""
        return {
            "job": self.job,
            "profile_type": self.profile_type,
            "url": self.url,
            "labels": self.labels,
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "offset_s": self.offset_s,
            "forward_to": list(self.forward_to),
            "key": self.key,
        }


def describe(job: str, instance: str, profile_type: str, scheduled_at: float) -> str:
    """How a scrape reads in Flower and logs: job, instance, profile type, scheduled time (UTC)."""
    when = datetime.fromtimestamp(scheduled_at, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    return f"{job} {instance} {profile_type} @{when}Z"


def public_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels that do not start with ``__``."""
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def with_port(address: str, scheme: str) -> str:
    """``address`` with the scheme's default port added when it has none (80 for http, 443 for https)."""
    default = 443 if scheme == "https" else 80
    if address.startswith("["):
        return address if "]:" in address else f"{address}:{default}"
    colons = address.count(":")
    if colons == 1:
        return address
    if colons > 1:
        return f"[{address}]:{default}"  # a bare IPv6 literal
    return f"{address}:{default}"


def infer_service_name(labels: dict[str, str], job_name: str) -> str:
    """The target's ``service_name``; else one from discovery metadata as Alloy infers it; else the job name."""
    if labels.get("service_name"):
        return labels["service_name"]
    for sources in _SERVICE_NAME_SOURCES:
        values = [labels.get(name, "") for name in sources]
        if all(values):
            return "/".join(values)
    return job_name


def stable_key(job: str, labels: dict[str, str], profile_type: str) -> str:
    """A short hex identity of (job, public labels, profile type), equal across processes and restarts."""
    parts = [job, profile_type] + [f"{k}={v}" for k, v in sorted(public_labels(labels).items())]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def offset_in_interval(key: str, interval_s: float) -> float:
    """A position in ``[0, interval_s)`` drawn from ``key``, so that a fleet spreads evenly over the interval."""
    fraction = int(key, 16) / float(16 ** len(key))
    return math.floor(fraction * interval_s * 1000) / 1000  # floor, so it can never reach the interval


def next_slot(spec: ScrapeSpec, after: float) -> float:
    """The first scheduled time strictly after ``after`` (Unix seconds): ``k * interval + offset``.

    Slots are pinned to absolute time, so a restarted or second beat computes the same slots.
    """
    k = math.floor((after - spec.offset_s) / spec.interval_s) + 1
    return k * spec.interval_s + spec.offset_s


def spec_for(config: Config, job_key: str, target_labels: dict[str, str], profile_type: str) -> ScrapeSpec:
    """Build the spec of one profile type of one target of one job.

    Raises UnknownJobError when the config has no such job or the job has no such enabled
    profile type (configs out of step between beat and this process).
    """
    job = config.scrape.get(job_key)
    if job is None:
        raise UnknownJobError(
            f"job {job_key!r} is not in this process's config (known: {', '.join(sorted(config.scrape)) or 'none'}); "
            "keep the config in step across beat and workers"
        )
    enabled = job.profiling_config.enabled_types()
    if profile_type not in enabled:
        raise UnknownJobError(f"profile type {profile_type!r} is not enabled in job {job_key!r} of this process's config")
    stored_name, profile = enabled[profile_type]
    return _build_spec(config, job_key, job, target_labels, profile_type, stored_name, profile.path, profile.delta)


def _build_spec(
    config: Config,
    job_key: str,
    job: ScrapeJob,
    target_labels: dict[str, str],
    profile_type: str,
    stored_name: str,
    path: str,
    delta: bool,
) -> ScrapeSpec:
    job_name = config.job_name(job_key)
    scheme = target_labels.get(SCHEME) or job.scheme
    address = with_port(target_labels[ADDRESS], scheme)
    prefix = target_labels.get(PROFILE_PATH_PREFIX, job.profiling_config.path_prefix).rstrip("/")
    path = target_labels.get(PROFILE_PATH) or path

    query: dict[str, list[str]] = {k: list(v) for k, v in job.params.items()}
    for name, value in target_labels.items():
        if name.startswith(PARAM_PREFIX):
            param = name[len(PARAM_PREFIX):]
            query[param] = [value] + query.get(param, [])[1:]
    delta_seconds = None
    if delta:
        delta_seconds = max(1, int(job.effective_delta_duration.total_seconds()))
        query["seconds"] = [str(delta_seconds)]
    url = f"{scheme}://{address}{prefix}{path}"
    if query:
        url += "?" + urlencode(sorted(query.items()), doseq=True)

    labels = public_labels(target_labels)
    labels.setdefault("job", job_name)
    labels.setdefault("instance", address)
    labels["service_name"] = infer_service_name(target_labels, job_name)
    labels[NAME] = stored_name

    interval_s = job.scrape_interval.total_seconds()
    timeout_s = job.scrape_timeout.total_seconds() + (delta_seconds or 0)
    key = stable_key(job_key, labels, profile_type)
    return ScrapeSpec(
        job=job_key,
        profile_type=profile_type,
        url=url,
        labels=labels,
        target_labels={k: v for k, v in target_labels.items() if not k.startswith(META_PREFIX)},
        interval_s=interval_s,
        timeout_s=timeout_s,
        offset_s=offset_in_interval(key, interval_s),
        forward_to=tuple(job.forward_to),
        delta_seconds=delta_seconds,
        body_size_limit=int(job.body_size_limit),
        key=key,
    )


def plan(config: Config, discovered: dict[str, list[dict[str, str]]] | None = None) -> list[ScrapeSpec]:
    """Every scrape spec of ``config``: one per (job, target, enabled profile type).

    ``discovered`` maps a job key to targets found by service discovery, merged with the job's
    static ``targets`` (a target listed twice with the same labels is planned once).
    """
    specs: list[ScrapeSpec] = []
    for job_key, job in config.scrape.items():
        targets = list(job.targets) + list((discovered or {}).get(job_key, []))
        seen: set[tuple[tuple[str, str], ...]] = set()
        for target in targets:
            identity = tuple(sorted(target.items()))
            if identity in seen:
                continue
            seen.add(identity)
            for profile_type, (stored_name, profile) in job.profiling_config.enabled_types().items():
                specs.append(
                    _build_spec(config, job_key, job, target, profile_type, stored_name, profile.path, profile.delta)
                )
    return specs
