"""Receivers: where a validated profile goes. The push task calls one receiver per name in ``forward_to``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..config import FileReceiverConfig, PyroscopeReceiverConfig, ReceiverConfig


@dataclass(frozen=True)
class Profile:
    """One validated profile on its way to a receiver, exactly as the target sent it."""

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


class Receiver(Protocol):
    """A receiver stores one profile per call, idempotently by ``profile.id``; it raises
    PushRejected when retrying cannot help and PushUnavailable when a retry may succeed."""

    name: str

    def push(self, profile: Profile) -> None: ...


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
