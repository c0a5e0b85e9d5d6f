"""The push stage: what one attempt of a push comes to at a receiver, against real Redis, with a
receiver that records what it got and fails when told to."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import redis

from scraper import delivery, keys
from scraper.concurrency import in_place
from scraper.config import ReceiverConfig, parse_config_text
from scraper.errors import PushError, PushRejected, PushUnavailable
from scraper.push import PUSHES_AT_ONCE, PushStage
from scraper.receivers import Profile
from scraper.settings import Settings
from tests.inprocess import spawn_in

T = TypeVar("T")

MAX_RETRIES = 3
CONFIG = parse_config_text(f"""
scrape: {{}}
write:
  store: {{type: pyroscope, url: "http://127.0.0.1:1", min_backoff_period: 1s, max_backoff_period: 1h,
           max_backoff_retries: {MAX_RETRIES}}}
""")


class RecordingReceiver:
    """A receiver that keeps every profile it is given, or raises ``failure`` when one is set."""

    def __init__(self, name: str, *, blocks: bool = False, wants_deltas: bool = False) -> None:
        self.name = name
        self.blocks = blocks
        self.wants_deltas = wants_deltas
        self.received: list[Profile] = []
        #: the threads that ran its pushes
        self.threads: set[str] = set()
        self.failure: PushError | None = None
        #: when set, every push waits at it: pushes that are not side by side break it
        self.barrier: threading.Barrier | None = None
        self._lock = threading.Lock()

    def push(self, profile: Profile) -> None:
        if self.barrier is not None:
            self.barrier.wait()
        if self.failure is not None:
            raise self.failure
        with self._lock:
            self.received.append(profile)
            self.threads.add(threading.current_thread().name)

    def push_batch(self, profiles: list[Profile]) -> dict[str, PushError | None]:
        """As a blocking receiver (a file store) takes a batch: each profile, its error or None."""
        outcomes: dict[str, PushError | None] = {}
        for profile in profiles:
            try:
                self.push(profile)
                outcomes[profile.id] = None
            except PushError as exc:
                outcomes[profile.id] = exc
        return outcomes


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2 * PUSHES_AT_ONCE, thread_name_prefix="pusher") as pool:
        yield pool


def stage(client: redis.Redis, receiver: RecordingReceiver, threads: ThreadPoolExecutor, *,
          writes: Callable[..., Any] = in_place, visibility_timeout: int = 900) -> PushStage:
    def build(name: str, _: ReceiverConfig) -> RecordingReceiver:
        assert name == receiver.name
        return receiver

    return PushStage(client, lambda: CONFIG, Settings(visibility_timeout=visibility_timeout), spawn=spawn_in(threads),
                     writes=writes, build=build)


def stashed(client: redis.Redis, n: int = 1) -> Profile:
    profile = Profile(id=f"id-{n}", labels={"job": "j", "__name__": "goroutine"}, body=b"pprof %d" % n,
                      start=float(n), end=n + 1.0, url=f"http://t:{n}/debug/pprof/goroutine")
    delivery.stash(client, profile, ["store"], 10**9, 10**9)
    return profile


def test_a_stashed_profile_is_delivered_and_no_longer_pending(redis_client: redis.Redis,
                                                             threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")
    profile = stashed(redis_client)

    attempt = stage(redis_client, receiver, threads).attempt(["id-1"], "store", attempt=1)

    assert (attempt.report, attempt.retry) == (["delivered"], [])
    assert receiver.received == [profile]
    assert delivery.load(redis_client, "id-1") is None
    assert redis_client.hget(keys.COUNTERS, "pushes_done") == b"1"


def test_a_push_whose_profile_is_gone_has_nothing_to_deliver(redis_client: redis.Redis,
                                                            threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")

    attempt = stage(redis_client, receiver, threads).attempt(["delivered-before"], "store", attempt=1)

    assert (attempt.report, attempt.retry) == (["nothing to deliver"], [])
    assert receiver.received == []


def test_a_store_of_deltas_is_done_with_a_baseline_scrape_without_a_push(redis_client: redis.Redis,
                                                                         threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store", wants_deltas=True)
    # the first scrape of a cumulative series: a profile, no delta yet
    first = Profile(id="id-1", labels={"job": "j", "__name__": "memory"}, body=b"pprof", start=1.0, end=2.0,
                    url="http://t:1/debug/pprof/allocs", cumulative=["alloc_space"], delta=None)
    delivery.stash(redis_client, first, ["store"], 10**9, 10**9)

    attempt = stage(redis_client, receiver, threads).attempt(["id-1"], "store", attempt=1)

    assert attempt.report == ["delivered"]
    assert receiver.received == []
    assert delivery.load(redis_client, "id-1") is None


def test_a_failed_push_is_retried_no_later_than_half_the_visibility_timeout(redis_client: redis.Redis,
                                                                           threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")
    receiver.failure = PushUnavailable("HTTP 503", retry_after=3600)
    stashed(redis_client)

    attempt = stage(redis_client, receiver, threads, visibility_timeout=60).attempt(["id-1"], "store", attempt=1)

    assert (attempt.retry, attempt.delay, attempt.error) == (["id-1"], 30.0, receiver.failure)
    assert delivery.load(redis_client, "id-1") is not None, "kept for the retry"


def test_a_push_whose_retries_ran_out_is_dead_lettered_with_its_body(redis_client: redis.Redis,
                                                                    threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")
    receiver.failure = PushUnavailable("HTTP 503")
    profile = stashed(redis_client)

    attempt = stage(redis_client, receiver, threads).attempt(["id-1"], "store", attempt=MAX_RETRIES)

    assert (attempt.report, attempt.retry) == ([f"dead-lettered after {MAX_RETRIES} attempts: HTTP 503"], [])
    [letter] = delivery.list_dead_letters(redis_client)
    assert (letter.receiver, letter.attempts, letter.error, letter.profile()) == ("store", MAX_RETRIES, "HTTP 503",
                                                                                   profile)
    assert delivery.load(redis_client, "id-1") is None, "no longer pending"


def test_a_refused_push_is_dead_lettered_without_a_retry(redis_client: redis.Redis,
                                                        threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")
    receiver.failure = PushRejected("HTTP 400: invalid profile")
    stashed(redis_client)

    attempt = stage(redis_client, receiver, threads).attempt(["id-1"], "store", attempt=1)

    assert (attempt.report, attempt.retry) == (["dead-lettered after 1 attempts: HTTP 400: invalid profile"], [])
    assert [letter.id for letter in delivery.list_dead_letters(redis_client)] == ["id-1"]


def test_a_receiver_not_in_the_config_dead_letters_the_push(redis_client: redis.Redis,
                                                           threads: ThreadPoolExecutor) -> None:
    stashed(redis_client)

    attempt = stage(redis_client, RecordingReceiver("store"), threads).attempt(["id-1"], "elsewhere", attempt=1)

    assert attempt.retry == []
    assert "receiver 'elsewhere' is not in this process's config" in attempt.report[0]


def test_a_network_receiver_gets_a_tasks_profiles_several_at_once(redis_client: redis.Redis,
                                                                  threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store")
    # each push waits until PUSHES_AT_ONCE are in flight: pushed one after the other, the first would time out
    receiver.barrier = threading.Barrier(PUSHES_AT_ONCE, timeout=30)
    ids = [stashed(redis_client, n).id for n in range(2 * PUSHES_AT_ONCE)]

    attempt = stage(redis_client, receiver, threads).attempt(ids, "store", attempt=1)

    assert attempt.report == ["delivered"] * len(ids)
    assert sorted(p.id for p in receiver.received) == sorted(ids)


def test_a_receiver_whose_pushes_block_is_pushed_to_by_the_writer_threads(redis_client: redis.Redis,
                                                                        threads: ThreadPoolExecutor) -> None:
    receiver = RecordingReceiver("store", blocks=True)
    ids = [stashed(redis_client, n).id for n in range(3)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer") as writer:
        def writes(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
            return writer.submit(func, *args, **kwargs).result()

        attempt = stage(redis_client, receiver, threads, writes=writes).attempt(ids, "store", attempt=1)

    assert attempt.report == ["delivered"] * 3
    assert [name.split("_")[0] for name in receiver.threads] == ["writer"]
