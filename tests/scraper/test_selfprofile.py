"""The scraper's own /debug/pprof endpoints: real profiles of this test process, checked as pprof checks them."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.event
import pytest

from scraper._proto import profile_pb2
from scraper.selfprofile import (
    CPU_IN_USE_MESSAGE,
    TRACEMALLOC_OFF_MESSAGE,
    CPUProfileInUse,
    CPUSampler,
    ProfileBuilder,
    TracemallocOff,
    allocs_profile,
    cpu_profile,
    goroutine_profile,
    handle_pprof,
    heap_profile,
)
from scraper.selfprofile.source import CodeIndex

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
PROFILE_HEADERS = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": 'attachment; filename="profile"',
    "X-Content-Type-Options": "nosniff",
}


# --- checking profiles -------------------------------------------------------------------------


def assert_valid_pprof(body: bytes) -> profile_pb2.Profile:
    """Decode ``body`` and check pprof's validity rules (and the project's validator, when present)."""
    assert body[:2] == b"\x1f\x8b", "Go serves pprof gzipped"
    profile = profile_pb2.Profile.FromString(gzip.decompress(body))
    strings = profile.string_table
    assert strings and strings[0] == "", "string_table[0] must be ''"

    def string(index: int) -> str:
        assert 0 <= index < len(strings), f"string index {index} outside the table"
        return strings[index]

    for value_type in [*profile.sample_type, profile.period_type]:
        string(value_type.type), string(value_type.unit)
    for index in [profile.drop_frames, profile.keep_frames, profile.default_sample_type, *profile.comment]:
        string(index)
    for kind, entries in (("mapping", profile.mapping), ("location", profile.location), ("function", profile.function)):
        ids = [entry.id for entry in entries]
        assert 0 not in ids, f"{kind} with reserved id 0"
        assert len(ids) == len(set(ids)), f"{kind} ids not unique"
    functions = {f.id for f in profile.function}
    mappings = {m.id for m in profile.mapping}
    locations = {loc.id for loc in profile.location}
    for function in profile.function:
        string(function.name), string(function.system_name), string(function.filename)
    for location in profile.location:
        assert location.mapping_id == 0 or location.mapping_id in mappings
        for line in location.line:
            assert line.function_id in functions, "line names an unknown function"
    if profile.sample:
        assert profile.sample_type, "samples without sample types"
    for sample in profile.sample:
        assert len(sample.value) == len(profile.sample_type)
        assert sample.location_id, "a sample without a stack"
        assert set(sample.location_id) <= locations, "sample names an unknown location"
        for label in sample.label:
            string(label.key), string(label.str), string(label.num_unit)
    if importlib.util.find_spec("scraper.pprof") is not None:
        from scraper.pprof import validate_profile

        validate_profile(body)
    return profile


def here(qualname: str) -> str:
    """How a self-profile names a function of this module: by module and qualified name, as Go by package."""
    return f"{__name__}.{qualname}"


def stacks(profile: profile_pb2.Profile) -> list[tuple[list[str], list[int]]]:
    """Each sample as (function names leaf first, values)."""
    names = {f.id: profile.string_table[f.name] for f in profile.function}
    frame = {loc.id: names[loc.line[0].function_id] for loc in profile.location}
    return [([frame[i] for i in s.location_id], list(s.value)) for s in profile.sample]


def value_type(profile: profile_pb2.Profile, value_type: profile_pb2.ValueType) -> tuple[str, str]:
    return profile.string_table[value_type.type], profile.string_table[value_type.unit]


def sample_types(profile: profile_pb2.Profile) -> list[tuple[str, str]]:
    return [value_type(profile, v) for v in profile.sample_type]


# --- workloads with names the profiles must show ----------------------------------------------


def burn_cpu_until(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        total += sum(range(500))


def park_thread_until(release: threading.Event) -> None:
    release.wait()


def park_greenlet_until(release: gevent.event.Event) -> None:
    release.wait()


def hoard_blocks(count: int, size: int) -> list[bytearray]:
    return [bytearray(size) for _ in range(count)]


@pytest.fixture
def busy_thread() -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=burn_cpu_until, args=(stop,), name="busy-burner", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join()


@pytest.fixture
def parked_thread() -> Iterator[threading.Thread]:
    release = threading.Event()
    thread = threading.Thread(target=park_thread_until, args=(release,), name="parked", daemon=True)
    thread.start()
    yield thread
    release.set()
    thread.join()


@pytest.fixture
def tracing() -> Iterator[None]:
    if tracemalloc.is_tracing():
        yield
        return
    tracemalloc.start(25)
    try:
        yield
    finally:
        tracemalloc.stop()


# --- the writer -------------------------------------------------------------------------------


def test_builder_merges_identical_stacks_adding_their_values_and_keeps_the_leaf_first() -> None:
    outer, inner = hoard_blocks.__code__, burn_cpu_until.__code__
    builder = ProfileBuilder([("samples", "count"), ("cpu", "nanoseconds")], ("cpu", "nanoseconds"), 10)
    builder.add([(inner, 5), (outer, 9)], [1, 10])
    builder.add([(inner, 5), (outer, 9)], [2, 20])
    builder.add([(outer, 9)], [1, 10])

    profile = assert_valid_pprof(builder.gzipped(time_nanos=123, duration_nanos=456))

    assert sorted(stacks(profile)) == [([here("burn_cpu_until"), here("hoard_blocks")], [3, 30]), ([here("hoard_blocks")], [1, 10])]
    assert len(profile.function) == 2, "one Function per code object"
    assert len(profile.location) == 2, "one Location per (code, line)"
    assert (profile.time_nanos, profile.duration_nanos, profile.period) == (123, 456, 10)
    inner_function = next(f for f in profile.function if profile.string_table[f.name] == here("burn_cpu_until"))
    assert inner_function.start_line == inner.co_firstlineno
    assert profile.string_table[inner_function.filename] == __file__


def test_builder_names_functions_by_module_and_qualified_name_as_go_does_by_package() -> None:
    from scraper.push import PushStage
    from scraper.scrape import scrape_once

    builder = ProfileBuilder([("samples", "count")], ("cpu", "nanoseconds"), 1)
    builder.add([(PushStage.deliver.__code__, 1), (scrape_once.__code__, 1)], [1])
    builder.add([("<frozen importlib._bootstrap>", 3)], [1])

    names = sorted(name for stack, _ in stacks(assert_valid_pprof(builder.gzipped(time_nanos=1))) for name in stack)

    assert names == ["<frozen importlib._bootstrap>:3", "scraper.push.PushStage.deliver", "scraper.scrape.scrape_once"]


def test_builder_refuses_a_sample_with_more_values_than_sample_types() -> None:
    builder = ProfileBuilder([("goroutine", "count")], ("goroutine", "count"), 1)
    with pytest.raises(ValueError, match="2 values for 1 sample types"):
        builder.add([(hoard_blocks.__code__, 1)], [1, 2])


def test_builder_names_frames_without_a_code_object_by_file_and_line() -> None:
    builder = ProfileBuilder([("inuse_space", "bytes")], ("space", "bytes"), 1)
    builder.add([("<frozen nowhere>", 7), (hoard_blocks.__code__, 3)], [64])

    profile = assert_valid_pprof(builder.gzipped(time_nanos=1))

    assert stacks(profile) == [(["<frozen nowhere>:7", here("hoard_blocks")], [64])]


def test_file_frames_resolve_to_their_functions_with_a_comprehension_on_its_callers_line() -> None:
    line = hoard_blocks.__code__.co_firstlineno + 1  # ``return [bytearray(size) for ...]``

    def names(stack: list[tuple[str, int]]) -> list[str]:
        return [where if isinstance(where, str) else where.co_qualname for where, _ in CodeIndex(stack).resolve(stack)]

    caller = (__file__, test_file_frames_resolve_to_their_functions_with_a_comprehension_on_its_callers_line.__code__.co_firstlineno + 6)
    assert names([(__file__, line), (__file__, line), caller]) == [
        "hoard_blocks.<locals>.<listcomp>",
        "hoard_blocks",
        "test_file_frames_resolve_to_their_functions_with_a_comprehension_on_its_callers_line",
    ]
    assert names([(__file__, line)]) == ["hoard_blocks"], "one frame at the line: the outer function"
    assert names([("<frozen nowhere>", 7)]) == ["<frozen nowhere>"], "no live code there: left as a file frame"


# --- CPU --------------------------------------------------------------------------------------


def test_cpu_profile_names_the_busy_function_and_leaves_out_waiting_threads(busy_thread, parked_thread) -> None:
    profile = assert_valid_pprof(cpu_profile(1))

    assert sample_types(profile) == [("samples", "count"), ("cpu", "nanoseconds")]
    assert value_type(profile, profile.period_type) == ("cpu", "nanoseconds")
    assert profile.period == 10_000_000
    assert profile.time_nanos > 0
    assert 0.9e9 <= profile.duration_nanos < 100e9  # a unit slip (µs, ms) would be 1000× off
    seen = stacks(profile)
    busy = [values for names, values in seen if names[0] == here("burn_cpu_until")]
    assert busy, f"no sample with burn_cpu_until on top: {seen}"
    assert all(count >= 1 and cpu_ns > 0 for count, cpu_ns in busy)
    everything = {name for names, _ in seen for name in names}
    assert here("park_thread_until") not in everything, "a thread waiting on a condition is off CPU"
    assert "scraper.selfprofile.cpu.CPUSampler._wait_blocking" not in everything, "the caller waiting for the profile is off CPU"
    assert "scraper.selfprofile.cpu.CPUSampler._sample" not in everything, "the sampler leaves itself out"


def test_cpu_profile_while_another_runs_is_refused_with_gos_message() -> None:
    running = CPUSampler()
    running.start()
    try:
        with pytest.raises(CPUProfileInUse) as refused:
            cpu_profile(1)
        assert str(refused.value) == CPU_IN_USE_MESSAGE == "Could not enable CPU profiling: cpu profiling already in use"

        status, headers, body = handle_pprof("/debug/pprof/profile", {"seconds": ["1"]})
        assert status == 500
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers["X-Go-Pprof"] == "1"
        assert body == (DATA / "bad" / "text_cpu_profiling_in_use.txt").read_bytes(), "byte for byte what Go sends"
    finally:
        assert_valid_pprof(running.stop())
    assert_valid_pprof(cpu_profile(0.05)), "the next profile may start once the first has ended"


def test_of_two_simultaneous_cpu_profiles_from_plain_threads_exactly_one_succeeds() -> None:
    both_ready = threading.Barrier(2)
    outcomes: list[object] = []

    def profile() -> None:
        both_ready.wait()
        try:
            outcomes.append(cpu_profile(0.5))
        except CPUProfileInUse as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=profile) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(type(o).__name__ for o in outcomes) == ["CPUProfileInUse", "bytes"]
    assert_valid_pprof(next(o for o in outcomes if isinstance(o, bytes)))


def test_cpu_profile_called_from_a_greenlet_lets_the_other_greenlets_run_meanwhile() -> None:
    ticks = 0
    done = False

    def ticker() -> None:
        nonlocal ticks
        while not done:
            gevent.sleep(0.01)
            ticks += 1

    def profile() -> bytes:
        nonlocal done
        try:
            return cpu_profile(0.5)
        finally:
            done = True

    ticking = gevent.spawn(ticker)
    profiling = gevent.spawn(profile)
    gevent.joinall([ticking, profiling], raise_error=True)

    assert_valid_pprof(profiling.value)
    assert ticks >= 10, f"the hub was blocked while the profile ran: only {ticks} ticks of 10 ms in 0.5 s"


def test_cpu_profile_under_monkey_patching_samples_busy_greenlets_from_a_real_thread_and_skips_an_idle_hub() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import base64, json, gevent
        from scraper.selfprofile import cpu_profile

        busy = True
        ticks = 0

        def crunch_numbers():
            while busy:
                sum(range(3000))
                gevent.sleep(0)

        def ticker():
            global ticks
            while True:
                gevent.sleep(0.01)
                ticks += 1

        crunchers = [gevent.spawn(crunch_numbers) for _ in range(50)]
        gevent.spawn(ticker)
        busy_profile = gevent.spawn(cpu_profile, 1).get()
        ticks_while_busy = ticks
        busy = False
        gevent.joinall(crunchers)
        idle_profile = gevent.spawn(cpu_profile, 0.5).get()
        print(json.dumps({
            "ticks": ticks_while_busy,
            "busy": base64.b64encode(busy_profile).decode(),
            "idle": base64.b64encode(idle_profile).decode(),
        }))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    busy = stacks(assert_valid_pprof(base64.b64decode(result["busy"])))
    assert any(names[0] == "crunch_numbers" for names, _ in busy), f"busy greenlets not sampled: {busy}"
    assert result["ticks"] >= 5, "the greenlet waiting for the profile blocked the hub"
    idle = stacks(assert_valid_pprof(base64.b64decode(result["idle"])))
    assert not any(names[0] == "gevent.hub.Hub.run" for names, _ in idle), f"a hub waiting in its loop is off CPU: {idle}"


def test_cpu_sampler_rejects_rates_and_durations_it_cannot_honour_and_runs_once() -> None:
    with pytest.raises(ValueError, match="hz"):
        CPUSampler(hz=0)
    with pytest.raises(ValueError, match="seconds"):
        CPUSampler().start(0)
    with pytest.raises(RuntimeError, match="not started"):
        CPUSampler().stop()
    sampler = CPUSampler()
    sampler.start(0.05)
    assert_valid_pprof(sampler.wait())
    with pytest.raises(RuntimeError, match="runs once"):
        sampler.start(0.05)


# --- goroutines -------------------------------------------------------------------------------


def test_goroutine_profile_counts_parked_greenlets_by_identical_stack_and_shows_threads(parked_thread) -> None:
    release = gevent.event.Event()
    parked = [gevent.spawn(park_greenlet_until, release) for _ in range(3)]
    gevent.sleep(0)  # let each run up to its wait
    try:
        profile = assert_valid_pprof(goroutine_profile())
    finally:
        release.set()
        gevent.joinall(parked)

    assert sample_types(profile) == [("goroutine", "count")]
    assert value_type(profile, profile.period_type) == ("goroutine", "count")
    assert profile.period == 1
    seen = stacks(profile)
    greenlet_counts = [values[0] for names, values in seen if here("park_greenlet_until") in names]
    assert greenlet_counts == [3], f"three greenlets with one stack are one sample of 3: {seen}"
    assert any(here("park_thread_until") in names for names, _ in seen), "the parked thread"
    assert any(
        here("test_goroutine_profile_counts_parked_greenlets_by_identical_stack_and_shows_threads") in names
        for names, _ in seen
    ), "the calling thread itself"


# --- heap and allocs --------------------------------------------------------------------------


def test_heap_and_allocs_answer_404_explaining_how_to_turn_tracemalloc_on_when_it_is_off() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is on for the whole test run (PYTHONTRACEMALLOC)")
    for make in (heap_profile, allocs_profile):
        with pytest.raises(TracemallocOff, match="SCRAPER_TRACEMALLOC=1"):
            make()
    for name in ("heap", "allocs"):
        status, headers, body = handle_pprof(f"/debug/pprof/{name}", {})
        assert status == 404
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers["X-Go-Pprof"] == "1"
        assert body == (TRACEMALLOC_OFF_MESSAGE + "\n").encode()


def test_heap_profile_attributes_live_blocks_to_the_function_that_allocated_them(tracing) -> None:
    hoard = hoard_blocks(200, 4096)

    heap = assert_valid_pprof(heap_profile())
    allocs = assert_valid_pprof(allocs_profile())

    expected = [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")]
    assert sample_types(heap) == sample_types(allocs) == expected
    assert heap.string_table[heap.default_sample_type] == "inuse_space"
    assert allocs.string_table[allocs.default_sample_type] == "alloc_space"
    hoarded = [values for names, values in stacks(heap) if names[:2] == [here("hoard_blocks.<locals>.<listcomp>"), here("hoard_blocks")]]
    assert hoarded, "the hoarding function and its comprehension, named from their source line"
    objects, space = sum(v[2] for v in hoarded), sum(v[3] for v in hoarded)
    assert objects >= 200 and space >= 200 * 4096
    assert all(v[0] == v[2] and v[1] == v[3] for v in hoarded), "tracemalloc sees only live blocks: alloc == inuse"
    assert any(here("test_heap_profile_attributes_live_blocks_to_the_function_that_allocated_them") in names
               for names, _ in stacks(heap)), "the caller below it"
    del hoard


# --- the HTTP answers -------------------------------------------------------------------------


def test_handle_pprof_serves_profiles_as_go_does(tracing) -> None:
    for path, query in [
        ("/debug/pprof/goroutine", {}),
        ("/debug/pprof/heap", {"gc": ["1"]}),
        ("/debug/pprof/allocs", {}),
        ("/debug/pprof/profile", {"seconds": ["0.2"]}),
    ]:
        status, headers, body = handle_pprof(path, query)
        assert (status, headers) == (200, PROFILE_HEADERS), path
        assert_valid_pprof(body)


def test_handle_pprof_index_lists_the_endpoints() -> None:
    for path in ("/debug/pprof/", "/debug/pprof"):
        status, headers, body = handle_pprof(path, {})
        assert status == 200
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        for name in ("profile", "goroutine", "heap", "allocs"):
            assert name.encode() in body


@pytest.mark.parametrize("seconds", ["0", "-1", "300.5", "301", "abc", "nan", "inf", ""])
def test_handle_pprof_refuses_cpu_durations_outside_0_to_300_seconds_with_400(seconds: str) -> None:
    status, headers, body = handle_pprof("/debug/pprof/profile", {"seconds": [seconds]})
    assert status == 400
    assert headers["X-Go-Pprof"] == "1"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"seconds" in body


@pytest.mark.parametrize(
    ("path", "query", "status", "message"),
    [
        ("/debug/pprof/block", {}, 404, b"Unknown profile\n"),
        ("/metrics/pprof", {}, 404, b"404 page not found\n"),
        ("/debug/pprof/goroutine", {"debug": ["2"]}, 400, b"only the protobuf format"),
        ("/debug/pprof/heap", {"seconds": ["14"]}, 400, b"seconds (a delta profile) is not supported for heap"),
    ],
)
def test_handle_pprof_answers_what_it_cannot_serve_with_a_plain_text_error(path, query, status, message) -> None:
    got_status, headers, body = handle_pprof(path, query)
    assert got_status == status
    assert headers["X-Go-Pprof"] == "1"
    assert "Content-Disposition" not in headers
    assert body.startswith(message)


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not on PATH, so `go tool pprof` cannot be run")
def test_go_tool_pprof_reads_a_cpu_profile_and_names_the_busy_function(busy_thread, tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(cpu_profile(1))
    env = {**os.environ, "PPROF_TMPDIR": str(tmp_path)}
    top = subprocess.run(["go", "tool", "pprof", "-top", str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert top.returncode == 0, top.stderr
    assert here("burn_cpu_until") in top.stdout
