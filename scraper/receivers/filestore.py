"""The local file store: one gzip pprof file and one JSON sidecar per profile.

Layout (UTC date and time of ``profile.start``)::

    <path>/<job>/<__name__>/<YYYY>/<MM>/<DD>/<HHMMSS>-<instance>-<id>.pb.gz
    <path>/<job>/<__name__>/<YYYY>/<MM>/<DD>/<HHMMSS>-<instance>-<id>.json

A batch of profiles is made durable together: every file is written to a dot-prefixed temporary
name, one ``syncfs`` puts them all on disk, the profiles are renamed into place, a second
``syncfs``, then the sidecars, and a third. So each file appears whole or not at all, a sidecar
(on disk as in the directory) never appears before its profile, and a batch costs three syncs
whatever its size. See docs/file-store.md.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..config import FileReceiverConfig
from ..errors import PushError, PushUnavailable
from . import Profile
from .retention import RetentionClock

_GZIP_MAGIC = b"\x1f\x8b"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# room for HHMMSS, an id and the suffixes inside the usual 255-byte limit on a file name
_MAX_COMPONENT = 96
# directories this process knows exist; forgotten past this many (one per job, type and day)
_MAX_KNOWN_DIRECTORIES = 4096
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)``, or None where libc has none (then each file is fsynced instead)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


_SYNCFS = _load_syncfs()


def _new_process_tag() -> None:
    global _PROCESS_TAG
    # Random rather than the pid: workers in containers sharing one volume each have their own pid
    # namespace, so two of them can have the same pid (and thread ids).
    _PROCESS_TAG = secrets.token_hex(4)


_PROCESS_TAG = ""
_new_process_tag()
os.register_at_fork(after_in_child=_new_process_tag)


def path_component(value: str) -> str:
    """``value`` made safe as one path component: runs of other characters than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``, it is cut to 96 characters, and it is never empty,
    ``.`` or ``..`` (a label must not be able to climb out of the store)."""
    safe = _UNSAFE.sub("_", value)[:_MAX_COMPONENT]
    if safe in ("", ".", ".."):
        return "_" + safe
    return safe


@dataclass(slots=True)
class _Write:
    """One profile of a batch on its way to disk: its final paths and its temporary ones."""

    id: str
    directory: str
    data: str
    sidecar: str
    data_temp: str
    sidecar_temp: str


class _Syncs:
    """What one batch makes durable. With syncfs: one open directory on each file system the batch
    writes to (``path`` may hold mount points, or symbolic links to other disks), each opened before
    the batch writes there: syncfs reports the write-back errors since its descriptor was opened
    (Linux 5.8+), so none of the batch's is missed. Without syncfs: each directory, fsynced."""

    def __init__(self) -> None:
        self.directories: set[str] = set()
        self._file_systems: dict[int, tuple[int, str]] = {}

    def watch(self, directory: str) -> None:
        if directory in self.directories:
            return
        if _SYNCFS is not None:
            fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
            device = os.fstat(fd).st_dev
            if device in self._file_systems:
                os.close(fd)
            else:
                self._file_systems[device] = (fd, directory)
        self.directories.add(directory)

    def sync(self, renames: bool) -> None:
        """Make what the batch wrote, and its ``renames``, durable: a syncfs of each file system; without
        syncfs, an fsync of each directory (the files were fsynced as they were written)."""
        if _SYNCFS is not None:
            for fd, directory in self._file_systems.values():
                if _SYNCFS(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), directory)
        elif renames:
            for directory in self.directories:
                _fsync_directory(directory)

    def close(self) -> None:
        for fd, _ in self._file_systems.values():
            os.close(fd)


