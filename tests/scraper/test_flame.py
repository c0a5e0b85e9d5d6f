"""The profile model behind the pages and `pprof-scraper top`: trees, top functions, diffs, units."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scraper import flame
from worker.cli import main

GO = Path(__file__).parent.parent / "data" / "go"


def load(name: str) -> flame.Profile:
    return flame.parse((GO / name).read_bytes())


def walk(node: flame.Frame):
    yield node
    for child in node.children.values():
        yield from walk(child)


@pytest.mark.parametrize("name", ["cpu_1.pb.gz", "heap_1.pb.gz", "mutex_1.pb.gz", "goroutine_1.pb.gz"])
def test_every_frames_total_is_its_self_plus_its_callees(name: str) -> None:
    profile = load(name)
    for index in range(len(profile.sample_types)):
        root, dropped = flame.tree(profile, index)
        assert dropped == 0
        assert root.total == profile.total(index)
        for node in walk(root):
            assert node.total == node.self_value + sum(c.total for c in node.children.values())


def test_the_default_sample_type_is_the_profiles_own() -> None:
    assert load("cpu_1.pb.gz").sample_types[load("cpu_1.pb.gz").default_type].name == "cpu"
    assert load("heap_1.pb.gz").sample_types[load("heap_1.pb.gz").default_type].name == "inuse_space"


def test_an_unknown_sample_type_names_the_ones_there_are() -> None:
    with pytest.raises(KeyError, match="has alloc_objects, alloc_space, inuse_objects, inuse_space"):
        load("heap_1.pb.gz").type_index("cpu")


def test_frames_under_the_minimum_share_are_left_out_without_changing_their_callers() -> None:
    profile = load("cpu_1.pb.gz")
    index = profile.type_index("cpu")
    full, _ = flame.tree(profile, index)
    trimmed, dropped = flame.tree(profile, index, min_share=0.05)

    assert dropped > 0
    assert trimmed.total == full.total
    for node in walk(trimmed):
        assert node is trimmed or node.total >= 0.05 * full.total
    assert {n.name for n in walk(trimmed)} < {n.name for n in walk(full)}


def test_a_diff_holds_each_profiles_totals() -> None:
    before, after = load("cpu_1.pb.gz"), load("cpu_3.pb.gz")
    i_before, i_after = before.type_index("cpu"), after.type_index("cpu")

    root, _ = flame.diff_tree(before, after, i_before, i_after)

    assert root.total == after.total(i_after)
    assert root.base_total == before.total(i_before)
    for node in walk(root):
        assert node.base_total >= sum(c.base_total for c in node.children.values())


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not on PATH, so `go tool pprof` cannot be run")
@pytest.mark.parametrize("name,sample_type", [("cpu_1.pb.gz", "cpu"), ("heap_2.pb.gz", "alloc_space"),
                                              ("block_1.pb.gz", "delay")])
def test_top_agrees_with_go_tool_pprof(name: str, sample_type: str) -> None:
    out = subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0",
                          f"-sample_index={sample_type}", str(GO / name)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    theirs = _pprof_rows(out)
    profile = load(name)
    index = profile.type_index(sample_type)
    total = profile.total(index)
    ours = {r.name: (100 * r.flat / total, 100 * r.cum / total) for r in flame.top(profile, index)}
    assert theirs.keys() == ours.keys()
    for function, (flat, cum) in ours.items():  # pprof prints two decimals, more for small shares
        assert theirs[function] == (pytest.approx(flat, abs=0.006), pytest.approx(cum, abs=0.006)), function


def _pprof_rows(out: str) -> dict[str, tuple[float, float]]:
    """name -> (flat%, cum%) from ``pprof -top``'s rows: flat flat% sum% cum cum% name [(inline)]."""
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1].endswith("%") and fields[4].endswith("%") and fields[0] != "flat":
            rows[fields[5]] = (float(fields[1].rstrip("%")), float(fields[4].rstrip("%")))
    return rows


@pytest.mark.parametrize("value,unit,text", [
    (0, "bytes", "0 B"), (1536, "bytes", "1.50 KiB"), (5 * 2**30, "bytes", "5.00 GiB"),
    (460_000_000, "nanoseconds", "460 ms"), (1_500, "nanoseconds", "1.50 µs"), (73_000_000_000, "nanoseconds", "1.22 min"),
    (42, "count", "42"), (12_345, "count", "12.3k"), (3, "seconds", "3.00 s"), (7, "widgets", "7 widgets"),
])
def test_values_are_humanised_in_their_unit(value: int, unit: str, text: str) -> None:
    assert flame.format_value(value, unit) == text


def test_a_body_that_is_not_a_profile_is_refused_saying_so() -> None:
    with pytest.raises(flame.ProfileUnreadable, match="not a pprof profile"):
        flame.parse(b"<html>login</html>")


def test_top_command_prints_the_top_functions(capsys: pytest.CaptureFixture[str]) -> None:
    profile = load("cpu_1.pb.gz")
    index = profile.type_index("cpu")
    first = flame.top(profile, index)[0]

    assert main(["top", str(GO / "cpu_1.pb.gz"), "-n", "3"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "cpu (nanoseconds)" in lines[0] and "showing 3 of" in lines[0]
    assert lines[1].split() == ["flat", "flat%", "sum%", "cum", "cum%", "name"]
    assert lines[2].endswith(first.name) and len(lines) == 5


def test_top_command_says_since_process_start_for_cumulative_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", str(GO / "allocs_1.pb.gz"), "--sample-type", "alloc_space"]) == 0
    assert "since process start" in capsys.readouterr().out


def test_top_command_refuses_an_unknown_sample_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", str(GO / "cpu_1.pb.gz"), "--sample-type", "alloc_space"]) == 2
    assert "has samples, cpu" in capsys.readouterr().err


def test_function_names_that_are_not_utf8_are_shown_with_replacement_characters() -> None:
    from scraper._proto import profile_pb2

    p = profile_pb2.Profile(string_table=["", "samples", "count", "NAME"])
    p.sample_type.add(type=1, unit=2)
    p.function.add(id=1, name=3)
    p.location.add(id=1).line.add(function_id=1)
    p.sample.add(location_id=[1], value=[5])
    raw = p.SerializeToString().replace(b"NAME", b"N\xffME")  # as a C++ target may send

    profile = flame.parse(raw)

    assert [r.name for r in flame.top(profile, 0)] == ["N\ufffdME"]
