"""One scrape: fetch a spec's URL, validate the body as pprof, and say how it went.

This is the body of one iteration of a scrape loop, without the loop: beat decides when,
a worker calls :func:`scrape_once`. The CPU guard keeps two ``process_cpu`` requests from
ever being in flight to the same target, wherever the tasks run.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from . import keys
from .client import TargetClient
from .delta import Baseline, Delta, compute
from .errors import ConfigError, ScrapeError, ScrapeSkipped, SecretFileError
from .plan import ScrapeSpec
from .pprof import ProfileInfo, decompressed_size, parse_profile, validate_profile

#: Go answers a second concurrent CPU profile with a 500, so only one may be in flight per target.
CPU_PROFILE_TYPES = frozenset({"process_cpu"})

#: How often a CPU scrape waiting for the target's previous CPU profile to end asks again.
CPU_GUARD_POLL_S = 0.1

#: Bodies that decompress to more than this are validated off the event loop. Validation costs up to
#: ~1 µs a decompressed byte (a body of tiny samples), so this keeps the loop's share under ~100 ms,
#: while a typical profile takes ~130 µs, less than a thread hop. By wire size instead, a 65 KB gzip
#: body of 16.7 million samples was validated in place, for 15 s.
OFFLOAD_BYTES = 64 * 1024

_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


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

    @property
    def push_id(self) -> str:
        """Stable id of this profile: the same (target, type, scheduled time) always gets the same id."""
        return push_id(self.spec, self.scheduled_at)


def push_id(spec: ScrapeSpec, scheduled_at: float) -> str:
    """A UUID-shaped id from the spec's identity and the scheduled slot, so a redelivery is recognisable."""
    digest = hashlib.sha256(f"{spec.key}\x00{scheduled_at:.3f}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@contextmanager
def cpu_guard(client: redis.Redis, spec: ScrapeSpec, *, wait_until: float,
              clock: Callable[[], float] = time.time) -> Iterator[None]:
    """Hold the target's CPU-profile slot for the request. While another scrape holds it (the previous
    slot's profile, started late), wait for it to end, as a Prometheus scrape loop waits for its
    previous scrape; raise ScrapeSkipped if it is still held at ``wait_until`` (Unix seconds).

    The slot expires after the request's timeout, so a worker that dies cannot block a target for long.
    """
    if spec.profile_type not in CPU_PROFILE_TYPES:
        yield
        return
    url = urlsplit(spec.url)
    key = keys.CPU_INFLIGHT.format(target=f"{url.scheme}://{url.netloc}")
    token = uuid.uuid4().hex
    # Skipping instead would lose the next profile whenever one started a second late; waiting lets
    # the lag shrink by interval - seconds (1 s) per slot.
    while not client.set(key, token, nx=True, px=int((spec.timeout_s + 1) * 1000)):
        if clock() + CPU_GUARD_POLL_S > wait_until:
            raise ScrapeSkipped(
                "the previous CPU profile of this target was still in flight at the end of this slot's "
                "interval (Go allows one at a time); skipped this one",
                spec.url,
            )
        time.sleep(CPU_GUARD_POLL_S)
    try:
        yield
    finally:
        client.eval(_RELEASE_IF_OWNER, 1, key, token)


def scrape_once(
    spec: ScrapeSpec,
    client: TargetClient,
    *,
    scheduled_at: float,
    guard_client: redis.Redis | None = None,
    offload: Callable[..., tuple[ProfileInfo, Delta | None]] | None = None,
    clock: Callable[[], float] = time.time,
    cumulative: tuple[str, ...] = (),
    baseline: Baseline | None = None,
) -> ScrapeResult:
    """Scrape ``spec`` once: HTTP 200 and a valid pprof body is success, anything else a named error.

    Never raises a ScrapeError, nor for an unreadable ``*_file`` secret: the outcome is in the result.
    ``guard_client`` enables the CPU guard (a CPU scrape waits for the target's previous one until the
    end of its slot's interval); ``offload(func, *args, **kwargs)`` runs the validation (and delta)
    of a large body elsewhere (a thread). The delta of the ``cumulative`` sample types (see
    :func:`scraper.delta.cumulative_sample_types`) is taken against ``baseline``, the series' stored
    one (None: there is none).
    """
    start = clock()
    try:
        guard = (cpu_guard(guard_client, spec, wait_until=scheduled_at + spec.interval_s, clock=clock)
                 if guard_client is not None else nullcontext())
        with guard:
            start = clock()  # the request starts once the guard is held, after any wait
            fetched = client.fetch(spec.url, timeout_s=spec.timeout_s, body_size_limit=spec.body_size_limit)
        if offload is not None and decompressed_size(fetched.body, OFFLOAD_BYTES) > OFFLOAD_BYTES:
            info, delta = offload(check_body, spec, fetched.body, scheduled_at, cumulative, baseline)
        else:
            info, delta = check_body(spec, fetched.body, scheduled_at, cumulative, baseline)
    except ScrapeError as exc:
        return ScrapeResult(spec, scheduled_at, start, clock(), error=exc)
    except (SecretFileError, ConfigError) as exc:
        # The job's own credentials are at fault, not the target; the message names the file or field.
        return ScrapeResult(spec, scheduled_at, start, clock(), error=ScrapeError(str(exc), spec.url))
    return ScrapeResult(spec, scheduled_at, start, clock(), body=fetched.body, info=info, delta=delta)


def check_body(spec: ScrapeSpec, body: bytes, scheduled_at: float, cumulative: tuple[str, ...] = (),
               baseline: Baseline | None = None) -> tuple[ProfileInfo, Delta | None]:
    """Validate ``body``; when it has ``cumulative`` sample types, also take their delta against
    ``baseline``, on the profile validation decoded (None when there is nothing cumulative)."""
    if not cumulative:
        return validate_profile(body, url=spec.url, size_limit=spec.body_size_limit,
                                sample_limit=spec.sample_limit), None
    info, profile = parse_profile(body, url=spec.url, size_limit=spec.body_size_limit, sample_limit=spec.sample_limit)
    return info, compute(profile, cumulative, baseline, slot=scheduled_at, interval_s=spec.interval_s)
