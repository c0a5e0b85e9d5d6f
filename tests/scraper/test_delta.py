"""Deltas of cumulative profiles: what a target added since the previous scrape of the same series,
on real Go profiles and on small built ones."""

from __future__ import annotations

import gzip
import random

import pytest

from scraper._proto import profile_pb2
from scraper.config import parse_config_text
from scraper.delta import (
    CUMULATIVE_SAMPLE_TYPES,
    Baseline,
    Outcome,
    compute,
    cumulative_sample_types,
    cumulative_types_of,
)
from scraper.errors import ConfigError
from scraper.plan import ScrapeSpec, plan
from scraper.pprof import parse_profile
from tests.conftest import DATA
from tests.pyroscope_standin import parse_pprof

MEMORY = CUMULATIVE_SAMPLE_TYPES["memory"]
CONTENTION = CUMULATIVE_SAMPLE_TYPES["mutex"]
INTERVAL = 15.0


def corpus(name: str):
    return parse_profile((DATA / "go" / f"{name}.pb.gz").read_bytes())[1]


def totals(profile) -> dict[str, int]:
    strings = profile.string_table
    names = [strings[t.type] for t in profile.sample_type]
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    return {name: sum(s.value[i] for s in profile.sample) for i, name in enumerate(names)}


def stacks_of(profile) -> dict[tuple[str, ...], list[int]]:
    """Each sample's values by its stack of function names, leaf first."""
    names = {f.id: profile.string_table[f.name] for f in profile.function}
    frames = {loc.id: names[loc.line[0].function_id] for loc in profile.location}
    return {tuple(frames[i] for i in s.location_id): list(s.value) for s in profile.sample}


def delta_of(previous_name: str, current_name: str, names: tuple[str, ...]):
    first = compute(corpus(previous_name), names, None, slot=100.0, interval_s=INTERVAL)
    second = compute(corpus(current_name), names, first.baseline, slot=100.0 + INTERVAL, interval_s=INTERVAL)
    assert second.outcome is Outcome.DELTA
    return parse_pprof(second.body)


def built(stacks: dict[tuple[str, ...], list[int]], *, types: tuple[str, ...] = ("contentions", "delay"),
          seed: int | None = None, time_nanos: int = 0):
    """A pprof profile with one sample per stack (function names, leaf first) and its values. With
    ``seed``, function and location ids are numbered in a shuffled order, as another process would."""
    p = profile_pb2.Profile()
    p.string_table.extend(["", "main.go", *types, "count"])
    for i in range(len(types)):
        p.sample_type.add(type=2 + i, unit=2 + len(types))
    names = sorted({f for stack in stacks for f in stack})
    ids = list(range(1, len(names) + 1))
    if seed is not None:
        random.Random(seed).shuffle(ids)
    location_of = {}
    for name, ident in zip(names, ids):
        p.string_table.append(name)
        p.function.add(id=ident, name=len(p.string_table) - 1, filename=1)
        p.location.add(id=ident, address=0x1000 + 16 * names.index(name)).line.add(function_id=ident, line=7)
        location_of[name] = ident
    for stack, values in stacks.items():
        p.sample.add(location_id=[location_of[f] for f in stack], value=values)
    if time_nanos:
        p.time_nanos = time_nanos
    return parse_profile(gzip.compress(p.SerializeToString()))[1]


def test_only_memory_mutex_and_block_scraped_without_seconds_are_cumulative() -> None:
    assert cumulative_sample_types("memory", None) == ("alloc_objects", "alloc_space")
    assert cumulative_sample_types("mutex", None) == ("contentions", "delay")
    assert cumulative_sample_types("block", None) == ("contentions", "delay")
    assert cumulative_sample_types("memory", 14) == ()
    for other in ("goroutine", "process_cpu", "fgprof", "godeltaprof_memory", "godeltaprof_mutex", "my_custom"):
        assert cumulative_sample_types(other, None) == ()


