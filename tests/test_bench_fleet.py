"""The benchmark's fleet simulator behaves like Go's net/http/pprof: real bodies, held ``?seconds=``,
one CPU profile at a time per target, keep-alive, and counters the driver can trust."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fleet import CPU_BUSY, GO_BODIES, padded_profile
from scraper.pprof import validate_profile
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]


class Fleet:
    def __init__(self, info: dict) -> None:
        self.ports: list[int] = info["ports"]
        self.control: int = info["control"]

    def get(self, port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    def control_json(self, path: str) -> object:
        return json.loads(self.get(self.control, path)[1])


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet.py"), "--targets", "2", "--duration", "60",
                             "--log-arrivals"], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        yield Fleet(json.loads(proc.stdout.readline()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_go_path_serves_a_valid_profile(fleet: Fleet) -> None:
    for path in GO_BODIES:
        status, body = fleet.get(fleet.ports[0], path)
        assert status == 200, path
        validate_profile(body, url=path)
    assert fleet.get(fleet.ports[0], "/debug/pprof/nope")[0] == 404


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024])
def test_padded_profiles_reach_their_size_and_still_parse(size: int) -> None:
    body = padded_profile((ROOT / "tests/data/go/cpu_1.pb.gz").read_bytes(), size)
    assert size * 0.98 <= len(body) <= size * 1.2
    info = validate_profile(body)
    assert info.sample_count > 100


def test_a_cpu_profile_is_held_for_its_seconds(fleet: Fleet) -> None:
    began = time.monotonic()
    status, body = fleet.get(fleet.ports[0], "/debug/pprof/profile?seconds=1")
    assert status == 200 and time.monotonic() - began >= 0.95
    validate_profile(body)


def test_a_second_concurrent_cpu_profile_gets_gos_500_and_is_counted(fleet: Fleet) -> None:
    first: list[int] = []
    holder = threading.Thread(target=lambda: first.append(fleet.get(fleet.ports[0], "/debug/pprof/profile?seconds=2")[0]))
    holder.start()
    wait_until(lambda: fleet.control_json("/stats")["cpu_held"] == 1, message="the first CPU profile to be held")

    assert fleet.get(fleet.ports[0], "/debug/pprof/profile?seconds=1") == (500, CPU_BUSY)
    # Another target profiles independently.
    assert fleet.get(fleet.ports[1], "/debug/pprof/profile?seconds=1")[0] == 200
    holder.join(timeout=10)
    stats = fleet.control_json("/stats")
    assert first == [200]
    assert stats["cpu_overlaps"] == 1 and stats["cpu_held"] == 0 and stats["cpu_held_max"] == 2


def test_keep_alive_connections_are_reused_and_requests_counted(fleet: Fleet) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fleet.ports[1], timeout=10)
    for _ in range(3):
        assert fleet.get(fleet.ports[1], "/debug/pprof/goroutine", conn)[0] == 200
    stats = fleet.control_json("/stats")
    assert stats["served"] == {"/debug/pprof/goroutine": 3}
    assert stats["connections_opened"] == 1  # three requests, one connection (the control port is not counted)
    arrivals = fleet.control_json("/arrivals")
    assert [(port, path) for port, path, _ in arrivals] == [(fleet.ports[1], "/debug/pprof/goroutine")] * 3
    assert fleet.control_json("/arrivals") == []  # each call hands over what arrived since the last
