"""pprof-scraper's domain: from a config to stored profiles, with no Celery in it.

The stages, in the order a profile passes them (``worker/`` and ``beat/`` only adapt them to Celery):

    config, httpconfig      the YAML config and its HTTP client options
    discovery               targets from files, HTTP, DNS, Kubernetes; relabeling (relabel)
    plan, schedule          scrape specs, and when each is due (beat's heap, grouping, shedding)
    scrape, client          one scrape of one target: the fetch and its checks
    httpclient              every outgoing request (scrapes, HTTP SD, pushes): TLS, auth, proxies
    pprof                   validation of a body as pprof
    delta, baseline         the change of a cumulative profile since the previous scrape
    push, delivery          pushes: deliver, retry, dead-letter; the claim check in Redis
    receivers               Pyroscope and the file store
    runtime, status         what a worker process holds; each target's last result
    concurrency             how the stages run calls side by side, handed to them by worker/

The names below are the public surface; each is imported on first use, so ``import scraper``
costs nothing and pulls in no gevent, Redis client or protobuf.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Config": "config",
    "ConfigError": "errors",
    "ConfigSource": "config",
    "HTTPClient": "httpclient",
    "HTTPClientConfig": "httpconfig",
    "Plan": "plan",
    "Profile": "receivers",
    "PushError": "errors",
    "Receiver": "receivers",
    "ScrapeError": "errors",
    "ScrapeJob": "config",
    "ScrapeResult": "scrape",
    "Schedule": "schedule",
    "ScrapeSpec": "plan",
    "ScraperError": "errors",
    "TargetClient": "client",
    "load_config": "config",
    "make_plan": "plan",
    "parse_config_text": "config",
    "scrape_once": "scrape",
}

__all__ = [
    "Config",
    "ConfigError",
    "ConfigSource",
    "HTTPClient",
    "HTTPClientConfig",
    "Plan",
    "Profile",
    "PushError",
    "Receiver",
    "Schedule",
    "ScrapeError",
    "ScrapeJob",
    "ScrapeResult",
    "ScrapeSpec",
    "ScraperError",
    "TargetClient",
    "load_config",
    "make_plan",
    "parse_config_text",
    "scrape_once",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'scraper' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
