"""A Redis master and one sentinel watching it, on loopback: enough to connect through Sentinel."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port, redis_server_binary


@contextmanager
def loopback_sentinel(workdir: Path, master_name: str) -> Iterator[tuple[str, int]]:
    """The ``sentinel://`` URL (database 3) of a sentinel that names a fresh master ``master_name``,
    and the master's port."""
    master_port, sentinel_port = free_port(), free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n")
    servers = [subprocess.Popen([redis_server_binary(), "--port", str(master_port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL),
               subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)]
    try:
        yield f"sentinel://127.0.0.1:{sentinel_port}/3", master_port
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
