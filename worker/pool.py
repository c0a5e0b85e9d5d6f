"""The worker's pool concerns, handed to the domain as plain callables: greenlets for scrapes and
pushes side by side, and small thread pools for what would stall gevent's hub (validating a large
body, writing files, rendering a profile page)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import gevent

from scraper.push import WRITER_THREADS

T = TypeVar("T")

#: Large bodies waiting for the validation thread at most.
VALIDATIONS_WAITING = 4


class Greenlet:
    """A call running in a greenlet of its own (:class:`scraper.concurrency.Started`)."""

    def __init__(self, greenlet: gevent.Greenlet) -> None:
        self._greenlet = greenlet

    def result(self) -> Any:
        self._greenlet.join()
        value = self._greenlet.value
        # a killed greenlet ends with GreenletExit (or no value when killed before it started)
        return None if isinstance(value, gevent.GreenletExit) else value

    def cancel(self) -> None:
        self._greenlet.kill(block=False)


class Greenlets:
    """Calls side by side in greenlets (:class:`scraper.concurrency.Spawn`)."""

    def __call__(self, func: Callable[..., T], /, *args: Any) -> Greenlet:
        return Greenlet(gevent.spawn(outcome, func, *args))

    def ended(self, started: Sequence[Any], timeout: float | None = None) -> list[Any]:
        gevent.wait([call._greenlet for call in started], timeout=timeout, count=1)
        return [call for call in started if call._greenlet.ready()]


spawn = Greenlets()


class OffTheHub:
    """Runs calls that are not cooperative in a small thread pool of its own when this process runs
    gevent (else in place), so the hub keeps every other greenlet, and its deadlines, moving.

    The file store fsyncs each file and its directory: in a greenlet that stops the whole worker
    for the disk's latency (~9 ms a profile here: at most 107 profiles/s); in threads the disk
    takes 588 profiles/s (docs/benchmarks.md). Validating a large body is CPU-bound: in a thread
    zlib releases the GIL and the interpreter's switch interval lets the hub run. Each pool is
    its own, and small, because glibc gives every thread a malloc arena that keeps what it
    freed: one validation thread retains at most about one body_size_limit, not one per thread.
    """

    def __init__(self, threads: int, max_waiting: int | None = None) -> None:
        self.threads = threads
        #: calls that may wait for a thread; past them a call runs in place
        self.max_waiting = max_waiting
        self._pool: Any = None
        self._in_pool = 0

    def __call__(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from gevent.monkey import is_module_patched

        if not is_module_patched("socket"):
            return func(*args, **kwargs)
        if self.max_waiting is not None and self._in_pool >= self.threads + self.max_waiting:
            return func(*args, **kwargs)
        if self._pool is None:
            from gevent.threadpool import ThreadPool

            self._pool = ThreadPool(self.threads)
        self._in_pool += 1
        try:
            value = self._pool.apply(outcome, (func, *args), kwargs)
        finally:
            self._in_pool -= 1
        if isinstance(value, Exception):
            raise value
        return value


def outcome(func: Callable[..., T], *args: Any, **kwargs: Any) -> T | Exception:
    """``func``'s result, or the exception it raised, as a value: for calls run elsewhere (a thread,
    a greenlet) whose caller re-raises in its own context. gevent prints the traceback of anything
    that escapes a greenlet or a pool thread, and a failed scrape or an invalid body is an outcome,
    not a crash."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller
        return exc


# Past a few waiting bodies, validation runs in place: the event loop then slows, scrapes start late
# and beat sheds, instead of bodies piling up behind one thread (1.9 GB at 1,000 targets with 100 KB
# profiles).
validations = OffTheHub(threads=1, max_waiting=VALIDATIONS_WAITING)
#: the file stores' writes; the push stage loads at most one batch per thread at a time
file_writes = OffTheHub(threads=WRITER_THREADS)
# A 1 MB profile's page is ~0.5 s of CPU: in a thread of its own the hub, and the worker's scrapes,
# keep moving; one at a time bounds the memory it takes.
profile_pages = OffTheHub(threads=1)
