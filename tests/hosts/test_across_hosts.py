"""Beat, workers, Redis, targets and the store each on a host of its own (a network namespace),
talking over one simulated network; hosts are cut off by taking their link down, not by a
clean stop. Every process gets only ``SCRAPER_BROKER_URL`` and ``SCRAPER_CONFIG`` (plus the
short timings these tests run at), as a team would set them on separate machines."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from scraper import keys, status
from scraper.broker import connect_redis
from tests.conftest import redis_server_binary, wait_until
from tests.e2e.processes import Proc, start_beat, start_worker
from tests.fakes import PprofTarget
from tests.faults.support import BUILTIN_OFF, http_get, write_config
from tests.netns import Host, Network
from tests.pyroscope_standin import PyroscopeStandIn

pytestmark = pytest.mark.slow
T = TypeVar("T")

INTERVAL_S = 2
#: How long a host stays cut off. The issue asks for a minute; measured, 20 s shows the same
#: behaviour (the links' TCP connections outlive both), so CI spends 20 s (docs/reliability.md).
CUT_S = float(os.environ.get("SCRAPER_TEST_CUT_S", "20"))
CLI = str(Path(sys.executable).parent / "pprof-scraper")


def host_env(broker_url: str, config: Path, **timings: str) -> dict[str, str]:
    """The environment of a process on a host: the two settings a deployment needs, and timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    return {**env, "SCRAPER_BROKER_URL": broker_url, "SCRAPER_CONFIG": str(config), **timings}