@pytest.mark.parametrize("kind", ["allocs", "mutex", "block"])
def test_the_delta_of_two_go_scrapes_holds_what_the_target_added_in_between(kind: str) -> None:
    names = MEMORY if kind == "allocs" else CONTENTION
    for earlier, later in ((1, 2), (2, 3)):
        pushed = totals(delta_of(f"{kind}_{earlier}", f"{kind}_{later}", names))
        before, after = totals(corpus(f"{kind}_{earlier}")), totals(corpus(f"{kind}_{later}"))
        for name in names:
            assert pushed[name] == after[name] - before[name]


def test_inuse_values_pass_through_unchanged() -> None:
    pushed = delta_of("allocs_2", "allocs_3", MEMORY)
    served = corpus("allocs_3")
    assert totals(pushed)["inuse_space"] == totals(served)["inuse_space"]
    assert totals(pushed)["inuse_objects"] == totals(served)["inuse_objects"]


def test_the_delta_keeps_the_profile_readable_with_its_time_and_the_window_as_duration() -> None:
    pushed = delta_of("mutex_1", "mutex_2", CONTENTION)
    first, second = corpus("mutex_1"), corpus("mutex_2")
    assert pushed.time_nanos == second.time_nanos[0]
    assert pushed.duration_nanos == second.time_nanos[0] - first.time_nanos[0]
    assert list(pushed.sample_type) == list(parse_pprof((DATA / "go/mutex_2.pb.gz").read_bytes()).sample_type)


def test_the_first_scrape_of_a_series_is_its_baseline_and_pushes_nothing() -> None:
    first = compute(corpus("block_1"), CONTENTION, None, slot=100.0, interval_s=INTERVAL)
    assert first.outcome is Outcome.FIRST
    assert first.body is None
    assert first.baseline.totals == (totals(corpus("block_1"))["contentions"], totals(corpus("block_1"))["delay"])


def test_samples_match_by_stack_even_when_the_target_numbers_ids_differently() -> None:
    stacks = {("lock", "serve", "main"): [10, 1000], ("lock", "flush", "main"): [5, 500], ("wait", "main"): [1, 7]}
    grown = {("lock", "serve", "main"): [12, 1200], ("lock", "flush", "main"): [5, 500], ("wait", "main"): [4, 37]}
    first = compute(built(stacks, seed=1), CONTENTION, None, slot=0.0, interval_s=INTERVAL)
    second = compute(built(grown, seed=2), CONTENTION, first.baseline, slot=INTERVAL, interval_s=INTERVAL)
    # the unchanged stack is left out, the others carry only what was added
    assert stacks_of(parse_pprof(second.body)) == {("lock", "serve", "main"): [2, 200], ("wait", "main"): [3, 30]}


def test_a_target_restart_makes_a_new_baseline_and_pushes_nothing_negative() -> None:
    before = compute(built({("lock", "main"): [100, 9000], ("wait", "main"): [10, 90]}), CONTENTION, None,
                     slot=0.0, interval_s=INTERVAL)
    restarted = compute(built({("lock", "main"): [3, 300]}, seed=5), CONTENTION, before.baseline,
                        slot=INTERVAL, interval_s=INTERVAL)
    assert restarted.outcome is Outcome.RESTART
    assert restarted.body is None
    after = compute(built({("lock", "main"): [7, 700], ("wait", "main"): [1, 1]}), CONTENTION,
                    restarted.baseline, slot=2 * INTERVAL, interval_s=INTERVAL)
    assert after.outcome is Outcome.DELTA
    assert all(v >= 0 for s in parse_pprof(after.body).sample for v in s.value)
    assert totals(parse_pprof(after.body)) == {"contentions": 5, "delay": 401}


def test_a_sample_that_falls_while_the_totals_grow_counts_as_zero() -> None:
    # Go rescales a heap sample by its average size, so one stack's value can fall a little.
    before = compute(built({("a", "main"): [100, 100], ("b", "main"): [10, 10]}), CONTENTION, None,
                     slot=0.0, interval_s=INTERVAL)
    after = compute(built({("a", "main"): [98, 98], ("b", "main"): [50, 50]}), CONTENTION, before.baseline,
                    slot=INTERVAL, interval_s=INTERVAL)
    assert after.outcome is Outcome.DELTA
    assert stacks_of(parse_pprof(after.body)) == {("b", "main"): [40, 40]}


