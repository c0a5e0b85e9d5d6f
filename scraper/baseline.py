"""The baselines of cumulative profiles in Redis, where every worker on every host finds them.

The delta of a scrape (:mod:`scraper.delta`) subtracts the previous scrape of its series. Consecutive
slots of a target run on whichever worker is free, so the previous scrape's values live in Redis:
one hash per series (``slot``, ``data``: :meth:`Baseline.encode`), keyed by the spec's key.

- Read once per scrape task, for all its cumulative series, in one pipeline (:func:`read`).
- Written together with the profile's stash, in the scrape's one record pipeline, by one script
  (:func:`queue_stash`) that compares slots: a scrape never replaces a newer slot's baseline, and
  its delta goes out only if the baseline it was taken against is still the stored one. So two
  slots of a series finishing out of order, or a redelivered slot, never count an interval twice;
  a scrape that is superseded pushes nothing and the next delta covers its interval. A worker
  killed between reading and writing leaves the old baseline in place: the next slot's delta
  covers both intervals.
- Bounded: a baseline is used for two intervals after its slot and pruned (a few per write) soon
  after; all baselines together stay under ``SCRAPER_MAX_BASELINE_BYTES`` — past it a series is
  given no baseline (it pushes nothing), counted as ``baselines_over_budget``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from . import delivery, keys
from .broker import NamedReplies, Script
from .delta import Baseline, Delta
from .plan import ScrapeSpec
from .receivers import Profile

log = logging.getLogger(__name__)

#: How long past its slot a baseline is kept, in intervals (it is used for two).
KEEP_INTERVALS = 3
#: Expired baselines a write deletes at most, so that one write stays cheap.
PRUNE_PER_WRITE = 16

# KEYS: blob, refs, pending zset, pending bytes (the stash, as delivery's _STASH), baseline hash,
#       baseline index, baseline bytes, counters, unpublished (as delivery's _STASH).
# ARGV: blob head, id, now, delta tail ('' when none), slot the delta was taken against ('' when
#       none), this slot, baseline data, baseline expires at, baseline budget, receivers...
# Without receivers, only the baseline is written (the profile went to this host's file store).
# Returns {1 if the delta is stashed else 0, the baseline outcome, pending total}.
_STASH_WITH_BASELINE = Script("""
local pruned = redis.call('zrangebyscore', KEYS[6], '-inf', ARGV[3], 'LIMIT', 0, PRUNE_PER_WRITE)
for _, key in ipairs(pruned) do
  redis.call('decrby', KEYS[7], redis.call('hstrlen', key, 'data'))
  redis.call('del', key)
  redis.call('zrem', KEYS[6], key)
end
local stored = redis.call('hget', KEYS[5], 'slot')
local outcome = 'stale'
local with_delta = false
if (not stored) or tonumber(stored) < tonumber(ARGV[6]) then
  with_delta = ARGV[4] ~= '' and stored == ARGV[5]
  outcome = 'stored'
  local old = redis.call('hstrlen', KEYS[5], 'data')
  local total = tonumber(redis.call('get', KEYS[7]) or '0') - old + string.len(ARGV[7])
  if total > tonumber(ARGV[9]) then
    redis.call('del', KEYS[5])
    redis.call('zrem', KEYS[6], KEYS[5])
    redis.call('decrby', KEYS[7], old)
    redis.call('hincrby', KEYS[8], 'baselines_over_budget', 1)
    outcome = 'over_budget'
  else
    redis.call('hset', KEYS[5], 'slot', ARGV[6], 'data', ARGV[7])
    redis.call('zadd', KEYS[6], ARGV[8], KEYS[5])
    redis.call('incrby', KEYS[7], string.len(ARGV[7]) - old)
  end
end
if ARGV[4] ~= '' and not with_delta then
  redis.call('hincrby', KEYS[8], 'deltas_superseded', 1)
