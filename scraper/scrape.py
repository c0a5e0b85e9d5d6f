"""One scrape: fetch a spec's URL, validate the body as pprof, and say how it went.

This is the body of one iteration of a scrape loop, without the loop: beat decides when,
a worker calls :func:`scrape_once` (after the in-flight guard, scraper.guard, of a type that holds
a profile open).
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .client import TargetClient
from .delta import Baseline, Delta, compute
from .errors import ConfigError, ScrapeError, SecretFileError
from .plan import ScrapeSpec
from .pprof import ProfileInfo, parse_profile, unpacked, validate_profile

#: Bodies that decompress to more than this are validated off the event loop. Validation costs up to
#: ~1 µs a decompressed byte (a body of tiny samples), so this keeps the loop's share under ~100 ms,
#: while a typical profile takes ~130 µs, less than a thread hop. By wire size instead, a 65 KB gzip
#: body of 16.7 million samples was validated in place, for 15 s.
OFFLOAD_BYTES = 64 * 1024

@dataclass(frozen=True)
class ScrapeResult:
    """How one scrape went: the body and its facts when it succeeded, the error when not."""

    spec: ScrapeSpec
    scheduled_at: float
    start: float
    end: float
    body: bytes | None = None
    info: ProfileInfo | None = None
    error: ScrapeError | None = None
    #: of a cumulative profile: its change since the baseline, and the new baseline
    delta: Delta | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @functools.cached_property
    def push_id(self) -> str:
        """Stable id of this profile: the same (target, type, scheduled time) always gets the same id."""
        return push_id(self.spec, self.scheduled_at)


def push_id(spec: ScrapeSpec, scheduled_at: float) -> str:
    """A UUID-shaped id from the spec's identity and the scheduled slot, so a redelivery is recognisable."""
    digest = hashlib.sha256(f"{spec.key}\x00{scheduled_at:.3f}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def scrape_once(
    spec: ScrapeSpec,
    client: TargetClient,
    *,
    scheduled_at: float,
    guard: Callable[[], None] | None = None,
    offload: Callable[..., tuple[ProfileInfo, Delta | None]] | None = None,
    clock: Callable[[], float] = time.time,
    cumulative: tuple[str, ...] = (),
    baseline: Baseline | None = None,
    encode_delta: bool = True,
) -> ScrapeResult:
    """Scrape ``spec`` once: HTTP 200 and a valid pprof body is success, anything else a named error.

    Never raises a ScrapeError, nor for an unreadable ``*_file`` secret: the outcome is in the result.
    ``guard()`` is called before the request (a CPU or other delta scrape waits there for the in-flight
    guard of its URL: scraper.guard; it raises ScrapeSkipped); ``offload(func, *args, **kwargs)`` runs the validation
    (and delta) of a large body elsewhere (a thread). The delta of the ``cumulative`` sample types (see
    :func:`scraper.delta.cumulative_sample_types`) is taken against ``baseline``, the series' stored
    one (None: there is none), and encoded as pprof only when ``encode_delta``.
    """
    start = clock()
    try:
        if guard is not None:
            guard()
            start = clock()  # the request starts once the guard is held, after any wait
        fetched = client.fetch(spec.url, timeout_s=spec.timeout_s, body_size_limit=spec.body_size_limit)
        data = unpacked(fetched.body, OFFLOAD_BYTES)  # decompressed once: validation takes it as it is
        if offload is not None and data is None:
            info, delta = offload(check_body, spec, fetched.body, scheduled_at, cumulative, baseline, encode_delta)
        else:
            info, delta = check_body(spec, fetched.body, scheduled_at, cumulative, baseline, encode_delta, data)
    except ScrapeError as exc:
        return ScrapeResult(spec, scheduled_at, start, clock(), error=exc)
    except (SecretFileError, ConfigError) as exc:
        # The job's own credentials are at fault, not the target; the message names the file or field.
        return ScrapeResult(spec, scheduled_at, start, clock(), error=ScrapeError(str(exc), spec.url))
    return ScrapeResult(spec, scheduled_at, start, clock(), body=fetched.body, info=info, delta=delta)


def check_body(spec: ScrapeSpec, body: bytes, scheduled_at: float, cumulative: tuple[str, ...] = (),
               baseline: Baseline | None = None, encode_delta: bool = True,
               data: bytes | None = None) -> tuple[ProfileInfo, Delta | None]:
    """Validate ``body`` (``data``: already decompressed); when it has ``cumulative`` sample types, also
    take their delta against ``baseline``, on the profile validation decoded (None when there is nothing
    cumulative), and encode it when ``encode_delta`` (a receiver stores deltas)."""
    if not cumulative:
        return validate_profile(body, url=spec.url, size_limit=spec.body_size_limit,
                                sample_limit=spec.sample_limit, data=data), None
    info, profile = parse_profile(body, url=spec.url, size_limit=spec.body_size_limit, sample_limit=spec.sample_limit,
                                  data=data)
    delta = compute(profile, cumulative, baseline, slot=scheduled_at, interval_s=spec.interval_s)
    if delta is not None and encode_delta:
        delta.body  # noqa: B018 - encoded here, off the event loop when this runs in the validation thread
    return info, delta
