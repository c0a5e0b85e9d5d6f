"""The YAML config file: scrape jobs and receivers, with the seed component's names and defaults.

The schema follows Grafana Agent's ``phlare.scrape`` / Alloy's ``pyroscope.scrape`` arguments
(``targets``, ``forward_to``, ``job_name``, ``params``, ``scrape_interval``, ``scrape_timeout``,
``delta_profiling_duration``, ``scheme``, the HTTP client options, ``profiling_config``) and
``pyroscope.write``'s endpoint options for receivers. Unknown keys are errors, so a typo never
passes silently, and every error names the field it is about.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .discovery.models import DNSSDConfig, FileSDConfig, HTTPSDConfig, KubernetesSDConfig
from .durations import Duration
from .errors import ConfigError
from .relabel import RelabelConfig

log = logging.getLogger(__name__)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- HTTP client


class TLSConfig(_Model):
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


class BasicAuth(_Model):
    username: str
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        _exclusive(self, "password", "password_file")
        return self


class Authorization(_Model):
    type: str = "Bearer"
    credentials: SecretStr | None = None
    credentials_file: Path | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> Authorization:
        _exclusive(self, "credentials", "credentials_file")
        if self.credentials is None and self.credentials_file is None:
            raise ValueError("one of credentials and credentials_file is required")
        return self


class OAuth2(_Model):
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


class HTTPClientConfig(_Model):
    """How requests to targets are made: authentication, TLS, proxy, redirects."""

    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    oauth2: OAuth2 | None = None
    tls_config: TLSConfig = TLSConfig()
    proxy_url: str | None = None
    follow_redirects: bool = True
    #: Alloy spells it enable_http2, the seed enable_http_2: both are accepted
    enable_http_2: bool = Field(default=True, validation_alias=AliasChoices("enable_http_2", "enable_http2"))

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


# --------------------------------------------------------------------------- profiling config


class ProfileType(_Model):
    """One kind of profile to fetch from every target of a job."""

    enabled: bool
    path: str
    delta: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value


#: Built-in profile types: config key -> (stored ``__name__``, enabled, path, delta).
#: godeltaprof types compute the delta on the target and are stored under the plain names.
BUILTIN_PROFILE_TYPES: dict[str, tuple[str, bool, str, bool]] = {
    "memory": ("memory", True, "/debug/pprof/allocs", False),
    "block": ("block", True, "/debug/pprof/block", False),
    "goroutine": ("goroutine", True, "/debug/pprof/goroutine", False),
    "mutex": ("mutex", True, "/debug/pprof/mutex", False),
    "process_cpu": ("process_cpu", True, "/debug/pprof/profile", True),
    "fgprof": ("fgprof", False, "/debug/fgprof", True),
    "godeltaprof_memory": ("memory", False, "/debug/pprof/delta_heap", False),
    "godeltaprof_mutex": ("mutex", False, "/debug/pprof/delta_mutex", False),
    "godeltaprof_block": ("block", False, "/debug/pprof/delta_block", False),
}


def _builtin_field(key: str) -> Any:
    _, enabled, path, delta = BUILTIN_PROFILE_TYPES[key]
    return Field(default=ProfileType(enabled=enabled, path=path, delta=delta), alias=f"profile.{key}")


class ProfilingConfig(_Model):
    """Which profile types to fetch and where; a built-in type given partly keeps its other defaults."""

    path_prefix: str = ""
    memory: ProfileType = _builtin_field("memory")
    block: ProfileType = _builtin_field("block")
    goroutine: ProfileType = _builtin_field("goroutine")
    mutex: ProfileType = _builtin_field("mutex")
    process_cpu: ProfileType = _builtin_field("process_cpu")
    fgprof: ProfileType = _builtin_field("fgprof")
    godeltaprof_memory: ProfileType = _builtin_field("godeltaprof_memory")
    godeltaprof_mutex: ProfileType = _builtin_field("godeltaprof_mutex")
    godeltaprof_block: ProfileType = _builtin_field("godeltaprof_block")
    custom: dict[str, ProfileType] = Field(default={}, alias="profile.custom")

    @model_validator(mode="before")
    @classmethod
    def _fill_builtin_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        # `profile.custom.<name>: {...}` (the README's form) is `profile.custom: {<name>: {...}}`
        for key in [k for k in merged if isinstance(k, str) and k.startswith("profile.custom.")]:
            custom = dict(merged.get("profile.custom") or {})
            name = key.removeprefix("profile.custom.")
            if name in custom:
                raise ValueError(f"custom profile type {name!r} is given twice, as {key} and under profile.custom")
            custom[name] = merged.pop(key)
            merged["profile.custom"] = custom
        for key, (_, enabled, path, delta) in BUILTIN_PROFILE_TYPES.items():
            for name in (f"profile.{key}", key):
                given = merged.get(name)
                if isinstance(given, dict):
                    merged[name] = {"enabled": enabled, "path": path, "delta": delta, **given}
        return merged

    @field_validator("custom", mode="before")
    @classmethod
    def _custom_needs_enabled_and_path(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, body in value.items():
                if isinstance(body, dict):
                    missing = [k for k in ("enabled", "path") if k not in body]
                    if missing:
                        raise ValueError(f"custom profile type {name!r} needs {' and '.join(missing)}")
        return value

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, value: dict[str, ProfileType]) -> dict[str, ProfileType]:
        builtin_names = {stored for stored, *_ in BUILTIN_PROFILE_TYPES.values()}
        for name in value:
            if name in builtin_names:
                raise ValueError(
                    f"custom profile type {name!r} has the name of a built-in type; "
                    f"change profile.{name} instead, or pick another name"
                )
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                raise ValueError(f"custom profile type name {name!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix_form(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"path_prefix must be empty or start with '/', got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_type_per_url(self) -> ProfilingConfig:
        # Two types at one URL would be two requests for one profile: a second CPU (or Node wall)
        # profile is refused by the target while the first runs, so one of them fails every interval.
        by_path: dict[str, str] = {}
        for key in self.enabled_types():
            path = self.path_prefix + self.type_settings(key).path
            if path in by_path:
                raise ValueError(f"{_type_key(by_path[path])} and {_type_key(key)} both request {path}: "
                                 "enable one of them, or give one another path")
            by_path[path] = key
        return self

    def type_settings(self, key: str) -> ProfileType:
        """The settings of the type ``key`` (a built-in key or a custom name)."""
        return getattr(self, key) if key in BUILTIN_PROFILE_TYPES else self.custom[key]

    def enabled_types(self) -> dict[str, tuple[str, ProfileType]]:
        """Return the enabled profile types: config key -> (stored ``__name__``, its settings)."""
        out: dict[str, tuple[str, ProfileType]] = {}
        for key, (stored, *_rest) in BUILTIN_PROFILE_TYPES.items():
            profile = getattr(self, key)
            if profile.enabled:
                out[key] = (stored, profile)
        for name, profile in self.custom.items():
            if profile.enabled:
                out[name] = (name, profile)
        return out


def _type_key(key: str) -> str:
    """How the config spells a type's key: ``profile.process_cpu``, ``profile.custom.wall``."""
    return f"profile.{key}" if key in BUILTIN_PROFILE_TYPES else f"profile.custom.{key}"