class FileStore:
    """A Receiver that writes each profile under ``config.path``, idempotently by id."""

    #: the file store keeps what the target served, lossless: cumulative profiles stay totals
    wants_deltas = False
    #: each batch is synced to disk: a push holds its thread for the disk's latency
    blocks = True

    def __init__(self, name: str, config: FileReceiverConfig) -> None:
        self.name = name
        self.config = config
        self.retention = RetentionClock(name, config)
        self.written_by_scrape = config.written_by == "scrape"
        self._root = str(config.path)
        self._known_directories: set[str] = set()

    def paths(self, profile: Profile) -> tuple[Path, Path]:
        """Where ``profile`` is stored: its ``.pb.gz`` and its ``.json`` sidecar."""
        directory, stem = self._place(profile)
        return Path(directory, f"{stem}.pb.gz"), Path(directory, f"{stem}.json")

    def push(self, profile: Profile) -> None:
        """Store ``profile``; a second push of the same profile leaves the first pair as it is.

        Raises PushUnavailable, naming the path, when the disk refuses (full, read-only, permission).
        """
        error = self.push_batch([profile])[profile.id]
        if error is not None:
            raise error

    def push_batch(self, profiles: list[Profile]) -> dict[str, PushError | None]:
        """Store ``profiles`` and make them durable together; for each id, None once it is on disk
        (stored now or found already stored), or the PushUnavailable, naming the path, that it failed
        with. One profile the disk refuses fails alone; a failed sync fails the whole batch."""
        outcomes: dict[str, PushError | None] = {}
        writes: list[_Write] = []
        batch = _Syncs()
        try:
            for profile in profiles:
                if profile.id in outcomes:
                    continue
                directory, stem = self._place(profile)
                sidecar = f"{directory}/{stem}.json"
                write = _Write(profile.id, directory, f"{directory}/{stem}.pb.gz", sidecar,
                               self._temp(directory, f"{stem}.pb.gz"), self._temp(directory, f"{stem}.json"))
                try:
                    # The sidecar is renamed into place last, so its presence means the pair is complete.
                    # It may be an earlier batch's that is still syncing (a redelivery racing the first
                    # delivery): this batch's last sync covers it too before it is reported stored.
                    if os.path.exists(sidecar):
                        self._watch(batch, directory)
                    else:
                        self._write_temporaries(write, profile, batch)
                        writes.append(write)
                except PushUnavailable as exc:
                    outcomes[profile.id] = exc
                    _remove(write.data_temp, write.sidecar_temp)
                    continue
                outcomes[profile.id] = None
            if batch.directories:
                self._commit(writes, batch, outcomes)
        finally:
            batch.close()
        self.retention.tick()
        return outcomes

    def _place(self, profile: Profile) -> tuple[str, str]:
        """The directory of ``profile`` and the name of its files without their suffix."""
        when = datetime.fromtimestamp(profile.start, tz=UTC)
        labels = profile.labels
        directory = (f"{self._root}/{path_component(labels.get('job', ''))}/"
                     f"{path_component(labels.get('__name__', ''))}/{when:%Y/%m/%d}")
        return directory, f"{when:%H%M%S}-{path_component(labels.get('instance', ''))}-{path_component(profile.id)}"

    @staticmethod
    def _temp(directory: str, name: str) -> str:
        # Dot-prefixed, so ``*.pb.gz``/``*.json`` globs and retention skip it. It cannot collide: the
        # final name is the profile's own, the tag is this process's (random, new after a fork) and the
        # thread id is unique among this process's live threads, each writing one batch at a time.
        return f"{directory}/.{name}.{_PROCESS_TAG}.{threading.get_ident()}.tmp"

    def _write_temporaries(self, write: _Write, profile: Profile, batch: _Syncs) -> None:
        """Write the profile and its sidecar to their temporary names (fsynced only without syncfs), in
        a directory that ``batch`` syncs. Raises PushUnavailable naming what could not be written."""
        body = profile.body if profile.body.startswith(_GZIP_MAGIC) else gzip.compress(profile.body, mtime=0)
        for again in (False, True):
            writing = write.directory
            try:
                if again or write.directory not in self._known_directories:
                    os.makedirs(write.directory, exist_ok=True)
                    if len(self._known_directories) >= _MAX_KNOWN_DIRECTORIES:
                        self._known_directories.clear()
                    self._known_directories.add(write.directory)
                batch.watch(write.directory)
                writing = write.data
                _write_file(write.data_temp, body)
                writing = write.sidecar
                _write_file(write.sidecar_temp, self._sidecar(profile))
                return
            except FileNotFoundError as exc:
                if again:
                    raise self._unavailable(writing, exc) from None
                # Retention (maybe another process's) removed the directory since this process made it.
            except OSError as exc:
                raise self._unavailable(writing, exc) from None

    def _watch(self, batch: _Syncs, directory: str) -> None:
        try:
            batch.watch(directory)
        except OSError as exc:
            raise self._unavailable(directory, exc) from None

    def _sidecar(self, profile: Profile) -> bytes:
        labels = {**profile.labels, **self.config.external_labels}
        sidecar: dict[str, object] = {
            "labels": dict(sorted(labels.items())),
            "start": _iso(profile.start),
            "end": _iso(profile.end),
            "url": profile.url,
            "id": profile.id,
        }
        if profile.cumulative:
            # these sample types are totals since the target started: `go tool pprof -diff_base` two files
            sidecar["cumulative"] = profile.cumulative
        return json.dumps(sidecar, separators=(",", ":")).encode() + b"\n"

    def _commit(self, writes: list[_Write], batch: _Syncs, outcomes: dict[str, PushError | None]) -> None:
        """Put the batch's files in place durably, or fail every profile of the batch."""
        try:
            if writes:
                batch.sync(renames=False)  # the temporary files' content
                for write in writes:
                    self._rename(write, write.data_temp, write.data, outcomes)
                # Profiles on disk before any sidecar: a sidecar found after a crash has its profile,
                # whether or not the file system keeps renames in order (ext4 without a journal does not).
                batch.sync(renames=True)
                for write in writes:
                    if outcomes[write.id] is None:
                        self._rename(write, write.sidecar_temp, write.sidecar, outcomes)
            batch.sync(renames=True)
        except OSError as exc:
            failed = self._unavailable(exc.filename or self._root, exc)
            for write in writes:
                _remove(write.data_temp, write.sidecar_temp)
            for push_id, outcome in outcomes.items():
                if outcome is None:
                    outcomes[push_id] = failed

    def _rename(self, write: _Write, temp: str, final: str, outcomes: dict[str, PushError | None]) -> None:
        try:
            os.replace(temp, final)
        except OSError as exc:
            outcomes[write.id] = self._unavailable(final, exc)
            _remove(write.data_temp, write.sidecar_temp)

    def _unavailable(self, path: str, exc: OSError) -> PushUnavailable:
        return PushUnavailable(f"file receiver {self.name!r}: cannot write {path}: {exc.strerror or exc}")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _write_file(path: str, data: bytes) -> None:
    # 0600, as tempfile.mkstemp made them before: a profile can tell much about its target's code
    fd = os.open(path, _NEW_FILE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if _SYNCFS is None:
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass  # not written, or the disk refuses even this: the retention sweep removes it later


def _fsync_directory(directory: str) -> None:
    # A rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
