"""When each target is due, which due targets share a task, and when to shed: beat's scheduling,
with no Celery, no Redis and no clock of its own (every call is given ``now``).

A heap holds each target's next slot; :meth:`Schedule.due` pops what is due at ``now``, pushes
each target's next slot (O(log N) per target) and groups the due targets into :class:`ScrapeTask`
records, one per job and set of profile types, up to ``targets_per_task`` targets each. Slots are
pinned to absolute time (``k * interval + offset``, :func:`scraper.plan.next_slot`), so they
survive restarts, reloads and a change of emitting beat.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .plan import ScrapeSpec, next_slot

#: The fewest queued scrape tasks tolerated before shedding (otherwise about half an interval's
#: worth of the plan's tasks).
MIN_BACKLOG_LIMIT = 10


@dataclass(frozen=True)
class Target:
    """Every enabled profile type of one target: what is scheduled together."""

    specs: tuple[ScrapeSpec, ...]

    @property
    def first(self) -> ScrapeSpec:
        return self.specs[0]

    @property
    def profile_types(self) -> tuple[str, ...]:
        return tuple(spec.profile_type for spec in self.specs)


@dataclass(order=True)
class _Slot:
    """A heap entry: a target's next slot (ties broken by its position in the plan)."""

    due: float
    index: int
    target: Target = field(compare=False)


@dataclass(frozen=True)
class DueTarget:
    """A target due at ``slot``."""

    target: Target
    slot: float


@dataclass(frozen=True)
class ScrapeTask:
    """One ``scraper.scrape`` task: targets of one job, each with the same profile types, at their slots."""

    job: str
    profile_types: tuple[str, ...]
    due: tuple[DueTarget, ...]

    @property
    def specs(self) -> int:
        """Scrapes the task asks for: targets × profile types."""
        return sum(len(d.target.specs) for d in self.due)

    @property
    def expires_at(self) -> float:
        """When the earliest slot is an interval old: a task not started by then is dropped, not run late."""
        return min(d.slot for d in self.due) + self.due[0].target.first.interval_s


@dataclass(frozen=True)
class Emission:
    """What is due at one tick: the tasks to send, and what is not sent."""

    tasks: list[ScrapeTask]
    #: scrapes (targets × profile types) dropped because the workers are behind
    shed: int = 0
    #: targets skipped because their slot was over an interval ago
    late: list[DueTarget] = field(default_factory=list)


class Schedule:
    """Every target's next slot, and how due targets become tasks."""

    def __init__(self, targets_per_task: int = 1) -> None:
        self.targets_per_task = targets_per_task
        self._targets: list[Target] = []
        self._heap: list[_Slot] = []
        self._tasks_sent = 0
        self._targets_sent = 0

    def plan(self, specs: list[ScrapeSpec], after: float) -> None:
        """Schedule ``specs`` (grouped by target) from their first slot after ``after``."""
        groups: dict[str, list[ScrapeSpec]] = {}
        for spec in specs:
            groups.setdefault(spec.target_key, []).append(spec)
        self._targets = [Target(tuple(group)) for group in groups.values()]
        self.restart(after)

    def restart(self, after: float) -> None:
        """Put every target at its first slot after ``after`` (where emission resumes)."""
        self._heap = [_Slot(next_slot(t.first, after), i, t) for i, t in enumerate(self._targets)]
        heapq.heapify(self._heap)

    @property
    def targets(self) -> int:
        return len(self._targets)

    @property
    def next_due(self) -> float | None:
        """The earliest slot scheduled, or None when there is nothing to scrape."""
        return self._heap[0].due if self._heap else None

    def backlog_limit(self) -> int:
        """Queued scrape tasks that hold about half an interval of the plan, given how many targets
        a task has carried on average so far."""
        targets_per_task = self._targets_sent / self._tasks_sent if self._tasks_sent else 1.0
        return max(MIN_BACKLOG_LIMIT, int(len(self._targets) / 2 / targets_per_task))

    def due(self, now: float, backlog: int = 0) -> Emission:
        """Pop every target due at ``now`` and schedule its next slot; group them into tasks, or shed
        them all when ``backlog`` (scrape tasks still queued) is over :meth:`backlog_limit`.

        Workers half an interval behind would only find expired scrapes in what beat adds, and
        discarding an expired message costs them nearly as much as running it: shed at the source.
        """
        shedding = backlog > self.backlog_limit()
        shed = 0
        late: list[DueTarget] = []
        by_job: dict[tuple[str, tuple[str, ...]], list[DueTarget]] = {}
        heap = self._heap
        while heap and heap[0].due <= now:
            slot = heapq.heappop(heap)
            target, first = slot.target, slot.target.first
            if shedding:
                shed += len(target.specs)
            elif now - slot.due < first.interval_s:
                by_job.setdefault((first.job, target.profile_types), []).append(DueTarget(target, slot.due))
            else:
                late.append(DueTarget(target, slot.due))
            heapq.heappush(heap, _Slot(next_slot(first, max(slot.due, now - first.interval_s)), slot.index, target))
        tasks = [
            ScrapeTask(job, types, tuple(due[start:start + self.targets_per_task]))
            for (job, types), due in by_job.items()
            for start in range(0, len(due), self.targets_per_task)
        ]
        self._tasks_sent += len(tasks)
        self._targets_sent += sum(len(task.due) for task in tasks)
        return Emission(tasks, shed, late)

    def sleep_s(self, now: float, shortest: float, longest: float) -> float:
        """How long to sleep until the next slot, within [shortest, longest]."""
        if not self._heap:
            return longest
        return max(shortest, min(self._heap[0].due - now, longest))
