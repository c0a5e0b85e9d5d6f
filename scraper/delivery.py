"""Delivery of a validated profile to its receivers, with nothing lost on the way and Redis's
memory bounded.

A validated profile (body, labels, times, URL) is stored once in Redis under its push id — a
claim check — with the set of receivers that still have to take it. Each push task names the id
and a receiver, never the bytes, so a profile crosses the broker once however many receivers it
goes to, and Redis's unacked copy of a message stays small.

Two byte budgets bound what an outage can cost:

- pending profiles (``max_pending_bytes``): past it, the oldest pending profile is moved to the
  dead-letter list (its pushes then find nothing to do), counted as ``pushes_evicted``;
- dead letters (``max_deadletter_bytes``): past it, the oldest dead letters are dropped,
  counted as ``deadletters_dropped`` and logged — the one place where profiles are given up,
  and only after both budgets are spent.

``pprof-scraper deadletter replay`` puts dead letters back as pending profiles and pushes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import msgpack
import redis

from . import keys
from .broker import NamedReplies, Script, text
from .config import Config, PyroscopeReceiverConfig
from .receivers import Profile

log = logging.getLogger(__name__)

# KEYS: blob, refs, pending zset, pending bytes, unpublished zset. ARGV: blob, id, now, receivers...
# Counted once per id, so a duplicate scrape of the same slot does not inflate the total.
_STASH = Script("""
redis.call('set', KEYS[1], ARGV[1])
for i = 4, #ARGV do redis.call('sadd', KEYS[2], ARGV[i]) end
redis.call('zadd', KEYS[5], 'NX', ARGV[3], ARGV[2])
if redis.call('zadd', KEYS[3], 'NX', ARGV[3], ARGV[2]) == 1 then
  return redis.call('incrby', KEYS[4], string.len(ARGV[1]))
end
return tonumber(redis.call('get', KEYS[4]) or '0')
""")

# KEYS: blob, refs, pending zset, pending bytes. ARGV: receiver, id.
_RELEASE = Script("""
redis.call('srem', KEYS[2], ARGV[1])
if redis.call('scard', KEYS[2]) == 0 then
  local size = redis.call('strlen', KEYS[1])
  redis.call('del', KEYS[1], KEYS[2])
  if redis.call('zrem', KEYS[3], ARGV[2]) == 1 then redis.call('decrby', KEYS[4], size) end
