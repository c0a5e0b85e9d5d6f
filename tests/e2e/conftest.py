"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.processes import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; each is stopped when the test ends, however it ends."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()