# --------------------------------------------------------------------------- scrape jobs

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")
_DEFAULT_BODY_SIZE_LIMIT = 64 * 1024 * 1024


class ScrapeJob(_Model):
    """One ``scrape:`` entry: which targets, how often, how, and where the profiles go."""

    #: static targets; optional when the job has a *_sd_configs entry
    targets: list[dict[str, str]] = []
    forward_to: list[str] = Field(min_length=1)
    job_name: str | None = None
    params: dict[str, list[str]] = {}
    scrape_interval: Duration = timedelta(seconds=15)
    scrape_timeout: Duration = timedelta(seconds=15)
    delta_profiling_duration: Duration | None = None
    scheme: Literal["http", "https"] = "http"
    http_client_config: HTTPClientConfig = HTTPClientConfig()
    profiling_config: ProfilingConfig = ProfilingConfig()
    body_size_limit: ByteSize = ByteSize(_DEFAULT_BODY_SIZE_LIMIT)
    relabel_configs: list[RelabelConfig] = []
    file_sd_configs: list[FileSDConfig] = []
    http_sd_configs: list[HTTPSDConfig] = []
    dns_sd_configs: list[DNSSDConfig] = []
    kubernetes_sd_configs: list[KubernetesSDConfig] = []

    @model_validator(mode="after")
    def _targets_or_discovery(self) -> ScrapeJob:
        discovery = (self.file_sd_configs, self.http_sd_configs, self.dns_sd_configs, self.kubernetes_sd_configs)
        if "targets" not in self.model_fields_set and not any(discovery):
            raise ValueError(
                "targets is required unless the job has file_sd_configs, http_sd_configs, dns_sd_configs "
                "or kubernetes_sd_configs"
            )
        return self

    @field_validator("targets")
    @classmethod
    def _targets_have_addresses(cls, targets: list[dict[str, str]]) -> list[dict[str, str]]:
        problems = []
        for index, labels in enumerate(targets):
            address = labels.get("__address__", "")
            if not address:
                problems.append(f"targets[{index}] has no __address__")
            elif "/" in address or "?" in address:
                problems.append(
                    f"targets[{index}].__address__ {address!r} must be host[:port] without a scheme or path; "
                    "set scheme and profiling_config.path_prefix instead"
                )
            for name in labels:
                if not _LABEL_NAME.match(name):
                    problems.append(f"targets[{index}] label name {name!r} must match [a-zA-Z_][a-zA-Z0-9_.]*")
        if problems:
            raise ValueError("; ".join(problems))
        return targets

    @model_validator(mode="after")
    def _timing(self) -> ScrapeJob:
        if self.scrape_interval < timedelta(seconds=1):
            raise ValueError(f"scrape_interval must be at least 1s, got {self.scrape_interval.total_seconds()}s")
        if self.scrape_timeout <= timedelta(0):
            raise ValueError("scrape_timeout must be greater than 0")
        delta = self.effective_delta_duration
        if delta < timedelta(seconds=1):
            raise ValueError(
                f"delta_profiling_duration must be at least 1s, got {delta.total_seconds()}s "
                "(with the default, scrape_interval - 1s, that means scrape_interval of at least 2s)"
            )
        if delta >= self.scrape_interval:
            raise ValueError(
                f"delta_profiling_duration ({delta.total_seconds()}s) must be shorter than "
                f"scrape_interval ({self.scrape_interval.total_seconds()}s), or the next profile would overlap it"
            )
        if self.body_size_limit <= 0:
            raise ValueError("body_size_limit must be positive")
        return self

    @property
    def effective_delta_duration(self) -> timedelta:
        """The profiling window of delta types: ``delta_profiling_duration``, else ``scrape_interval - 1s``."""
        if self.delta_profiling_duration is not None:
            return self.delta_profiling_duration
        return self.scrape_interval - timedelta(seconds=1)


