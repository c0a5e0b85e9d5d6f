"""A worker and a beat started by hand, as the README says, say what they do: INFO by default."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import Proc, scraper_env

pytestmark = pytest.mark.slow


def test_a_beat_started_without_a_log_level_logs_at_info_naming_its_host_and_pid(
        tmp_path: Path, redis_url: str, procs: list[Proc]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("""
scrape:
  demo: {targets: [{__address__: "127.0.0.1:9"}], forward_to: [files]}
write:
  files: {type: file, path: ./profiles}
""")
    env = scraper_env(redis_url, config)
    env.pop("SCRAPER_LOG_LEVEL")
    beat = Proc("beat", [sys.executable, "-m", "celery", "-A", "worker", "beat", "--pidfile="], env, tmp_path)
    procs.append(beat)
    beat.wait_for_output("planned 5 scrape specs", timeout=60)
    line = next(line for line in beat.output().splitlines() if "planned 5 scrape specs" in line)
    assert f" INFO {socket.gethostname()}:{beat.process.pid} beat.scheduler: " in line
