"""Real Celery worker and beat processes for end-to-end tests, started the way a user starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import wait_until


class Proc:
    """A child process whose combined output goes to a log file the test can read and wait on."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=logdir)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.output() or self.process.poll() is not None, timeout,
                   message=f"{self.name} to log {text!r}")
        assert self.process.poll() is None, f"{self.name} exited:\n{self.output()[-3000:]}"

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()


def scraper_env(redis_url: str, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    env.update(SCRAPER_BROKER_URL=redis_url, SCRAPER_CONFIG=str(config), SCRAPER_LOG_LEVEL="INFO", **extra)
    return env


def start_worker(env: dict[str, str], logdir: Path, name: str = "worker", concurrency: int = 20,
                 on: Sequence[str] = ()) -> Proc:
    """A gevent worker of both queues; ``on``: a command prefix that runs it elsewhere (``ip netns exec``)."""
    proc = Proc(name, [*on, sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", "gevent", "-c", str(concurrency),
                       "-Q", "scrape,push", "-n", f"{name}@%h", "-l", "INFO", "--without-mingle", "--without-gossip"],
                env, logdir)
    proc.wait_for_output("ready.")
    return proc


def start_beat(env: dict[str, str], logdir: Path, name: str = "beat", on: Sequence[str] = ()) -> Proc:
    proc = Proc(name, [*on, sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO", "--pidfile="], env, logdir)
    proc.wait_for_output("beat: Starting")
    return proc