def test_a_baseline_older_than_two_intervals_is_not_used() -> None:
    first = compute(built({("a", "main"): [1, 1]}), CONTENTION, None, slot=0.0, interval_s=INTERVAL)
    one_missed = compute(built({("a", "main"): [2, 2]}), CONTENTION, first.baseline, slot=2 * INTERVAL,
                         interval_s=INTERVAL)
    assert one_missed.outcome is Outcome.DELTA
    two_missed = compute(built({("a", "main"): [3, 3]}), CONTENTION, first.baseline, slot=3 * INTERVAL,
                         interval_s=INTERVAL)
    assert two_missed.outcome is Outcome.EXPIRED
    assert two_missed.body is None


def test_a_scrape_of_an_earlier_slot_than_the_baseline_pushes_nothing() -> None:
    later = compute(built({("a", "main"): [5, 5]}), CONTENTION, None, slot=2 * INTERVAL, interval_s=INTERVAL)
    earlier = compute(built({("a", "main"): [3, 3]}), CONTENTION, later.baseline, slot=INTERVAL, interval_s=INTERVAL)
    assert earlier.outcome is Outcome.STALE
    assert earlier.body is None


def test_a_profile_without_the_cumulative_sample_types_is_left_alone() -> None:
    assert compute(built({("a", "main"): [1]}, types=("inuse_space",)), MEMORY, None, slot=0.0,
                   interval_s=INTERVAL) is None


def test_a_baseline_survives_its_compact_form() -> None:
    baseline = compute(corpus("allocs_3"), MEMORY, None, slot=123.5, interval_s=INTERVAL).baseline
    assert Baseline.decode(baseline.encode()) == baseline
    # the compact form is keys and values, not the profile
    assert len(baseline.encode()) < (DATA / "go/allocs_3.pb.gz").stat().st_size


def config_with(profiling: str):
    return parse_config_text(f"""
scrape:
  j:
    targets: [{{__address__: "t:1"}}]
    forward_to: [files]
    profiling_config:
{profiling}
write:
  files: {{type: file}}
""")


def spec_of(config, profile_type: str) -> ScrapeSpec:
    return next(s for s in plan(config) if s.profile_type == profile_type)


def test_cumulative_false_pushes_a_builtin_type_as_served() -> None:
    config = config_with("      profile.memory: {cumulative: false}")
    assert cumulative_types_of(config, spec_of(config, "memory")) == ()
    assert cumulative_types_of(config, spec_of(config, "mutex")) == CONTENTION


def test_a_custom_type_marked_cumulative_has_every_sample_type_delta_d() -> None:
    config = config_with(
        "      profile.custom:\n        requests: {enabled: true, path: /debug/requests, cumulative: true}")
    names = cumulative_types_of(config, spec_of(config, "requests"))
    first = compute(built({("handle", "main"): [3, 30]}, types=("requests", "bytes")), names, None,
                    slot=0.0, interval_s=INTERVAL)
    after = compute(built({("handle", "main"): [5, 70]}, types=("requests", "bytes")), names, first.baseline,
                    slot=INTERVAL, interval_s=INTERVAL)
    assert totals(parse_pprof(after.body)) == {"requests": 2, "bytes": 40}


def test_a_custom_type_is_not_cumulative_unless_marked() -> None:
    config = config_with("      profile.custom:\n        requests: {enabled: true, path: /debug/requests}")
    assert cumulative_types_of(config, spec_of(config, "requests")) == ()


@pytest.mark.parametrize(("profiling", "reason"), [
    ("      profile.goroutine: {cumulative: true}", "goroutine profiles hold no running totals"),
    ("      profile.memory: {cumulative: true, delta: true}", "cumulative and delta exclude each other"),
])
def test_cumulative_where_it_cannot_hold_is_refused_with_the_reason(profiling: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(profiling)
    assert reason in str(raised.value)
