"""Target status in Redis: health, counts and errors per (target, profile type); registration follows the plan."""

from __future__ import annotations

import hashlib
import json
import threading

import redis
from rich.console import Console

from scraper import keys
from scraper.errors import ConnectFailed, HTTPStatusError
from scraper.plan import ScrapeSpec
from scraper.status import (
    TargetHealth,
    incr_counter,
    read_counters,
    read_statuses,
    record_scrape,
    register_specs,
)
from scraper.status_view import render_table, statuses_json


def make_spec(job: str = "app", address: str = "10.0.0.1:6060", profile_type: str = "process_cpu", **extra: str) -> ScrapeSpec:
    labels = {"job": job, "instance": address, "service_name": job, "__name__": profile_type, **extra}
    key = hashlib.sha256(repr((job, sorted(labels.items()))).encode()).hexdigest()[:16]
    return ScrapeSpec(
        job=job,
        profile_type=profile_type,
        url=f"http://{address}/debug/pprof/profile?seconds=14",
        labels=labels,
        target_labels={"__address__": address, **extra},
        interval_s=15.0,
        timeout_s=15.0,
        offset_s=0.0,
        forward_to=("local",),
        key=key,
    )


def only(client: redis.Redis):
    (status,) = read_statuses(client)
    return status


def test_a_successful_scrape_marks_the_target_up_and_records_when_where_and_how_long(redis_client):
    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=1_700_000_000.25, duration=0.125, error=None, worker="host-a/101")

    status = only(redis_client)
    assert status.key == spec.key
    assert (status.job, status.profile_type, status.url) == ("app", "process_cpu", spec.url)
    assert status.labels == spec.labels
    assert status.health is TargetHealth.UP
    assert status.last_scrape == 1_700_000_000.25
    assert status.last_scrape_duration == 0.125
    assert status.last_success == 1_700_000_000.25
    assert status.last_error is None
    assert status.worker == "host-a/101"
    assert (status.successes, status.failures) == (1, 0)


def test_a_failed_scrape_marks_the_target_down_with_the_error_and_keeps_the_last_success(redis_client):
    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=100.0, duration=0.1, error=None, worker="host-a/1")
    error = HTTPStatusError("server returned HTTP status 500", url=spec.url, status=500)
    record_scrape(redis_client, spec, start=115.0, duration=0.2, error=error, worker="host-b/2")

    status = only(redis_client)
    assert status.health is TargetHealth.DOWN
    assert status.last_error == str(error)
    assert status.last_scrape == 115.0
    assert status.last_success == 100.0
    assert status.worker == "host-b/2"
    assert (status.successes, status.failures) == (1, 1)


def test_a_target_that_recovers_is_up_again_without_its_old_error(redis_client):
    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=100.0, duration=1.0, error=ConnectFailed("refused"), worker="w/1")
    record_scrape(redis_client, spec, start=115.0, duration=0.5, error=None, worker="w/1")

    status = only(redis_client)
    assert status.health is TargetHealth.UP
    assert status.last_error is None
    assert status.last_success == 115.0
    assert (status.successes, status.failures) == (1, 1)


def test_nothing_of_a_failed_request_but_the_error_message_is_stored(redis_client):
    class LeakyError(Exception):
        """An error that carries the request, as a careless client library might."""

        def __init__(self) -> None:
            super().__init__("connection reset by peer")
            self.request_headers = {"Authorization": "Bearer s3cret-token"}

    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=1.0, duration=1.0, error=LeakyError(), worker="w/1")

    raw = redis_client.hget(keys.STATUS, spec.key)
    assert b"s3cret-token" not in raw and b"Authorization" not in raw
    assert only(redis_client).last_error == "connection reset by peer"


def test_records_made_concurrently_by_many_workers_lose_no_count(redis_url):
    spec = make_spec()
    redis.Redis.from_url(redis_url).flushdb()
    register_specs(redis.Redis.from_url(redis_url), [spec])
    rounds, threads = 50, 8

    def worker(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        for i in range(rounds):
            error = ConnectFailed("refused") if i % 2 else None
            record_scrape(client, spec, start=float(i), duration=0.01, error=error, worker=f"w/{n}")
        client.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    status = only(redis.Redis.from_url(redis_url))
    assert status.successes == status.failures == rounds * threads // 2


def test_registering_the_plan_adds_unknown_records_for_new_specs(redis_client):
    specs = [make_spec(address="a:1"), make_spec(address="b:1", profile_type="memory")]
    register_specs(redis_client, specs)

    statuses = read_statuses(redis_client)
    assert {s.key for s in statuses} == {s.key for s in specs}
    for status in statuses:
        assert status.health is TargetHealth.UNKNOWN
        assert status.last_scrape is None and status.last_error is None and status.worker is None
        assert (status.successes, status.failures) == (0, 0)
        assert status.labels["__name__"] == status.profile_type


def test_registering_the_plan_again_keeps_what_scrapes_recorded(redis_client):
    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=5.0, duration=0.3, error=ConnectFailed("refused"), worker="w/1")
    register_specs(redis_client, [spec])

    status = only(redis_client)
    assert status.health is TargetHealth.DOWN
    assert status.last_error == "refused"
    assert status.failures == 1


def test_targets_that_left_the_plan_disappear_on_the_next_registration(redis_client):
    stay, leave = make_spec(address="stay:1"), make_spec(address="leave:1")
    register_specs(redis_client, [stay, leave])
    record_scrape(redis_client, leave, start=1.0, duration=0.1, error=None, worker="w/1")

    register_specs(redis_client, [stay])
    assert [s.key for s in read_statuses(redis_client)] == [stay.key]

    register_specs(redis_client, [])
    assert read_statuses(redis_client) == []


