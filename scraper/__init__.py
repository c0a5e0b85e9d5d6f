"""pprof-scraper's domain: from a config to stored profiles, with no Celery in it.

The stages, in the order a profile passes them (``worker/`` and ``beat/`` only adapt them to Celery):

    config, httpconfig      the YAML config and its HTTP client options
    discovery               targets from files, HTTP, DNS, Kubernetes; relabeling (relabel)
    plan                    scrape specs and when each is due
    scrape, client          one scrape of one target: the request, the checks
    delivery, receivers     pushes to Pyroscope or the file store, their retries and dead letters
    runtime, status         what a worker process holds; each target's last result

The names below are the public surface; each is imported on first use, so ``import scraper``
costs nothing and pulls in no gevent, Redis client or protobuf.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Config": "config",
    "ConfigSource": "config",
    "HTTPClientConfig": "httpconfig",
    "ScrapeJob": "config",
    "load_config": "config",
    "parse_config_text": "config",
    "Plan": "plan",
    "ScrapeSpec": "plan",
    "make_plan": "plan",
    "scrape_once": "scrape",
    "ScrapeResult": "scrape",
    "TargetClient": "client",
    "Profile": "receivers",
    "Receiver": "receivers",
    "ScraperError": "errors",
    "ConfigError": "errors",
    "ScrapeError": "errors",
    "PushError": "errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'scraper' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
