"""The HTTP client options every outgoing request is made with: a scrape job's ``http_client_config``,
an ``http_sd_configs`` entry's, a Pyroscope receiver's (squashed into it, as in Alloy).

Both :mod:`scraper.config` and :mod:`scraper.discovery.models` import these models from here;
this module imports neither.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class Model(BaseModel):
    """The base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TLSConfig(Model):
    """How to verify the server and, optionally, present a client certificate. Each of the CA, the
    certificate and the key is given as a file (re-read when it changes) or inline as PEM."""

    ca_file: Path | None = None
    ca_pem: str | None = None
    cert_file: Path | None = None
    cert_pem: str | None = None
    key_file: Path | None = None
    key_pem: SecretStr | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None

    @model_validator(mode="after")
    def _one_source_each_cert_and_key_together(self) -> TLSConfig:
        for name in ("ca", "cert", "key"):
            _exclusive(self, f"{name}_file", f"{name}_pem")
        has_cert = self.cert_file is not None or self.cert_pem is not None
        has_key = self.key_file is not None or self.key_pem is not None
        if has_cert != has_key:
            raise ValueError("a client certificate (cert_file or cert_pem) and its key (key_file or key_pem) "
                             "must be given together")
        for name in ("ca_pem", "cert_pem"):
            value = getattr(self, name)
            if value is not None and "-----BEGIN CERTIFICATE-----" not in value:
                raise ValueError(f"{name} must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
        if self.key_pem is not None and "PRIVATE KEY-----" not in self.key_pem.get_secret_value():
            raise ValueError("key_pem must hold a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
        return self


def _exclusive(model: BaseModel, a: str, b: str) -> None:
    if getattr(model, a) is not None and getattr(model, b) is not None:
        raise ValueError(f"at most one of {a} and {b} may be set")


class BasicAuth(Model):
    username: str
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        _exclusive(self, "password", "password_file")
        return self


class Authorization(Model):
    type: str = "Bearer"
    credentials: SecretStr | None = None
    credentials_file: Path | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> Authorization:
        _exclusive(self, "credentials", "credentials_file")
        if self.credentials is None and self.credentials_file is None:
            raise ValueError("one of credentials and credentials_file is required")
        return self


#: Headers that a config may not set (Prometheus' reserved list, less its remote read/write ones):
#: the client sets them itself, or they would corrupt the request.
RESERVED_HEADERS = frozenset(name.lower() for name in (
    "Authorization", "Host", "Content-Encoding", "Content-Length", "Content-Type", "User-Agent", "Connection",
    "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "WWW-Authenticate", "Accept-Encoding",
    "Transfer-Encoding", "Upgrade",
))
_NOT_IN_HEADER = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_names(headers: dict[str, list[SecretStr]], field: str, reserved: frozenset[str]) -> None:
    for name, values in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{field}: {name!r} is not a valid header name")
        if name.lower() in reserved:
            raise ValueError(f"{field}: setting header {name!r} is not allowed (the client sets it)")
        if any(_NOT_IN_HEADER.search(value.get_secret_value()) for value in values):
            raise ValueError(f"{field}: a value of {name!r} contains a line break or another control character")


class ProxyConfig(Model):
    """Which proxy requests go through, as Prometheus and Alloy configure it."""

    proxy_url: str | None = None
    #: comma-separated IPs, CIDRs and domain names (each may have a port) that bypass proxy_url
    no_proxy: str | None = None
    proxy_from_environment: bool = False
    #: headers for the proxy, sent in the CONNECT of an https request
    proxy_connect_header: dict[str, list[SecretStr]] = {}

    @field_validator("proxy_url")
    @classmethod
    def _proxy_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|socks5h?)://", value):
            raise ValueError("proxy_url must start with http://, https://, socks5:// or socks5h://")
        return value

    def _check_proxy(self) -> None:
        if self.no_proxy and not self.proxy_url:
            raise ValueError("no_proxy requires proxy_url")
        if self.proxy_from_environment and (self.proxy_url or self.no_proxy):
            raise ValueError("proxy_url and no_proxy must not be set with proxy_from_environment "
                             "(HTTP_PROXY, HTTPS_PROXY and NO_PROXY say it all)")
        if self.proxy_connect_header and not (self.proxy_url or self.proxy_from_environment):
            raise ValueError("proxy_connect_header requires proxy_url or proxy_from_environment")
        _header_names(self.proxy_connect_header, "proxy_connect_header", frozenset())


class OAuth2(ProxyConfig):
    """OAuth 2.0 client credentials grant; the token is cached until it expires."""

    client_id: str
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    scopes: list[str] = []
    token_url: str
    endpoint_params: dict[str, str] = {}
    tls_config: TLSConfig = TLSConfig()

    @model_validator(mode="after")
    def _one_secret(self) -> OAuth2:
        self._check_proxy()
        _exclusive(self, "client_secret", "client_secret_file")
        if self.client_secret is None and self.client_secret_file is None:
            raise ValueError("one of client_secret and client_secret_file is required")
        return self


_AUTH_FIELDS = ("bearer_token", "bearer_token_file", "basic_auth", "authorization", "oauth2")


class HTTPClientConfig(ProxyConfig):
    """How outgoing requests are made: authentication, TLS, proxy, headers, redirects."""

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    oauth2: OAuth2 | None = None
    tls_config: TLSConfig = TLSConfig()
    #: sent with every request; a header given several values is sent once, the values joined by ", "
    http_headers: dict[str, list[SecretStr]] = {}
    follow_redirects: bool = True
    #: Alloy spells it enable_http2, the seed enable_http_2: both are accepted
    enable_http_2: bool = Field(default=True, validation_alias=AliasChoices("enable_http_2", "enable_http2"))

    @model_validator(mode="after")
    def _one_auth_method(self) -> HTTPClientConfig:
        chosen = [name for name in _AUTH_FIELDS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"at most one of {', '.join(_AUTH_FIELDS)} may be set, got {' and '.join(chosen)}")
        self._check_proxy()
        _header_names(self.http_headers, "http_headers", RESERVED_HEADERS)
        return self
