"""How the domain runs calls side by side or off its event loop, without knowing the pool.

A worker's pool (gevent greenlets and thread pools, in ``worker/pool.py``) implements these;
the scrape and push stages and the HTTP server are handed them, so ``scraper/`` imports no pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Started(Protocol[T_co]):
    """A call running beside the caller."""

    def result(self) -> T_co | Exception | None:
        """Wait for the call: its value, the exception it raised (as a value: the caller decides),
        or None when it was cancelled."""
        ...

    def cancel(self) -> None:
        """End the call now without waiting for it (safe from a signal handler)."""
        ...


class Spawn(Protocol):
    """Starts ``func(*args)`` beside the caller (a greenlet in a worker)."""

    def __call__(self, func: Callable[..., T], /, *args: Any) -> Started[T]: ...

    def ended(self, started: Sequence[Started[T]], timeout: float | None = None) -> list[Started[T]]:
        """Wait until at least one of ``started`` has ended (ended, failed or cancelled), or ``timeout``
        seconds; those that have ended, in their order."""
        ...


class Offload(Protocol):
    """Runs ``func(*args, **kwargs)`` where it cannot stall the caller's event loop (a thread in a
    worker) and returns its value or raises its exception."""

    def __call__(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


def in_place(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """An :class:`Offload` for a process with no event loop to protect: the call runs here."""
    return func(*args, **kwargs)
