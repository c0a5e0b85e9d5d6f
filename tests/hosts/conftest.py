"""Fixtures of the multi-host tests: a network of namespace hosts, removed however the test ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import netns
from tests.e2e.processes import Proc


@pytest.fixture(scope="session")
def namespaces_usable() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")


@pytest.fixture
def network(namespaces_usable: None) -> Iterator[netns.Network]:
    with netns.Network() as net:
        yield net


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; each is stopped when the test ends (before its network goes)."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()
