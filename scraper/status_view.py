"""Target statuses for people (a rich table) and for programs (JSON), as ``pprof-scraper targets`` prints them."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from .status import TargetHealth, TargetStatus

HEALTH_STYLE = {TargetHealth.UP: "green", TargetHealth.DOWN: "bold red", TargetHealth.UNKNOWN: "dim"}


def format_age(timestamp: float | None, now: float) -> str:
    """``timestamp`` as a short age such as ``12s ago``, ``3m ago``, ``2h ago``; ``never`` when None."""
    if timestamp is None:
        return "never"
    seconds = max(0.0, now - timestamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def format_duration(seconds: float | None) -> str:
    """A scrape duration: milliseconds below a second, else seconds; empty when None."""
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def format_labels(labels: dict[str, str]) -> list[str]:
    """``name="value"`` per label, sorted by name."""
    return [f'{name}="{value}"' for name, value in sorted(labels.items())]


#: labels every instance row leaves out: the job is the row's (or section's) own, ``__name__`` the type's
NOT_SHOWN = ("job", "__name__")


@dataclass(frozen=True)
class InstanceStatus:
    """One target (an instance of a job) and the status of each of its profile types."""

    job: str
    instance: str
    #: the target's labels, without those every row repeats (:data:`NOT_SHOWN`)
    labels: dict[str, str]
    #: one per profile type, in type order
    types: list[TargetStatus]

    @property
    def health(self) -> TargetHealth:
        """Down if any type is down, else unknown if any is not scraped yet, else up."""
        healths = {s.health for s in self.types}
        for health in (TargetHealth.DOWN, TargetHealth.UNKNOWN):
            if health in healths:
                return health
        return TargetHealth.UP

    @property
    def last_scrape(self) -> float | None:
        return max((s.last_scrape for s in self.types if s.last_scrape is not None), default=None)

    def errors(self) -> list[tuple[list[str], str]]:
        """The failing types grouped by their error (its URL aside, as each type has its own): a down
        instance refusing connections is one block naming its types, not one per type."""
        groups: dict[str, tuple[list[str], str]] = {}
        for s in self.types:
            if s.last_error is None:
                continue
            same = s.last_error.removesuffix(f" ({s.url})")
            groups.setdefault(same, ([], s.last_error))[0].append(s.profile_type)
        return list(groups.values())


def group_instances(statuses: list[TargetStatus]) -> list[InstanceStatus]:
    """``statuses`` as one entry per (job, target): by job, down first, then by instance."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...]], list[TargetStatus]] = {}
    for s in statuses:
        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in NOT_SHOWN))
        grouped.setdefault((s.job, labels), []).append(s)
    instances = [InstanceStatus(job, dict(labels).get("instance", ""), dict(labels),
                                sorted(types, key=lambda t: t.profile_type))
                 for (job, labels), types in grouped.items()]
    instances.sort(key=lambda i: (i.job, _HEALTH_ORDER[i.health], i.instance, sorted(i.labels.items())))
    return instances


_HEALTH_ORDER = {TargetHealth.DOWN: 0, TargetHealth.UNKNOWN: 1, TargetHealth.UP: 2}


def health_summary(instances: list[InstanceStatus]) -> str:
    """E.g. ``12 instances: 10 up, 1 down, 1 unknown`` (health counts of zero left out); an instance is
    down when any of its profile types is."""
    counts = Counter(i.health for i in instances)
    parts = [f"{counts[h]} {h.value}" for h in (TargetHealth.UP, TargetHealth.DOWN, TargetHealth.UNKNOWN) if counts[h]]
    noun = "instance" if len(instances) == 1 else "instances"
    return f"{len(instances)} {noun}" + (": " + ", ".join(parts) if parts else "")


def render_table(statuses: list[TargetStatus], now: float | None = None) -> Table:
    """A table of one row per instance (its profile types collapsed into one cell, each with its
    health), one section per job, each distinct error once with the types it hit; it fits the
    console's width, the errors taking what is left."""
    now = time.time() if now is None else now
    instances = group_instances(statuses)
    table = Table(title=health_summary(instances), title_justify="left", show_lines=False, expand=True)
    table.add_column("job", style="bold", overflow="fold")
    table.add_column("instance", overflow="fold")
    table.add_column("types", overflow="fold", ratio=2)
    table.add_column("labels", overflow="fold", ratio=2)
    table.add_column("last scrape", no_wrap=True)
    table.add_column("error", style="red", overflow="fold", ratio=3)
    previous_job = None
    for instance in instances:
        if previous_job is not None and instance.job != previous_job:
            table.add_section()
        previous_job = instance.job
        # the health in words too: piped output has no colours
        types = Text(", ").join(
            Text(s.profile_type + ("" if s.health is TargetHealth.UP else f" ({s.health.value})")
                 + (f" [{s.delta_note}]" if s.delta_note else ""),
                 style=HEALTH_STYLE[s.health]) for s in instance.types)
        labels = {k: v for k, v in instance.labels.items() if k != "instance"}
        table.add_row(
            instance.job,
            Text(instance.instance, style=HEALTH_STYLE[instance.health]),
            types,
            "\n".join(format_labels(labels)),
            format_age(instance.last_scrape, now),
            "\n".join(f"{', '.join(names)}: {error}" for names, error in instance.errors()),
        )
    return table


def statuses_json(statuses: list[TargetStatus]) -> str:
    """``statuses`` as a JSON list of objects (the fields of :class:`~scraper.status.TargetStatus`)."""
    return json.dumps([s.as_dict() for s in statuses], indent=2)
