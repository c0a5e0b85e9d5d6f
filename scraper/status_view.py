"""Target statuses for people (a rich table) and for programs (JSON), as ``pprof-scraper targets`` prints them."""

from __future__ import annotations

import json
import time
from collections import Counter

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


def health_summary(statuses: list[TargetStatus]) -> str:
    """E.g. ``12 targets: 10 up, 1 down, 1 unknown`` (health counts of zero left out)."""
    counts = Counter(s.health for s in statuses)
    parts = [f"{counts[h]} {h.value}" for h in (TargetHealth.UP, TargetHealth.DOWN, TargetHealth.UNKNOWN) if counts[h]]
    noun = "target" if len(statuses) == 1 else "targets"
    return f"{len(statuses)} {noun}" + (": " + ", ".join(parts) if parts else "")


def render_table(statuses: list[TargetStatus], now: float | None = None) -> Table:
    """A table of ``statuses`` in their order (as :func:`~scraper.status.read_statuses` sorts them),
    one section per job, errors in full."""
    now = time.time() if now is None else now
    table = Table(title=health_summary(statuses), title_justify="left", show_lines=False, expand=True)
    table.add_column("job", style="bold", no_wrap=True)
    table.add_column("health", no_wrap=True)
    table.add_column("profile", no_wrap=True)
    table.add_column("labels", overflow="fold")
    table.add_column("last scrape", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("ok/failed", justify="right", no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("error", style="red", overflow="fold", ratio=2)
    previous_job = None
    for status in statuses:
        if previous_job is not None and status.job != previous_job:
            table.add_section()
        previous_job = status.job
        table.add_row(
            status.job,
            Text(status.health.value, style=HEALTH_STYLE[status.health]),
            status.profile_type + (f"\n{status.delta_note}" if status.delta_note else ""),
            "\n".join(format_labels(status.labels)),
            format_age(status.last_scrape, now),
            format_duration(status.last_scrape_duration),
            f"{status.successes}/{status.failures}",
            status.worker or "",
            status.last_error or "",
        )
    return table


def statuses_json(statuses: list[TargetStatus]) -> str:
    """``statuses`` as a JSON list of objects (the fields of :class:`~scraper.status.TargetStatus`)."""
    return json.dumps([s.as_dict() for s in statuses], indent=2)
