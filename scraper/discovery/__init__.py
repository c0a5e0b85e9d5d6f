"""Service discovery: where a job's targets come from besides its static ``targets``.

    models          the ``file_sd_configs``, ``http_sd_configs``, ``dns_sd_configs`` and
                    ``kubernetes_sd_configs`` blocks (scraper.config puts them in ScrapeJob)
    base            DiscoveryError and the Discoverer bookkeeping every source shares
    file, http,     one Discoverer each: ``refresh()`` looks the targets up again,
    dns, kubernetes ``refresh_interval`` says how often, ``due(now)`` whether it is time
    resolve         resolve_targets: static + discovered targets through relabel_configs;
                    build_discoverers: the discoverers of one job

Beat drives it: every tick it refreshes the discoverers that are ``due``, then plans
``resolve_targets(job, targets)``. The discoverer modules are not imported here, so that
loading the config does not load dnspython or the kubernetes client.
"""

from __future__ import annotations

# HTTPSDConfig validates its http_client_config as scraper.config.HTTPClientConfig, and the config
# imports this package: load it last, so that either import order leaves both usable.
from .. import config as _config  # noqa: F401
from .base import Discoverer, DiscoveryError
from .models import (
    DNSSDConfig,
    FileSDConfig,
    HTTPSDConfig,
    KubernetesNamespaces,
    KubernetesSDConfig,
    KubernetesSelector,
)
from .resolve import DroppedTarget, build_discoverers, relabel_targets, resolve_targets

__all__ = [
    "DNSSDConfig",
    "Discoverer",
    "DiscoveryError",
    "DroppedTarget",
    "FileSDConfig",
    "HTTPSDConfig",
    "KubernetesNamespaces",
    "KubernetesSDConfig",
    "KubernetesSelector",
    "build_discoverers",
    "relabel_targets",
    "resolve_targets",
]
