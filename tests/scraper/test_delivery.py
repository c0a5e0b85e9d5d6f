"""Delivery: a profile is stored once for all its receivers, released idempotently, and Redis's
memory stays within two budgets without a silent loss."""

from __future__ import annotations

import redis

from scraper import delivery, keys
from scraper.config import parse_config_text
from scraper.receivers import Profile

BIG = 10**9


def profile(n: int = 1, size: int = 100) -> Profile:
    return Profile(id=f"id-{n}", labels={"job": "j", "__name__": "memory"}, body=bytes([n % 256]) * size,
                   start=float(n), end=float(n) + 1, url=f"http://t:{n}/debug/pprof/allocs")


def test_a_stashed_profile_comes_back_whole(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(), ["files"], BIG, BIG)
    assert delivery.load(redis_client, "id-1") == profile()


def test_loading_many_keeps_their_order_and_says_none_where_nothing_is_pending(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(1), ["files"], BIG, BIG)
    delivery.stash(redis_client, profile(3), ["files"], BIG, BIG)
    assert delivery.load_many(redis_client, ["id-3", "id-2", "id-1"]) == [profile(3), None, profile(1)]


def test_the_profile_stays_until_every_receiver_released_it(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(), ["files", "pyro"], BIG, BIG)
    delivery.release(redis_client, ["id-1"], "files")
    assert redis_client.smembers(keys.BODY_REFS.format(id="id-1")) == {b"pyro"}
    assert delivery.load(redis_client, "id-1") is not None
    delivery.release(redis_client, ["id-1"], "pyro")
    assert delivery.load(redis_client, "id-1") is None
    assert int(redis_client.get(keys.PENDING_BYTES)) == 0
    assert redis_client.zcard(keys.PENDING) == 0


def test_a_redelivered_release_does_not_free_the_profile_for_another_receiver(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(), ["files", "pyro"], BIG, BIG)
    delivery.release(redis_client, ["id-1"], "files")
    delivery.release(redis_client, ["id-1"], "files")  # the same push, delivered twice
    assert delivery.load(redis_client, "id-1") is not None


def test_stashing_the_same_slot_twice_counts_its_bytes_once(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(), ["files"], BIG, BIG)
    delivery.stash(redis_client, profile(), ["files"], BIG, BIG)
    delivery.release(redis_client, ["id-1"], "files")
    assert int(redis_client.get(keys.PENDING_BYTES)) == 0


def test_past_the_pending_budget_the_oldest_profile_is_dead_lettered_not_lost(redis_client: redis.Redis) -> None:
    first, second, third = profile(1), profile(2), profile(3)
    size = len(delivery._pack(first))
    for p in (first, second, third):
        delivery.stash(redis_client, p, ["files", "pyro"], max_pending_bytes=2 * size, deadletter_budget=BIG)

    assert delivery.load(redis_client, "id-1") is None
    assert delivery.load(redis_client, "id-3") is not None
    evicted = delivery.list_dead_letters(redis_client)
    assert [(d.id, d.receiver) for d in evicted] == [("id-1", "files"), ("id-1", "pyro")]
    assert "SCRAPER_MAX_PENDING_BYTES" in evicted[0].error
    assert evicted[0].profile() == first
    assert int(redis_client.hget(keys.COUNTERS, "pushes_evicted")) == 1
    assert int(redis_client.get(keys.PENDING_BYTES)) <= 2 * size


def test_past_the_dead_letter_budget_the_oldest_dead_letters_are_dropped_and_counted(redis_client: redis.Redis) -> None:
    entries = [delivery.DeadLetter.of(profile(n), "files", "store down", attempts=10) for n in range(1, 4)]
    one = len(delivery.msgpack.packb(delivery.asdict(entries[0]), use_bin_type=True))
    for entry in entries:
        delivery.dead_letter(redis_client, entry, max_bytes=2 * one + 10)

    assert [d.id for d in delivery.list_dead_letters(redis_client)] == ["id-2", "id-3"]
    assert int(redis_client.hget(keys.COUNTERS, "deadletters_dropped")) == 1