end
return 0
""")


def stash_keys(push_id: str) -> list[str]:
    return [keys.BODY.format(id=push_id), keys.BODY_REFS.format(id=push_id), keys.PENDING, keys.PENDING_BYTES]


def _pack(profile: Profile) -> bytes:
    return msgpack.packb(asdict(profile), use_bin_type=True)


def pack_parts(profile: Profile) -> tuple[bytes, bytes]:
    """The stashed form of ``profile`` in two parts: all of it up to its last field's value (``delta``),
    and that value; ``head + tail`` is the profile with its delta, ``head + b"\\xc0"`` (nil) without."""
    head = _pack(replace(profile, delta=None))
    return head[:-1], msgpack.packb(profile.delta, use_bin_type=True)


def stash(client: redis.Redis, profile: Profile, receivers: list[str], max_pending_bytes: int,
          deadletter_budget: int) -> None:
    """Keep ``profile`` until every receiver in ``receivers`` has released it; past the pending
    budget, move the oldest pending profiles to the dead-letter list."""
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        queue_stash(replies, profile, receivers)
        total = replies.execute()[profile.id]
    keep_within_budget(client, total, profile.id, max_pending_bytes, deadletter_budget)


def queue_stash(replies: NamedReplies, profile: Profile, receivers: list[str]) -> None:
    """Queue what :func:`stash` does in Redis, so a scrape's writes share one round trip. Its reply,
    named by the push id, is the pending total, for :func:`keep_within_budget` once the pipeline has run."""
    replies.call(_STASH, [*stash_keys(profile.id), keys.UNPUBLISHED],
                 [_pack(profile), profile.id, time.time(), *receivers], name=profile.id)


def published(client: redis.Redis, push_ids: list[str]) -> None:
    """Say that the push tasks of ``push_ids`` are in the broker: no sweep needs to send them."""
    if push_ids:
        client.zrem(keys.UNPUBLISHED, *push_ids)


#: Seconds after which a stashed profile whose pushes were never published is taken for an orphan:
#: far longer than the gap between a scrape's stash and its publish (one round trip each).
ORPHAN_AFTER_S = 60.0


def claim_orphans(client: redis.Redis, *, now: float | None = None, limit: int = 100) -> dict[str, list[str]]:
    """Profiles stashed over :data:`ORPHAN_AFTER_S` ago whose push tasks were never published (the
    worker died in between): for each push id, the receivers still owed it. Each is claimed by one
    caller only (ZREM is the claim), who must publish its pushes; ids whose profile is gone (delivered
    or evicted meanwhile) are dropped from the set and not returned."""
    cutoff = (time.time() if now is None else now) - ORPHAN_AFTER_S
    claimed: dict[str, list[str]] = {}
    for raw in client.zrangebyscore(keys.UNPUBLISHED, "-inf", cutoff, start=0, num=limit):
        push_id = text(raw)
        if client.zrem(keys.UNPUBLISHED, push_id):
            receivers = sorted(text(r) for r in client.smembers(keys.BODY_REFS.format(id=push_id)))
            if receivers:
                claimed[push_id] = receivers
    return claimed


def keep_within_budget(client: redis.Redis, total: int, newest_id: str, max_pending_bytes: int,
                       deadletter_budget: int) -> None:
    """While the pending total is over ``max_pending_bytes``, move the oldest pending profile (never
    ``newest_id``, the one just stashed) to the dead-letter list."""
    while int(total) > max_pending_bytes:
        oldest = client.zpopmin(keys.PENDING)
        if not oldest or text(oldest[0][0]) == newest_id:
            break
        total = _evict(client, text(oldest[0][0]), max_pending_bytes, deadletter_budget)


def _evict(client: redis.Redis, push_id: str, max_pending_bytes: int, deadletter_budget: int) -> int:
    """Move one pending profile (already taken off the pending set) to the dead-letter list."""
    blob_key, refs_key = keys.BODY.format(id=push_id), keys.BODY_REFS.format(id=push_id)
    with client.pipeline(transaction=True) as pipe:
        pipe.get(blob_key)
        pipe.smembers(refs_key)
        pipe.delete(blob_key, refs_key)
        blob, receivers, _ = pipe.execute()
    if blob is None:
        return int(client.get(keys.PENDING_BYTES) or 0)
    total = client.decrby(keys.PENDING_BYTES, len(blob))
    profile = Profile(**msgpack.unpackb(blob, raw=False))
    reason = f"evicted unsent: pending pushes passed SCRAPER_MAX_PENDING_BYTES ({max_pending_bytes} bytes)"
    for receiver in sorted(r.decode() for r in receivers):
        dead_letter(client, DeadLetter.of(profile, receiver, reason, attempts=0), deadletter_budget)
    client.hincrby(keys.COUNTERS, "pushes_evicted", 1)
    log.error("pending pushes over budget: profile %s (%s) moved to the dead-letter list", push_id, profile.url)
    return int(total)


def load(client: redis.Redis, push_id: str) -> Profile | None:
    """The pending profile of ``push_id``; None when every receiver already took it (or it was evicted)."""
    return load_many(client, [push_id])[0]


def load_many(client: redis.Redis, push_ids: list[str]) -> list[Profile | None]:
    """The pending profiles of ``push_ids``, in their order, in one round trip; None where there is none."""
    blobs = client.mget([keys.BODY.format(id=push_id) for push_id in push_ids]) if push_ids else []
    return [None if blob is None else Profile(**msgpack.unpackb(blob, raw=False)) for blob in blobs]


def release(client: redis.Redis, push_ids: list[str], receiver: str) -> None:
    """Say that ``receiver`` is done with the profiles of ``push_ids``, in one round trip (:func:`queue_release`)."""
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        for push_id in push_ids:
            queue_release(replies, push_id, receiver)
        replies.execute()


def queue_release(replies: NamedReplies, push_id: str, receiver: str) -> None:
    """Queue saying that ``receiver`` is done with the profile; the last one to say so deletes it. Idempotent."""
    replies.call(_RELEASE, stash_keys(push_id), [receiver, push_id])


@dataclass
class DeadLetter:
    """A push that could not be delivered, kept whole so it can be replayed."""

    id: str
    receiver: str
    labels: dict[str, str]
    start: float
    end: float
    url: str
    error: str
    attempts: int
    body: bytes = field(repr=False)
    failed_at: float = field(default_factory=time.time)
    #: as in Profile: a dead-lettered push of a cumulative profile replays its delta to Pyroscope
    cumulative: list[str] = field(default_factory=list)
    is_delta: bool = False
    delta: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, profile: Profile, receiver: str, error: str, attempts: int) -> DeadLetter:
        return cls(id=profile.id, receiver=receiver, labels=profile.labels, start=profile.start, end=profile.end,
                   url=profile.url, error=error, attempts=attempts, body=profile.body,
                   cumulative=profile.cumulative, is_delta=profile.is_delta, delta=profile.delta)

    def profile(self) -> Profile:
        return Profile(id=self.id, labels=self.labels, body=self.body, start=self.start, end=self.end, url=self.url,
                       cumulative=self.cumulative, is_delta=self.is_delta, delta=self.delta)

    def age_s(self, now: float) -> float:
        """Seconds since the profile was scraped: what a store's ingestion window is measured against."""
        return now - self.start

    def summary(self, now: float) -> dict[str, object]:
        """The entry without its body, with its age at ``now``, for listing."""
        out = asdict(self)
        out["body_bytes"] = len(out.pop("body"))
        out["age_s"] = round(self.age_s(now), 1)
        delta = out.pop("delta")
        if delta is not None:
            out["delta_bytes"] = len(delta)
        return out


