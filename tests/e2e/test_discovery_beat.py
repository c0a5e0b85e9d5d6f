"""Beat follows the fleet: targets that appear in a discovery file are scraped, vanished ones stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from scraper import keys
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import pprof_target

pytestmark = pytest.mark.slow

INTERVAL_S = 3
CLI = str(Path(sys.executable).parent / "pprof-scraper")


def write_sd(path: Path, addresses: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": addresses, "labels": {"team": "core"}}]))
    tmp.replace(path)  # atomic, as a config-management tool would write it


def test_beat_scrapes_targets_as_they_appear_in_discovery_and_stops_those_that_vanish(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, procs: list[Proc]) -> None:
    sd_file = tmp_path / "targets.json"
    with pprof_target() as first, pprof_target() as second:
        write_sd(sd_file, [first.address])
        config = tmp_path / "c.yaml"
        config.write_text(f"""
scrape:
  fleet:
    file_sd_configs: [{{files: ["{tmp_path}/*.json"]}}]
    relabel_configs:
      - {{source_labels: [__meta_filepath], regex: ".*", target_label: sd, replacement: file}}
    forward_to: [files]
    scrape_interval: {INTERVAL_S}s
    profiling_config: {{profile.process_cpu: {{enabled: false}}}}
write:
  files: {{type: file, path: "{tmp_path / 'profiles'}"}}
""")
        env = scraper_env(redis_url, config)
        procs.append(start_worker(env, tmp_path))
        procs.append(start_beat(env, tmp_path))
        stored = wait_until(lambda: next((tmp_path / "profiles").rglob("*.json"), None), timeout=2 * INTERVAL_S + 10,
                            message="a profile of the discovered target in the store")
        sidecar = json.loads(stored.read_text())
        assert sidecar["labels"]["team"] == "core" and sidecar["labels"]["sd"] == "file"

        write_sd(sd_file, [second.address])
        wait_until(lambda: sum(second.served.values()) >= 4, timeout=3 * INTERVAL_S + 10,
                   message="the newly discovered target to be scraped")
        wait_until(lambda: len(redis_client.hkeys(keys.STATUS)) == 4, timeout=10,
                   message="the vanished target's status records to go")
        served = sum(first.served.values())
        wait_until(lambda: sum(second.served.values()) >= 12, timeout=3 * INTERVAL_S + 10,
                   message="more scrapes of the new target")
        assert sum(first.served.values()) == served


def test_plan_json_shows_discovered_targets_with_labels_before_and_after_relabeling(tmp_path: Path) -> None:
    write_sd(tmp_path / "t.json", ["10.0.0.1:6060", "10.0.0.2:6060"])
    config = tmp_path / "c.yaml"
    config.write_text(f"""
scrape:
  fleet:
    file_sd_configs: [{{files: ["{tmp_path}/t.json"]}}]
    relabel_configs:
      - {{source_labels: [__address__], regex: "10.0.0.2:.*", action: drop}}
      - {{source_labels: [__meta_filepath], target_label: origin}}
    forward_to: [files]
    profiling_config: {{profile.process_cpu: {{enabled: false}}, profile.block: {{enabled: false}},
                        profile.mutex: {{enabled: false}}, profile.memory: {{enabled: false}}}}
write:
  files: {{type: file}}
""")
    result = subprocess.run([CLI, "plan", str(config), "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [spec] = [json.loads(line) for line in result.stdout.splitlines()]
    assert spec["url"] == "http://10.0.0.1:6060/debug/pprof/goroutine"
    assert spec["labels"]["origin"] == str(tmp_path / "t.json")
    assert spec["discovered_labels"]["__meta_filepath"] == str(tmp_path / "t.json")
    assert "origin" not in spec["discovered_labels"]
