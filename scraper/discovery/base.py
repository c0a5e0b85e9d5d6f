"""What every discoverer shares: the error, the refresh bookkeeping, Prometheus target groups."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from ..errors import ScraperError
from ..labels import ADDRESS

Targets = list[dict[str, str]]


class DiscoveryError(ScraperError):
    """A discovery refresh failed, in whole or in part; the message names the source and the cause."""


class Discoverer(ABC):
    """A source of targets, looked up again by :meth:`refresh`.

    Subclasses implement :meth:`_lookup`, which answers per *source* (a file, a URL, a DNS name,
    a list call). A source that fails keeps its last good targets, as in Prometheus, so one
    broken file or an unreachable server does not empty a job; :attr:`targets` is always the
    best list known and :attr:`last_error` says what failed last time (None when all went well).
    """

    def __init__(self, refresh_interval: float) -> None:
        #: seconds between two refreshes
        self.refresh_interval = refresh_interval
        #: the targets of the last refresh, with the last good ones of any source that failed
        self.targets: Targets = []
        #: what went wrong in the last refresh, or None
        self.last_error: str | None = None
        #: ``time.monotonic()`` of the last refresh, or None before the first
        self.last_refresh: float | None = None
        self._by_source: dict[str, Targets] = {}

    def refresh(self) -> Targets:
        """Look the targets up again and return them.

        Raises DiscoveryError when any source failed; :attr:`targets` then still holds the
        new targets of the sources that answered and the last good ones of those that did not.
        """
        self.last_refresh = time.monotonic()
        try:
            results = self._lookup()
        except DiscoveryError as exc:
            self.last_error = str(exc)
            raise
        errors: list[str] = []
        by_source: dict[str, Targets] = {}
        for source, result in results.items():
            if isinstance(result, DiscoveryError):
                errors.append(str(result))
                if source in self._by_source:
                    by_source[source] = self._by_source[source]
            else:
                by_source[source] = result
        self._by_source = by_source
        self.targets = [target for targets in by_source.values() for target in targets]
        self.last_error = "; ".join(errors) or None
        if self.last_error:
            raise DiscoveryError(self.last_error)
        return self.targets

    def changed(self) -> bool:
        """Whether the source changed since the last refresh, when that can be seen cheaply (else False)."""
        return False

    def due(self, now: float) -> bool:
        """Whether to refresh at ``now`` (``time.monotonic()``): never refreshed, interval passed, or changed."""
        if self.last_refresh is None or now - self.last_refresh >= self.refresh_interval:
            return True
        return self.changed()

    @abstractmethod
    def _lookup(self) -> dict[str, Targets | DiscoveryError]:
        """Targets per source, or the error of a source that failed; raise DiscoveryError if nothing could be asked."""


def targets_from_groups(groups: Any, where: str, extra: dict[str, str]) -> Targets:
    """The targets of a Prometheus target-group list: ``[{"targets": [...], "labels": {...}}, ...]``.

    Each target gets its group's labels, then ``extra``, then ``__address__``. Raises
    DiscoveryError naming ``where`` (a file, a URL) and the group when the shape is wrong.
    """
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise DiscoveryError(f"{where}: expected a list of target groups, got {type(groups).__name__}")
    out: Targets = []
    for index, group in enumerate(groups):
        if not isinstance(group, dict):
            raise DiscoveryError(f"{where}: target group [{index}] is not a mapping")
        unknown = set(group) - {"targets", "labels"}
        if unknown:
            raise DiscoveryError(f"{where}: target group [{index}] has unknown key(s) {', '.join(sorted(unknown))}")
        addresses = group.get("targets") or []
        labels = group.get("labels") or {}
        # null is "" in Go's YAML and JSON; an empty target stays, and is dropped for having no
        # __address__ (unless relabeling sets one), as Prometheus drops it: the others are kept
        if not isinstance(addresses, list) or not all(a is None or isinstance(a, str) for a in addresses):
            raise DiscoveryError(f"{where}: target group [{index}].targets must be a list of strings")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in labels.items()
        ):
            raise DiscoveryError(f"{where}: target group [{index}].labels must map strings to strings")
        base = {**{k: v or "" for k, v in labels.items()}, **extra}
        out.extend({**base, ADDRESS: address or ""} for address in addresses)
    return out
