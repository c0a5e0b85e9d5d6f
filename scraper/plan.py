"""The plan: a pure function from a config (and its targets) to scrape specs, one per
(job, target, enabled profile type), each with its URL, labels, timeout and stable offset.

No I/O and no clock here: beat calls :func:`plan` and :func:`next_slot`; a worker calls
:func:`spec_for` to rebuild one spec from the public part of a task message.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from .config import BUILTIN_PROFILE_TYPES, Config, ScrapeJob
from .discovery.resolve import DroppedTarget, relabel_targets
from .errors import UnknownJobError
from .labels import ADDRESS, META_PREFIX, NAME, PARAM_PREFIX, PROFILE_PATH, PROFILE_PATH_PREFIX, SCHEME
from .pprof import DEFAULT_SAMPLE_LIMIT

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
    #: the target's labels without ``__meta_*`` and with ``service_name`` resolved: what a task
    #: message carries to rebuild this spec
    target_labels: dict[str, str]
    interval_s: float
    timeout_s: float
    #: position inside the interval, shared by every profile type of the target, stable across
    #: restarts and config reloads
    offset_s: float
    forward_to: tuple[str, ...]
    #: the ``seconds`` query parameter of a delta profile type, else None
    delta_seconds: int | None = None
    body_size_limit: int = 64 * 1024 * 1024
    sample_limit: int = DEFAULT_SAMPLE_LIMIT
    #: a stable identity of (job, public labels, profile type)
    key: str = field(default="")
    #: a stable identity of (job, public labels): the specs of one target share it, and their slot
    target_key: str = field(default="")
    #: the target's labels as discovered, before relabeling (for `plan --json`)
    discovered_labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

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
            "target_labels": self.target_labels,
            "discovered_labels": self.discovered_labels,
        }


def describe(job: str, instance: str | list[str], profile_types: str | list[str], scheduled_at: float) -> str:
    """How a scrape reads in Flower and logs: job, instance(s), profile type(s), (first) scheduled time (UTC)."""
    when = datetime.fromtimestamp(scheduled_at, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    types = profile_types if isinstance(profile_types, str) else ",".join(profile_types)
    instances = instance if isinstance(instance, str) else ",".join(instance)
    return f"{job} {instances} {types} @{when}Z"


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


def message_labels(labels: dict[str, str], service_name: str) -> dict[str, str]:
    """What a task message carries of a target: its labels without ``__meta_*`` (bulky, and only
    read here), with ``service_name`` resolved, so that a worker rebuilds exactly the labels the
    plan shows even when the name was inferred from the metadata it does not get."""
    kept = {k: v for k, v in labels.items() if not k.startswith(META_PREFIX)}
    kept["service_name"] = service_name
    return kept


def target_profile_name(name: str) -> str:
    """The ``__name__`` a target's own ``__name__`` label stores profiles under, as Alloy maps it: a
    godeltaprof type's name becomes the plain one (``godeltaprof_memory`` → ``memory``)."""
    return BUILTIN_PROFILE_TYPES[name][0] if name in BUILTIN_PROFILE_TYPES else name


def _label_part(labels: dict[str, str]) -> str:
    return "\x00".join(f"{k}={v}" for k, v in sorted(public_labels(labels).items()))


def _key(job: str, profile_type: str, label_part: str) -> str:
    """A short hex identity of (job, profile type, public labels), equal across processes and restarts."""
    return hashlib.sha256(f"{job}\x00{profile_type}\x00{label_part}".encode()).hexdigest()[:16]


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
    target = _Target(config, job_key, job, target_labels)
    return target.spec(profile_type, stored_name, profile.path, profile.delta)