end
-- a later run of a slot already stashed keeps the first run's blob (and its delta)
if #ARGV < 10 or (outcome == 'stale' and redis.call('exists', KEYS[1]) == 1) then
  return {0, outcome, tonumber(redis.call('get', KEYS[4]) or '0')}
end
local blob = ARGV[1] .. (with_delta and ARGV[4] or '\\192')
redis.call('set', KEYS[1], blob)
for i = 10, #ARGV do redis.call('sadd', KEYS[2], ARGV[i]) end
redis.call('zadd', KEYS[9], 'NX', ARGV[3], ARGV[2])
local total
if redis.call('zadd', KEYS[3], 'NX', ARGV[3], ARGV[2]) == 1 then
  total = redis.call('incrby', KEYS[4], string.len(blob))
else
  total = tonumber(redis.call('get', KEYS[4]) or '0')
end
return {with_delta and 1 or 0, outcome, total}
""".replace("PRUNE_PER_WRITE", str(PRUNE_PER_WRITE)))


def baseline_key(spec: ScrapeSpec) -> str:
    return keys.BASELINE.format(key=spec.key)


def read(client: redis.Redis, specs: list[ScrapeSpec]) -> dict[str, Baseline | None]:
    """The stored baseline of each spec (None when there is none, or it cannot be read), by spec key,
    in one round trip."""
    if not specs:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for spec in specs:
            pipe.hget(baseline_key(spec), "data")
        found = pipe.execute()
    out: dict[str, Baseline | None] = {}
    for spec, data in zip(specs, found):
        out[spec.key] = None
        if data is not None:
            try:
                out[spec.key] = Baseline.decode(data)
            except (ValueError, KeyError, TypeError) as exc:
                # A baseline written by another version, or damaged: start a new one.
                log.warning("unreadable baseline of %s (%s), starting a new one: %s", spec.url, spec.key, exc)
    return out


@dataclass(frozen=True)
class Stashed:
    """What the write of a cumulative profile came to."""

    #: whether its delta was stashed for Pyroscope
    delta_stashed: bool
    #: ``stored``, ``stale`` (a newer slot holds the baseline) or ``over_budget``
    baseline: str
    #: bytes pending for receivers, after this stash
    pending_total: int


def queue_stash(replies: NamedReplies, profile: Profile, receivers: list[str], spec: ScrapeSpec,
                delta: Delta, budget: int) -> None:
    """Queue the stash of ``profile`` (its ``delta`` set when a receiver wants it) for ``receivers``
    together with the write of ``delta.baseline`` (only that when ``receivers`` is empty); its reply,
    named by the push id, becomes a :class:`Stashed` through :func:`stashed`."""
    head, tail = delivery.pack_parts(profile)
    new = delta.baseline
    expires_at = new.slot + KEEP_INTERVALS * spec.interval_s
    replies.call(
        _STASH_WITH_BASELINE,
        [*delivery.stash_keys(profile.id), baseline_key(spec), keys.BASELINES, keys.BASELINE_BYTES, keys.COUNTERS,
         keys.UNPUBLISHED],
        [head if receivers else b"", profile.id, profile.start, tail if profile.delta is not None and receivers else b"",
         slot_text(delta.against_slot) if delta.against_slot is not None else "", slot_text(new.slot),
         new.encode(), expires_at, budget, *receivers],
        name=profile.id,
    )


def stashed(reply: list[Any]) -> Stashed:
    """The reply of a :func:`queue_stash` script."""
    delta, outcome, total = reply
    return Stashed(bool(delta), outcome.decode() if isinstance(outcome, bytes) else str(outcome), int(total))


def slot_text(slot: float) -> str:
    """A slot as the baseline hash stores it: the same float always gives the same text."""
    return repr(float(slot))


def used_bytes(client: redis.Redis) -> int:
    """Bytes of all baselines in Redis."""
    return int(client.get(keys.BASELINE_BYTES) or 0)
