"""The HTTP client options every outgoing request is made with: a scrape job's ``http_client_config``,
an ``http_sd_configs`` entry's, a Pyroscope receiver's (squashed into it, as in Alloy).

Both :mod:`scraper.config` and :mod:`scraper.discovery.models` import these models from here;
this module imports neither.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator


class Model(BaseModel):
    """The base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TLSConfig(Model):
    """How to verify the server and, optionally, present a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
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


class OAuth2(Model):
    """OAuth 2.0 client credentials grant; the token is cached until it expires."""

    client_id: str
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    scopes: list[str] = []
    token_url: str
    endpoint_params: dict[str, str] = {}
    proxy_url: str | None = None
    tls_config: TLSConfig = TLSConfig()

    @model_validator(mode="after")
    def _one_secret(self) -> OAuth2:
        _exclusive(self, "client_secret", "client_secret_file")
        if self.client_secret is None and self.client_secret_file is None:
            raise ValueError("one of client_secret and client_secret_file is required")
        return self


_AUTH_FIELDS = ("bearer_token", "bearer_token_file", "basic_auth", "authorization", "oauth2")


class HTTPClientConfig(Model):
    """How requests to targets are made: authentication, TLS, proxy, redirects."""

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    oauth2: OAuth2 | None = None
    tls_config: TLSConfig = TLSConfig()
    proxy_url: str | None = None
    follow_redirects: bool = True
    enable_http_2: bool = True

    @model_validator(mode="after")
    def _one_auth_method(self) -> HTTPClientConfig:
        chosen = [name for name in _AUTH_FIELDS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"at most one of {', '.join(_AUTH_FIELDS)} may be set, got {' and '.join(chosen)}")
        return self

    @field_validator("proxy_url")
    @classmethod
    def _proxy_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|socks5h?)://", value):
            raise ValueError("proxy_url must start with http://, https://, socks5:// or socks5h://")
        return value
