"""Beat's scheduling (scraper.schedule) as a pure function of the plan and the time it is given:
no Celery, no Redis, no sleeping."""

from __future__ import annotations

from scraper.config import parse_config_text
from scraper.plan import ScrapeSpec, make_plan, next_slot
from scraper.schedule import MIN_BACKLOG_LIMIT, Schedule

T0 = 1_767_225_600.0  # a whole minute


def fleet(targets: int, interval: str = "60s", extra_job: bool = False) -> list[ScrapeSpec]:
    addresses = ", ".join(f'{{__address__: "10.0.0.{i}:6060"}}' for i in range(targets))
    other = ("  other:\n    targets: [{__address__: \"10.1.0.1:6060\"}]\n    forward_to: [files]\n"
             f"    scrape_interval: {interval}\n    profiling_config: {{profile.block: {{enabled: false}}}}\n"
             if extra_job else "")
    config = parse_config_text(f"scrape:\n  fleet:\n    targets: [{addresses}]\n    forward_to: [files]\n"
                               f"    scrape_interval: {interval}\n{other}write:\n  files: {{type: file}}\n")
    return make_plan(config).specs


def test_each_target_is_due_once_per_interval_at_its_slot_with_all_its_profile_types() -> None:
    specs = fleet(3)
    schedule = Schedule(targets_per_task=1)
    schedule.plan(specs, after=T0)

    first = schedule.due(T0 + 60)
    second = schedule.due(T0 + 120)

    for emission in (first, second):
        assert sorted(d.target.first.address for task in emission.tasks for d in task.due) == [
            "10.0.0.0:6060", "10.0.0.1:6060", "10.0.0.2:6060"]
        assert all(len(task.profile_types) == 5 for task in emission.tasks)
    slots = {d.target.first.address: d.slot for task in first.tasks for d in task.due}
    assert all(slots[spec.address] == next_slot(spec, T0) for spec in specs)
    assert schedule.due(T0 + 120).tasks == []  # nothing twice


def test_targets_due_together_share_a_task_up_to_the_limit_per_job_and_profile_types() -> None:
    schedule = Schedule(targets_per_task=4)
    schedule.plan(fleet(10, extra_job=True), after=T0)

    tasks = schedule.due(T0 + 60).tasks

    assert sorted((task.job, len(task.due)) for task in tasks) == [
        ("fleet", 2), ("fleet", 4), ("fleet", 4), ("other", 1)]
    assert {task.job: len(task.profile_types) for task in tasks} == {"fleet": 5, "other": 4}
    assert sum(task.specs for task in tasks) == 10 * 5 + 4


def test_a_task_expires_an_interval_after_its_earliest_slot() -> None:
    schedule = Schedule(targets_per_task=10)
    schedule.plan(fleet(10), after=T0)

    [task] = schedule.due(T0 + 60).tasks

    assert task.expires_at == min(d.slot for d in task.due) + 60


def test_a_backlog_over_the_limit_sheds_every_due_scrape_and_counts_it() -> None:
    schedule = Schedule()
    schedule.plan(fleet(30), after=T0)

    shed = schedule.due(T0 + 60, backlog=schedule.backlog_limit() + 1)
    caught_up = schedule.due(T0 + 120, backlog=0)

    assert (shed.tasks, shed.shed) == ([], 30 * 5)
    assert len(caught_up.tasks) == 30  # the shed targets kept their next slots


def test_the_backlog_limit_is_half_an_interval_of_tasks_but_at_least_the_minimum() -> None:
    small, large = Schedule(), Schedule()
    small.plan(fleet(4), after=T0)
    large.plan(fleet(100), after=T0)

    assert (small.backlog_limit(), large.backlog_limit()) == (MIN_BACKLOG_LIMIT, 50)


def test_a_slot_over_an_interval_late_is_skipped_and_reported() -> None:
    schedule = Schedule()
    schedule.plan(fleet(2), after=T0)

    emission = schedule.due(T0 + 60 + 61)  # every first slot is over 60 s old

    assert len(emission.late) == 2 and emission.shed == 0
    assert len(emission.tasks) == 2  # the slot within the last interval still goes out


def test_restarting_after_a_point_emits_no_slot_up_to_it() -> None:
    schedule = Schedule()
    schedule.plan(fleet(5), after=T0)
    schedule.restart(after=T0 + 3600)

    assert schedule.due(T0 + 3600).tasks == []
    assert schedule.next_due is not None and T0 + 3600 < schedule.next_due <= T0 + 3660


def test_sleep_is_until_the_next_slot_within_bounds() -> None:
    schedule = Schedule()
    assert schedule.sleep_s(T0, 0.1, 1.0) == 1.0  # nothing planned
    schedule.plan(fleet(1), after=T0)
    due = schedule.next_due
    assert due is not None

    assert schedule.sleep_s(due - 0.5, 0.1, 1.0) == 0.5
    assert schedule.sleep_s(due - 5, 0.1, 1.0) == 1.0
    assert schedule.sleep_s(due, 0.1, 1.0) == 0.1
