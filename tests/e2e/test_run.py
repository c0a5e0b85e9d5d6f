"""`pprof-scraper run`: the whole system in one command, stopped with Ctrl-C, run again without loss."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from scraper import keys
from tests.conftest import wait_until
from tests.fakes import pprof_target

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "pprof-scraper")


def start_run(workdir: Path, *args: str, log: str = "run.log") -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    env["SCRAPER_HTTP_PORT"] = "0"
    out = (workdir / log).open("wb")
    # its own process group, as a shell gives a foreground job: Ctrl-C goes to all of the group
    return subprocess.Popen([CLI, "run", "--workers", "1", *args], cwd=workdir, env=env,
                            stdout=out, stderr=subprocess.STDOUT, process_group=0)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def write_demo_config(workdir: Path, address: str, store: Path, job_extra: str = "") -> None:
    """``workdir/c.yaml``: one job, ``demo``, scraping ``address`` into the file store at ``store``."""
    (workdir / "c.yaml").write_text(f"""
scrape:
  demo:
    targets: [{{__address__: "{address}"}}]
    forward_to: [files]{job_extra}
write:
  files: {{type: file, path: "{store}"}}
""")


def interrupt(run: subprocess.Popen[bytes]) -> float:
    """Press Ctrl-C (SIGINT to the run's whole process group, as a terminal sends it) and return how
    long `run` took to exit."""
    began = time.monotonic()
    os.killpg(run.pid, signal.SIGINT)
    run.wait(timeout=30)
    return time.monotonic() - began


def stored_ids(store: Path) -> set[str]:
    return {json.loads(p.read_text())["id"] for p in store.rglob("*.json")} if store.is_dir() else set()


def test_ctrl_c_stops_everything_within_ten_seconds_and_a_rerun_delivers_what_was_queued(tmp_path: Path) -> None:
    store = tmp_path / "profiles"
    store.write_text("a file where the store's directory should be: every push fails and is retried")
    with pprof_target() as target:
        write_demo_config(tmp_path, target.address, store, job_extra="\n    scrape_interval: 3s")
        run = start_run(tmp_path, "--config", "c.yaml")
        client = redis.Redis(unix_socket_path=str(tmp_path / ".pprof-scraper" / "redis.sock"))
        try:
            wait_until(lambda: (tmp_path / ".pprof-scraper" / "redis.sock").exists() and
                       len(client.keys(keys.BODY.format(id="*"))) >= 3,
                       timeout=40, message="three validated profiles waiting for their push")
            pending = {k.decode().rsplit(":", 1)[1] for k in client.keys(keys.BODY.format(id="*"))}
        finally:
            took = interrupt(run)
        assert run.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert took < 10
        assert processes_mentioning(str(tmp_path)) == []

        store.unlink()  # the store is back
        rerun = start_run(tmp_path, "--config", "c.yaml", log="rerun.log")
        try:
            wait_until(lambda: pending <= stored_ids(store), timeout=60,
                       message="every profile queued before Ctrl-C to land after the re-run")
        finally:
            interrupt(rerun)
    assert processes_mentioning(str(tmp_path)) == []


@contextmanager
def a_core_kept_busy() -> Iterator[None]:
    """Another process spinning on a core for the test's length (bounded, in case the test dies)."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 300\nwhile time.time() < end: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_ctrl_c_on_a_busy_machine_abandons_a_cpu_profile_in_flight_and_says_so_in_one_line(tmp_path: Path) -> None:
    with pprof_target() as target, a_core_kept_busy():
        write_demo_config(tmp_path, target.address, tmp_path / "profiles")
        run = start_run(tmp_path, "--config", "c.yaml")
        try:
            wait_until(lambda: any(path == "/debug/pprof/profile" for path, _ in target.requests), timeout=60,
                       message="a 14 s CPU profile in flight")
        finally:
            took = interrupt(run)
    log = (tmp_path / "run.log").read_text()
    assert run.returncode == 0, log[-3000:]
    assert took < 10
    assert "Traceback" not in log and "Error" not in log, log[-5000:]
    last = log.strip().splitlines()[-1]
    assert re.search(r"stopped in \d+\.\ds: 1 scrape in flight abandoned .*; \d+ push(es)? of \d+ profiles? kept in "
                     + re.escape(str(tmp_path / ".pprof-scraper")), last), last
    assert target.served["/debug/pprof/profile"] == 0
    assert processes_mentioning(str(tmp_path)) == []


def test_run_with_no_config_scrapes_itself_into_profiles(tmp_path: Path) -> None:
    run = start_run(tmp_path)
    try:
        wait_until(lambda: any((tmp_path / "profiles").rglob("*.pb.gz")), timeout=40,
                   message="a self-profile in ./profiles")
        # Other commands started in the same directory find the run's Redis without flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
        targets = subprocess.run([CLI, "targets", "--json"], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)
        assert targets.returncode == 0, targets.stderr
        assert any(t["health"] == "up" and t["job"] == "self" for t in json.loads(targets.stdout))
    finally:
        interrupt(run)
    log = (tmp_path / "run.log").read_text()
    assert "scraping this run's own processes" in log
    assert "Traceback" not in log  # not even from a self-profile whose scraper stopped mid-request
    assert f"profiles land in {tmp_path / 'profiles'}" in log
    sidecar = json.loads(next((tmp_path / "profiles").rglob("*.json")).read_text())
    assert sidecar["labels"]["service_name"] == "pprof-scraper"


def test_runs_output_is_one_log_format_each_line_naming_its_process_without_banners(tmp_path: Path) -> None:
    run = start_run(tmp_path)
    try:
        wait_until(lambda: "worker1@" in (tmp_path / "run.log").read_text() and
                   "beat holds the lock" in (tmp_path / "run.log").read_text(), timeout=60,
                   message="beat and the worker up")
    finally:
        interrupt(run)
    lines = [line for line in (tmp_path / "run.log").read_text().splitlines() if line.strip()]
    logged = [re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (\S+) \S+: ", line) for line in lines]
    assert {m.group(1) for m in logged if m} == {"run", "beat", "worker1"}
    assert not any("-------------- " in line or "[tasks]" in line for line in lines), "a Celery banner"


def run_to_the_end(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`pprof-scraper run` expected to stop by itself (a startup error)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    return subprocess.run([CLI, "run", "--workers", "1", *args], cwd=workdir, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def assert_one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "stopped" not in result.stderr, result.stderr


def test_run_with_a_missing_config_says_so_in_one_line_and_leaves_no_data_directory(tmp_path: Path) -> None:
    result = run_to_the_end(tmp_path, "--config", "missing.yaml")
    assert_one_error_line(result, "missing.yaml is invalid")
    assert f"cannot read {tmp_path / 'missing.yaml'}: No such file or directory" in result.stderr
    assert not (tmp_path / ".pprof-scraper").exists()


def test_a_second_run_in_the_same_directory_is_refused_and_the_first_carries_on(tmp_path: Path) -> None:
    first = start_run(tmp_path)
    try:
        wait_until(lambda: "running beat and 1 workers" in (tmp_path / "run.log").read_text(), timeout=60,
                   message="the first run to be up")
        config_before = (tmp_path / ".pprof-scraper" / "builtin-config.yaml").read_text()
        second = run_to_the_end(tmp_path, SCRAPER_HTTP_PORT="0")
        assert_one_error_line(second, f"another `pprof-scraper run` (pid {first.pid}) is using "
                                      f"{tmp_path / '.pprof-scraper'}")
        assert (tmp_path / ".pprof-scraper" / "builtin-config.yaml").read_text() == config_before
        assert first.poll() is None
    finally:
        interrupt(first)
    assert first.returncode == 0


def test_a_taken_http_port_is_an_error_when_asked_for_and_a_named_move_when_it_is_the_default(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_the_end(tmp_path, SCRAPER_HTTP_PORT=str(port))
        assert_one_error_line(result, f"port {port} on 127.0.0.1 is taken")
        assert not (tmp_path / ".pprof-scraper").exists()
    with socket.socket() as default:
        default.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            default.bind(("127.0.0.1", 6060))
            default.listen()
        except OSError:
            pass  # taken already, by someone else: the case under test all the same
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
        run = subprocess.Popen([CLI, "run", "--workers", "1"], cwd=tmp_path, env=env, process_group=0,
                               stdout=(tmp_path / "run.log").open("wb"), stderr=subprocess.STDOUT)
        try:
            moved = wait_until(lambda: re.search(r"port 6060 on 127.0.0.1 is taken .* serves on (\d+) instead",
                                                 (tmp_path / "run.log").read_text()), timeout=60,
                               message="a warning naming the port chosen instead")
            wait_until(lambda: f"on http://127.0.0.1:{moved.group(1)} " in (tmp_path / "run.log").read_text(),
                       timeout=60, message="the run serving on the port it named")
        finally:
            interrupt(run)


def ready(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError as error:  # not listening yet
        return 0, str(error)


def test_a_refused_config_change_shows_on_every_ready_endpoint_and_in_the_progress_line_until_fixed(
        tmp_path: Path) -> None:
    with pprof_target() as target:
        good = f"""
scrape:
  demo:
    targets: [{{__address__: "{target.address}"}}]
    forward_to: [files]
    scrape_interval: 2s
    profiling_config: {{profile.process_cpu: {{enabled: false}}}}
write:
  files: {{type: file, path: "{tmp_path / 'profiles'}"}}
"""
        config = tmp_path / "c.yaml"
        config.write_text(good)
        run = start_run(tmp_path, "--config", "c.yaml")
        try:
            serving = wait_until(lambda: re.search(r"on http://127\.0\.0\.1:(\d+) \(workers: ports (\d+)\)",
                                                   (tmp_path / "run.log").read_text()), timeout=60,
                                 message="the run to name its ports")
            ports = [int(serving.group(1)), int(serving.group(2))]
            wait_until(lambda: all(ready(port)[0] == 200 for port in ports), timeout=60, message="every port ready")

            config.write_text(good.replace("scrape_interval: 2s", "scrape_interval: 2s\n    scheme: ftp"))
            wait_until(lambda: all(ready(port)[0] == 503 for port in ports), timeout=60,
                       message="every port to say not ready")
            for port in ports:
                reason = ready(port)[1]
                assert "a config reload was refused" in reason and "scrape.demo.scheme" in reason
            wait_until(lambda: re.search(r"last interval: .*; a config reload was refused.*scrape\.demo\.scheme",
                                         (tmp_path / "run.log").read_text()), timeout=60,
                       message="the progress line to say the change was refused")

            config.write_text(good)
            wait_until(lambda: all(ready(port)[0] == 200 for port in ports), timeout=60,
                       message="every port ready again once the config is fixed")
        finally:
            interrupt(run)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the IPv4 and IPv6 sockets listening on ``port``, from /proc/net."""
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)) if width == 8 else str(ipaddress.IPv6Address(words)))
    return found


def test_run_listens_on_loopback_only_unless_told_otherwise(tmp_path: Path) -> None:
    run = start_run(tmp_path)
    try:
        serving = wait_until(lambda: re.search(r"on http://127\.0\.0\.1:(\d+) \(workers: ports (\d+)\)",
                                               (tmp_path / "run.log").read_text()), timeout=60,
                             message="the run to name its ports")
        ports = [int(serving.group(1)), int(serving.group(2))]
        wait_until(lambda: all(listening_addresses(port) for port in ports), timeout=60,
                   message="the run and its worker listening")
        assert [listening_addresses(port) for port in ports] == [{"127.0.0.1"}, {"127.0.0.1"}]
    finally:
        interrupt(run)


def test_a_slots_quick_profiles_are_stored_while_its_cpu_profile_is_still_being_taken(tmp_path: Path) -> None:
    store = tmp_path / "profiles"
    with pprof_target() as target:  # holds each CPU profile its ?seconds=14
        write_demo_config(tmp_path, target.address, store)
        run = start_run(tmp_path, "--config", "c.yaml")
        try:
            wait_until(lambda: any(store.glob("demo/goroutine/**/*.pb.gz")), timeout=60,
                       message="the first goroutine profile in the store")
            cpu_requests = [path for path, _ in target.requests if path == "/debug/pprof/profile"]
            assert cpu_requests and target.served["/debug/pprof/profile"] == 0, "the slot's CPU profile is in flight"
            assert not any(store.glob("demo/process_cpu/**/*.pb.gz"))
            wait_until(lambda: any(store.glob("demo/process_cpu/**/*.pb.gz")), timeout=60,
                       message="the slot's CPU profile stored in its turn")
        finally:
            interrupt(run)
