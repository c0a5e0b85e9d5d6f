"""The lock that lets exactly one beat emit while others stand by."""

from __future__ import annotations

import logging
import time
import uuid

import redis

from scraper import keys

log = logging.getLogger(__name__)

_EXTEND_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class BeatLock:
    """A Redis key with a short TTL that the emitting beat renews on every tick.

    A beat that dies stops renewing it, so a standby takes over once the TTL runs out; a beat
    that finds it has lost the lock stops emitting at once.
    """

    def __init__(self, client: redis.Redis, ttl_s: float, key: str = keys.BEAT_LOCK) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.key = key
        self.token = uuid.uuid4().hex
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
        if self.held and self.client.eval(_EXTEND_IF_OWNER, 1, self.key, self.token, self.ttl_ms):
            self._renewed = now
            return True
        if self.held:
            log.warning("beat lost its lock to another beat; standing by")
        self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        if self.held:
            self._renewed = now
            log.info("beat holds the lock and emits scrapes")
        return self.held

    def release(self) -> None:
        """Give the lock up so a standby can take over at once."""
        if self.held:
            self.client.eval(_RELEASE_IF_OWNER, 1, self.key, self.token)
            self.held = False
