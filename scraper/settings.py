"""Runtime settings that are not about scraping, from ``SCRAPER_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from pydantic import Field, IPvAnyAddress
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the config is, which broker to use, where data lives, which ports to serve on."""

    model_config = SettingsConfigDict(env_prefix="SCRAPER_", env_file=".env", extra="ignore")

    #: the YAML config file; unset means the built-in self-scraping config of ``pprof-scraper run``
    config: Path | None = None
    #: the Redis URL used as Celery broker and for status, locks and bodies; unset means
    #: ``pprof-scraper run`` starts its own Redis in ``data_dir``
    broker_url: str | None = None
    #: a file holding the password of ``broker_url`` (its Redis, or with Sentinel its master), so
    #: the password is in no environment variable or URL a process shows
    broker_password_file: Path | None = None
    #: the master's name at the sentinels when ``broker_url`` is ``sentinel://…``
    sentinel_master: str = Field(default="mymaster", min_length=1)
    #: where ``pprof-scraper run`` keeps its embedded Redis (socket, append-only file)
    data_dir: Path = Path(".pprof-scraper")
    #: port of the HTTP server for /metrics, /targets, /-/healthy, /-/ready; unset means off
    #: (``pprof-scraper run`` picks a default)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    #: the address that HTTP server listens on: loopback unless a deployment needs more (``0.0.0.0``:
    #: every IPv4 interface, ``::`` every interface); what it serves has no login
    http_address: IPvAnyAddress = IPv4Address("127.0.0.1")
    #: log level of every process (Celery's ``-l`` can make a worker or beat more verbose, not quieter)
    log_level: str = "INFO"
    #: how this process names itself in log lines; ``pprof-scraper run`` names its children
    #: ``beat``, ``worker1``, …; unset: ``host:pid``
    process_name: str = ""
    #: gevent greenlets per worker process
    concurrency: int = Field(default=500, ge=1)
    #: most targets one scrape task carries: beat puts the targets of a job that fall due in the same
    #: tick (at most 0.25 s apart) into one task, so a worker pays Celery's per-message cost once for
    #: them; 1 means one task per target and slot
    targets_per_task: int = Field(default=20, ge=1)
    #: seconds before Redis hands an unacknowledged push to another worker; must exceed the
    #: longest push attempt plus its backoff wait
    visibility_timeout: int = Field(default=900, ge=1)
    #: name of this beat's shard: beats of different shards (each with its part of the fleet, e.g.
    #: by hashmod relabeling) emit side by side on one Redis; beats of one shard stand by for each other
    beat_shard: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    #: seconds a beat's lock lives without renewal: how soon a standby beat takes over from a dead one
    beat_lock_ttl: float = Field(default=10.0, gt=0)
    #: bytes of validated profiles that may wait for their pushes; past it the oldest are dead-lettered
    max_pending_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    #: bytes the dead-letter list may hold; past it the oldest dead letters are dropped (counted, logged)
    max_deadletter_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    #: bytes the baselines of cumulative profiles (memory, mutex, block) may take in Redis; past it
    #: a series gets no baseline and pushes nothing to Pyroscope (counted as baselines_over_budget)
    max_baseline_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    #: seconds a worker may receive no task while its queues hold messages before /-/ready says
    #: it stopped consuming (as Celery workers sometimes do after a broker reconnect)
    ready_idle_s: float = Field(default=60.0, gt=0)
    #: PEM private key (RSA) that signs task messages; with the next two, every process signs what
    #: it sends and accepts only messages signed by a certificate in the store
    security_key: Path | None = None
    #: PEM certificate of ``security_key``
    security_certificate: Path | None = None
    #: file or directory of the PEM certificates whose signatures are accepted
    security_cert_store: Path | None = None
    #: trace Python allocations so /debug/pprof/heap and /debug/pprof/allocs can answer
    tracemalloc: bool = False