def _never(entry: delivery.DeadLetter) -> bool:
    return False


def test_dead_letters_are_taken_oldest_first_and_purged_whole(redis_client: redis.Redis) -> None:
    for n in (1, 2, 3):
        delivery.dead_letter(redis_client, delivery.DeadLetter.of(profile(n), "files", "down", 5), BIG)
    taken, _ = delivery.take_dead_letters(redis_client, 1, leave=_never)
    assert [e.id for e in taken] == ["id-1"]
    assert delivery.purge_dead_letters(redis_client) == 2
    assert delivery.take_dead_letters(redis_client, 10, leave=_never) == ([], [])
    assert int(redis_client.get(keys.DEADLETTER_BYTES) or 0) == 0


def test_dead_letters_to_be_left_stay_in_the_list_and_the_rest_are_taken(redis_client: redis.Redis) -> None:
    for n in (1, 2, 3, 4):
        delivery.dead_letter(redis_client, delivery.DeadLetter.of(profile(n), "files", "down", 5), BIG)
    taken, left = delivery.take_dead_letters(redis_client, 10, leave=lambda e: e.id in ("id-1", "id-3"))
    assert ([e.id for e in taken], [e.id for e in left]) == (["id-2", "id-4"], ["id-1", "id-3"])
    assert [e.id for e in delivery.list_dead_letters(redis_client)] == ["id-1", "id-3"]
    remaining = sum(len(raw) for raw in redis_client.lrange(keys.DEADLETTER, 0, -1))
    assert int(redis_client.get(keys.DEADLETTER_BYTES)) == remaining


def test_a_dead_letter_lists_without_its_body_and_with_its_age(redis_client: redis.Redis) -> None:
    delivery.dead_letter(redis_client, delivery.DeadLetter.of(profile(7, size=321), "pyro", "HTTP 400", 1), BIG)
    summary = delivery.list_dead_letters(redis_client)[0].summary(now=7 + 3600.04)
    assert summary["body_bytes"] == 321 and "body" not in summary
    assert summary["error"] == "HTTP 400"
    assert summary["age_s"] == 3600.0  # since the scrape started


def test_the_ingestion_window_is_pyroscopes_reject_older_than_and_the_file_store_has_none() -> None:
    config = parse_config_text("""
write:
  files: {type: file}
  pyro: {type: pyroscope, url: "http://p:4040"}
  pyro_2h: {type: pyroscope, url: "http://p:4040", reject_older_than: 2h}
  pyro_any: {type: pyroscope, url: "http://p:4040", reject_older_than: "0"}
""")
    assert delivery.ingestion_windows(config) == {"pyro": 3600.0, "pyro_2h": 7200.0}


def test_a_profile_whose_pushes_were_never_published_is_claimed_once_after_a_minute(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(1), ["files", "pyro"], BIG, BIG)  # its worker died here
    delivery.stash(redis_client, profile(2), ["files"], BIG, BIG)
    delivery.published(redis_client, ["id-2"])
    stored = redis_client.zscore(keys.UNPUBLISHED, "id-1")

    assert delivery.claim_orphans(redis_client, now=stored + delivery.ORPHAN_AFTER_S - 1) == {}
    later = stored + delivery.ORPHAN_AFTER_S + 1
    assert delivery.claim_orphans(redis_client, now=later) == {"id-1": ["files", "pyro"]}
    assert delivery.claim_orphans(redis_client, now=later) == {}  # another worker's sweep finds nothing


def test_an_orphan_delivered_or_evicted_meanwhile_is_forgotten_not_claimed(redis_client: redis.Redis) -> None:
    delivery.stash(redis_client, profile(1), ["files"], BIG, BIG)
    delivery.release(redis_client, ["id-1"], "files")
    assert delivery.claim_orphans(redis_client, now=10**10) == {}
    assert redis_client.zcard(keys.UNPUBLISHED) == 0
