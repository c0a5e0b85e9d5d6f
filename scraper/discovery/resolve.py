"""From discovered targets to the targets a job scrapes: merge, relabel, check, dedupe."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..labels import ADDRESS, META_PREFIX
from ..relabel import LABEL_NAME, Relabeler
from .base import Discoverer

if TYPE_CHECKING:
    from ..config import ScrapeJob


@dataclass(frozen=True)
class DroppedTarget:
    """A target that will not be scraped, with its labels as discovered (before relabeling) and why."""

    labels: dict[str, str]
    reason: str

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able values (for ``targets --dropped`` and ``plan --json``)."""
        return {"labels": self.labels, "reason": self.reason}


def _problem(labels: dict[str, str], valid_names: set[str]) -> str | None:
    """Why relabeled ``labels`` cannot be scraped, or None; ``valid_names`` caches names already checked."""
    address = labels.get(ADDRESS, "")
    if not address:
        return "no __address__ after relabeling"
    if "/" in address or "?" in address:
        return f"__address__ {address!r} must be host[:port] without a scheme or path"
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
    job: ScrapeJob, discovered: list[dict[str, str]]
) -> tuple[list[dict[str, str]], list[DroppedTarget]]:
    """The job's static ``targets`` and ``discovered`` ones, through ``relabel_configs``.

    Returns the targets to scrape (``__meta_*`` labels kept: service_name inference reads them),
    each once even when found twice (same labels apart from ``__meta_*``), and the dropped ones
    with their labels before relabeling and the reason.
    """
    kept, dropped = relabel_targets(job, discovered)
    return [after for after, _ in kept], dropped


def relabel_targets(
    job: ScrapeJob, discovered: list[dict[str, str]]
) -> tuple[list[tuple[dict[str, str], dict[str, str]]], list[DroppedTarget]]:
    """As :func:`resolve_targets`, but each kept target comes with its labels before relabeling:
    ``(after, before)`` pairs, so a user can see what relabeling did."""
    kept: list[tuple[dict[str, str], dict[str, str]]] = []
    dropped: list[DroppedTarget] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    relabel = Relabeler(job.relabel_configs)
    valid_names: set[str] = set()
    for labels in itertools.chain(job.targets, discovered):
        result = relabel(labels)
        if result is None:
            dropped.append(DroppedTarget(dict(labels), "dropped by relabel_configs"))
            continue
        problem = _problem(result, valid_names)
        if problem is not None:
            dropped.append(DroppedTarget(dict(labels), problem))
            continue
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
