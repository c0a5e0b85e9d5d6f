"""Delivery of a validated profile to its receivers, with nothing lost on the way.

The body is stored once in Redis under its push id (a claim check) with the set of receivers
that still have to take it; each push task names the id, never the bytes, so the broker carries
a few hundred bytes per push instead of the body twice (Redis keeps a copy of every unacked
message). A push that used up its retries is moved, body and all, to the dead-letter list, from
where ``pprof-scraper deadletter replay`` sends it again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import msgpack
import redis

from . import keys

#: How long a stashed body may wait for its pushes; longer than any retry horizon, a safety net
#: only: bodies are deleted as soon as every receiver has taken them.
BODY_TTL_S = 24 * 3600

_RELEASE = """
redis.call('srem', KEYS[2], ARGV[1])
if redis.call('scard', KEYS[2]) == 0 then redis.call('del', KEYS[1], KEYS[2]) end
return 0
"""


def stash_body(client: redis.Redis, push_id: str, body: bytes, receivers: list[str], ttl_s: int = BODY_TTL_S) -> None:
    """Keep ``body`` under ``push_id`` until every receiver in ``receivers`` has released it."""
    refs = keys.BODY_REFS.format(id=push_id)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.BODY.format(id=push_id), body, ex=ttl_s)
        pipe.sadd(refs, *receivers)
        pipe.expire(refs, ttl_s)
        pipe.execute()


def load_body(client: redis.Redis, push_id: str) -> bytes | None:
    """The stashed body of ``push_id``; None when every receiver already took it (or it expired)."""
    return client.get(keys.BODY.format(id=push_id))


def release_body(client: redis.Redis, push_id: str, receiver: str) -> None:
    """Say that ``receiver`` is done with the body; the last one to say so deletes it. Idempotent."""
    client.eval(_RELEASE, 2, keys.BODY.format(id=push_id), keys.BODY_REFS.format(id=push_id), receiver)


def pending_receivers(client: redis.Redis, push_id: str) -> set[str]:
    """The receivers that have not yet released the body of ``push_id``."""
    return {m.decode() for m in client.smembers(keys.BODY_REFS.format(id=push_id))}


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

    def summary(self) -> dict[str, object]:
        """The entry without its body, for listing."""
        out = asdict(self)
        out["body_bytes"] = len(out.pop("body"))
        return out


def dead_letter(client: redis.Redis, entry: DeadLetter) -> None:
    """Append ``entry`` to the dead-letter list (newest first)."""
    client.lpush(keys.DEADLETTER, msgpack.packb(asdict(entry), use_bin_type=True))


def list_dead_letters(client: redis.Redis, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, oldest first, without removing them."""
    raw = client.lrange(keys.DEADLETTER, -limit, -1)
    return [DeadLetter(**msgpack.unpackb(item, raw=False)) for item in reversed(raw)]


def take_dead_letter(client: redis.Redis) -> DeadLetter | None:
    """Remove and return the oldest dead letter; None when there is none."""
    item = client.rpop(keys.DEADLETTER)
    return DeadLetter(**msgpack.unpackb(item, raw=False)) if item else None


def purge_dead_letters(client: redis.Redis) -> int:
    """Delete every dead letter; return how many there were."""
    with client.pipeline(transaction=True) as pipe:
        pipe.llen(keys.DEADLETTER)
        pipe.delete(keys.DEADLETTER)
        count, _ = pipe.execute()
    return int(count)