# --------------------------------------------------------------------------- receivers


class FileReceiverConfig(_Model):
    """The local file store: one ``.pb.gz`` and one ``.json`` sidecar per profile."""

    type: Literal["file"]
    path: Path = Path("./profiles")
    external_labels: dict[str, str] = {}


class PyroscopeReceiverConfig(_Model):
    """Grafana Pyroscope's push API (or the legacy ``/ingest`` endpoint with ``api: ingest``)."""

    type: Literal["pyroscope"]
    url: str
    api: Literal["push", "ingest"] = "push"
    headers: dict[str, SecretStr] = {}
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    tls_config: TLSConfig = TLSConfig()
    proxy_url: str | None = None
    external_labels: dict[str, str] = {}
    remote_timeout: Duration = timedelta(seconds=10)
    min_backoff_period: Duration = timedelta(milliseconds=500)
    max_backoff_period: Duration = timedelta(minutes=5)
    max_backoff_retries: int = Field(default=10, ge=0)
    retry_on_http_429: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"url must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth_method(self) -> PyroscopeReceiverConfig:
        chosen = [n for n in ("basic_auth", "bearer_token", "bearer_token_file") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"at most one of basic_auth, bearer_token, bearer_token_file may be set, got {' and '.join(chosen)}")
        if self.min_backoff_period > self.max_backoff_period:
            raise ValueError("min_backoff_period must not exceed max_backoff_period")
        return self


ReceiverConfig = Annotated[Union[FileReceiverConfig, PyroscopeReceiverConfig], Field(discriminator="type")]


# --------------------------------------------------------------------------- the whole file


class Config(_Model):
    """A whole config file: ``scrape:`` jobs keyed by name, ``write:`` receivers keyed by name."""

    scrape: dict[str, ScrapeJob] = {}
    write: dict[str, ReceiverConfig] = {}

    @model_validator(mode="after")
    def _forward_to_known_receivers(self) -> Config:
        jobs = {key: {"forward_to": job.forward_to, "job_name": job.job_name} for key, job in self.scrape.items()}
        problems = _reference_problems(jobs, self.write)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def job_name(self, job_key: str) -> str:
        """The ``job`` label of a job: its ``job_name``, else its key under ``scrape:``."""
        return self.scrape[job_key].job_name or job_key

    def warnings(self) -> list[str]:
        """Options that are accepted but cannot be honoured exactly, one line each."""
        out = []
        for job_key, job in self.scrape.items():
            if "enable_http_2" in job.http_client_config.model_fields_set and job.http_client_config.enable_http_2:
                out.append(
                    f"scrape.{job_key}.http_client_config.enable_http_2: requests speaks HTTP/1.1 only; "
                    "targets are scraped over HTTP/1.1"
                )
            if job.http_client_config.tls_config.insecure_skip_verify:
                out.append(
                    f"scrape.{job_key}.http_client_config.tls_config.insecure_skip_verify: "
                    "certificates of this job's targets are not verified"
                )
        for name, receiver in self.write.items():
            if isinstance(receiver, PyroscopeReceiverConfig) and receiver.tls_config.insecure_skip_verify:
                out.append(
                    f"write.{name}.tls_config.insecure_skip_verify: the receiver's certificate is not verified, "
                    "so profiles and credentials could go to whoever answers at its address"
                )
        return out


