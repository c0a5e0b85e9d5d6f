"""File-store retention: remove the oldest profiles past ``retention`` or over ``max_size``.

Any number of worker processes on a host may write to one store; one of them at a time sweeps it.
The sweeper holds an exclusive ``flock`` on ``<path>/.retention.lock`` (taken without waiting: a
process that finds it held leaves the sweep to the holder). The kernel drops the lock when its
holder dies, so a killed worker never blocks retention. See docs/file-store.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import metrics
from ..config import FileReceiverConfig

log = logging.getLogger(__name__)

LOCK_NAME = ".retention.lock"
#: how often a process that writes to a store looks at its retention
SWEEP_INTERVAL_S = 60.0
#: a temporary file this old was left by a writer that died (a batch renames its files within seconds)
STALE_TEMPORARY_S = 3600.0
_SUFFIXES = (".pb.gz", ".json")

@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep removed, by reason."""

    by_age: int = 0
    by_age_bytes: int = 0
    by_size: int = 0
    by_size_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    #: temporary files left by writers that died mid-batch
    temporary: int = 0


@dataclass(slots=True)
class _Entry:
    mtime: float
    size: int
    files: list[Path]


def sweep(name: str, config: FileReceiverConfig, now: float | None = None) -> Sweep | None:
    """Apply ``config``'s retention to its store once; None when another process is sweeping it.

    A profile's age is its file's modification time (when it was stored). The sidecar goes first,
    so a reader that finds a sidecar still finds its profile or nothing: never half a pair. Temporary
    files older than :data:`STALE_TEMPORARY_S` go too.
    """
    if config.retention is None and config.max_size is None:
        return Sweep()
    root = Path(config.path)
    if not root.is_dir():
        return Sweep()
    now = time.time() if now is None else now
    with open(root / LOCK_NAME, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            return _sweep_locked(name, config, root, now)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sweep_locked(name: str, config: FileReceiverConfig, root: Path, now: float) -> Sweep:
    # Directories written to in the last minute may be about to get a file: never remove those.
    busy = {d for d, _, _ in os.walk(root) if _mtime(d) > time.time() - 60}
    found, temporary = _entries(root, now - STALE_TEMPORARY_S)
    entries = sorted(found, key=lambda e: e.mtime)
    by_age = by_age_bytes = by_size = by_size_bytes = 0
    start = 0
    if config.retention is not None:
        cutoff = now - config.retention.total_seconds()
        while start < len(entries) and entries[start].mtime < cutoff:
            by_age_bytes += _remove(entries[start])
            by_age += 1
            start += 1
    kept = entries[start:]
    total = sum(e.size for e in kept)
    if config.max_size is not None:
        drop = 0
        while drop < len(kept) and total > config.max_size:
            removed = _remove(kept[drop])
            total -= kept[drop].size
            by_size_bytes += removed
            by_size += 1
            drop += 1
        kept = kept[drop:]
    if by_age or by_size or temporary:
        _remove_empty_directories(root, busy)
    if by_age or by_size:
        metrics.observe_retention(name, "age", by_age, by_age_bytes)
        metrics.observe_retention(name, "size", by_size, by_size_bytes)
        log.info(
            "file receiver %r: retention removed %d profiles (%d bytes) older than %s and %d (%d bytes) to stay "
            "under max_size %s; %d profiles (%d bytes) kept in %s",
            name, by_age, by_age_bytes, config.retention, by_size, by_size_bytes, config.max_size,
            len(kept), total, root,
        )
    if temporary:
        log.info("file receiver %r: retention removed %d temporary files older than %ds, left by writers that died",
                 name, temporary, STALE_TEMPORARY_S)
    return Sweep(by_age, by_age_bytes, by_size, by_size_bytes, len(kept), total, temporary)


def _entries(root: Path, stale_before: float) -> tuple[list[_Entry], int]:
    """Every stored profile under ``root``: its files (profile and sidecar), their size, its mtime; and
    how many temporary files last modified before ``stale_before`` it removed."""
    pairs: dict[str, _Entry] = {}
    stale = 0
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for file in files:
            if file.startswith("."):  # temporary files being written, and the lock
                if file.endswith(".tmp") and _mtime(os.path.join(directory, file)) < stale_before:
                    stale += _unlink(os.path.join(directory, file))
                continue
            for suffix in _SUFFIXES:
                if file.endswith(suffix):
                    path = Path(directory) / file
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        break  # removed under us
                    stem = os.path.join(directory, file[: -len(suffix)])
                    entry = pairs.setdefault(stem, _Entry(st.st_mtime, 0, []))
                    entry.mtime = min(entry.mtime, st.st_mtime)
                    entry.size += st.st_size
                    # sidecar first: see sweep()
                    entry.files.insert(0 if suffix == ".json" else len(entry.files), path)
                    break
    return list(pairs.values()), stale


def _remove(entry: _Entry) -> int:
    removed = 0
    for path in entry.files:
        try:
            size = path.stat().st_size
            path.unlink()
            removed += size
        except FileNotFoundError:
            pass
    return removed


def _unlink(path: str) -> int:
    """1 when it removed ``path``, 0 when it was gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_empty_directories(root: Path, busy: set[str]) -> None:
    """Remove emptied day (month, year, ...) directories, deepest first, except ``busy`` ones. A writer
    that loses its directory all the same gets PushUnavailable and its push is retried."""
    for directory, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if directory == str(root) or directory in busy:
            continue
        try:
            os.rmdir(directory)  # only succeeds when empty
        except OSError:
            pass


class RetentionClock:
    """Sweeps a store at most every ``interval`` seconds from this process, in the caller's thread."""

    def __init__(self, name: str, config: FileReceiverConfig, interval: float = SWEEP_INTERVAL_S) -> None:
        self.name = name
        self.config = config
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.retention is not None or self.config.max_size is not None

    def tick(self) -> Sweep | None:
        """Sweep when due; None when not due, or when another thread or process is sweeping."""
        if not self.enabled:
            return None
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return None
            self._next = now + self.interval
        try:
            return sweep(self.name, self.config)
        except OSError as exc:
            log.warning("file receiver %r: retention could not sweep %s: %s", self.name, self.config.path, exc)
            return None
