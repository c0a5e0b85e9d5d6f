"""Target status in Redis: how the last scrape of each (target, profile type) went, and running totals.

One record per spec key in the hash :data:`keys.STATUS`, a msgpack map. Beat registers the
plan (:func:`register_specs`), every scrape updates its record (:func:`record_scrape`), and
the ``/targets`` page and the ``targets`` command read them (:func:`read_statuses`).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import cast

import msgpack
import redis

from . import keys
from .broker import NamedReplies, Script
from .delta import OUTCOME_TEXT, Outcome
from .plan import ScrapeSpec


class TargetHealth(str, enum.Enum):  # noqa: UP042 - StrEnum would change what str() and f-strings show
    """How the last scrape of a target went."""

    #: the last scrape fetched a valid profile
    UP = "up"
    #: the last scrape failed; ``last_error`` says why
    DOWN = "down"
    #: planned but not scraped yet
    UNKNOWN = "unknown"


#: down first: a reader looks for what is broken
_HEALTH_ORDER = {TargetHealth.DOWN: 0, TargetHealth.UNKNOWN: 1, TargetHealth.UP: 2}


@dataclass(frozen=True)
class TargetStatus:
    """The status of one profile type of one target, as stored in Redis."""

    key: str
    job: str
    profile_type: str
    #: the stored profile's labels, ``__name__`` included
    labels: dict[str, str]
    url: str
    health: TargetHealth = TargetHealth.UNKNOWN
    #: start of the last scrape, Unix seconds
    last_scrape: float | None = None
    #: seconds the last scrape took
    last_scrape_duration: float | None = None
    #: why the last scrape failed; None when it succeeded
    last_error: str | None = None
    #: start of the last successful scrape, Unix seconds
    last_success: float | None = None
    #: ``hostname/pid`` of the worker that ran the last scrape
    worker: str | None = None
    successes: int = 0
    failures: int = 0
    #: of a cumulative type (memory, mutex, block): what the last scrape's delta came to, ``delta``
    #: when its change was pushed, else why it became the series' baseline (scraper.delta.Outcome)
    delta: str | None = None

    @property
    def delta_note(self) -> str | None:
        """Why the last scrape pushed nothing to stores of deltas, in words; None when it did."""
        if self.delta is None or self.delta == Outcome.DELTA.value:
            return None
        try:
            return OUTCOME_TEXT[Outcome(self.delta)]
        except ValueError:
            return self.delta

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able values, health as its string."""
        return {**asdict(self), "health": self.health.value}

    @classmethod
    def _from_record(cls, raw: bytes) -> TargetStatus:
        record = msgpack.unpackb(raw)

        def number(name: str) -> float | None:
            # Lua's cmsgpack writes whole floats as integers
            value = record.get(name)
            return None if value is None else float(value)

        return cls(
            key=record["key"],
            job=record["job"],
            profile_type=record["profile_type"],
            # Lua's cmsgpack writes an empty map as an empty array
            labels=dict(record.get("labels") or {}),
            url=record["url"],
            health=TargetHealth(record.get("health", TargetHealth.UNKNOWN.value)),
            last_scrape=number("last_scrape"),
            last_scrape_duration=number("last_scrape_duration"),
            last_error=record.get("last_error"),
            last_success=number("last_success"),
            worker=record.get("worker"),
            successes=int(record.get("successes", 0)),
            failures=int(record.get("failures", 0)),
            delta=record.get("delta"),
        )


# For each (field, record) pair of ARGV: keeps the counts and last_success of the stored record and
# replaces the rest with the new one; a key beat did not register is left alone. A record that cannot be
# decoded restarts its counts. One call records every scrape of a task's wave.
_RECORD = Script("""
for i = 1, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  -- only targets in beat's plan have a record: a scrape finishing after its target left the plan
  -- must not bring the record back
  if raw then
    local new = cmsgpack.unpack(ARGV[i + 1])
    local successes, failures, last_success = 0, 0, nil
    local ok, old = pcall(cmsgpack.unpack, raw)
    if ok and type(old) == 'table' then
      successes = tonumber(old.successes) or 0
      failures = tonumber(old.failures) or 0
      last_success = old.last_success
    end
    if new.health == 'up' then
      successes = successes + 1
      last_success = new.last_scrape
    else
      failures = failures + 1
    end
    new.successes = successes
    new.failures = failures
    new.last_success = last_success
    redis.call('HSET', KEYS[1], ARGV[i], cmsgpack.pack(new))
  end
end
return 0
""")


