"""``pprof-scraper run``: the whole system in one command — Redis (embedded unless a broker is
given), one beat and N gevent workers as child processes, an HTTP server, and a progress line
every interval. Ctrl-C or SIGTERM stops everything within 10 s and leaves no process behind."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis

from scraper import keys, status
from scraper.broker import broker_url, connect_redis
from scraper.config import Config, ConfigSource, FileReceiverConfig
from scraper.defaults import DEFAULT_RUN_HTTP_PORT, builtin_config_yaml, trace_allocations
from scraper.embedded_redis import EmbeddedRedis, die_with_parent
from scraper.errors import StartupError
from scraper.settings import Settings

log = logging.getLogger("pprof-scraper.run")

#: How long children get for a warm shutdown before SIGKILL. Workers abandon their scrapes at
#: once, so this is pushes finishing; no cold shutdown: Celery's, under gevent, dies with a
#: BlockingSwitchOutError traceback and is no faster than SIGKILL for what it loses (nothing: a
#: push not acknowledged is redone).
WARM_SHUTDOWN_S = 6.0
#: How long the embedded Redis gets to flush its append-only file and exit.
REDIS_SHUTDOWN_S = 2.0


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _url_host(host: str) -> str:
    """How this process reaches its own endpoints listening on ``host``."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pick_worker_ports(host: str, first: int | None, count: int) -> list[int]:
    """``count`` ports for the workers: ``first`` and the next ones up, each taken one replaced by a
    free one with a warning naming it; ``first`` None: any free ones."""
    ports: list[int] = []
    for i in range(count):
        wanted = None if first is None else first + i
        if wanted is not None and _port_free(host, wanted):
            ports.append(wanted)
            continue
        ports.append(_free_port(host))
        if wanted is not None:
            log.warning("port %d on %s is taken; worker%d serves on %d instead", wanted, host, i + 1, ports[-1])
    return ports


