"""Baselines in Redis: found by every worker, ordered by slot, bounded in time and bytes, and
written together with the profile's stash."""

from __future__ import annotations

import redis

from scraper import baseline, delivery, keys
from scraper.broker import NamedReplies
from scraper.delta import CUMULATIVE_SAMPLE_TYPES, Delta, compute
from scraper.plan import ScrapeSpec
from scraper.pprof import parse_profile
from scraper.receivers import Profile
from tests.conftest import DATA

INTERVAL = 10.0
BIG = 10**9
NAMES = CUMULATIVE_SAMPLE_TYPES["mutex"]


def spec(key: str = "series-1") -> ScrapeSpec:
    return ScrapeSpec(job="j", profile_type="mutex", url="http://t:1/debug/pprof/mutex",
                      labels={"job": "j", "__name__": "mutex"}, target_labels={"__address__": "t:1"},
                      interval_s=INTERVAL, timeout_s=5, offset_s=0, forward_to=("files", "pyro"), key=key)


def scraped(n: int, slot: float, previous) -> Delta:
    return compute(parse_profile((DATA / "go" / f"mutex_{n}.pb.gz").read_bytes())[1], NAMES, previous,
                   slot=slot, interval_s=INTERVAL)


def write(client: redis.Redis, delta: Delta, *, series: ScrapeSpec | None = None, budget: int = BIG,
          now: float | None = None) -> baseline.Stashed:
    series = series or spec()
    slot = delta.baseline.slot
    profile = Profile(id=f"id-{series.key}-{slot}", labels=series.labels, body=b"raw", start=now or slot,
                      end=(now or slot) + 1, url=series.url, cumulative=list(NAMES), is_delta=True, delta=delta.body)
    with client.pipeline(transaction=False) as pipe:
        replies = NamedReplies(pipe)
        baseline.queue_stash(replies, profile, list(series.forward_to), series, delta, budget)
        return baseline.stashed(replies.execute()[profile.id])


def stored(client: redis.Redis, series: ScrapeSpec | None = None):
    return baseline.read(client, [series or spec()])[(series or spec()).key]


def test_a_written_baseline_is_what_the_next_scrape_reads(redis_client: redis.Redis) -> None:
    first = scraped(1, 100.0, None)
    assert write(redis_client, first).baseline == "stored"
    assert stored(redis_client) == first.baseline


def test_the_delta_is_stashed_with_the_raw_body_and_comes_back_with_the_profile(redis_client: redis.Redis) -> None:
    first = scraped(1, 100.0, None)
    write(redis_client, first)
    second = scraped(2, 110.0, stored(redis_client))
    assert write(redis_client, second).delta_stashed
    profile = delivery.load(redis_client, "id-series-1-110.0")
    assert profile.body == b"raw"
    assert profile.delta == second.body
    assert profile.body_for(wants_deltas=True) == second.body
    assert profile.body_for(wants_deltas=False) == b"raw"


def test_a_baseline_scrape_stashes_the_raw_body_only(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    profile = delivery.load(redis_client, "id-series-1-100.0")
    assert profile.delta is None
    assert profile.body_for(wants_deltas=True) is None
    assert profile.body_for(wants_deltas=False) == b"raw"


def test_an_older_slot_finishing_late_never_replaces_a_newer_baseline(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    base = stored(redis_client)
    newer = scraped(3, 120.0, base)
    older = scraped(2, 110.0, base)  # read the same baseline, finished last
    assert write(redis_client, newer).delta_stashed
    late = write(redis_client, older)
    assert late.baseline == "stale"
    assert not late.delta_stashed  # its interval is inside the newer delta: pushing it would count it twice
    assert stored(redis_client).slot == 120.0
    assert delivery.load(redis_client, "id-series-1-110.0").delta is None


def test_a_delta_taken_against_a_baseline_that_changed_meanwhile_is_not_pushed(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    base = stored(redis_client)
    first = scraped(2, 110.0, base)
    second = scraped(3, 120.0, base)  # read before the 110 slot wrote
    assert write(redis_client, first).delta_stashed
    late = write(redis_client, second)
    assert late.baseline == "stored" and not late.delta_stashed
    assert stored(redis_client).slot == 120.0
    assert int(redis_client.hget(keys.COUNTERS, "deltas_superseded")) == 1


def test_a_worker_killed_before_writing_leaves_the_old_baseline_for_the_next_slot(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    scraped(2, 110.0, stored(redis_client))  # computed, never written: the worker died
    after = scraped(3, 120.0, stored(redis_client))
    assert after.against_slot == 100.0
    assert write(redis_client, after).delta_stashed


def test_a_redelivered_slot_keeps_the_delta_the_first_run_stashed(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    base = stored(redis_client)
    first_run = scraped(2, 110.0, base)
    write(redis_client, first_run)
    again = scraped(2, 110.0, stored(redis_client))
    assert write(redis_client, again).baseline == "stale"
    assert delivery.load(redis_client, "id-series-1-110.0").delta == first_run.body


def test_expired_baselines_are_pruned_and_their_bytes_given_back(redis_client: redis.Redis) -> None:
    old = spec("old-series")
    write(redis_client, scraped(1, 100.0, None), series=old)
    assert baseline.used_bytes(redis_client) > 0
    # three intervals later another series writes: the old baseline is gone
    write(redis_client, scraped(1, 100.0 + 3 * INTERVAL + 1, None), now=100.0 + 3 * INTERVAL + 1)
    assert stored(redis_client, old) is None
    assert baseline.used_bytes(redis_client) == len(stored(redis_client).encode())


def test_past_the_byte_budget_a_series_gets_no_baseline_and_it_is_counted(redis_client: redis.Redis) -> None:
    first = scraped(1, 100.0, None)
    result = write(redis_client, first, budget=len(first.baseline.encode()) - 1)
    assert result.baseline == "over_budget"
    assert stored(redis_client) is None
    assert baseline.used_bytes(redis_client) == 0
    assert int(redis_client.hget(keys.COUNTERS, "baselines_over_budget")) == 1


def test_the_byte_count_follows_replaced_baselines(redis_client: redis.Redis) -> None:
    write(redis_client, scraped(1, 100.0, None))
    write(redis_client, scraped(2, 110.0, stored(redis_client)))
    assert baseline.used_bytes(redis_client) == len(stored(redis_client).encode())