def start_redis(host: Host, workdir: Path, procs: list[Proc], *extra: str) -> str:
    """A redis-server listening on ``host``'s address; its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    procs.append(Proc(f"redis-{host.name}", host.argv([
        redis_server_binary(), "--port", "6379", "--bind", host.address, "--protected-mode", "no",
        "--dir", str(workdir), "--save", "", "--appendonly", "no", *extra]), {}, workdir))
    url = f"redis://{host.address}:6379/0"
    client = redis.Redis.from_url(url, socket_timeout=5)
    wait_until(lambda: host.call(_answers, client), timeout=15, message=f"redis-server on {host.name}")
    return url


#: How long the sentinels wait before they call a silent master down (the default is 30 s).
DOWN_AFTER_MS = 2000


def start_sentinels(hosts: list[Host], master: Host, workdir: Path, procs: list[Proc]) -> str:
    """Three sentinels (each on its own host) watching ``master`` as ``mymaster``; the broker URL of them."""
    for host in hosts:
        conf = workdir / f"{host.name}.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        conf.write_text(f"port 26379\nbind {host.address}\nprotected-mode no\ndir {workdir}\n"
                        f"sentinel monitor mymaster {master.address} 6379 2\n"
                        f"sentinel down-after-milliseconds mymaster {DOWN_AFTER_MS}\n"
                        "sentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 1\n")
        procs.append(Proc(host.name, host.argv([redis_server_binary(), str(conf), "--sentinel"]), {}, workdir))
    for host in hosts:
        client = redis.Redis(host.address, 26379, socket_timeout=5)
        wait_until(lambda c=client, h=host: h.call(_answers, c), timeout=15, message=f"{host.name} to answer")
    return ";".join(f"sentinel://{host.address}:26379" for host in hosts) + "/0"


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Site:
    """Redis, beats, workers, targets and a Pyroscope stand-in, each group on its own hosts."""

    def __init__(self, network: Network, procs: list[Proc], tmp: Path, *, workers: int = 2, beats: int = 1,
                 target_hosts: int = 1, targets_per_host: int = 2, sentinel: bool = False, **timings: str) -> None:
        self.network, self.procs, self.tmp = network, procs, tmp
        self.redis_host, self.store_host = network.add("redis", "store")
        if sentinel:
            self.replica_host, *self.sentinel_hosts = network.add("replica", "sentinel1", "sentinel2", "sentinel3")
        self.worker_hosts = network.add(*(f"worker{i}" for i in range(1, workers + 1)))
        self.beat_hosts = network.add(*(f"beat{i}" for i in range(1, beats + 1)))
        self.target_hosts = network.add(*(f"targets{i}" for i in range(1, target_hosts + 1)))
        self.targets: dict[str, list[PprofTarget]] = {
            host.name: [host.call(PprofTarget, host=host.address).start() for _ in range(targets_per_host)]
            for host in self.target_hosts}
        self.store = self.store_host.call(PyroscopeStandIn, host=self.store_host.address).__enter__()
        self.broker_url = start_redis(self.redis_host, tmp / "redis", procs)
        self.redis = redis.Redis.from_url(self.broker_url, socket_timeout=5)
        #: where the test reads Redis from
        self.observer_host = self.redis_host
        if sentinel:
            replica_url = start_redis(self.replica_host, tmp / "replica", procs,
                                      "--replicaof", self.redis_host.address, "6379")
            replica = redis.Redis.from_url(replica_url, socket_timeout=5)
            wait_until(lambda: self.replica_host.call(replica.info, "replication").get("master_link_status") == "up",
                       timeout=30, message="the replica in sync with the master")
            self.broker_url = start_sentinels(self.sentinel_hosts, self.redis_host, tmp / "sentinels", procs)
            self.observer_host = self.sentinel_hosts[0]
            self.redis = self.observer_host.call(connect_redis, self.broker_url)
        self.config = write_config(tmp / "config.yaml", {"fleet": {
            "targets": [{"__address__": t.address, "host": name} for name, ts in self.targets.items() for t in ts],
            "forward_to": ["pyroscope"], "scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": "1s",
            "profiling_config": {**BUILTIN_OFF, "profile.memory": {"enabled": True}}}},
            {"pyroscope": {"type": "pyroscope", "url": self.store.url, "remote_timeout": "2s",
                           "min_backoff_period": "200ms", "max_backoff_period": "1s", "max_backoff_retries": 3}})
        self.timings = timings
        self.workers = [start_worker(self.env(), tmp, name=host.name, on=host.argv([])) for host in self.worker_hosts]
        self.beats = [start_beat(self.env(), tmp, name=host.name, on=host.argv([])) for host in self.beat_hosts]
        procs += self.workers + self.beats

    def env(self, **more: str) -> dict[str, str]:
        return host_env(self.broker_url, self.config, **self.timings, **more)

    def close(self) -> None:
        self.store.__exit__(None, None, None)
        for targets in self.targets.values():
            for target in targets:
                target.stop()

    def observe(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(redis_client, *args)`` run on the host the test's Redis client lives on."""
        return self.observer_host.call(fn, self.redis, *args)

    def scraped_by(self, host: Host, since: float) -> int:
        """Requests the targets got from ``host`` after ``since``."""
        return sum(1 for ts in self.targets.values() for t in ts for _, client, at in list(t.arrivals)
                   if client == host.address and at > since)

    def pushed_ids(self) -> Counter[str]:
        """How many times the store took each profile id."""
        return Counter(i for r in self.store.pushes for i in r.ids)

    def settled(self) -> tuple[int, int, int]:
        """(validated profiles owed to the store, profiles still pending, dead letters), read from Redis.

        A memory scrape that became its series' baseline (the first, or one after a gap) or whose delta
        a later slot superseded owes Pyroscope nothing: it is counted, not pushed."""
        def read(c: redis.Redis) -> tuple[int, int, int]:
            counters = status.read_counters(c)
            owed = counters.get("scrapes_done", 0) - counters.get("deltas_baseline", 0) \
                - counters.get("deltas_superseded", 0)
            return owed, c.zcard(keys.PENDING), c.llen(keys.DEADLETTER)
        return self.observe(read)

    def cli(self, host: Host, *args: str) -> str:
        done = subprocess.run(host.argv([CLI, *args]), env=self.env(), capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout


@pytest.fixture
def site_factory(network: Network, procs: list[Proc], tmp_path: Path) -> Iterator:
    sites: list[Site] = []

    def make(**kwargs: object) -> Site:
        site = Site(network, procs, tmp_path, **kwargs)
        sites.append(site)
        return site

    yield make
    for proc in reversed(procs):  # killed, not stopped: a warm shutdown on a cut network only waits
        proc.kill()
    for site in sites:
        site.close()


def test_scraping_across_hosts_needs_only_the_broker_url_and_the_config_on_each(site_factory) -> None:
    site = site_factory()
    started = time.time()
    every_target = {t.address for ts in site.targets.values() for t in ts}
    wait_until(lambda: {dict(s.labels)["instance"] for r in site.store.pushes for s in r.series} >= every_target,
               timeout=6 * INTERVAL_S + 20, message="a profile of every target at the store host")
    # both worker hosts scrape; the work is shared over the network, not done by one
    wait_until(lambda: all(site.scraped_by(h, started) for h in site.worker_hosts), timeout=20 * INTERVAL_S + 30,
               message="scrapes from both worker hosts")
    assert set(site.pushed_ids().values()) == {1}


def _on_time(site: Site, since: float, until: float) -> dict[str, float]:
    """The longest wait between two scrapes of each target within [since, until]."""
    gaps = {}
    for targets in site.targets.values():
        for target in targets:
            times = [since] + sorted(at for _, _, at in list(target.arrivals) if since <= at <= until) + [until]
            gaps[target.address] = max(b - a for a, b in itertools.pairwise(times))
    return gaps


def _drained(site: Site) -> bool:
    validated, pending, dead = site.settled()
    return pending == 0 and validated == len(site.pushed_ids()) + dead


def test_a_worker_host_cut_off_loses_nothing_pushes_nothing_twice_and_consumes_again_when_back(site_factory) -> None:
    site = site_factory(targets_per_host=3, SCRAPER_VISIBILITY_TIMEOUT="10")
    # Which worker takes a task is the broker's choice (on a busy machine one may take them all for a
    # while): cut one that is consuming, so the cut holds work in flight and the other must take over.
    cut_host = wait_until(lambda: next((h for h in site.worker_hosts if site.scraped_by(h, 0)), None),
                          timeout=6 * INTERVAL_S + 20, message="a worker host scraping")

    cut_host.cut()
    cut_at = time.time()
    wait_until(lambda: time.time() > cut_at + CUT_S, timeout=CUT_S + 5, interval=0.5, message="the cut's end")
    cut_host.restore()
    restored_at = time.time()
    # the other worker carried on alone: every target was scraped on time through the cut
    gaps = _on_time(site, cut_at + INTERVAL_S, restored_at)
    assert max(gaps.values()) <= 2 * INTERVAL_S + 1, gaps
    assert site.scraped_by(cut_host, cut_at + 1) == 0

    wait_until(lambda: site.scraped_by(cut_host, restored_at), timeout=120, interval=0.2,
               message="the cut-off worker to scrape again after its link came back")
    rejoined_s = time.time() - restored_at
    print(f"cut {CUT_S:.0f}s: the cut-off worker scraped again {rejoined_s:.1f}s after its link came back")
    site.beats[0].stop()
    wait_until(lambda: _drained(site), timeout=60, interval=0.5, message="every validated profile at the store")
    validated, _, dead = site.settled()
    duplicates = {i: n for i, n in site.pushed_ids().items() if n > 1}
    print(f"validated {validated}, pushed {len(site.pushed_ids())}, dead-lettered {dead}, duplicates {duplicates}")
    assert dead == 0
    assert duplicates == {}


def _closest(site: Site, since: float) -> float:
    """The shortest wait between two scrapes of one profile type of one target after ``since``: near zero
    if a slot ran twice."""
    waits = []
    for targets in site.targets.values():
        for target in targets:
            for path in {p for p, _, _ in list(target.arrivals)}:
                times = sorted(at for p, _, at in list(target.arrivals) if p == path and at >= since)
                waits += [b - a for a, b in itertools.pairwise(times)]
    return min(waits)


def test_the_active_beats_host_lost_the_standby_emits_within_two_intervals_and_no_slot_runs_twice_after(
        site_factory) -> None:
    site = site_factory(beats=2, SCRAPER_BEAT_LOCK_TTL=str(INTERVAL_S))
    holder = wait_until(lambda: [b for b in site.beats if "holds the lock" in b.output()], timeout=30,
                        message="a beat to hold the lock")[0]
    lost_host = site.beat_hosts[site.beats.index(holder)]
    standby = next(b for b in site.beats if b is not holder)
    wait_until(lambda: sum(len(t.arrivals) for ts in site.targets.values() for t in ts) >= 6, timeout=30,
               message="scrapes under the first beat")

    lost_host.cut()
    cut_at = time.time()
    standby.wait_for_output("holds the lock", timeout=4 * INTERVAL_S)
    wait_until(lambda: time.time() > cut_at + CUT_S, timeout=CUT_S + 5, interval=0.5, message="the cut's end")
    gaps = _on_time(site, cut_at - INTERVAL_S, time.time())
    print(f"longest wait for a scrape across the lost beat: {max(gaps.values()):.2f}s (interval {INTERVAL_S}s)")
    # two intervals, plus a second for a busy machine to deliver the standby's first task
    assert max(gaps.values()) <= 2 * INTERVAL_S + 1, gaps

    lost_host.restore()
    restored_at = time.time()
    holder.wait_for_output("lost its lock to another beat; standing by", timeout=120)
    back = time.time()
    print(f"the lost beat stood by {back - restored_at:.1f}s after its link came back")
    wait_until(lambda: time.time() > back + 6 * INTERVAL_S, timeout=10 * INTERVAL_S, interval=0.5,
               message="six intervals after the lost beat stood by")
    assert _closest(site, restored_at - INTERVAL_S) > INTERVAL_S / 2
    assert set(site.pushed_ids().values()) == {1}


def test_a_partitioned_target_host_goes_down_with_a_clear_error_and_the_others_stay_on_time(site_factory) -> None:
    site = site_factory(target_hosts=2)
    far = site.target_hosts[1]
    far_urls = {t.address for t in site.targets[far.name]}
    wait_until(lambda: all(t.arrivals for ts in site.targets.values() for t in ts), timeout=30,
               message="every target scraped once")

    far.cut()
    cut_at = time.time()

    def far_statuses() -> list[status.TargetStatus]:
        return [s for s in site.observe(lambda c: status.read_statuses(c, job="fleet"))
                if s.labels.get("instance") in far_urls]

    down = wait_until(lambda: (found := far_statuses()) and all(
        s.health is status.TargetHealth.DOWN and s.last_scrape and s.last_scrape > cut_at for s in found) and found,
        timeout=6 * INTERVAL_S + 10, message="the partitioned host's targets to go down")
    for s in down:
        print(f"{s.labels['instance']}: {s.last_error}")
        assert "within the scrape timeout of 1s (connecting)" in (s.last_error or "")
        assert s.labels["instance"] in (s.last_error or "")
    wait_until(lambda: time.time() > cut_at + 4 * INTERVAL_S, timeout=6 * INTERVAL_S, interval=0.5,
               message="four intervals of the partition")
    near_gaps = {a: g for a, g in _on_time(site, cut_at, time.time()).items() if a not in far_urls}
    assert max(near_gaps.values()) <= INTERVAL_S + 1, near_gaps
    far.restore()


def test_a_store_host_partitioned_past_the_retry_budget_dead_letters_and_replay_delivers(site_factory) -> None:
    site = site_factory(SCRAPER_VISIBILITY_TIMEOUT="4")
    worker_host = site.worker_hosts[0]
    wait_until(lambda: site.store.pushes, timeout=30, message="a first push")

    site.store_host.cut()
    dead = wait_until(lambda: [e["id"] for e in map(json.loads, site.cli(worker_host, "deadletter", "list")
                                                    .splitlines())],
                      timeout=60, interval=1, message="a dead letter while the store is partitioned")
    site.beats[0].stop()
    site.store_host.restore()
    replayed = site.cli(worker_host, "deadletter", "replay", "--limit", "100000")
    print(replayed.strip())
    wait_until(lambda: set(dead) <= set(site.pushed_ids()), timeout=60, interval=0.5,
               message="every dead letter delivered by the replay")
    wait_until(lambda: _drained(site), timeout=60, interval=0.5, message="nothing pending, nothing lost")


def _redis_state(client: redis.Redis, offset_field: str) -> dict[str, object]:
    return {"counters": status.read_counters(client), "offset": client.info("replication")[offset_field],
            "pending": {i.decode() for i in client.zrange(keys.PENDING, 0, -1)}}


def test_losing_the_redis_masters_host_fails_over_and_scraping_resumes_within_a_bounded_time(site_factory) -> None:
    site = site_factory(sentinel=True, workers=1, targets_per_host=3, SCRAPER_VISIBILITY_TIMEOUT="10")
    master, replica_host = site.redis_host, site.replica_host
    old = redis.Redis(master.address, 6379, socket_timeout=5)
    replica = redis.Redis(replica_host.address, 6379, socket_timeout=5)
    wait_until(lambda: len(site.pushed_ids()) >= 12, timeout=30, message="profiles flowing through the master")

    master.cut()
    cut_at = time.time()
    # What the replica had when the master's host went is what the new master starts from.
    frozen = replica_host.call(_redis_state, replica, "slave_repl_offset")
    last = master.call(_redis_state, old, "master_repl_offset")
    sentinel = redis.Redis(site.sentinel_hosts[0].address, 26379, socket_timeout=5, decode_responses=True)
    wait_until(lambda: site.observer_host.call(sentinel.sentinel_get_master_addr_by_name, "mymaster")[0]
               == replica_host.address, timeout=60, interval=0.2, message="the sentinels to promote the replica")
    promoted_s = time.time() - cut_at
    # a scrape task emitted before the cut expires within an interval: a later scrape went through the new master
    first = wait_until(lambda: min((at for ts in site.targets.values() for t in ts for _, _, at in list(t.arrivals)
                                    if at > cut_at + INTERVAL_S), default=None),
                       timeout=90, interval=0.2, message="a scrape through the new master")
    pushed_then = set(site.pushed_ids())
    wait_until(lambda: set(site.pushed_ids()) - pushed_then, timeout=60, interval=0.2,
               message="a profile scraped after the failover at the store")
    delivered_s = time.time() - cut_at
    lost_scrapes = last["counters"].get("scrapes_done", 0) - frozen["counters"].get("scrapes_done", 0)
    never_stored = last["pending"] - set(site.pushed_ids())
    print(f"failover: promoted {promoted_s:.1f}s after the master's host went; first scrape {first - cut_at:.1f}s; "
          f"first profile at the store {delivered_s:.1f}s; replication lag at the cut "
          f"{last['offset'] - frozen['offset']} bytes; validated profiles the new master never heard of: "
          f"{lost_scrapes}; profiles pending on the old master that never reached the store: {len(never_stored)}")
    assert first - cut_at <= 30
    # the CLI and Flower find the new master through the sentinels too
    shown = json.loads(site.cli(site.worker_hosts[0], "targets", "--json"))
    assert {row["health"] for row in shown} == {"up"}
    beat_host = site.beat_hosts[0]
    flower = Proc("flower", beat_host.argv([sys.executable, "-m", "celery", "-A", "worker", "flower", "--port=5555",
                                            f"--address={beat_host.address}", "--read_only"]),
                  site.env(FLOWER_UNAUTHENTICATED_API="1"), site.tmp)
    site.procs.append(flower)
    flower.wait_for_output("Visit me at", timeout=60)
    status_code, body = beat_host.call(http_get, f"http://{beat_host.address}:5555/api/queues/length")
    assert status_code == 200 and {q["name"] for q in json.loads(body)["active_queues"]} >= {"scrape", "push"}, body

    site.beats[0].stop()
    wait_until(lambda: site.settled()[1] == 0, timeout=60, interval=0.5, message="nothing left pending")
    validated, _, dead = site.settled()
    pushed = site.pushed_ids()
    print(f"after the failover: validated {validated} (as the new master counts), pushed {len(pushed)}, "
          f"dead-lettered {dead}, pushed twice {sum(n > 1 for n in pushed.values())}")
    assert validated <= len(pushed) + dead