def _identity(spec: ScrapeSpec) -> dict[str, object]:
    return {
        "key": spec.key,
        "job": spec.job,
        "profile_type": spec.profile_type,
        "labels": spec.labels,
        "url": spec.url,
    }


def scrape_record(
    spec: ScrapeSpec,
    *,
    start: float,
    duration: float,
    error: Exception | None,
    worker: str,
    delta: str | None = None,
) -> tuple[str, bytes]:
    """How one scrape of ``spec`` went, as :func:`queue_records` stores it: health, times, error
    message, worker, what its delta came to (a cumulative type: a scraper.delta.Outcome value).

    Only ``str(error)`` is kept from the error (messages are secret-free by contract); nothing
    of the request is stored.
    """
    record = _identity(spec) | {
        "health": (TargetHealth.UP if error is None else TargetHealth.DOWN).value,
        "last_scrape": float(start),
        "last_scrape_duration": float(duration),
        "worker": worker,
    }
    if error is not None:
        record["last_error"] = str(error)
    if delta is not None:
        record["delta"] = delta
    return spec.key, msgpack.packb(record)


def queue_records(replies: NamedReplies, records: list[tuple[str, bytes]]) -> None:
    """Queue the write of ``records`` (:func:`scrape_record`), all in one script call, each counted
    in its record's successes or failures."""
    if records:
        replies.call(_RECORD, [keys.STATUS], [part for record in records for part in record])


def record_scrape(client: redis.Redis, spec: ScrapeSpec, *, start: float, duration: float,
                  error: Exception | None, worker: str, delta: str | None = None) -> None:
    """Record how one scrape of ``spec`` went (:func:`scrape_record`), now."""
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        queue_records(replies, [scrape_record(spec, start=start, duration=duration, error=error, worker=worker,
                                              delta=delta)])
        replies.execute()


def register_specs(client: redis.Redis, specs: list[ScrapeSpec], shard: str = "") -> None:
    """Make the stored records match the plan of one beat shard: add ``unknown`` records for new
    specs, keep the records of known ones, delete those this shard registered that left its plan
    (other shards' records are theirs to keep)."""
    planned = {spec.key for spec in specs}
    registered = keys.sharded(keys.STATUS_REGISTERED, shard)
    with client.pipeline(transaction=False) as pipe:
        for spec in specs:
            record = _identity(spec) | {"health": TargetHealth.UNKNOWN.value, "successes": 0, "failures": 0}
            pipe.hsetnx(keys.STATUS, spec.key, msgpack.packb(record))
        pipe.smembers(registered)
        previous = {key.decode() for key in pipe.execute()[-1]}
    stale = previous - planned
    with client.pipeline(transaction=False) as pipe:
        if stale:
            pipe.hdel(keys.STATUS, *stale)
            pipe.srem(registered, *stale)
        if planned - previous:
            pipe.sadd(registered, *(planned - previous))
        pipe.execute()


def read_statuses(
    client: redis.Redis,
    *,
    job: str | None = None,
    health: TargetHealth | None = None,
) -> list[TargetStatus]:
    """Every stored status, optionally of one job and one health; by job, down first, then labels."""
    # the clients never decode responses: values are bytes
    statuses = [TargetStatus._from_record(cast(bytes, raw)) for raw in client.hvals(keys.STATUS)]
    statuses.sort(key=lambda s: (s.job, _HEALTH_ORDER[s.health], sorted(s.labels.items()), s.key))
    return select(statuses, job=job, health=health)


def select(
    statuses: list[TargetStatus], *, job: str | None = None, health: TargetHealth | None = None
) -> list[TargetStatus]:
    """The statuses of ``job`` (any job when None) with ``health`` (any when None), order kept."""
    return [s for s in statuses if (job is None or s.job == job) and (health is None or s.health == health)]


def incr_counter(client: redis.Redis, name: str, by: int = 1) -> None:
    """Add ``by`` to the running total ``name`` (e.g. ``scrapes_done``, ``pushes_failed``); on a
    pipeline, the increment is queued with the rest."""
    client.hincrby(keys.COUNTERS, name, by)


def read_counters(client: redis.Redis) -> dict[str, int]:
    """Every running total by name."""
    return {cast(bytes, name).decode(): int(value) for name, value in client.hgetall(keys.COUNTERS).items()}
