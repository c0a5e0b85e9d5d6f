"""`pprof-scraper run` and the CLI with Redis behind Sentinel: given only the sentinels' URL and
the master's name, they find the master and scrape through it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_run import CLI, interrupt
from tests.sentinel import loopback_sentinel

pytestmark = pytest.mark.slow


def test_run_and_the_cli_work_through_sentinel(tmp_path: Path) -> None:
    with loopback_sentinel(tmp_path, "scrapers") as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
        env.update(SCRAPER_BROKER_URL=url, SCRAPER_SENTINEL_MASTER="scrapers", SCRAPER_HTTP_PORT="0")
        with (tmp_path / "run.log").open("wb") as out:
            run = subprocess.Popen([CLI, "run", "--workers", "1"], cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, process_group=0)  # Ctrl-C reaches its group
        try:
            wait_until(lambda: any((tmp_path / "profiles").rglob("*.pb.gz")), timeout=60,
                       message="a self-profile scraped through the sentinel's master")
            shown = subprocess.run([CLI, "targets", "--json"], env=env, capture_output=True, text=True, timeout=60,
                                   check=True)
            assert any(t["health"] == "up" for t in json.loads(shown.stdout))
        finally:
            interrupt(run)
    assert "using the broker at SCRAPER_BROKER_URL" in (tmp_path / "run.log").read_text()
