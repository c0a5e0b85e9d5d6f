"""The file store: where each profile lands, what the sidecar says, idempotency by id, and that a
reader never sees a partial file."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from scraper._proto import profile_pb2
from scraper.config import parse_config
from scraper.errors import PushUnavailable
from scraper.receivers import Profile, build_receiver, filestore
from scraper.receivers.filestore import FileStore, path_component

GO = Path(__file__).parent.parent / "data" / "go"
HEAP = (GO / "heap_1.pb.gz").read_bytes()

# 2026-01-01T23:59:58.5Z: late enough that a local-time date would differ from UTC in most zones east of it
START = 1_767_311_998.5
LABELS = {
    "job": "api",
    "instance": "10.0.0.7:6060",
    "service_name": "api",
    "team": "core",
    "__name__": "memory",
}


def store_at(path: Path, **options: object) -> FileStore:
    config = parse_config({"write": {"local": {"type": "file", "path": str(path), **options}}})
    built = build_receiver("local", config.write["local"])
    assert isinstance(built, FileStore)
    return built


def make_profile(body: bytes = HEAP, id: str = "5f2c9e01", labels: dict[str, str] | None = None,
                 start: float = START) -> Profile:
    return Profile(
        id=id,
        labels=dict(LABELS if labels is None else labels),
        body=body,
        start=start,
        end=start + 0.25,
        url="http://10.0.0.7:6060/debug/pprof/allocs",
    )


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_gzip_profile_is_stored_byte_for_byte_under_job_type_and_utc_date(tmp_path: Path) -> None:
    store_at(tmp_path).push(make_profile())

    data = tmp_path / "api/memory/2026/01/01/235958-10.0.0.7_6060-5f2c9e01.pb.gz"
    assert hashlib.sha256(data.read_bytes()).digest() == hashlib.sha256(HEAP).digest()
    assert all_files(tmp_path) == [
        "api/memory/2026/01/01/235958-10.0.0.7_6060-5f2c9e01.json",
        "api/memory/2026/01/01/235958-10.0.0.7_6060-5f2c9e01.pb.gz",
    ]


def test_an_uncompressed_profile_is_stored_gzip_compressed(tmp_path: Path) -> None:
    raw = gzip.decompress(HEAP)
    store = store_at(tmp_path)
    store.push(make_profile(body=raw))

    data_path, _ = store.paths(make_profile(body=raw))
    stored = data_path.read_bytes()
    assert stored[:2] == b"\x1f\x8b"
    assert gzip.decompress(stored) == raw
    profile = profile_pb2.Profile()
    profile.ParseFromString(gzip.decompress(stored))
    assert profile.sample_type


def test_the_sidecar_holds_labels_with_external_labels_times_url_and_id(tmp_path: Path) -> None:
    store = store_at(tmp_path, external_labels={"team": "platform", "cluster": "eu-1"})
    store.push(make_profile())

    _, sidecar = store.paths(make_profile())
    assert json.loads(sidecar.read_text()) == {
        "labels": {
            "__name__": "memory",
            "cluster": "eu-1",
            "instance": "10.0.0.7:6060",
            "job": "api",
            "service_name": "api",
            "team": "platform",
        },
        "start": "2026-01-01T23:59:58.500000+00:00",
        "end": "2026-01-01T23:59:58.750000+00:00",
        "url": "http://10.0.0.7:6060/debug/pprof/allocs",
        "id": "5f2c9e01",
    }


def test_pushing_the_same_id_twice_leaves_one_pair_of_files(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.push(make_profile())
    data_path, sidecar = store.paths(make_profile())
    first = (data_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns)

    store.push(make_profile())

    assert len(all_files(tmp_path)) == 2
    assert (data_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == first  # not even rewritten


def test_a_profile_without_its_sidecar_is_written_again(tmp_path: Path) -> None:
    """A crash between the two renames leaves a .pb.gz alone; the redelivered push completes the pair."""
    store = store_at(tmp_path)
    data_path, sidecar = store.paths(make_profile())
    data_path.parent.mkdir(parents=True)
    data_path.write_bytes(HEAP[:100])

    store.push(make_profile())

    assert data_path.read_bytes() == HEAP
    assert json.loads(sidecar.read_text())["id"] == "5f2c9e01"


def test_different_ids_of_the_same_second_are_kept_apart(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for path in sorted(GO.glob("heap_*.pb.gz")):
        store.push(make_profile(body=path.read_bytes(), id=path.stem))
    assert len(all_files(tmp_path)) == 6


def test_labels_cannot_climb_out_of_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = store_at(root)
    labels = {**LABELS, "job": "../../etc", "instance": "[::1]:6060/x", "__name__": ".."}
    store.push(make_profile(labels=labels, id="../id"))

    files = all_files(root)
    assert len(files) == 2
    assert files[0].startswith(".._.._etc/_../2026/01/01/235958-_1_6060_x-.._id.")
    assert all((root / f).resolve().is_relative_to(root.resolve()) for f in files)


def test_path_component_makes_any_value_one_safe_component() -> None:
    assert path_component("10.0.0.7:6060") == "10.0.0.7_6060"
    assert path_component("") == "_"
    assert path_component(".") == "_."
    assert path_component("a/b\\c d") == "a_b_c_d"
    assert len(path_component("x" * 500)) == 96


def temporary_files(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for path in sorted(GO.glob("*.pb.gz")):
        store.push(make_profile(body=path.read_bytes(), id=path.stem))
    assert temporary_files(tmp_path) == []
    assert len(all_files(tmp_path)) == 2 * len(list(GO.glob("*.pb.gz")))


def test_a_reader_never_sees_a_partial_profile_or_a_sidecar_before_its_profile(tmp_path: Path) -> None:
    bodies = [p.read_bytes() for p in sorted(GO.glob("*.pb.gz"))]
    bodies.append(gzip.compress(os.urandom(2 * 1024 * 1024)))  # slow enough to write that a reader may catch it
    rounds = 4
    expected = {f"r{r}i{i}.pb.gz": body for r in range(rounds) for i, body in enumerate(bodies)}
    store = store_at(tmp_path)
    done = threading.Event()
    looked = threading.Condition()
    looks = 0
    problems: list[str] = []

    def read_continuously() -> None:
        nonlocal looks
        while not done.is_set():
            for sidecar in tmp_path.rglob("*.json"):
                data_path = sidecar.with_name(sidecar.name.removesuffix(".json") + ".pb.gz")
                if not data_path.exists():
                    problems.append(f"{sidecar} without its profile")
                json.loads(sidecar.read_text())  # never half a JSON document
            for data_path in tmp_path.rglob("*.pb.gz"):
                content = data_path.read_bytes()
                if content != expected[data_path.name.split("-")[-1]]:
                    problems.append(f"{data_path} is partial ({len(content)} bytes)")
            with looked:
                looks += 1
                looked.notify_all()

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for r in range(rounds):
            for i, body in enumerate(bodies):
                store.push(make_profile(body=body, id=f"r{r}i{i}"))
            # let the reader look at least once between rounds, so reads and writes interleave
            with looked:
                seen = looks
                assert looked.wait_for(lambda seen=seen: looks > seen, timeout=30)
    finally:
        done.set()
        reader.join(timeout=30)
    assert problems == []
    assert len(all_files(tmp_path)) == 2 * len(expected)


def test_a_write_that_the_disk_refuses_is_unavailable_and_names_the_path(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "profiles"
    not_a_directory.write_text("a file where the store should be")
    store = store_at(not_a_directory)
    with pytest.raises(PushUnavailable, match=f"file receiver 'local': cannot write {not_a_directory}/api/memory/2026/01/01"):
        store.push(make_profile())



def batch_of(count: int, prefix: str = "b") -> list[Profile]:
    """``count`` profiles of several types and instances, as one push task carries them."""
    return [
        make_profile(id=f"{prefix}{i}", labels={**LABELS, "__name__": ("memory", "process_cpu", "mutex")[i % 3],
                                                "instance": f"10.0.0.{i}:6060"})
        for i in range(count)
    ]


def test_a_batch_stores_every_profile_with_its_sidecar(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    batch = batch_of(7)

    outcomes = store.push_batch(batch)

    assert outcomes == dict.fromkeys((p.id for p in batch), None)
    for profile in batch:
        data_path, sidecar = store.paths(profile)
        assert data_path.read_bytes() == HEAP
        assert json.loads(sidecar.read_text())["id"] == profile.id
    assert len(all_files(tmp_path)) == 14


def test_a_profile_the_disk_refuses_fails_alone_naming_its_path(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the job's directory should be")
    store = store_at(tmp_path)
    refused = make_profile(id="refused", labels={**LABELS, "job": "blocked"})
    batch = [*batch_of(2), refused]

    outcomes = store.push_batch(batch)

    error = outcomes["refused"]
    assert isinstance(error, PushUnavailable)
    assert str(error) == f"file receiver 'local': cannot write {tmp_path}/blocked/memory/2026/01/01: Not a directory"
    assert [outcomes[p.id] for p in batch[:2]] == [None, None]
    assert all(path.exists() for p in batch[:2] for path in store.paths(p))


def test_a_profile_that_cannot_be_renamed_into_place_fails_alone_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    stuck = make_profile(id="stuck")
    data_path, sidecar = store.paths(stuck)
    (data_path / "in-the-way").mkdir(parents=True)  # a directory holding the profile's name
    batch = [*batch_of(2), stuck]

    outcomes = store.push_batch(batch)

    error = outcomes["stuck"]
    assert isinstance(error, PushUnavailable)
    assert str(error).startswith(f"file receiver 'local': cannot write {data_path}: ")
    assert not sidecar.exists()
    assert [outcomes[p.id] for p in batch[:2]] == [None, None]
    assert temporary_files(tmp_path) == []


def test_a_profile_already_stored_is_left_as_it_is_and_reported_stored(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    stored = make_profile(id="stored")
    store.push(stored)
    data_path, sidecar = store.paths(stored)
    first = (data_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns)
    fresh = make_profile(id="fresh")

    outcomes = store.push_batch([stored, fresh])

    assert outcomes == {"stored": None, "fresh": None}
    assert (data_path.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == first
    assert len(all_files(tmp_path)) == 4


def test_the_same_profile_twice_in_a_batch_is_stored_once(tmp_path: Path) -> None:
    store = store_at(tmp_path)

    outcomes = store.push_batch([make_profile(), make_profile()])

    assert outcomes == {"5f2c9e01": None}
    assert len(all_files(tmp_path)) == 2
    assert temporary_files(tmp_path) == []


def test_the_same_profile_from_two_threads_at_once_leaves_one_pair(tmp_path: Path) -> None:
    """A redelivered push can race the first delivery: each thread writes its own temporary files."""
    store = store_at(tmp_path)
    batch = batch_of(35)
    start = threading.Barrier(2)
    outcomes: list[dict[str, object]] = []

    def push() -> None:
        start.wait(timeout=30)
        outcomes.append(dict(store.push_batch(batch)))

    threads = [threading.Thread(target=push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes == [dict.fromkeys((p.id for p in batch), None)] * 2
    assert len(all_files(tmp_path)) == 70
    assert temporary_files(tmp_path) == []


def test_a_directory_removed_between_two_batches_is_made_again(tmp_path: Path) -> None:
    """Retention, maybe another process's, removes emptied day directories whenever it sweeps."""
    store = store_at(tmp_path)
    first = make_profile(id="first")
    store.push_batch([first])
    day = store.paths(first)[0].parent
    for path in store.paths(first):
        path.unlink()
    for directory in (day, day.parent, day.parent.parent):
        directory.rmdir()
    second = make_profile(id="second")

    outcomes = store.push_batch([second])

    assert outcomes == {"second": None}
    assert all(path.exists() for path in store.paths(second))


def test_without_syncfs_a_batch_is_stored_all_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A libc without syncfs (not glibc 2.14+ or musl): each file and directory is fsynced instead."""
    monkeypatch.setattr(filestore, "_SYNCFS", None)
    store = store_at(tmp_path)
    batch = batch_of(3)

    assert store.push_batch(batch) == dict.fromkeys((p.id for p in batch), None)
    assert len(all_files(tmp_path)) == 6
    assert temporary_files(tmp_path) == []


def test_the_sidecar_is_one_line_of_compact_json(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.push(make_profile())

    text = store.paths(make_profile())[1].read_text()

    assert text == json.dumps(json.loads(text), separators=(",", ":")) + "\n"
