"""Where Redis is: the broker URL of this process and a redis-py client for it."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import redis

from .settings import Settings


def connect_redis(url: str) -> redis.Redis:
    """A Redis client for a broker URL as Celery writes it (``redis://``, ``rediss://``, ``redis+socket://``)."""
    parts = urlsplit(url)
    if parts.scheme in ("redis+socket", "unix", "socket"):
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return redis.Redis(unix_socket_path=unquote(parts.path), db=int(query.get("virtual_host", query.get("db", 0))),
                           health_check_interval=30)
    return redis.Redis.from_url(url, health_check_interval=30)


def broker_url(settings: Settings) -> str:
    """The broker URL: ``SCRAPER_BROKER_URL``, else the embedded Redis a ``run`` in the data dir started."""
    if settings.broker_url:
        return settings.broker_url
    marker = settings.data_dir / "broker-url"
    if marker.exists():
        return marker.read_text().strip()
    return "redis://localhost:6379/0"
