"""Every Redis key the scraper uses, under one prefix, so an operator can find (and a test can search) them all."""

from __future__ import annotations

PREFIX = "pprof-scraper:"

#: the Celery queues (each a Redis list of that name, outside PREFIX: kombu names it): scrape
#: tasks from beat, push tasks from the scrapes
SCRAPE_QUEUE = "scrape"
PUSH_QUEUE = "push"

#: the lock held by the one beat that emits (value: the holder's token)
BEAT_LOCK = PREFIX + "beat:lock"
#: Unix time up to which the emitting beat has sent slots; a beat taking over starts after it
BEAT_EMITTED_UNTIL = PREFIX + "beat:emitted-until"
#: hash of beat's state: config version, last reload error
BEAT_STATE = PREFIX + "beat:state"
#: hash of targets relabeling dropped, field = job, value = JSON list of {labels, reason}
DROPPED = PREFIX + "dropped"
#: a validated profile (msgpack: body, labels, times, URL) waiting for its pushes, by push id
BODY = PREFIX + "body:{id}"
#: the receivers that still have to take the profile of a push id
BODY_REFS = PREFIX + "body-refs:{id}"
#: pending push ids scored by when they were stored, oldest first: what a full budget evicts
PENDING = PREFIX + "pending"
#: push ids stashed whose push tasks are not known to be published yet, scored by when they were
#: stored: a worker killed in between leaves its ids here for another worker's sweep to send
UNPUBLISHED = PREFIX + "unpublished"
#: bytes of all pending profiles
PENDING_BYTES = PREFIX + "pending-bytes"
#: pushes that used up their retries (or were evicted): a list of msgpack entries, newest first
DEADLETTER = PREFIX + "deadletter"
#: bytes of the dead-letter list
DEADLETTER_BYTES = PREFIX + "deadletter-bytes"
#: a request holding a profile open (CPU, wall, fgprof) in flight, by scheme://address/path (a redis-py Lock)
PROFILE_INFLIGHT = PREFIX + "inflight:{url}"
#: the baseline of a cumulative profile series (hash: slot, data), by spec key: what its next delta subtracts
BASELINE = PREFIX + "baseline:{key}"
#: baseline keys scored by when they expire (Unix seconds): what the next write prunes
BASELINES = PREFIX + "baselines"
#: bytes of all baselines
BASELINE_BYTES = PREFIX + "baseline-bytes"
#: hash of running totals: scrapes done/failed/dropped, pushes done/failed/deadlettered
COUNTERS = PREFIX + "counters"
#: hash of target status records, field = spec key
STATUS = PREFIX + "status"
#: set of the spec keys a beat shard registered: what it may prune when its plan changes
STATUS_REGISTERED = PREFIX + "status-registered"


def sharded(key: str, shard: str) -> str:
    """``key`` of one beat shard (``SCRAPER_BEAT_SHARD``); the default, unnamed shard uses ``key`` itself."""
    return f"{key}:{shard}" if shard else key