def test_a_scrape_of_a_target_that_left_the_plan_leaves_no_record(redis_client):
    stay, leave = make_spec(address="stay:1"), make_spec(address="leave:1")
    register_specs(redis_client, [stay])
    record_scrape(redis_client, leave, start=1.0, duration=0.1, error=None, worker="w/1")

    assert [s.key for s in read_statuses(redis_client)] == [stay.key]


def test_a_replan_of_ten_thousand_specs_that_drops_a_thousand_leaves_nine_thousand_records(redis_client):
    specs = [make_spec(job=f"job{i % 10}", address=f"10.0.{i // 250}.{i % 250}:6060") for i in range(10_000)]
    register_specs(redis_client, specs)
    register_specs(redis_client, specs[:9_000])

    assert redis_client.hlen(keys.STATUS) == 9_000


def test_statuses_come_by_job_then_down_first_then_unknown_then_up_then_by_labels(redis_client):
    up_b = make_spec(job="web", address="b:1")
    up_a = make_spec(job="web", address="a:1")
    down = make_spec(job="web", address="z:1")
    unknown = make_spec(job="web", address="m:1")
    api = make_spec(job="api", address="q:1")
    register_specs(redis_client, [up_b, up_a, down, unknown, api])
    for spec in (up_b, up_a, api):
        record_scrape(redis_client, spec, start=1.0, duration=0.1, error=None, worker="w/1")
    record_scrape(redis_client, down, start=1.0, duration=0.1, error=ConnectFailed("refused"), worker="w/1")

    order = [s.key for s in read_statuses(redis_client)]
    assert order == [api.key, down.key, unknown.key, up_a.key, up_b.key]


def test_statuses_can_be_read_for_one_job_and_one_health(redis_client):
    web_up, web_down, api_down = make_spec(job="web", address="a:1"), make_spec(job="web", address="b:1"), make_spec(job="api")
    register_specs(redis_client, [web_up, web_down, api_down])
    record_scrape(redis_client, web_up, start=1.0, duration=0.1, error=None, worker="w/1")
    record_scrape(redis_client, web_down, start=1.0, duration=0.1, error=ConnectFailed("x"), worker="w/1")
    record_scrape(redis_client, api_down, start=1.0, duration=0.1, error=ConnectFailed("y"), worker="w/1")

    assert [s.key for s in read_statuses(redis_client, job="web")] == [web_down.key, web_up.key]
    assert [s.key for s in read_statuses(redis_client, health=TargetHealth.DOWN)] == [api_down.key, web_down.key]
    assert [s.key for s in read_statuses(redis_client, job="web", health=TargetHealth.UP)] == [web_up.key]
    assert read_statuses(redis_client, job="nope") == []


def test_running_totals_add_up_by_name(redis_client):
    assert read_counters(redis_client) == {}
    incr_counter(redis_client, "scrapes_done")
    incr_counter(redis_client, "scrapes_done", by=4)
    incr_counter(redis_client, "pushes_deadlettered")

    assert read_counters(redis_client) == {"scrapes_done": 5, "pushes_deadlettered": 1}


def test_statuses_as_json_are_a_list_of_plain_objects(redis_client):
    spec = make_spec()
    register_specs(redis_client, [spec])
    record_scrape(redis_client, spec, start=3.0, duration=0.5, error=ConnectFailed("refused"), worker="w/1")

    (item,) = json.loads(statuses_json(read_statuses(redis_client)))
    assert item["health"] == "down"
    assert item["last_error"] == "refused"
    assert item["labels"]["__name__"] == "process_cpu"
    assert (item["key"], item["failures"], item["last_success"]) == (spec.key, 1, None)


def test_the_table_shows_every_target_with_its_health_and_full_error(redis_client):
    long_error = "server returned HTTP status 503 " + "because the backend is overloaded " * 6 + "(end)"
    down, up = make_spec(address="down:1"), make_spec(address="up:1")
    register_specs(redis_client, [down, up])
    record_scrape(redis_client, down, start=100.0, duration=2.5, error=ConnectFailed(long_error), worker="w/1")
    record_scrape(redis_client, up, start=100.0, duration=0.02, error=None, worker="w/2")

    console = Console(width=160, record=True, color_system=None)
    console.print(render_table(read_statuses(redis_client), now=112.0))
    text = " ".join(console.export_text().split())

    assert "2 instances: 1 up, 1 down" in text
    assert "down" in text and "up" in text
    assert "(end)" in text and "12s ago" in text


def test_the_table_has_one_row_per_instance_its_types_collapsed_and_one_line_per_distinct_error(redis_client):
    cpu, memory, goroutine = (make_spec(address="down:1", profile_type=t) for t in ("process_cpu", "memory", "goroutine"))
    register_specs(redis_client, [cpu, memory, goroutine])
    for spec in (cpu, memory):
        record_scrape(redis_client, spec, start=100.0, duration=0.01, worker="w/1",
                      error=ConnectFailed("connection refused", url=spec.url))
    record_scrape(redis_client, goroutine, start=100.0, duration=0.01, error=None, worker="w/1")

    wide = Console(width=300, record=True, color_system=None)
    wide.print(render_table(read_statuses(redis_client), now=112.0))
    text = wide.export_text()
    assert "1 instance: 1 down" in text
    assert text.count("connection refused") == 1
    assert "memory, process_cpu: connection refused" in text
    assert "goroutine, memory (down), process_cpu (down)" in text
    assert "__name__" not in text and 'job="' not in text

    narrow = Console(width=120, record=True, color_system=None)
    narrow.print(render_table(read_statuses(redis_client), now=112.0))
    assert max(len(line) for line in narrow.export_text().splitlines()) <= 120
