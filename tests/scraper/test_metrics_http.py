"""The HTTP server: /metrics (one process or a whole host's), /targets, health, readiness, self-profiles."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from scraper import keys, metrics
from scraper.errors import ConnectFailed, HTTPStatusError
from scraper.httpserver import start_http_server
from scraper.status import record_scrape, register_specs
from tests.conftest import free_port
from tests.scraper.test_status import make_spec

ROOT = Path(__file__).resolve().parents[2]


def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of GET ``path``; error statuses are answers too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def get(port: int, path: str) -> tuple[int, str, str]:
    """Like :func:`fetch`, with the body as text."""
    status, content_type, body = fetch(port, path)
    return status, content_type, body.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@pytest.fixture
def serve(redis_url: str) -> Iterator:
    """Start servers on free ports; each call returns the port. All are stopped after the test."""
    servers = []

    def start(factory=lambda: redis.Redis.from_url(redis_url), ready=None) -> int:
        server, port = start_http_server(0, redis_factory=factory, ready=ready, host="127.0.0.1")
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_redis() -> redis.Redis:
    """A client of a port nobody listens on; it gives up at once instead of retrying with backoff."""
    return redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


def test_metrics_name_every_self_metric_and_count_what_was_observed(serve, redis_client):
    receiver = f"store-{uuid.uuid4().hex[:8]}"
    job = f"job-{uuid.uuid4().hex[:8]}"
    metrics.observe_push(receiver, "ok", 0.2)
    metrics.observe_push(receiver, "unavailable", 1.5)
    metrics.observe_dropped(job)
    redis_client.lpush(keys.DEADLETTER, b"a", b"b", b"c")

    status, content_type, text = get(serve(), "/metrics")

    assert status == 200 and content_type.startswith("text/plain")
    for name in (
        "pprof_scraper_scrapes_total",
        "pprof_scraper_scrape_duration_seconds",
        "pprof_scraper_profile_size_bytes",
        "pprof_scraper_scrapes_dropped_total",
        "pprof_scraper_schedule_lag_seconds",
        "pprof_scraper_pushes_total",
        "phlare_fanout_latency",
        "pprof_scraper_deadletter_size",
    ):
        assert f"# TYPE {name} " in text, name
    assert sample(text, "pprof_scraper_pushes_total", receiver=receiver, result="ok") == 1
    assert sample(text, "pprof_scraper_pushes_total", receiver=receiver, result="unavailable") == 1
    assert sample(text, "phlare_fanout_latency_count", receiver=receiver) == 2
    assert sample(text, "phlare_fanout_latency_sum", receiver=receiver) == pytest.approx(1.7)
    assert sample(text, "pprof_scraper_scrapes_dropped_total", scrape_job=job) == 1
    assert sample(text, "pprof_scraper_deadletter_size") == 3


def test_a_recorded_scrape_shows_in_metrics_by_result_duration_size_and_lag(serve):
    from scraper import scrape

    ok_spec = make_spec(job=f"job-{uuid.uuid4().hex[:8]}")
    failed_spec = make_spec(job=ok_spec.job, address="10.0.0.2:6060")
    ok = scrape.ScrapeResult(spec=ok_spec, scheduled_at=100.0, start=100.5, end=100.75, body=b"x" * 3000)
    failed = scrape.ScrapeResult(spec=failed_spec, scheduled_at=100.0, start=102.0, end=104.0,
                                 error=ConnectFailed("refused", url=failed_spec.url))
    metrics.observe_scrape(ok_spec, ok, lag_s=0.5)
    metrics.observe_scrape(failed_spec, failed, lag_s=2.0)

    _, _, text = get(serve(), "/metrics")

    job, pt = ok_spec.job, ok_spec.profile_type
    assert sample(text, "pprof_scraper_scrapes_total", scrape_job=job, profile_type=pt, result="ok") == 1
    assert sample(text, "pprof_scraper_scrapes_total", scrape_job=job, profile_type=pt, result="connection") == 1
    assert sample(text, "pprof_scraper_scrape_duration_seconds_sum", scrape_job=job, profile_type=pt) == pytest.approx(2.25)
    assert sample(text, "pprof_scraper_profile_size_bytes_count", scrape_job=job, profile_type=pt) == 1
    assert sample(text, "pprof_scraper_profile_size_bytes_bucket", scrape_job=job, profile_type=pt, le="4096.0") == 1
    assert sample(text, "pprof_scraper_schedule_lag_seconds_sum", scrape_job=job) == pytest.approx(2.5)


def test_no_self_metric_has_a_label_that_prometheus_sets_on_the_scrape_itself(serve):
    # Prometheus stores a `job` or `instance` label of a scraped sample as `exported_job`/`exported_instance`
    spec = make_spec(job=f"job-{uuid.uuid4().hex[:8]}")
    metrics.observe_dropped(spec.job)
    metrics.observe_push("store", "ok", 0.1)

    _, _, text = get(serve(), "/metrics")

    names = {name for family in text_string_to_metric_families(text) for s in family.samples for name in s.labels}
    assert "scrape_job" in names
    assert not names & {"job", "instance"}


def test_each_target_and_type_has_an_up_gauge_and_the_time_of_its_last_success(serve, redis_client):
    up, down = make_spec(job="web", address="up:6060"), make_spec(job="web", address="down:6060")
    never = make_spec(job="web", address="new:6060")
    register_specs(redis_client, [up, down, never])
    record_scrape(redis_client, up, start=1000.0, duration=0.1, error=None, worker="host-a/11")
    record_scrape(redis_client, down, start=900.0, duration=0.1, error=None, worker="host-a/11")
    record_scrape(redis_client, down, start=1000.0, duration=0.3, worker="host-b/22",
                  error=ConnectFailed("refused", url=down.url))

    _, _, text = get(serve(), "/metrics")

    def labels(spec):
        return {"scrape_job": "web", "instance": spec.labels["instance"], "profile_type": spec.profile_type}

    assert sample(text, "pprof_scraper_target_up", **labels(up)) == 1
    assert sample(text, "pprof_scraper_target_up", **labels(down)) == 0
    assert sample(text, "pprof_scraper_target_up", **labels(never)) is None  # not scraped yet: no sample, as Prometheus
    assert sample(text, "pprof_scraper_target_last_success_timestamp_seconds", **labels(up)) == 1000.0
    assert sample(text, "pprof_scraper_target_last_success_timestamp_seconds", **labels(down)) == 900.0
    assert sample(text, "pprof_scraper_target_last_success_timestamp_seconds", **labels(never)) is None


def test_metrics_are_served_without_the_deadletter_size_when_redis_is_down(serve):
    status, _, text = get(serve(factory=closed_port_redis), "/metrics")

    assert status == 200
    assert "pprof_scraper_scrapes_total" in text
    assert "pprof_scraper_deadletter_size" not in text
    assert "pprof_scraper_target_up" not in text


def test_metrics_of_a_host_sum_every_worker_process_sharing_the_multiprocess_dir(serve, tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    directory.mkdir()
    job = f"job-{uuid.uuid4().hex[:8]}"
    child = textwrap.dedent(
        """
        import sys
        from scraper import metrics
        for _ in range(int(sys.argv[2])):
            metrics.observe_dropped(sys.argv[1])
        metrics.observe_push("store", "ok", 0.25)
        print("counted", flush=True)
        sys.stdin.read()  # stay alive until the test has read the metrics
        """
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), PYTHONPATH=str(ROOT))
    children = [
        subprocess.Popen([sys.executable, "-c", child, job, str(n)], env=env, cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in (2, 3)
    ]
    try:
        for proc in children:
            assert proc.stdout.readline().strip() == "counted"  # blocks until the child has counted
        monkeypatch.setenv(metrics.MULTIPROC_ENV, str(directory))

        _, _, text = get(serve(), "/metrics")

        assert sample(text, "pprof_scraper_scrapes_dropped_total", scrape_job=job) == 5
        assert sample(text, "pprof_scraper_pushes_total", receiver="store", result="ok") == 2
        assert sample(text, "phlare_fanout_latency_count", receiver="store") == 2
    finally:
        for proc in children:
            proc.stdin.close()
            proc.wait(timeout=10)
    assert all(proc.returncode == 0 for proc in children)


def test_the_targets_page_shows_each_jobs_targets_down_first_with_errors_in_full(serve, redis_client):
    up, down = make_spec(job="web", address="up:6060"), make_spec(job="web", address="down:6060")
    other = make_spec(job="api", address="api:6060")
    register_specs(redis_client, [up, down, other])
    record_scrape(redis_client, up, start=1.0, duration=0.1, error=None, worker="host-a/11")
    error = HTTPStatusError("server returned HTTP status 500 Internal Server Error: boom & bust", url=down.url)
    record_scrape(redis_client, down, start=1.0, duration=0.3, error=error, worker="host-b/22")

    status, content_type, page = get(serve(), "/targets")

    assert status == 200 and content_type.startswith("text/html")
    assert "server returned HTTP status 500 Internal Server Error: boom &amp; bust (http://down:6060/" in page
    assert page.index(">api<") < page.index(">web<")
    assert page.index("down:6060") < page.index("up:6060")
    assert "host-b/22" in page
    assert "3 instances: 1 up, 1 down, 1 unknown" in page


def test_the_targets_page_escapes_everything_a_target_brings(serve, redis_client):
    evil = make_spec(job="<b>job</b>", address="x:1", team='<script>alert("x")</script>')
    register_specs(redis_client, [evil])
    record_scrape(redis_client, evil, start=1.0, duration=0.1, error=ConnectFailed("<img src=x onerror=alert(1)>"),
                  worker="w/1")

    _, _, page = get(serve(), "/targets")

    assert "<script>alert" not in page and "<img src=x" not in page and "<b>job</b>" not in page
    assert "team=&quot;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_targets_page_filters_by_job_and_health(serve, redis_client):
    web_up, web_down = make_spec(job="web", address="webup:1"), make_spec(job="web", address="webdown:1")
    api_down = make_spec(job="api", address="apidown:1")
    register_specs(redis_client, [web_up, web_down, api_down])
    record_scrape(redis_client, web_up, start=1.0, duration=0.1, error=None, worker="w/1")
    for spec in (web_down, api_down):
        record_scrape(redis_client, spec, start=1.0, duration=0.1, error=ConnectFailed("refused"), worker="w/1")
    port = serve()

    _, _, only_down = get(port, "/targets?health=down")
    _, _, only_web = get(port, "/targets?job=web")
    _, _, web_down_only = get(port, "/targets?job=web&health=down")
    status, _, bad = get(port, "/targets?health=sideways")

    assert "webdown:1" in only_down and "apidown:1" in only_down and "webup:1" not in only_down
    assert "webup:1" in only_web and "webdown:1" in only_web and "apidown:1" not in only_web
    assert "webdown:1" in web_down_only and "webup:1" not in web_down_only and "apidown:1" not in web_down_only
    assert status == 400 and "sideways" in bad and "up, down, unknown" in bad


def test_the_targets_page_says_so_when_redis_is_down(serve):
    status, _, body = get(serve(factory=closed_port_redis), "/targets")

    assert status == 503 and "Redis" in body


def test_healthy_answers_ok_while_the_process_runs(serve):
    assert get(serve(factory=closed_port_redis), "/-/healthy")[::2] == (200, "OK\n")


def test_ready_when_the_process_says_so_and_redis_answers(serve):
    status, _, body = get(serve(ready=lambda: (True, "")), "/-/ready")

    assert (status, body) == (200, "ready\n")


def test_not_ready_while_the_process_says_it_is_not_with_its_reason(serve):
    status, _, body = get(serve(ready=lambda: (False, "config not loaded yet")), "/-/ready")

    assert status == 503 and "config not loaded yet" in body


def test_not_ready_while_redis_does_not_answer(serve):
    status, _, body = get(serve(factory=closed_port_redis, ready=lambda: (True, "")), "/-/ready")

    assert status == 503 and "Redis" in body


def test_self_profiles_are_served(serve):
    port = serve()
    status, _, body = fetch(port, "/debug/pprof/goroutine")

    assert status == 200 and body.startswith(b"\x1f\x8b")  # a gzipped profile
    assert fetch(port, "/debug/pprof/goroutine?debug=2")[0] == 400  # the query reaches the handler


def test_the_index_links_every_page_and_unknown_paths_are_404(serve):
    port = serve()
    status, _, index = get(port, "/")
    missing, _, _ = get(port, "/nope")

    assert status == 200
    for path in ("/targets", "/metrics", "/-/healthy", "/-/ready", "/debug/pprof/"):
        assert f'href="{path}"' in index
    assert missing == 404


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_client_that_resets_mid_request_is_not_reported_as_a_server_error(serve, capfd) -> None:
    import socket
    import struct

    port = serve()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /debug/pprof/goroutine HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    # the server still answers the next client, and said nothing about the reset
    status, _, _ = get(port, "/-/healthy")
    assert status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_the_targets_page_shows_an_instance_once_with_its_types_and_one_block_per_distinct_error(
        serve, redis_client):
    types = [make_spec(job="web", address="down:6060", profile_type=t) for t in ("goroutine", "memory", "mutex")]
    register_specs(redis_client, types)
    for spec in types:
        record_scrape(redis_client, spec, start=1.0, duration=0.1, worker="w/1",
                      error=ConnectFailed("connection refused", url=spec.url))

    _, _, page = get(serve(), "/targets")

    assert "1 instance: 1 down (3 profile types)" in page
    assert page.count("connection refused") == 1
    assert "goroutine, memory, mutex: connection refused" in page


def test_the_targets_page_pages_filters_by_label_text_and_reloads_itself(serve, redis_client):
    from scraper.httpserver import PAGE_SIZE

    specs = [make_spec(job="web", address=f"10.0.{i // 250}.{i % 250}:6060", zone="a" if i % 2 else "b")
             for i in range(PAGE_SIZE + 5)]
    register_specs(redis_client, specs)
    port = serve()

    _, _, first = get(port, "/targets")
    assert f"instances 1–{PAGE_SIZE} of {PAGE_SIZE + 5} (page 1 of 2)" in first
    assert '<meta http-equiv="refresh" content="30">' in first
    assert 'href="/targets?page=2">next' in first
    _, _, second = get(port, "/targets?page=2")
    assert f"instances {PAGE_SIZE + 1}–{PAGE_SIZE + 5} of {PAGE_SIZE + 5}" in second
    _, _, zone_a = get(port, "/targets?q=zone%3Da&refresh=0")
    assert f"of {(PAGE_SIZE + 5) // 2}" in zone_a and 'http-equiv="refresh"' not in zone_a
