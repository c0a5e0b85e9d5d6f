"""The Celery side of pprof-scraper: ``celery -A worker worker -P gevent -Q scrape,push``, ``celery -A worker beat``."""

from .celery_app import app

__all__ = ["app"]
