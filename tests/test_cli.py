"""The `pprof-scraper check` and `plan` commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.scraper.test_plan import SEED_EXAMPLE, SEED_URLS

CLI = str(Path(sys.executable).parent / "pprof-scraper")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_check_summarises_a_valid_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SEED_EXAMPLE)
    result = run_cli("check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: ok: 1 jobs, 2 targets, 8 scrapes per interval, 1 receivers"


def test_check_lists_every_problem_of_an_invalid_config_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SEED_EXAMPLE.replace("forward_to: [local]", "forward_to: [local]\n    scrape_intervall: 1s\n    scheme: ftp"))
    result = run_cli("check", str(config))
    assert result.returncode == 2
    assert "scrape.local.scrape_intervall: unknown key" in result.stderr
    assert "scrape.local.scheme: Input should be 'http' or 'https'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_names_a_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "nope.yaml" in result.stderr


def test_plan_json_prints_one_object_per_scrape_with_the_documented_fields(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SEED_EXAMPLE)
    result = run_cli("plan", str(config), "--json")
    assert result.returncode == 0, result.stderr
    specs = [json.loads(line) for line in result.stdout.splitlines()]
    assert {s["url"] for s in specs} == SEED_URLS
    for spec in specs:
        assert {"job", "profile_type", "url", "labels", "interval_s", "timeout_s", "offset_s", "forward_to"} <= spec.keys()
        assert 0 <= spec["offset_s"] < spec["interval_s"] == 15


def test_plan_prints_a_readable_table(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SEED_EXAMPLE)
    result = run_cli("plan", str(config))
    assert result.returncode == 0, result.stderr
    assert "process_cpu" in result.stdout and "localhost:12345" in result.stdout


def test_plan_output_carries_no_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(SEED_EXAMPLE.replace(
        "forward_to: [local]", "forward_to: [local]\n    http_client_config: {bearer_token: tok-9f8e7d}"))
    for args in (("plan", str(config), "--json"), ("plan", str(config)), ("check", str(config))):
        result = run_cli(*args)
        assert "tok-9f8e7d" not in result.stdout + result.stderr


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("check", "plan", "run", "targets", "deadletter"):
        assert command in result.stdout


def test_init_writes_an_example_config_that_passes_check(tmp_path: Path) -> None:
    result = run_cli("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "pprof-scraper.yaml"
    assert written.read_text().startswith("# pprof-scraper config")
    check = run_cli("check", str(written))
    assert check.returncode == 0, check.stderr


def test_inits_node_example_scrapes_wall_time_and_heap_at_the_datadog_pprof_paths(tmp_path: Path) -> None:
    assert run_cli("init", cwd=tmp_path).returncode == 0
    result = run_cli("plan", "--json", "pprof-scraper.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    node = {s["profile_type"]: s["url"] for s in map(json.loads, result.stdout.splitlines()) if s["job"] == "my_node_service"}
    assert node == {"memory": "http://localhost:3000/debug/pprof/heap",
                    "wall": "http://localhost:3000/debug/pprof/profile?seconds=14"}


def test_init_does_not_overwrite_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "pprof-scraper.yaml").write_text("mine")
    result = run_cli("init", cwd=tmp_path)
    assert result.returncode == 2
    assert (tmp_path / "pprof-scraper.yaml").read_text() == "mine"
