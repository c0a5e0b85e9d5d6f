"""The lock that lets exactly one beat emit while others stand by."""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import LockError

from scraper import keys

log = logging.getLogger(__name__)


class BeatLock:
    """A Redis key with a short TTL that the emitting beat renews on every tick.

    A beat that dies stops renewing it, so a standby takes over once the TTL runs out; a beat
    that finds it has lost the lock stops emitting at once. Taking, renewing and releasing it only
    while this beat's token is in the key is redis-py's :class:`redis.lock.Lock`.
    """

    def __init__(self, client: redis.Redis, ttl_s: float, key: str = keys.BEAT_LOCK) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.key = key
        # thread_local=False: the lock is renewed by ticks and released at close, not always on one thread.
        self._lock = client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self.held = False
        self._renewed = 0.0

    def hold(self) -> bool:
        """Renew the lock if this beat holds it, take it if it is free; True when this beat holds it now.

        A held lock is renewed once a quarter of its TTL has passed, not on every call: beat ticks
        ten times a second, and the lock cannot expire within the remaining three quarters.
        """
        now = time.monotonic()
        if self.held and now - self._renewed < self.ttl_ms / 4000:
            return True
        if self.held:
            try:
                self._lock.reacquire()  # the TTL again, if the key still holds our token
                self._renewed = now
                return True
            except LockError:
                log.warning("beat lost its lock to another beat; standing by")
                self.held = False
        self.held = self._lock.acquire(blocking=False)
        if self.held:
            self._renewed = now
            log.info("beat holds the lock and emits scrapes")
        return self.held

    def release(self) -> None:
        """Give the lock up so a standby can take over at once."""
        if self.held:
            self.held = False
            try:
                self._lock.release()
            except LockError:
                pass  # it had expired or passed to another beat: nothing of ours to release
