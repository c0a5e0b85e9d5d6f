"""From discovered targets to the targets a job scrapes: merge, relabel, check, dedupe."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..durations import format_duration, parse_duration
from ..labels import ADDRESS, META_PREFIX, PARAM_PREFIX, PROFILE_PATH_PREFIX, SCHEME, SCRAPE_INTERVAL, SCRAPE_TIMEOUT
from ..relabel import LABEL_NAME, Relabeler
from .base import Discoverer

if TYPE_CHECKING:
    from ..config import ScrapeJob

_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class DroppedTarget:
    """A target that will not be scraped, with its labels as discovered (before relabeling) and why."""

    labels: dict[str, str]
    reason: str

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able values (for ``targets --dropped`` and ``plan --json``)."""
        return {"labels": self.labels, "reason": self.reason}


def _presets(job: ScrapeJob, job_name: str | None) -> dict[str, str]:
    """The labels Prometheus gives every target before relabeling when it has none of its own
    (its PopulateDiscoveredLabels), with our names: there is no ``__metrics_path__`` here, and no
    ``__profile_path__`` either, because each profile type of a target has its own path."""
    labels = {
        "job": job_name or "",
        SCRAPE_INTERVAL: format_duration(job.scrape_interval),
        SCRAPE_TIMEOUT: format_duration(job.scrape_timeout),
        PROFILE_PATH_PREFIX: job.profiling_config.path_prefix,
        SCHEME: job.scheme,
    }
    labels.update({PARAM_PREFIX + name: values[0] for name, values in job.params.items() if values})
    return {name: value for name, value in labels.items() if value}


def _timing_problem(job: ScrapeJob, labels: dict[str, str], presets: dict[str, str]) -> str | None:
    """Why the target's ``__scrape_interval__``/``__scrape_timeout__`` cannot be honoured, or None."""
    for name, field, configured in (
        (SCRAPE_INTERVAL, "scrape_interval", job.scrape_interval),
        (SCRAPE_TIMEOUT, "scrape_timeout", job.scrape_timeout),
    ):
        value = labels.get(name)
        # None: removed by a rule (labelkeep), so the job's, where Prometheus refuses the target
        if value is None or value == presets[name]:
            continue
        try:
            same = parse_duration(value) == configured
        except ValueError:
            return f"{name} {value!r} is not a duration"
        if not same:
            return (f"{name} {value!r} differs from the job's {field} ({format_duration(configured)}): "
                    "targets of one job share its timing here; put them in a job of their own")
    return None


def _problem(labels: dict[str, str], valid_names: set[str], job: ScrapeJob, presets: dict[str, str]) -> str | None:
    """Why relabeled ``labels`` cannot be scraped, or None; ``valid_names`` caches names already checked."""
    address = labels.get(ADDRESS, "")
    if not address:
        return "no __address__ after relabeling"
    if "/" in address or "?" in address:
        return f"__address__ {address!r} must be host[:port] without a scheme or path"
    scheme = labels.get(SCHEME) or job.scheme
    if scheme not in _SCHEMES:
        # Prometheus refuses it too when the address has no port (which default port?), and
        # fails every scrape of it otherwise
        return f'invalid scheme: "{scheme}" (__scheme__ must be http or https)'
    timing = _timing_problem(job, labels, presets)
    if timing is not None:
        return timing
    # __meta_* labels never reach a profile (plan drops them), so their names need not be valid
    bad = []
    for name in labels:
        if name in valid_names or name.startswith(META_PREFIX):
            continue
        if LABEL_NAME.match(name):
            valid_names.add(name)
        else:
            bad.append(name)
    if bad:
        return f"invalid label name(s) after relabeling: {', '.join(sorted(bad))}"
    return None


def resolve_targets(
    job: ScrapeJob, discovered: list[dict[str, str]], job_name: str | None = None
) -> tuple[list[dict[str, str]], list[DroppedTarget]]:
    """The job's static ``targets`` and ``discovered`` ones, through ``relabel_configs``.

    Before relabeling each target gets the labels Prometheus sets (``job`` when ``job_name`` is
    given, ``__scheme__``, ``__scrape_interval__``, ``__scrape_timeout__``,
    ``__profile_path_prefix__``, ``__param_<name>``) unless it has them. Returns the targets to
    scrape (``__meta_*`` labels kept: service_name inference reads them), each once even when
    found twice (same labels apart from ``__meta_*``), and the dropped ones with their labels
    before relabeling and the reason.
    """
    kept, dropped = relabel_targets(job, discovered, job_name)
    return [after for after, _ in kept], dropped


def relabel_targets(
    job: ScrapeJob, discovered: list[dict[str, str]], job_name: str | None = None
) -> tuple[list[tuple[dict[str, str], dict[str, str]]], list[DroppedTarget]]:
    """As :func:`resolve_targets`, but each kept target comes with its labels before relabeling:
    ``(after, before)`` pairs, so a user can see what relabeling did."""
    kept: list[tuple[dict[str, str], dict[str, str]]] = []
    dropped: list[DroppedTarget] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    relabel = Relabeler(job.relabel_configs)
    presets = _presets(job, job_name)
    valid_names: set[str] = set()
    for labels in itertools.chain(job.targets, discovered):
        result = relabel({**presets, **{name: value for name, value in labels.items() if value}})
        if result is None:
            dropped.append(DroppedTarget(dict(labels), "dropped by relabel_configs"))
            continue
        problem = _problem(result, valid_names, job, presets)
        if problem is not None:
            dropped.append(DroppedTarget(dict(labels), problem))
            continue
        # The timing was checked to be the job's. A label that still holds the value set above
        # says what the job says: remove it, so that a target is what it was without presets
        # (task messages and target identity stay the same).
        for name, value in presets.items():
            if name in (SCRAPE_INTERVAL, SCRAPE_TIMEOUT) or (result.get(name) == value and labels.get(name) != value):
                result.pop(name, None)
        # The same target found by two sources differs only in metadata; scrape it once
        identity = frozenset((k, v) for k, v in result.items() if not k.startswith(META_PREFIX))
        if identity not in seen:
            seen.add(identity)
            kept.append((result, labels))
    return kept, dropped


def build_discoverers(job: ScrapeJob) -> list[Discoverer]:
    """One discoverer per ``*_sd_configs`` entry of ``job``, in config order (file, http, dns, kubernetes)."""
    # dnspython and the kubernetes client load only for jobs that use them
    discoverers: list[Discoverer] = []
    if job.file_sd_configs:
        from .file import FileDiscovery

        discoverers.extend(FileDiscovery(c) for c in job.file_sd_configs)
    if job.http_sd_configs:
        from .http import HTTPDiscovery

        discoverers.extend(HTTPDiscovery(c) for c in job.http_sd_configs)
    if job.dns_sd_configs:
        from .dns import DNSDiscovery

        discoverers.extend(DNSDiscovery(c) for c in job.dns_sd_configs)
    if job.kubernetes_sd_configs:
        from .kubernetes import KubernetesDiscovery

        discoverers.extend(KubernetesDiscovery(c) for c in job.kubernetes_sd_configs)
    return discoverers
