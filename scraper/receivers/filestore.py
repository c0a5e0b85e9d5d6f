"""The local file store: one gzip pprof file and one JSON sidecar per profile.

Layout (UTC date and time of ``profile.start``)::

    <path>/<job>/<__name__>/<YYYY>/<MM>/<DD>/<HHMMSS>-<instance>-<id>.pb.gz
    <path>/<job>/<__name__>/<YYYY>/<MM>/<DD>/<HHMMSS>-<instance>-<id>.json

Each file appears whole or not at all (temporary file in the same directory, fsync, rename),
and the sidecar is renamed into place after the profile, so a reader that finds a ``.json``
finds its ``.pb.gz``. See docs/file-store.md.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
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


def path_component(value: str) -> str:
    """``value`` made safe as one path component: runs of other characters than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``, it is cut to 96 characters, and it is never empty,
    ``.`` or ``..`` (a label must not be able to climb out of the store)."""
    safe = _UNSAFE.sub("_", value)[:_MAX_COMPONENT]
    if safe in ("", ".", ".."):
        return "_" + safe
    return safe


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


class FileStore:
    """A Receiver that writes each profile under ``config.path``, idempotently by id."""

    #: the file store keeps what the target served, lossless: cumulative profiles stay totals
    wants_deltas = False
    #: each file and its directory are fsynced: a push holds its thread for the disk's latency
    blocks = True

    def __init__(self, name: str, config: FileReceiverConfig) -> None:
        self.name = name
        self.config = config
        self.retention = RetentionClock(name, config)

    def paths(self, profile: Profile) -> tuple[Path, Path]:
        """Where ``profile`` is stored: its ``.pb.gz`` and its ``.json`` sidecar."""
        when = datetime.fromtimestamp(profile.start, tz=UTC)
        directory = (
            Path(self.config.path)
            / path_component(profile.labels.get("job", ""))
            / path_component(profile.labels.get("__name__", ""))
            / f"{when:%Y}"
            / f"{when:%m}"
            / f"{when:%d}"
        )
        stem = f"{when:%H%M%S}-{path_component(profile.labels.get('instance', ''))}-{path_component(profile.id)}"
        return directory / f"{stem}.pb.gz", directory / f"{stem}.json"

    def push_batch(self, profiles: list[Profile]) -> dict[str, PushError | None]:
        out: dict[str, PushError | None] = {}
        for profile in profiles:
            try:
                self.push(profile)
                out[profile.id] = None
            except PushError as exc:
                out[profile.id] = exc
        return out

    def push(self, profile: Profile) -> None:
        """Store ``profile``; a second push of the same profile leaves the first pair as it is.

        Raises PushUnavailable, naming the path, when the disk refuses (full, read-only, permission).
        """
        data_path, sidecar_path = self.paths(profile)
        # The sidecar is written last, so its presence means the pair is complete.
        if sidecar_path.exists() and data_path.exists():
            return
        body = profile.body if profile.body.startswith(_GZIP_MAGIC) else gzip.compress(profile.body, mtime=0)
        labels = {**profile.labels, **self.config.external_labels}
        sidecar = {
            "labels": dict(sorted(labels.items())),
            "start": _iso(profile.start),
            "end": _iso(profile.end),
            "url": profile.url,
            "id": profile.id,
        }
        if profile.cumulative:
            # these sample types are totals since the target started: `go tool pprof -diff_base` two files
            sidecar["cumulative"] = profile.cumulative
        writing = data_path.parent
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            writing = data_path
            _write_atomically(data_path, body)
            writing = sidecar_path
            _write_atomically(sidecar_path, json.dumps(sidecar, indent=2).encode() + b"\n")
        except OSError as exc:
            raise PushUnavailable(
                f"file receiver {self.name!r}: cannot write {writing}: {exc.strerror or exc}"
            ) from None
        self.retention.tick()


def _write_atomically(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data``, all or nothing, durably: readers see the old state or the new file."""
    # A dot-prefixed temporary name keeps half-written files out of ``*.pb.gz``/``*.json`` globs.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