@dataclass
class Child:
    """One supervised process: beat or a worker."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass


class Supervisor:
    """Starts and watches Redis, beat and workers; stops them all on request."""

    def __init__(self, settings: Settings, config_path: Path | None, workers: int) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.config_path = config_path
        self.workers = workers
        self.children: list[Child] = []
        self.redis_server: EmbeddedRedis | None = None
        self.broker: str | None = None
        #: where the run's and its workers' HTTP endpoints listen (SCRAPER_HTTP_ADDRESS, loopback by default)
        self.host = str(settings.http_address)
        #: the config file as this process sees it: a refused change shows on /-/ready and in the progress line
        self.source: ConfigSource | None = None
        self.stopping = threading.Event()
        #: set once everything runs: a run that failed to start says only why, not "stopped"
        self.started = False
        self._made_data_dir = False
        self._lock_file: TextIO | None = None

    # ---------------------------------------------------------------- start

    def _builtin_config(self, ports: list[int]) -> ConfigSource:
        path = self.data_dir / "builtin-config.yaml"
        targets = [("run", ports[0])] + [(f"worker{i}", p) for i, p in enumerate(ports[1:], 1)]
        path.write_text(builtin_config_yaml(_url_host(self.host), targets, self.settings.tracemalloc))
        log.info("no --config and no SCRAPER_CONFIG: scraping this run's own processes (built-in config %s); "
                 "give your own with --config FILE (start from `pprof-scraper init`)", path)
        return ConfigSource(path)

    def _take_data_dir(self) -> None:
        """Make the data dir if needed and hold its lock for the run's life; a second run here is refused
        before it touches anything (the config, the metrics files, Redis) of the first."""
        self._made_data_dir = not self.data_dir.exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "run.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StartupError(f"another `pprof-scraper run` (pid {holder}) is using {self.data_dir}: stop it first, "
                               "or give this one its own SCRAPER_DATA_DIR") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock_file = lock

    def _broker(self) -> str:
        if self.settings.broker_url:
            log.info("using the broker at SCRAPER_BROKER_URL")
            return self.settings.broker_url
        self.redis_server = EmbeddedRedis(self.data_dir)
        try:
            self.redis_server.start()
        except (RuntimeError, FileNotFoundError) as exc:
            raise StartupError(str(exc)) from None
        (self.data_dir / "broker-url").write_text(self.redis_server.url + "\n")
        return self.redis_server.url

    def _serve_http(self) -> int:
        """Serve the run's own /metrics, /targets, /-/ready and /debug/pprof; return the port. A port
        set in SCRAPER_HTTP_PORT that is taken is an error; a taken default (6060) is replaced by a
        free port, with a warning naming it: never a silent move."""
        from scraper.httpserver import start_http_server

        requested = self.settings.http_port
        wanted = DEFAULT_RUN_HTTP_PORT if requested is None else requested

        def serve(port: int) -> int:
            _, bound = start_http_server(port, redis_factory=self._redis, host=self.host, ready=self._ready,
                                         config=lambda: self.source.get() if self.source is not None else None)
            return bound

        try:
            return serve(wanted)
        except OSError as exc:
            if requested is not None:
                raise StartupError(f"port {wanted} on {self.host} is taken ({exc.strerror}): stop what serves it, "
                                   "or set SCRAPER_HTTP_PORT to a free port (0: any)") from None
        port = serve(0)
        log.warning("port %d on %s is taken (another run, or a program's own pprof server?); this run serves on %d "
                    "instead (SCRAPER_HTTP_PORT chooses)", wanted, self.host, port)
        return port

    def _redis(self) -> redis.Redis:
        if self.broker is None:
            raise redis.ConnectionError("the run is still starting")
        return connect_redis(broker_url(self.settings), self.settings.sentinel_master)  # with its password file

    def _ready(self) -> tuple[bool, str]:
        return self.source.ready() if self.source is not None else (False, "the run is still starting")

    def start(self) -> tuple[Config, str, list[int]]:
        """Start the HTTP server, Redis, beat and the workers; return the config, the broker URL and
        the HTTP ports (the run's own first). A StartupError or ConfigError leaves nothing behind."""
        # A config given is checked before anything is made: its errors leave no data dir behind.
        given = ConfigSource(self.config_path.resolve()) if self.config_path else None
        self._take_data_dir()
        own = self._serve_http()
        first = None if self.settings.http_port == 0 else own + 1
        ports = [own] + pick_worker_ports(self.host, first, self.workers)
        self.source = given or self._builtin_config(ports)
        config_path, config = self.source.path, self.source.get()
        broker = self.broker = self._broker()
        metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env = dict(os.environ, SCRAPER_BROKER_URL=broker, SCRAPER_CONFIG=str(config_path),
                   SCRAPER_DATA_DIR=str(self.data_dir), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        env.pop("SCRAPER_HTTP_PORT", None)
        # -q: no banners; run says in its own lines what it started, and each child names itself
        celery = [sys.executable, "-m", "celery", "-q", "-A", "worker"]
        level = self.settings.log_level.upper()
        self.children.append(Child("beat", celery + ["beat", "-l", level, "--pidfile="],
                                   dict(env, SCRAPER_PROCESS_NAME="beat")))
        for i, port in enumerate(ports[1:], 1):
            self.children.append(Child(
                f"worker{i}",
                celery + ["worker", "-P", "gevent", "-c", str(self.settings.concurrency), "-Q", "scrape,push",
                          "-n", f"worker{i}@%h", "-l", level, "--without-mingle", "--without-gossip"],
                dict(env, SCRAPER_HTTP_PORT=str(port), SCRAPER_PROCESS_NAME=f"worker{i}"),
            ))
        for child in self.children:
            child.start()
        return config, broker, ports

    # ---------------------------------------------------------------- watch

    def watch(self, config: Config, broker: str) -> None:
        """Log progress every interval and restart children that die, until asked to stop."""
        client = self._redis()
        interval = min((job.scrape_interval.total_seconds() for job in config.scrape.values()), default=15.0)
        previous = status.read_counters(client)
        next_report = time.monotonic() + interval
        while not self.stopping.wait(0.5):
            for child in self.children:
                if not child.alive() and not self.stopping.is_set():
                    code = child.process.returncode if child.process else None
                    child.restarts += 1
                    log.error("%s exited with code %s; restarting it (restart %d)", child.name, code, child.restarts)
                    child.start()
            if time.monotonic() >= next_report:
                next_report += interval
                previous = self._report(client, previous)

    def _report(self, client, previous: dict[str, int]) -> dict[str, int]:
        try:
            counters = status.read_counters(client)
            pending = client.llen(keys.PUSH_QUEUE)
            dead = client.llen(keys.DEADLETTER)
        except Exception as exc:  # noqa: BLE001 - a progress line must never stop the run
            log.warning("progress unavailable: %s", exc)
            return previous

        def delta(name: str) -> int:
            return counters.get(name, 0) - previous.get(name, 0)

        config_ok, config_reason = self.source.ready() if self.source else (True, "")
        log.log(logging.INFO if config_ok else logging.WARNING,
                "last interval: %d scrapes done, %d failed, %d dropped; %d pushes done, %d pending, %d dead-lettered%s",
                delta("scrapes_done"), delta("scrapes_failed"), delta("scrapes_dropped"), delta("pushes_done"),
                pending, dead, "" if config_ok else "; " + " ".join(config_reason.split()))
        return counters

    # ---------------------------------------------------------------- stop

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL; then one line on what was in flight and where it went; then
        Redis, flushing its append-only file."""
        began = time.monotonic()
        self.stopping.set()
        client = self._redis() if self.broker else None
        before = self._counters(client)
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + WARM_SHUTDOWN_S
        while any(c.alive() for c in self.children) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = [c.name for c in self.children if c.alive()]
        for child in self.children:
            child.signal(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()
        summary = self._left_behind(client, before, killed) if self.started else ""
        if self.redis_server is not None:
            self.redis_server.stop(timeout_s=REDIS_SHUTDOWN_S)
        if self.started:
            log.info("stopped in %.1fs%s", time.monotonic() - began, summary)
        elif self._made_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a run that never started leaves nothing behind
        if self._lock_file is not None:
            self._lock_file.close()

    @staticmethod
    def _counters(client: redis.Redis | None) -> dict[str, int] | None:
        try:
            return status.read_counters(client) if client is not None else None
        except redis.RedisError:
            return None

    def _left_behind(self, client: redis.Redis | None, before: dict[str, int] | None, killed: list[str]) -> str:
        """What the stop left undone, as the end of the last line: scrapes abandoned, pushes kept."""
        after = self._counters(client)
        if client is None or before is None or after is None:
            return ""
        try:
            queued = client.llen("push") + client.hlen("unacked")  # kombu's hash of messages taken, not acked
            profiles = client.zcard(keys.PENDING)
        except redis.RedisError:
            return ""
        abandoned = after.get("scrapes_abandoned", 0) - before.get("scrapes_abandoned", 0)
        where = (f"in {self.data_dir}'s Redis for the next run here" if self.redis_server is not None
                 else "in Redis (SCRAPER_BROKER_URL) for any worker")
        parts = [f"{_count(abandoned, 'scrape')} in flight abandoned (counted as scrapes_abandoned)",
                 f"{_count(queued, 'push', 'pushes')} of {_count(profiles, 'profile')} kept {where}"]
        if killed:
            parts.append(f"killed {', '.join(killed)} (their unfinished pushes are redone)")
        return ": " + "; ".join(parts)


def run(settings: Settings, config_path: Path | None, workers: int | None) -> int:
    """Run the whole system until Ctrl-C or SIGTERM; return the exit code."""
    supervisor = Supervisor(settings, config_path or settings.config, workers or os.cpu_count() or 1)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    trace_allocations(settings.tracemalloc)
    try:
        config, broker, ports = supervisor.start()
        supervisor.started = True
        log.info("serving /metrics, /targets and /debug/pprof on http://%s:%d (workers: ports %s)",
                 _url_host(supervisor.host), ports[0], ", ".join(map(str, ports[1:])))
        for name, receiver in config.write.items():
            if isinstance(receiver, FileReceiverConfig):
                log.info("profiles land in %s (receiver %r)", receiver.path.resolve(), name)
        log.info("running beat and %d workers; Ctrl-C stops", supervisor.workers)
        supervisor.watch(config, broker)
    finally:
        supervisor.stop()
    return 0
