"""Where Redis is: the broker URL of this process and a redis-py client for it."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis

from .settings import Settings


#: Connections a process opens to Redis at most; past them a caller waits for one to be free.
MAX_CONNECTIONS = 256
#: Seconds a caller waits for a free connection before redis-py raises ConnectionError.
CONNECTION_WAIT_S = 30


def connect_redis(url: str) -> redis.Redis:
    """A Redis client for a broker URL as Celery writes it (``redis://``, ``rediss://``, ``redis+socket://``).

    Its pool blocks when all its connections are busy: redis-py's default pool raises "Too many
    connections" past 100, which a worker's greenlets reached when the CPU was saturated.
    """
    parts = urlsplit(url)
    options = {"max_connections": MAX_CONNECTIONS, "timeout": CONNECTION_WAIT_S, "health_check_interval": 30}
    if parts.scheme in ("redis+socket", "unix", "socket"):
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        pool = redis.BlockingConnectionPool(connection_class=redis.UnixDomainSocketConnection,
                                            path=unquote(parts.path),
                                            db=int(query.get("virtual_host", query.get("db", 0))), **options)
    else:
        pool = redis.BlockingConnectionPool.from_url(url, **options)
    return redis.Redis(connection_pool=pool)


def broker_url(settings: Settings) -> str:
    """The broker URL: ``SCRAPER_BROKER_URL``, else the embedded Redis a ``run`` in the data dir started."""
    if settings.broker_url:
        return settings.broker_url
    marker = settings.data_dir / "broker-url"
    if marker.exists():
        return marker.read_text().strip()
    return "redis://localhost:6379/0"
