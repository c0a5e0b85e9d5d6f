"""What the fault tests share: a Redis server they may stop and restart, reading a process's
memory, reading target status and the file store, and asking a process's HTTP server."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import redis
import yaml

from scraper.status import TargetStatus, read_statuses
from tests.conftest import redis_server_binary, wait_until

#: Profile types every fault config turns off, so that only what a test names is scraped.
BUILTIN_OFF = {f"profile.{name}": {"enabled": False} for name in ("memory", "block", "mutex", "process_cpu")}


class RedisServer:
    """A redis-server of the test's own, with append-only persistence, on a fixed port so that it
    can be stopped and started again under the same address."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = self.client()
        wait_until(lambda: _answers(client), timeout=15, message="redis-server to answer PING")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), which writes the append-only file out first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def write_config(path: Path, scrape: dict[str, object], write: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"scrape": scrape, "write": write}, sort_keys=False))
    return path


def status_of(client: redis.Redis, job: str, profile_type: str, **labels: str) -> TargetStatus | None:
    """The status of one profile type of one target of ``job`` (the one carrying ``labels``)."""
    for status in read_statuses(client, job=job):
        if status.profile_type == profile_type and all(status.labels.get(k) == v for k, v in labels.items()):
            return status
    return None


def stored_ids(store: Path) -> Counter[str]:
    """How many ``.pb.gz`` files the file store holds per profile id (a file is named ``...-<id>.pb.gz``)."""
    # the id is a UUID, the last five dash-separated parts of the name
    return Counter("-".join(p.name.removesuffix(".pb.gz").split("-")[-5:]) for p in store.rglob("*.pb.gz"))


def sidecars(store: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in store.rglob("*.json")]


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """Status and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
