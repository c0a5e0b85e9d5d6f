"""File-store retention: old profiles go, the store stays under max_size, oldest first, sidecar with
its profile, and one process at a time sweeps a store however many write to it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scraper import metrics
from scraper.receivers import retention
from scraper.receivers.filestore import FileStore
from tests.scraper.test_filestore import make_profile, store_at

DAY = 86400.0


def stored(root: Path) -> list[str]:
    """The ids of the stored profiles, oldest first (by file time)."""
    profiles = sorted(root.rglob("*.pb.gz"), key=lambda p: p.stat().st_mtime)
    return [p.name.rsplit("-", 1)[1].removesuffix(".pb.gz") for p in profiles]


def push_aged(store: FileStore, id: str, age_s: float, now: float) -> None:
    """Store a profile and make its files look ``age_s`` old."""
    profile = make_profile(id=id, start=now - age_s)
    store.push(profile)
    for path in store.paths(profile):
        os.utime(path, (now - age_s, now - age_s))


def test_profiles_older_than_retention_are_removed_with_their_sidecars(tmp_path: Path) -> None:
    store = store_at(tmp_path, retention="7d")
    now = time.time()
    for id, age in (("old1", 9 * DAY), ("old2", 8 * DAY), ("new1", 6 * DAY), ("new2", 60)):
        push_aged(store, id, age, now)

    result = retention.sweep("local", store.config, now=now)

    assert result is not None and result.by_age == 2
    assert stored(tmp_path) == ["new1", "new2"]
    assert sorted(p.stem.removesuffix(".pb") for p in tmp_path.rglob("*.json")) == sorted(
        p.name.removesuffix(".pb.gz") for p in tmp_path.rglob("*.pb.gz")
    )


def test_over_max_size_the_oldest_profiles_go_first(tmp_path: Path) -> None:
    now = time.time()
    store = store_at(tmp_path)
    for i in range(6):
        push_aged(store, f"p{i}", 600 - i * 60, now)
    pair = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) // 6
    limited = store_at(tmp_path, max_size=str(pair * 3 + pair // 2))

    result = retention.sweep("local", limited.config, now=now)

    assert result is not None and result.by_size == 3
    assert stored(tmp_path) == ["p3", "p4", "p5"]
    assert result.kept_bytes <= pair * 3 + pair // 2


def test_emptied_day_directories_are_removed(tmp_path: Path) -> None:
    store = store_at(tmp_path, retention="1d")
    now = time.time()
    push_aged(store, "old", 3 * DAY, now)
    day = store.paths(make_profile(id="old", start=now - 3 * DAY))[0].parent
    os.utime(day, (now - 3 * DAY, now - 3 * DAY))

    retention.sweep("local", store.config, now=now)

    assert not day.exists()


def test_removals_are_counted_in_metrics_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = store_at(tmp_path, retention="1h")
    now = time.time()
    push_aged(store, "old", 2 * 3600, now)
    before = metrics.RETENTION_REMOVED.labels("local", "age")._value.get()

    with caplog.at_level(logging.INFO, logger="scraper.receivers.retention"):
        retention.sweep("local", store.config, now=now)

    assert metrics.RETENTION_REMOVED.labels("local", "age")._value.get() == before + 1
    assert "retention removed 1 profiles" in caplog.text and "'local'" in caplog.text


def test_a_store_with_retention_sweeps_itself_after_a_push(tmp_path: Path) -> None:
    now = time.time()
    push_aged(store_at(tmp_path), "old", 2 * DAY, now)

    store_at(tmp_path, retention="1d").push(make_profile(id="new", start=now))

    assert stored(tmp_path) == ["new"]


_HOLD_LOCK = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def test_a_store_another_process_is_sweeping_is_left_to_it(tmp_path: Path) -> None:
    store = store_at(tmp_path, retention="1h")
    now = time.time()
    push_aged(store, "old", 2 * 3600, now)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / retention.LOCK_NAME)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert retention.sweep("local", store.config, now=now) is None
        assert stored(tmp_path) == ["old"]
    finally:
        holder.communicate("\n", timeout=60)

    assert retention.sweep("local", store.config, now=now) is not None
    assert stored(tmp_path) == []


_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from scraper.receivers import retention
    from tests.scraper.test_filestore import make_profile, store_at

    root, who, count, max_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = store_at(root, max_size=max_size)
    swept = skipped = 0
    for i in range(count):
        store.push(make_profile(id=f"{who}{i:04d}", start=time.time()))
        if retention.sweep("local", store.config) is None:
            skipped += 1
        else:
            swept += 1
    print(json.dumps({"swept": swept, "skipped": skipped}))
    """
)


def test_two_writer_processes_keep_the_store_under_max_size_and_whole(tmp_path: Path) -> None:
    one_pair = len(make_profile().body) + 400  # the profile and about a sidecar
    limit = one_pair * 20
    root = Path(__file__).resolve().parents[2]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), who, "150", str(limit)],
            cwd=root, stdout=subprocess.PIPE, text=True,
        )
        for who in ("a", "b")
    ]
    results = [w.communicate(timeout=240)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], results
    # A writer's last sweep can be skipped while the other one sweeps, from a listing taken before that
    # writer's last push: the store is under max_size once the next look has been (docs/file-store.md).
    assert retention.sweep("local", store_at(tmp_path, max_size=str(limit)).config) is not None

    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert size <= limit
    profiles = {p.name.removesuffix(".pb.gz") for p in tmp_path.rglob("*.pb.gz")}
    sidecars = {p.name.removesuffix(".json") for p in tmp_path.rglob("*.json")}
    assert sidecars <= profiles  # never a sidecar without its profile
    # both wrote and both swept; the first profiles went, the last one written is there
    assert all(json.loads(r)["swept"] > 0 for r in results)
    ids = stored(tmp_path)
    assert "a0000" not in ids and "b0000" not in ids
    assert ids[-1] in ("a0149", "b0149")
    assert not list(tmp_path.rglob(".*.tmp"))


def test_temporary_files_older_than_an_hour_are_removed_and_newer_ones_kept(tmp_path: Path) -> None:
    """A writer killed mid-batch leaves its dot-prefixed temporary files; nothing else would remove them."""
    store = store_at(tmp_path, retention="7d")
    now = time.time()
    push_aged(store, "kept", 60, now)
    day = store.paths(make_profile(id="kept", start=now - 60))[0].parent
    stale = day / ".235958-10.0.0.7_6060-dead.pb.gz.0a1b2c3d.140001.tmp"
    fresh = day / ".235958-10.0.0.7_6060-busy.pb.gz.0a1b2c3d.140002.tmp"
    for path, age in ((stale, retention.STALE_TEMPORARY_S + 60), (fresh, 60)):
        path.write_bytes(b"half a profile")
        os.utime(path, (now - age, now - age))

    result = retention.sweep("local", store.config, now=now)

    assert result is not None and result.temporary == 1
    assert not stale.exists() and fresh.exists()
    assert stored(tmp_path) == ["kept"]