def dead_letter(client: redis.Redis, entry: DeadLetter, max_bytes: int) -> None:
    """Append ``entry`` to the dead-letter list (newest first); past ``max_bytes``, drop the oldest."""
    item = msgpack.packb(asdict(entry), use_bin_type=True)
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.DEADLETTER, item)
        pipe.incrby(keys.DEADLETTER_BYTES, len(item))
        _, total = pipe.execute()
    while int(total) > max_bytes:
        oldest = client.rpop(keys.DEADLETTER)
        if oldest is None:
            client.set(keys.DEADLETTER_BYTES, 0)
            break
        total = client.decrby(keys.DEADLETTER_BYTES, len(oldest))
        client.hincrby(keys.COUNTERS, "deadletters_dropped", 1)
        dropped = msgpack.unpackb(oldest, raw=False)
        log.error("dead-letter list over SCRAPER_MAX_DEADLETTER_BYTES (%d): dropped the oldest, %s for %s (%s)",
                  max_bytes, dropped["id"], dropped["receiver"], dropped["url"])


def list_dead_letters(client: redis.Redis, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, oldest first, without removing them."""
    raw = client.lrange(keys.DEADLETTER, -limit, -1)
    return [DeadLetter(**msgpack.unpackb(item, raw=False)) for item in reversed(raw)]


def ingestion_windows(config: Config) -> dict[str, float]:
    """Seconds after its scrape that each receiver's store still takes a profile (Pyroscope refuses
    older ones for good: its ``reject_older_than``); receivers without such a window are absent."""
    return {name: receiver.reject_older_than.total_seconds() for name, receiver in config.write.items()
            if isinstance(receiver, PyroscopeReceiverConfig) and receiver.reject_older_than.total_seconds() > 0}


def take_dead_letters(client: redis.Redis, limit: int,
                      leave: Callable[[DeadLetter], bool]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Remove and return up to ``limit`` dead letters, oldest first, except those ``leave`` says to
    leave in the list; return (taken, left). Entries dead-lettered meanwhile are not disturbed."""
    taken: list[DeadLetter] = []
    left: list[DeadLetter] = []
    while len(taken) < limit:
        # the oldest entry not yet left: those left stay at the tail, behind it
        raw = client.lrange(keys.DEADLETTER, -(len(left) + 1), -(len(left) + 1))
        if not raw:
            break
        entry = DeadLetter(**msgpack.unpackb(raw[0], raw=False))
        if leave(entry):
            left.append(entry)
        elif client.lrem(keys.DEADLETTER, -1, raw[0]):  # type: ignore[arg-type]  # bytes, as stored; 0 when trimmed meanwhile
            client.decrby(keys.DEADLETTER_BYTES, len(raw[0]))
            taken.append(entry)
    return taken, left


def purge_dead_letters(client: redis.Redis) -> int:
    """Delete every dead letter; return how many there were."""
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(keys.DEADLETTER)
        pipe.delete(keys.DEADLETTER, keys.DEADLETTER_BYTES)
        count, _ = pipe.execute()
    return int(count)
