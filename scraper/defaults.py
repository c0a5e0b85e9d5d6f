"""The built-in config of ``pprof-scraper run`` with no config at all: it scrapes its own processes,
so a first run on a fresh machine stores real profiles that ``go tool pprof`` opens."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import yaml

#: Frames tracemalloc keeps per allocation when SCRAPER_TRACEMALLOC is on: enough to name the
#: caller, few enough to keep its overhead bearable (see docs/self-profiling.md).
TRACEMALLOC_FRAMES = 8

def trace_allocations(enabled: bool) -> None:
    """Start tracemalloc when SCRAPER_TRACEMALLOC asks for it, so /debug/pprof/heap can answer."""
    if enabled and not tracemalloc.is_tracing():
        tracemalloc.start(TRACEMALLOC_FRAMES)


def log_format(process: str) -> str:
    """The one log line format of every process: time, level, which process (``run``, ``beat``,
    ``worker1`` under ``pprof-scraper run``; ``host:pid`` otherwise), logger, message."""
    return f"%(asctime)s %(levelname)s {process.replace('%', '%%')} %(name)s: %(message)s"


#: The commented example config that ``pprof-scraper init`` writes.
EXAMPLE_CONFIG = Path(__file__).with_name("example_config.yaml")

#: Port of the HTTP server of ``pprof-scraper run`` when SCRAPER_HTTP_PORT is unset (Go's customary pprof port).
DEFAULT_RUN_HTTP_PORT = 6060


def builtin_config_yaml(host: str, targets: list[tuple[str, int]], tracemalloc: bool) -> str:
    """A config scraping each ``(component, port)`` on ``host`` every 15 s into ./profiles
    (and its heap every minute when tracemalloc traces: a heap profile then takes seconds)."""
    addresses = [{"__address__": f"{host}:{port}", "component": component, "service_name": "pprof-scraper"}
                 for component, port in targets]
    off = {"enabled": False}
    jobs: dict[str, object] = {
        "self": {
            "targets": addresses,
            "forward_to": ["files"],
            "scrape_interval": "15s",
            "profiling_config": {"profile.memory": off, "profile.block": off, "profile.mutex": off},
        }
    }
    if tracemalloc:
        jobs["self-heap"] = {
            "targets": addresses,
            "forward_to": ["files"],
            "scrape_interval": "60s",
            "scrape_timeout": "50s",
            "profiling_config": {"profile.memory": {"enabled": True, "path": "/debug/pprof/heap"},
                                 "profile.block": off, "profile.mutex": off, "profile.goroutine": off,
                                 "profile.process_cpu": off},
        }
    config = {"scrape": jobs, "write": {"files": {"type": "file", "path": "./profiles"}}}
    header = "# Built-in config of `pprof-scraper run`: it scrapes its own processes. Give your own with --config.\n"
    return header + yaml.safe_dump(config, sort_keys=False)
