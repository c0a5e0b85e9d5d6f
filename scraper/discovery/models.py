"""The ``*_sd_configs`` blocks of a scrape job, with Prometheus' keys and defaults."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from ..durations import Duration
from ..httpconfig import HTTPClientConfig
from ..httpconfig import Model as _Model


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than 0")
    return value


RefreshInterval = Annotated[Duration, AfterValidator(_positive)]


# Prometheus accepts one '*' in the last path element only, and these extensions.
_FILE_SD_PATTERN = re.compile(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$")


class FileSDConfig(_Model):
    """``file_sd_configs`` entry: targets read from JSON or YAML files matching ``files``."""

    files: list[str] = Field(min_length=1)
    refresh_interval: RefreshInterval = timedelta(minutes=5)

    @field_validator("files")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        bad = [pattern for pattern in value if not _FILE_SD_PATTERN.match(pattern)]
        if bad:
            raise ValueError(
                f"invalid file pattern(s) {', '.join(map(repr, bad))}: a path ending in .json, .yml or .yaml, "
                "with at most one '*' and only in the file name"
            )
        return value


class HTTPSDConfig(_Model):
    """``http_sd_configs`` entry: targets from a URL answering Prometheus' HTTP SD JSON."""

    url: str
    refresh_interval: RefreshInterval = timedelta(seconds=60)
    #: how to authenticate and connect; None means the defaults of ``HTTPClientConfig``
    http_client_config: HTTPClientConfig | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"url must be an http:// or https:// URL, got {value!r}")
        return value


class DNSSDConfig(_Model):
    """``dns_sd_configs`` entry: targets from SRV, A or AAAA records of ``names``."""

    names: list[str] = Field(min_length=1)
    type: Literal["SRV", "A", "AAAA"] = "SRV"
    port: int | None = Field(default=None, ge=1, le=65535)
    refresh_interval: RefreshInterval = timedelta(seconds=30)

    @field_validator("type", mode="before")
    @classmethod
    def _uppercase_type(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _port_for_addresses(self) -> DNSSDConfig:
        if self.type != "SRV" and self.port is None:
            raise ValueError(f"port is required for type {self.type} (only SRV records carry a port)")
        return self


KubernetesRole = Literal["pod", "service", "endpoints", "node"]

#: Which selector roles each discovery role takes, as in Prometheus.
ALLOWED_SELECTOR_ROLES: dict[str, tuple[str, ...]] = {
    "pod": ("pod",),
    "service": ("service",),
    "endpoints": ("endpoints", "pod", "service"),
    "node": ("node",),
}


class KubernetesNamespaces(_Model):
    """Which namespaces to look in; empty ``names`` means all of them."""

    names: list[str] = []


class KubernetesSelector(_Model):
    """A label and/or field selector for the list calls of one kind of object."""

    role: KubernetesRole
    label: str | None = None
    field: str | None = None


KUBERNETES_MISSING = ("kubernetes_sd_configs needs the Kubernetes client, an optional part: "
                      "pip install 'pprof-scraper[kubernetes]'")


class KubernetesSDConfig(_Model):
    """``kubernetes_sd_configs`` entry: pods, services, endpoints or nodes listed from the Kubernetes API.

    Without ``kubeconfig_file`` or ``api_server`` the in-cluster service account is used.
    Objects are listed again every ``refresh_interval`` (an extension: Prometheus watches).
    """

    role: KubernetesRole
    namespaces: KubernetesNamespaces = KubernetesNamespaces()
    selectors: list[KubernetesSelector] = []
    kubeconfig_file: Path | None = None
    api_server: str | None = None
    refresh_interval: RefreshInterval = timedelta(seconds=30)

    @field_validator("api_server")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"api_server must be an http:// or https:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _client_installed(self) -> KubernetesSDConfig:
        # The client is an optional part (126 MB): `check` says so, rather than the worker failing later.
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise ValueError(KUBERNETES_MISSING) from None
        return self

    @model_validator(mode="after")
    def _prometheus_rules(self) -> KubernetesSDConfig:
        if self.kubeconfig_file is not None and self.api_server is not None:
            raise ValueError("cannot use 'kubeconfig_file' and 'api_server' simultaneously")
        seen: set[str] = set()
        for selector in self.selectors:
            if selector.role in seen:
                raise ValueError(f"duplicated selector role: {selector.role}")
            seen.add(selector.role)
            allowed = ALLOWED_SELECTOR_ROLES[self.role]
            if selector.role not in allowed:
                raise ValueError(f"{self.role} role supports only {', '.join(allowed)} selectors")
        return self

    def selector(self, role: str) -> KubernetesSelector | None:
        """The selector given for objects of ``role``, if any."""
        return next((s for s in self.selectors if s.role == role), None)
