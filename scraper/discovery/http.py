"""HTTP-based discovery: Prometheus ``http_sd_configs``, a URL answering a JSON list of target groups."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ..errors import ScrapeError, SecretFileError
from .base import Discoverer, DiscoveryError, Targets, targets_from_groups
from .models import HTTPSDConfig

if TYPE_CHECKING:
    from ..client import TargetClient

META_URL = "__meta_url"

#: Prometheus accepts only this Content-Type from an HTTP SD endpoint.
_JSON_CONTENT_TYPE = re.compile(r'^(?i:application/json(;\s*charset=("utf-8"|utf-8))?)$')
#: A target list this big is a mistake; stop reading instead of filling memory.
_BODY_LIMIT = 64 * 1024 * 1024
#: Longest wait for an answer; a refresh shorter than this waits for the refresh interval instead.
_MAX_TIMEOUT_S = 30.0


class HTTPDiscovery(Discoverer):
    """Targets from ``GET url``; a failed refresh keeps the last good list and sets :attr:`last_error`.

    Requests honour ``http_client_config`` (authentication, TLS, proxy, redirects) through the
    same client that scrapes targets.
    """

    def __init__(self, config: HTTPSDConfig) -> None:
        super().__init__(config.refresh_interval.total_seconds())
        self.config = config
        self._client: TargetClient | None = None

    def _get_client(self) -> TargetClient:
        if self._client is None:
            # client imports scraper.config, which imports this package: load it on first use
            from ..client import TargetClient
            from ..config import HTTPClientConfig

            self._client = TargetClient(self.config.http_client_config or HTTPClientConfig())
        return self._client

    def close(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _lookup(self) -> dict[str, Targets | DiscoveryError]:
        url = self.config.url
        try:
            return {url: self._fetch(url)}
        except DiscoveryError as exc:
            return {url: exc}

    def _fetch(self, url: str) -> Targets:
        try:
            answer = self._get_client().fetch(
                url, timeout_s=min(self.refresh_interval, _MAX_TIMEOUT_S), body_size_limit=_BODY_LIMIT
            )
        except (ScrapeError, SecretFileError) as exc:
            raise DiscoveryError(f"http_sd {url}: {exc}") from None
        content_type = answer.content_type.strip()
        if not _JSON_CONTENT_TYPE.match(content_type):
            raise DiscoveryError(f"http_sd {url}: Content-Type is {content_type!r}, expected application/json")
        try:
            groups = json.loads(answer.body)
        except ValueError as exc:
            raise DiscoveryError(f"http_sd {url}: body is not valid JSON: {exc}") from None
        if isinstance(groups, list) and any(group is None for group in groups):
            raise DiscoveryError(f"http_sd {url}: null target group item found")
        return targets_from_groups(groups, f"http_sd {url}", {META_URL: url})
