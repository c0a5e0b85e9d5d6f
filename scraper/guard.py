"""The in-flight guard: a request that holds a profile open for ``seconds`` (process_cpu, fgprof,
custom delta types) is never in flight twice to the same URL, wherever the scrapes run.

Targets serve one such profile at a time (Go answers a second CPU profile with ``500 cpu profiling
already in use``, Node's @datadog/pprof a second wall profile with ``500 wall profiler already in
use``). The guard of a URL (without its query) is a Redis key holding the token of the task that
holds it, expiring after the request's timeout so that a worker that dies cannot block a target for
long. A scrape task takes the guards of all its held scrapes in one round trip (:func:`take`) and
gives them back with its record pipeline (:func:`queue_release`); a scrape whose guard was taken
waits for it (:func:`wait_for`), as a Prometheus scrape loop waits for its previous scrape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

from . import keys
from .broker import NamedReplies, Script
from .errors import ScrapeSkipped
from .plan import ScrapeSpec

#: How often a scrape waiting for the previous profile of its URL asks again.
POLL_S = 0.1

# KEYS: guards. ARGV: the token that took them. Deletes those still held by that token.
_RELEASE = Script("""
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then released = released + redis.call('del', key) end
end
return released
""")


# KEYS: a guard. ARGV: the token, its expiry in ms. Renews the expiry if the token still holds it.
_RENEW = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
""")

#: Seconds after the task took its guards past which a fetch starting renews its own first: the
#: guard's expiry counts from the take, and a busy worker can start a fetch long after.
RENEW_AFTER_S = 1.0


def new_token() -> str:
    """A token for the guards one task takes."""
    return uuid.uuid4().hex


def guard_key(spec: ScrapeSpec) -> str:
    url = urlsplit(spec.url)
    return keys.PROFILE_INFLIGHT.format(url=f"{url.scheme}://{url.netloc}{url.path}")


def _expiry_ms(spec: ScrapeSpec) -> int:
    return int((spec.timeout_s + 1) * 1000)


def take(client: redis.Redis, specs: list[ScrapeSpec], token: str) -> set[str]:
    """Take the guards of ``specs`` that are free, in one round trip; the keys of the specs whose
    guard is now held by ``token``."""
    if not specs:
        return set()
    with client.pipeline(transaction=False) as pipe:
        for spec in specs:
            pipe.set(guard_key(spec), token, nx=True, px=_expiry_ms(spec))
        taken = pipe.execute()
    return {spec.key for spec, ok in zip(specs, taken) if ok}


def wait_for(client: redis.Redis, spec: ScrapeSpec, token: str, *, wait_until: float,
             clock: Callable[[], float] = time.time) -> None:
    """Wait until ``spec``'s guard is free and take it for ``token``; raise ScrapeSkipped if it is still
    held at ``wait_until`` (Unix seconds: the end of the slot's interval).

    Skipping at once instead would lose the next profile whenever one started a second late; waiting
    lets the lag shrink by interval - seconds (1 s) per slot.
    """
    key = guard_key(spec)
    while not client.set(key, token, nx=True, px=_expiry_ms(spec)):
        if clock() + POLL_S > wait_until:
            raise ScrapeSkipped(
                "the previous profile request to this URL was still in flight at the end of this slot's "
                "interval (targets serve one such profile at a time); skipped this one",
                spec.url,
            )
        time.sleep(POLL_S)


def renew(client: redis.Redis, spec: ScrapeSpec, token: str) -> bool:
    """Give ``spec``'s guard held by ``token`` a full expiry again, from now: its request starts now.
    False when ``token`` no longer holds it (it expired and another scrape took it)."""
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        replies.call(_RENEW, [guard_key(spec)], [token, _expiry_ms(spec)], name="renewed")
        return bool(replies.execute()["renewed"])


def queue_release(replies: NamedReplies, specs: list[ScrapeSpec], token: str) -> None:
    """Queue the release of ``specs``' guards held by ``token`` (one that expired and was taken by
    another scrape meanwhile is left to it)."""
    if specs:
        replies.call(_RELEASE, [guard_key(spec) for spec in specs], [token])

