"""The ``scraper`` package as a library: what importing it costs, what it names."""

from __future__ import annotations

import subprocess
import sys

import scraper


def test_importing_scraper_pulls_in_no_gevent_redis_or_protobuf() -> None:
    code = "import sys, scraper; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'redis', 'google', 'celery')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert loaded == "[]"


def test_every_public_name_resolves() -> None:
    for name in scraper.__all__:
        assert getattr(scraper, name).__name__ == name
