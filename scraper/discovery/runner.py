"""Keeps every job's discovered targets fresh in a background thread, so a slow discovery source
never delays beat's emission: beat only reads a snapshot and re-plans when its version moves."""

from __future__ import annotations

import logging
import threading
import time

from ..config import Config
from .base import Discoverer, DiscoveryError
from .resolve import build_discoverers

log = logging.getLogger(__name__)

#: How often the runner looks for discoverers that are due or whose source changed.
POLL_S = 1.0


class DiscoveryRunner:
    """Refreshes the discoverers of ``config``'s jobs when due; ``snapshot()`` gives the targets."""

    def __init__(self, config: Config) -> None:
        self._discoverers: dict[str, list[Discoverer]] = {
            job_key: found for job_key, job in config.scrape.items() if (found := build_discoverers(job))
        }
        self._lock = threading.Lock()
        self._targets: dict[str, list[dict[str, str]]] = {job: [] for job in self._discoverers}
        self._errors: dict[str, str] = {}
        #: bumped whenever a job's discovered targets change
        self.version = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)

    @property
    def active(self) -> bool:
        return bool(self._discoverers)

    def start(self) -> None:
        if self.active:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for discoverers in self._discoverers.values():
            for discoverer in discoverers:
                close = getattr(discoverer, "close", None)
                if close is not None:
                    close()

    def snapshot(self) -> tuple[int, dict[str, list[dict[str, str]]], dict[str, str]]:
        """``(version, targets by job, last error by job)``, consistent with each other."""
        with self._lock:
            return self.version, dict(self._targets), dict(self._errors)

    def refresh_due(self, now: float | None = None) -> bool:
        """Refresh every discoverer that is due; True when some job's targets changed."""
        now = time.monotonic() if now is None else now
        changed = False
        for job, discoverers in self._discoverers.items():
            errors = []
            refreshed = False
            for discoverer in discoverers:
                if discoverer.due(now):
                    refreshed = True
                    try:
                        discoverer.refresh()
                    except DiscoveryError as exc:
                        errors.append(str(exc))
                        log.warning("discovery for job %s failed; its last good targets stay: %s", job, exc)
            if not refreshed:
                continue
            targets = [t for d in discoverers for t in d.targets]
            with self._lock:
                if errors:
                    self._errors[job] = "; ".join(errors)
                else:
                    self._errors.pop(job, None)
                if targets != self._targets[job]:
                    self._targets[job] = targets
                    self.version += 1
                    changed = True
        return changed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_due()
            except Exception:  # a bug in one source must not end discovery for all
                log.exception("discovery refresh failed unexpectedly")
            self._stop.wait(POLL_S)
