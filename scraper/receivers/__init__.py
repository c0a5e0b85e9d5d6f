"""Receivers: where a validated profile goes. The push task calls one receiver per name in ``forward_to``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..config import FileReceiverConfig, PyroscopeReceiverConfig, ReceiverConfig
from ..errors import PushError


@dataclass(frozen=True)
class Profile:
    """One validated profile on its way to a receiver, exactly as the target sent it (and its delta)."""

    #: stable id of (job, target, profile type, scheduled time): a redelivered push has the same id
    id: str
    #: the plan's labels: public target labels, job, instance, service_name, __name__
    labels: dict[str, str]
    #: the body as received (gzip or raw pprof)
    body: bytes
    #: when the scrape started and ended (Unix seconds)
    start: float
    end: float
    #: the URL it was scraped from
    url: str
    #: sample types of ``body`` that are running totals since the target started (memory
    #: allocations, mutex, block); empty for other profiles
    cumulative: list[str] = field(default_factory=list)
    #: what a store that wants deltas gets is one already (godeltaprof, or ``delta``): Pyroscope must not
    #: compute one again (``__delta__="false"``)
    is_delta: bool = False
    #: the change since the previous scrape of the series, gzipped pprof, when ``body`` is cumulative
    #: and there was a baseline. Last, so that the stash can leave it out (scraper.baseline).
    delta: bytes | None = None

    def body_for(self, wants_deltas: bool) -> bytes | None:
        """The body a receiver gets: the delta of a cumulative profile for one that ``wants_deltas``
        (None when there is none: the scrape was a baseline, nothing to send), else ``body``."""
        if wants_deltas and self.cumulative:
            return self.delta
        return self.body


class Receiver(Protocol):
    """A receiver stores one profile per call, idempotently by ``profile.id``; it raises
    PushRejected when retrying cannot help and PushUnavailable when a retry may succeed."""

    name: str
    #: whether it stores the deltas of cumulative profiles (Pyroscope) rather than what the target served
    wants_deltas: bool
    #: whether a push blocks its thread (disk writes and syncs) instead of waiting on sockets: the
    #: push stage then runs it in writer threads, a batch at a time (scraper.push). Such a receiver
    #: is a BatchReceiver.
    blocks: bool

    def push(self, profile: Profile) -> None: ...


@runtime_checkable
class BatchReceiver(Receiver, Protocol):
    """A receiver whose pushes block (``blocks`` is True), which takes a batch in one call so that
    it pays for durability once per batch (the file store: three syncs, not four fsyncs a profile)."""

    #: whether the worker that scraped a profile writes it (on its host), rather than a push task
    written_by_scrape: bool

    def push_batch(self, profiles: list[Profile]) -> dict[str, PushError | None]:
        """Store ``profiles``, idempotently by id; for each id, None once it is stored (durably: on
        disk, for the file store) or was already, else the PushError it failed with. A profile that
        fails does not fail the others, unless what they share fails (a sync of the disk)."""
        ...


def build_receiver(name: str, config: ReceiverConfig) -> Receiver:
    """The receiver that ``config``, the entry ``name`` under ``write:``, describes."""
    # Imported here because both modules import Profile from this one.
    from .filestore import FileStore
    from .pyroscope import PyroscopeReceiver

    if isinstance(config, FileReceiverConfig):
        return FileStore(name, config)
    if isinstance(config, PyroscopeReceiverConfig):
        return PyroscopeReceiver(name, config)
    raise TypeError(f"write.{name}: no receiver for {type(config).__name__}")
