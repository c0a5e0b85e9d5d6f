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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ByteSize,
    Field,
    NonNegativeInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .discovery.models import DNSSDConfig, FileSDConfig, HTTPSDConfig, KubernetesSDConfig
from .durations import Duration
from .errors import ConfigError
from .httpconfig import (  # noqa: F401 - re-exported: the config's models are named from here too
    Authorization,
    BasicAuth,
    HTTPClientConfig,
    OAuth2,
    TLSConfig,
)
from .httpconfig import Model as _Model
from .labels import ADDRESS
from .pprof import DEFAULT_SAMPLE_LIMIT
from .relabel import RelabelConfig
from .yamlload import StrictLoader

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- profiling config


class ProfileType(_Model):
    """One kind of profile to fetch from every target of a job."""

    enabled: bool
    path: str
    delta: bool = False
    #: the profile holds running totals, so Pyroscope gets their change since the previous scrape:
    #: unset means yes for memory, mutex and block, no for the others; true on a custom type makes
    #: every sample type of it a running total
    cumulative: bool | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _cumulative_is_not_delta(self) -> ProfileType:
        if self.cumulative and self.delta:
            raise ValueError(
                "cumulative and delta exclude each other: a profile taken over ?seconds= is a change already"
            )
        return self


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


#: Built-in types whose profiles hold running totals (scraped without ``?seconds=``).
CUMULATIVE_BUILTIN_TYPES = frozenset({"memory", "mutex", "block"})


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

    @model_validator(mode="after")
    def _cumulative_types(self) -> ProfilingConfig:
        for key in BUILTIN_PROFILE_TYPES:
            if getattr(self, key).cumulative and key not in CUMULATIVE_BUILTIN_TYPES:
                raise ValueError(
                    f"profile.{key}: cumulative: true is for memory, mutex, block and custom types; "
                    f"{key} profiles hold no running totals"
                )
        return self

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
    #: most samples a profile may hold (Prometheus' name); 0 means no limit
    sample_limit: NonNegativeInt = DEFAULT_SAMPLE_LIMIT
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
            address = labels.get(ADDRESS, "")
            if not address:
                problems.append(f"targets[{index}] has no {ADDRESS}")
            elif "/" in address or "?" in address:
                problems.append(
                    f"targets[{index}].{ADDRESS} {address!r} must be host[:port] without a scheme or path; "
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
    #: profiles older than this are removed (oldest first); None keeps them forever
    retention: Duration | None = None
    #: the store's profiles and sidecars are kept under this many bytes (oldest removed first)
    max_size: ByteSize | None = None
    #: who writes the store: ``scrape``, the worker that scraped the profile, on its host (no trip
    #: through Redis); ``push``, a push task, on a host that consumes the ``push`` queue
    written_by: Literal["scrape", "push"] = "scrape"

    @field_validator("retention")
    @classmethod
    def _positive_retention(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("retention must be longer than 0; leave it out to keep profiles forever")
        return value

    @field_validator("max_size")
    @classmethod
    def _positive_size(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("max_size must be more than 0 bytes; leave it out for no limit")
        return value


class PyroscopeReceiverConfig(HTTPClientConfig):
    """Grafana Pyroscope's push API (or the legacy ``/ingest`` endpoint with ``api: ingest``), with
    every HTTP client option of a scrape job (squashed in, as in pyroscope.write's endpoint)."""

    type: Literal["pyroscope"]
    url: str
    api: Literal["push", "ingest"] = "push"
    headers: dict[str, SecretStr] = {}
    external_labels: dict[str, str] = {}
    remote_timeout: Duration = timedelta(seconds=10)
    min_backoff_period: Duration = timedelta(milliseconds=500)
    max_backoff_period: Duration = timedelta(minutes=5)
    max_backoff_retries: int = Field(default=10, ge=0)
    retry_on_http_429: bool = True
    #: most samples a profile may have (Pyroscope's validation.max-profile-stacktrace-samples); 0: no limit
    max_samples: int = Field(default=16_000, ge=0)
    #: label names as Pyroscope 1.x requires them ([a-zA-Z_][a-zA-Z0-9_.]*); 2.x takes any UTF-8 name
    strict_label_names: bool = False
    #: the server's validation.reject-older-than: `deadletter replay` leaves profiles older than this; 0: none
    reject_older_than: Duration = timedelta(hours=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"url must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _backoff_window(self) -> PyroscopeReceiverConfig:
        if self.min_backoff_period > self.max_backoff_period:
            raise ValueError("min_backoff_period must not exceed max_backoff_period")
        return self


ReceiverConfig = Annotated[FileReceiverConfig | PyroscopeReceiverConfig, Field(discriminator="type")]


# --------------------------------------------------------------------------- the whole file


class Config(_Model):
    """A whole config file: ``scrape:`` jobs keyed by name, ``write:`` receivers keyed by name."""

    scrape: dict[str, ScrapeJob] = {}
    write: dict[str, ReceiverConfig] = {}

    @model_validator(mode="after")
    def _forward_to_known_receivers(self) -> Config:
        jobs = {key: {"forward_to": job.forward_to, "job_name": job.job_name} for key, job in self.scrape.items()}
        problems = _reference_problems(jobs, self.write)
        problems += self._ingest_renames()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _ingest_renames(self) -> list[str]:
        """Custom profile types that an ``api: ingest`` receiver cannot store under their own name."""
        # Imported here: the receiver module imports this one; its naming rules are Pyroscope's.
        from .receivers.pyroscope import ingest_stored_name

        ingest = [name for name, receiver in self.write.items()
                  if isinstance(receiver, PyroscopeReceiverConfig) and receiver.api == "ingest"]
        problems = []
        for job_key, job in self.scrape.items():
            for name, profile in job.profiling_config.custom.items():
                stored = ingest_stored_name(name, [])
                if not profile.enabled or stored == name:
                    continue
                for receiver in (r for r in job.forward_to if r in ingest):
                    problems.append(
                        f"scrape.{job_key}.profiling_config.profile.custom.{name}: write.{receiver} has api: ingest, "
                        f"where Pyroscope stores a profile named {name!r} as {stored!r}; rename the type or use api: push")
        return problems

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
            if isinstance(receiver, PyroscopeReceiverConfig) and "enable_http_2" in receiver.model_fields_set \
                    and receiver.enable_http_2:
                out.append(f"write.{name}.enable_http_2: requests speaks HTTP/1.1 only; pushes go over HTTP/1.1")
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


class _ConfigLoader(StrictLoader):
    # Prometheus reads relabel rules and target labels into string fields: `regex: true` is "true"
    text_keys = frozenset({"relabel_configs", "targets"})
    typed_keys = frozenset({"modulus"})


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
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
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
