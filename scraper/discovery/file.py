"""File-based discovery: Prometheus ``file_sd_configs``, JSON or YAML target-group files."""

from __future__ import annotations

import glob
import json
import os

import yaml

from ..yamlload import TextLoader
from .base import Discoverer, DiscoveryError, Targets, targets_from_groups
from .models import FileSDConfig

META_FILEPATH = "__meta_filepath"

#: What stat says about a file; a change in any of these means it was rewritten.
_Stamp = tuple[int, int, int]


class FileDiscovery(Discoverer):
    """Targets from every file matching the config's patterns (relative to the working directory).

    :meth:`changed` stats the matching files, so a caller polling it every tick re-reads a file
    soon after it is written, without waiting for ``refresh_interval``.
    """

    def __init__(self, config: FileSDConfig) -> None:
        super().__init__(config.refresh_interval.total_seconds())
        self.config = config
        self._stamps: dict[str, _Stamp] = {}

    def _paths(self) -> list[str]:
        found: set[str] = set()
        for pattern in self.config.files:
            found.update(glob.glob(pattern))
        return sorted(found)

    def _stat_all(self) -> dict[str, _Stamp]:
        stamps: dict[str, _Stamp] = {}
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed between glob and stat: it is gone
            stamps[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return stamps

    def changed(self) -> bool:
        """Whether a matching file appeared, disappeared or was rewritten since the last refresh."""
        return self._stat_all() != self._stamps

    def _lookup(self) -> dict[str, Targets | DiscoveryError]:
        self._stamps = self._stat_all()
        results: dict[str, Targets | DiscoveryError] = {}
        for path in self._stamps:
            try:
                results[path] = self._read(path)
            except DiscoveryError as exc:
                results[path] = exc
        return results

    @staticmethod
    def _read(path: str) -> Targets:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise DiscoveryError(f"file_sd {path}: cannot read: {exc}") from None
        try:
            # YAML as Prometheus reads it: a key twice refuses the file, scalars are strings as written
            groups = json.loads(text) if path.lower().endswith(".json") else yaml.load(text, Loader=TextLoader)  # noqa: S506 - a SafeLoader subclass
        except (ValueError, yaml.YAMLError) as exc:
            kind = "JSON" if path.lower().endswith(".json") else "YAML"
            raise DiscoveryError(f"file_sd {path}: not valid {kind}: {exc}") from None
        return targets_from_groups(groups, f"file_sd {path}", {META_FILEPATH: path})
