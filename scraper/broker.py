"""Where Redis is: the broker URL of this process and a redis-py client for it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.exceptions import NoScriptError, ResponseError
from redis.sentinel import Sentinel, SentinelConnectionPool

from .errors import ConfigError
from .settings import Settings

#: Connections a process opens to Redis at most; past them a caller waits for one to be free.
MAX_CONNECTIONS = 256
#: Seconds a caller waits for a free connection before redis-py raises ConnectionError.
CONNECTION_WAIT_S = 30
#: Seconds a command (or a connection attempt) to a Sentinel-managed master or to a sentinel may
#: take. A master whose host dies leaves its connections open and silent: without a timeout a call
#: would wait on it until TCP gives up (~15 min) instead of failing over to the new master.
SENTINEL_SOCKET_TIMEOUT_S = 5


@dataclass(frozen=True)
class SentinelURL:
    """A broker URL in Celery's Sentinel form: ``sentinel://[:password@]host:port[;sentinel://…]/db``."""

    sentinels: list[tuple[str, int]]
    #: the master's password and user (kombu's meaning: the URL's password is the master's, not the sentinels')
    password: str | None
    username: str | None
    db: int

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        sentinels, password, username, db = [], None, None, 0
        for part in url.split(";"):
            parts = urlsplit(part.strip())
            try:
                port = parts.port or 26379
            except ValueError:
                port = -1
            if parts.scheme != "sentinel" or not parts.hostname or port < 0:
                raise ConfigError([f"SCRAPER_BROKER_URL: {_without_password(part)!r} is not sentinel://host:port"],
                                  "environment")
            sentinels.append((parts.hostname, port))
            password = unquote(parts.password) if parts.password else password
            username = unquote(parts.username) if parts.username else username
            if parts.path.strip("/"):
                if not parts.path.strip("/").isdigit():
                    raise ConfigError([f"SCRAPER_BROKER_URL: the database {parts.path.strip('/')!r} is not a number"],
                                      "environment")
                db = int(parts.path.strip("/"))
        return cls(sentinels, password, username, db)


def _without_password(url: str) -> str:
    parts = urlsplit(url.strip())
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


class _BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Connections to whichever server the sentinels name master, in a pool that waits when all are
    busy, as the pool of a plain URL does."""


def connect_redis(url: str, sentinel_master: str = "mymaster") -> redis.Redis:
    """A Redis client for a broker URL as Celery writes it (``redis://``, ``rediss://``, ``redis+socket://``,
    or ``sentinel://`` with the master named ``sentinel_master``).

    Its pool blocks when all its connections are busy: redis-py's default pool raises "Too many
    connections" past 100, which a worker's greenlets reached when the CPU was saturated.
    """
    parts = urlsplit(url)
    options = {"max_connections": MAX_CONNECTIONS, "timeout": CONNECTION_WAIT_S, "health_check_interval": 30}
    if is_sentinel(url):
        where = SentinelURL.parse(url)
        timeouts = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S, "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S}
        sentinel = Sentinel(where.sentinels, sentinel_kwargs=timeouts, password=where.password,
                            username=where.username, db=where.db, **timeouts)
        return sentinel.master_for(sentinel_master, redis_class=redis.Redis,
                                   connection_pool_class=_BlockingSentinelConnectionPool, **options)
    if parts.scheme in ("redis+socket", "unix", "socket"):
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        pool = redis.BlockingConnectionPool(connection_class=redis.UnixDomainSocketConnection,
                                            path=unquote(parts.path),
                                            db=int(query.get("virtual_host", query.get("db", 0))), **options)
    else:
        pool = redis.BlockingConnectionPool.from_url(url, **options)
    return redis.Redis(connection_pool=pool)


def broker_url(settings: Settings) -> str:
    """The broker URL: ``SCRAPER_BROKER_URL`` (with the password of ``SCRAPER_BROKER_PASSWORD_FILE``),
    else the embedded Redis a ``run`` in the data dir started."""
    if settings.broker_url:
        if settings.broker_password_file is None:
            return settings.broker_url
        return _with_password(settings.broker_url, settings.broker_password_file)
    marker = settings.data_dir / "broker-url"
    if marker.exists():
        return marker.read_text().strip()
    return "redis://localhost:6379/0"


def _with_password(url: str, password_file: Path) -> str:
    """``url`` with the password read from ``password_file`` in each of its ``;``-separated parts."""
    try:
        password = password_file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError([f"SCRAPER_BROKER_PASSWORD_FILE: cannot read {password_file}: {exc.strerror}"],
                          "environment") from None
    if not password:
        raise ConfigError([f"SCRAPER_BROKER_PASSWORD_FILE: {password_file} is empty"], "environment")
    parts = []
    for part in url.split(";"):
        split = urlsplit(part.strip())
        if split.password is not None:
            both = "SCRAPER_BROKER_URL has a password and SCRAPER_BROKER_PASSWORD_FILE is set: give the password one way"
            raise ConfigError([both], "environment")
        user, _, host = split.netloc.rpartition("@")
        parts.append(split._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl())
    return ";".join(parts)


def text(value: object) -> str:
    """One value of a Redis reply as text: our clients do not decode replies, so it is bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Script:
    """A Lua script called by its SHA1 (EVALSHA): Redis neither receives its text nor hashes it per
    call. Queue its calls through :class:`NamedReplies`, which re-sends them with the text when Redis
    does not know the script yet (first use, a restart, a failover). redis-py's own Script would ask
    Redis ``SCRIPT EXISTS`` before every pipeline instead: a round trip each time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()  # the name Redis gives it


class NamedReplies:
    """A pipeline's replies of chosen commands, by the names given as they were queued, so a reader
    need not count which command came where; and the pipeline's :class:`Script` calls."""

    def __init__(self, pipe: redis.client.Pipeline) -> None:
        self.pipe = pipe
        self._at: dict[str, int] = {}
        self._scripts: dict[int, tuple[Script, tuple[Any, ...]]] = {}

    def name(self, name: str) -> None:
        """Name the reply of the command queued last."""
        self._at[name] = len(self.pipe) - 1

    def call(self, script: Script, keys: list[str], args: list[Any], name: str | None = None) -> None:
        """Queue a call of ``script``; ``name`` names its reply."""
        arguments = (len(keys), *keys, *args)
        self.pipe.evalsha(script.sha, *arguments)
        self._scripts[len(self.pipe) - 1] = (script, arguments)
        if name is not None:
            self.name(name)

    def execute(self) -> dict[str, Any]:
        """Run the pipeline (raising the first command's error, as redis-py does); the named replies."""
        replies = self.pipe.execute(raise_on_error=False)
        unknown = [at for at in self._scripts if isinstance(replies[at], NoScriptError)]
        if unknown:
            # An EVALSHA Redis did not know did nothing: sending it again with the text runs it once.
            for at in unknown:
                script, arguments = self._scripts[at]
                self.pipe.eval(script.source, *arguments)
            for at, reply in zip(unknown, self.pipe.execute(raise_on_error=False)):
                replies[at] = reply
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return {name: replies[at] for name, at in self._at.items()}