class _Target:
    """What every profile type of one target shares, worked out once per target."""

    def __init__(self, config: Config, job_key: str, job: ScrapeJob, labels: dict[str, str],
                 discovered: dict[str, str] | None = None) -> None:
        job_name = config.job_name(job_key)
        self.job_key, self.job = job_key, job
        self.scheme = labels.get(SCHEME) or job.scheme
        self.address = with_port(labels[ADDRESS], self.scheme)
        self.prefix = labels.get(PROFILE_PATH_PREFIX, job.profiling_config.path_prefix).rstrip("/")
        self.path_override = labels.get(PROFILE_PATH)
        self.name_override = target_profile_name(labels[NAME]) if labels.get(NAME) else None
        self.query: dict[str, list[str]] = {k: list(v) for k, v in job.params.items()}
        for name, value in labels.items():
            if name.startswith(PARAM_PREFIX):
                param = name[len(PARAM_PREFIX):]
                self.query[param] = [value] + self.query.get(param, [])[1:]
        self.labels = public_labels(labels)
        self.labels.setdefault("job", job_name)
        self.labels.setdefault("instance", self.address)
        self.labels["service_name"] = infer_service_name(labels, job_name)
        self.target_labels = message_labels(labels, self.labels["service_name"])
        self.discovered = discovered if discovered is not None else labels
        self.interval_s = job.scrape_interval.total_seconds()
        self.timeout_s = job.scrape_timeout.total_seconds()
        self.delta_seconds = max(1, int(job.effective_delta_duration.total_seconds()))
        self.label_part = _label_part(self.labels)
        # One slot for all profile types of a target: beat sends them as one task.
        self.target_key = _key(job_key, "", self.label_part)
        self.offset_s = offset_in_interval(self.target_key, self.interval_s)
        self.queries = {delta: self._encode(delta) for delta in (False, True)}

    def _encode(self, delta: bool) -> str:
        query = {**self.query, "seconds": [str(self.delta_seconds)]} if delta else self.query
        return "?" + urlencode(sorted(query.items()), doseq=True) if query else ""

    def spec(self, profile_type: str, stored_name: str, path: str, delta: bool) -> ScrapeSpec:
        url = f"{self.scheme}://{self.address}{self.prefix}{self.path_override or path}{self.queries[delta]}"
        labels = {**self.labels, NAME: self.name_override or stored_name}
        key = _key(self.job_key, profile_type, self.label_part)
        return ScrapeSpec(
            job=self.job_key,
            profile_type=profile_type,
            url=url,
            labels=labels,
            target_labels=self.target_labels,
            interval_s=self.interval_s,
            timeout_s=self.timeout_s + (self.delta_seconds if delta else 0),
            offset_s=self.offset_s,
            forward_to=tuple(self.job.forward_to),
            delta_seconds=self.delta_seconds if delta else None,
            body_size_limit=int(self.job.body_size_limit),
            sample_limit=self.job.sample_limit,
            key=key,
            target_key=self.target_key,
            discovered_labels=self.discovered,
        )


@dataclass(frozen=True)
class Plan:
    """Every scrape spec of a config, and the targets relabeling dropped, by job."""

    specs: list[ScrapeSpec]
    dropped: dict[str, list[DroppedTarget]]


def make_plan(config: Config, discovered: dict[str, list[dict[str, str]]] | None = None) -> Plan:
    """Plan ``config``: each job's static ``targets`` and ``discovered[job]`` (labels as discovered)
    go through the job's ``relabel_configs``; each kept target gets one spec per enabled profile type."""
    specs: list[ScrapeSpec] = []
    dropped: dict[str, list[DroppedTarget]] = {}
    for job_key, job in config.scrape.items():
        kept, dropped[job_key] = relabel_targets(job, (discovered or {}).get(job_key, []), config.job_name(job_key))
        types = list(job.profiling_config.enabled_types().items())
        for after, before in kept:
            target = _Target(config, job_key, job, after, before)
            specs.extend(target.spec(t, stored, p.path, p.delta) for t, (stored, p) in types)
    return Plan(specs, dropped)


def plan(config: Config, discovered: dict[str, list[dict[str, str]]] | None = None) -> list[ScrapeSpec]:
    """Every scrape spec of ``config``: one per (job, kept target, enabled profile type)."""
    return make_plan(config, discovered).specs