# --------------------------------------------------------------------------- loading
def _reference_problems(scrape: Any, write: Any) -> list[str]:
    """What the jobs name that does not exist (a receiver in ``forward_to``) or exists twice (a job
    name), from the jobs as given: checked even when other parts of the config are invalid, so
    ``check`` lists these with the rest instead of after they are fixed."""
    if not isinstance(scrape, dict):
        return []
    receivers = sorted(str(name) for name in write) if isinstance(write, dict) else []
    problems = []
    names: dict[str, str] = {}
    for job_key, job in scrape.items():
        if not isinstance(job, dict):
            continue
        forward_to = job.get("forward_to")
        for name in forward_to if isinstance(forward_to, (list, tuple)) else []:
            if isinstance(name, str) and name not in receivers:
                known = ", ".join(receivers) or "none defined"
                problems.append(f"scrape.{job_key}.forward_to: {name!r} is not a receiver under write: ({known})")
        name = job.get("job_name") or job_key
        if name in names:
            problems.append(f"scrape.{job_key}.job_name: {name!r} is already the job name of scrape.{names[name]}")
        names[name] = job_key
    return problems




# libyaml's parser when PyYAML has it: at 10,000 targets the pure-Python one took 3.5 s, and beat
# reloads on the config's every change.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return _SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in {"FileReceiverConfig", "PyroscopeReceiverConfig", "file", "pyroscope"} and out.startswith("write."):
            continue  # pydantic's name of the union member; the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_of(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = _format_location(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        problems.append(f"{where}: {message}" if where else message)
    return problems


def parse_config(data: Any, source: str = "config") -> Config:
    """Return the Config that ``data`` (the YAML document as Python values) describes.

    Raises ConfigError listing every problem, each naming its field.
    """
    if data is None:
        # An editor saving in place can leave the file empty for a moment: never take that for
        # "scrape nothing" and drop every target.
        raise ConfigError(["the config is empty; give at least scrape: and write:"], source)
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping with scrape: and write:, got {type(data).__name__}"], source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems_of(exc)
        # the references are checked after the rest validates: say what they lack now, not next time
        problems += [p for p in _reference_problems(data.get("scrape"), data.get("write"))
                     if not any(p in known for known in problems)]
        raise ConfigError(problems, source) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``; raises ConfigError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"], str(path)) from None
    return parse_config_text(text, str(path))


def parse_config_text(text: str, source: str = "config") -> Config:
    """Validate a config given as YAML text; raises ConfigError naming every problem."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([f"not valid YAML{where} of {source}: {what}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    return parse_config(data, source)


#: How often a ConfigSource compares the file's mtime, at most.
CONFIG_CHECK_INTERVAL_S = 1.0


class ConfigSource:
    """The config file of this process, re-read when its mtime changes; a bad new version is refused
    (logged, with ``last_error`` set) and the last good one stays in force."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_error: str | None = None
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self._config = load_config(path)
        self.version = 1
        self._lock = threading.Lock()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def get(self, force_check: bool = False) -> Config:
        """The config in force, re-read first if the file changed since the last look."""
        now = time.monotonic()
        if force_check or now - self._checked >= CONFIG_CHECK_INTERVAL_S:
            self._checked = now
            mtime = self._stat()
            if mtime != self._mtime:
                with self._lock:
                    self._mtime = mtime
                    self._reload()
        return self._config

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for ``/-/ready``: not ready while the last change of the file is refused, the
        reason naming its problems; the file is looked at first, so a fixed config clears it."""
        self.get()
        if self.last_error:
            return False, f"a config reload was refused, the last good config stays in force: {self.last_error}"
        return True, f"config version {self.version} in force"

    def _reload(self) -> None:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("refused the changed config, the last good one stays in force: %s", exc)
            return
        self._config = config
        self.last_error = None
        self.version += 1
        log.info("config %s reloaded (version %d)", self.path, self.version)
