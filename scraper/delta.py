"""Deltas of cumulative profiles: what a target added since the previous scrape of the same series.

Go serves allocations (``alloc_objects``, ``alloc_space``), mutex and block (``contentions``,
``delay``) as running totals since the process started. Pyroscope 2.x stores what it is given, so
pushing totals inflates every range query; Alloy therefore pushes the change since the previous
scrape, and so do we. Unlike Alloy, the previous profile is not kept in one process's memory but in
Redis (:mod:`scraper.baseline`), so consecutive slots of a target may run on any worker.

Samples are matched by stack and labels, as pprof matches them. A stack is its list of locations,
each known by its address (or, without one, by its lines), never by its id: a target numbers ids
anew in every profile. Only the matching key (8 bytes of BLAKE2b) and the cumulative
values of each sample are kept as the baseline, not the profile.

Rules (docs/pyroscope.md):

- the first scrape of a series, one whose baseline is older than two intervals, or one whose sample
  types changed, becomes the new baseline and pushes nothing;
- totals that fall (the target restarted) make a new baseline too: nothing negative is pushed; a
  single sample that falls (Go rescales heap samples as their average size changes) counts as zero;
- gauges (``inuse_*``) pass unchanged; a sample that is zero in every value is left out.
"""

from __future__ import annotations

import enum
import functools
import gzip
import sys
from array import array
from dataclasses import dataclass, field
from hashlib import blake2b

import msgpack
from google.protobuf.message import Message

from .config import Config
from .plan import ScrapeSpec

#: Built-in profile types (config keys) whose sample types of these names are running totals when
#: scraped without ``?seconds=``. godeltaprof types are deltas already; goroutine, process_cpu and
#: fgprof are not totals.
CUMULATIVE_SAMPLE_TYPES: dict[str, tuple[str, ...]] = {
    "memory": ("alloc_objects", "alloc_space"),
    "mutex": ("contentions", "delay"),
    "block": ("contentions", "delay"),
}

#: Built-in profile types that the target serves as deltas itself (godeltaprof).
TARGET_DELTA_TYPES = frozenset({"godeltaprof_memory", "godeltaprof_mutex", "godeltaprof_block"})

_KEY_BYTES = 8
# A baseline may be used up to two intervals after its slot; slots are whole intervals apart, so a
# little slack absorbs float rounding and nothing more.
_MAX_AGE_INTERVALS = 2.001
_TIME_NANOS_TAG = b"\x48"  # field 9, varint


class Outcome(enum.StrEnum):
    """What the delta of one scrape came to."""

    #: the change since the baseline is pushed
    DELTA = "delta"
    #: no baseline yet: this scrape is the baseline, nothing pushed
    FIRST = "first"
    #: the baseline was older than two intervals: this scrape is the new one, nothing pushed
    EXPIRED = "expired"
    #: the totals fell (the target restarted): this scrape is the new baseline, nothing pushed
    RESTART = "restart"
    #: the cumulative sample types differ from the baseline's: new baseline, nothing pushed
    CHANGED = "changed"
    #: a scrape of a later (or the same) slot already set the baseline: nothing stored, nothing pushed
    STALE = "stale"


#: Why nothing was pushed, as a target's status shows it.
OUTCOME_TEXT = {
    Outcome.FIRST: "baseline: first scrape of this series, nothing pushed to Pyroscope yet",
    Outcome.EXPIRED: "baseline: the previous one was older than two intervals, nothing pushed",
    Outcome.RESTART: "baseline: totals fell (target restarted), nothing pushed",
    Outcome.CHANGED: "baseline: the sample types changed, nothing pushed",
    Outcome.STALE: "a later slot of this series was recorded first; this one pushed nothing",
}


#: Every sample type of the profile is a running total (a custom type marked ``cumulative: true``).
ALL_SAMPLE_TYPES = ("*",)


def cumulative_sample_types(profile_type: str, delta_seconds: int | None,
                            cumulative: bool | None = None) -> tuple[str, ...]:
    """The sample types of ``profile_type`` that are running totals, scraped with ``?seconds=delta_seconds``
    (None: without) and configured ``cumulative`` (None: the type's default); empty when none."""
    if delta_seconds is not None or cumulative is False:
        return ()
    if profile_type in CUMULATIVE_SAMPLE_TYPES:
        return CUMULATIVE_SAMPLE_TYPES[profile_type]
    return ALL_SAMPLE_TYPES if cumulative else ()


def cumulative_types_of(config: Config, spec: ScrapeSpec) -> tuple[str, ...]:
    """The sample types of ``spec``'s profiles that are running totals, by ``config`` (its
    ``cumulative`` setting); empty when the type is not in it."""
    enabled = config.scrape[spec.job].profiling_config.enabled_types() if spec.job in config.scrape else {}
    if spec.profile_type not in enabled:
        return ()
    return cumulative_sample_types(spec.profile_type, spec.delta_seconds, enabled[spec.profile_type][1].cumulative)


@dataclass(frozen=True)
class Baseline:
    """What the next scrape of a series subtracts: each sample's cumulative values, by matching key."""

    #: the scheduled slot of the scrape it comes from (Unix seconds)
    slot: float
    #: the profile's ``time_nanos`` (0 when it had none)
    time_nanos: int
    #: names of the cumulative sample types, in the order of ``values``
    sample_types: tuple[str, ...]
    #: the sum of each cumulative sample type over every sample
    totals: tuple[int, ...]
    #: sample key -> its cumulative values
    values: dict[bytes, tuple[int, ...]]

    def encode(self) -> bytes:
        """A compact form: msgpack around the joined keys and little-endian int64 values."""
        flat = array("q", [v for values in self.values.values() for v in values])
        if sys.byteorder == "big":
            flat.byteswap()
        return msgpack.packb({"slot": self.slot, "time": self.time_nanos, "types": list(self.sample_types),
                              "totals": list(self.totals), "keys": b"".join(self.values),
                              "values": flat.tobytes()}, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Baseline:
        raw = msgpack.unpackb(data, raw=False)
        width = len(raw["types"])
        flat = array("q")
        flat.frombytes(raw["values"])
        if sys.byteorder == "big":
            flat.byteswap()
        keys = raw["keys"]
        columns = [flat[i::width] for i in range(width)]
        values = dict(zip((keys[i:i + _KEY_BYTES] for i in range(0, len(keys), _KEY_BYTES)), zip(*columns)))
        return cls(slot=float(raw["slot"]), time_nanos=int(raw["time"]), sample_types=tuple(raw["types"]),
                   totals=tuple(raw["totals"]), values=values)


@dataclass(frozen=True)
class Delta:
    """The delta of one scraped profile against its series' baseline."""

    outcome: Outcome
    #: this profile as the next scrape's baseline
    baseline: Baseline
    #: the slot of the baseline the change was taken against (what Redis must still hold for it to count)
    against_slot: float | None = None
    #: the profile changed into its delta (only when ``outcome`` is DELTA), and its ``time_nanos``
    changed: Message | None = field(default=None, repr=False, compare=False)
    time_nanos: int = 0

    @functools.cached_property
    def body(self) -> bytes | None:
        """The change since the baseline, gzipped pprof; None unless ``outcome`` is DELTA. Encoded on
        first use: only stores of deltas (Pyroscope) need it, and encoding costs as much as the delta."""
        return None if self.changed is None else _encode(self.changed, self.time_nanos)


def compute(profile: Message, names: tuple[str, ...], previous: Baseline | None, *, slot: float,
            interval_s: float) -> Delta | None:
    """The delta of ``profile`` (decoded by :func:`scraper.pprof.parse_profile`, and changed in place)
    against ``previous``, for its sample types named in ``names`` (:data:`ALL_SAMPLE_TYPES`: all);
    None when it has none of them (nothing cumulative: push it as it is)."""
    strings = profile.string_table
    type_names = [strings[vt.type].decode("utf-8", "replace") for vt in profile.sample_type]
    indices = [i for i, name in enumerate(type_names) if name in names or names == ALL_SAMPLE_TYPES]
    if not indices:
        return None
    cumulative = tuple(type_names[i] for i in indices)
    keys = sample_keys(profile)
    samples = profile.sample
    # Go puts the cumulative types side by side (alloc_* before inuse_*): one slice per sample then.
    lo, hi = indices[0], indices[-1] + 1
    contiguous = indices == list(range(lo, hi))
    if contiguous:
        current = [tuple(s.value[lo:hi]) for s in samples]
    else:
        current = [tuple([s.value[i] for i in indices]) for s in samples]
    totals = tuple(sum(column) for column in zip(*current)) if current else (0,) * len(indices)
    time_nanos = profile.time_nanos[-1] if profile.time_nanos else 0

    merged = dict(zip(keys, current))
    repeated = len(merged) != len(keys)  # a key in several samples: their values add up
    if repeated:
        merged = {}
        for key, values in zip(keys, current):
            seen = merged.get(key)
            merged[key] = values if seen is None else tuple(a + b for a, b in zip(seen, values))
    baseline = Baseline(slot=slot, time_nanos=time_nanos, sample_types=cumulative, totals=totals, values=merged)

    if previous is None:
        return Delta(Outcome.FIRST, baseline)
    if previous.slot >= slot:
        return Delta(Outcome.STALE, baseline)
    if slot - previous.slot > _MAX_AGE_INTERVALS * interval_s:
        return Delta(Outcome.EXPIRED, baseline)
    if previous.sample_types != cumulative:
        return Delta(Outcome.CHANGED, baseline)
    if any(now < before for now, before in zip(totals, previous.totals)):
        return Delta(Outcome.RESTART, baseline)

    gauges = [i for i in range(len(type_names)) if i not in indices]
    # what is still to subtract, when a key occurs in several samples
    left = dict(previous.values) if repeated else previous.values
    kept = []
    for sample, key, values in zip(samples, keys, current):
        before = left.get(key)
        if before is None:
            change = values
        else:
            change = tuple([a - b if a > b else 0 for a, b in zip(values, before)])
            if repeated:
                left[key] = tuple([b - a if b > a else 0 for a, b in zip(values, before)])
            if change != values:
                if contiguous:
                    sample.value[lo:hi] = change
                else:
                    stored = sample.value
                    for i, v in zip(indices, change):
                        stored[i] = v
        if any(change) or (gauges and any(sample.value[i] for i in gauges)):
            kept.append(sample)
    if len(kept) != len(samples):
        del samples[:]
        samples.extend(kept)
    if time_nanos and previous.time_nanos:
        profile.duration_nanos = max(0, time_nanos - previous.time_nanos)
    else:
        profile.duration_nanos = int((slot - previous.slot) * 1e9)
    return Delta(Outcome.DELTA, baseline, against_slot=previous.slot, changed=profile, time_nanos=time_nanos)


def sample_keys(profile: Message) -> list[bytes]:
    """The matching key of each sample of ``profile``: its stack and its labels.

    A location is known by its address, as DataDog's fastdelta (Alloy's delta) knows it: Go gives
    each program counter one location. A location without an address (a profile made from source
    lines, Python's) is known by its lines: function name, file name, line.
    """
    strings = profile.string_table
    functions: dict[int, bytes] | None = None
    locations: dict[int, bytes] = {}
    for loc in profile.location:
        address = loc.address
        if address:
            locations[loc.id] = address.to_bytes(8, "little")
            continue
        if functions is None:
            functions = {f.id: b"%s\x00%s\x00" % (strings[f.name], strings[f.filename]) for f in profile.function}
        lines = b"".join(b"%s%d\x00" % (functions.get(line.function_id, b""), line.line) for line in loc.line)
        locations[loc.id] = blake2b(lines, digest_size=_KEY_BYTES).digest()
    keys = []
    location = locations.__getitem__
    # a profile has few distinct labels (Go: bytes=N on heap samples): each is formatted once
    formatted: dict[tuple[int, int, int, int], bytes] = {}
    for sample in profile.sample:
        stack = b"".join(map(location, sample.location_id))
        if sample.label:
            texts = []
            for label in sample.label:
                ref = (label.key, label.str, label.num, label.num_unit)
                text = formatted.get(ref)
                if text is None:
                    text = formatted[ref] = b"%s=%s=%d=%s" % (strings[ref[0]], strings[ref[1]], ref[2], strings[ref[3]])
                texts.append(text)
            texts.sort()
            stack += b"\x01" + b"\x00".join(texts)
        keys.append(blake2b(stack, digest_size=_KEY_BYTES).digest())
    return keys


def _encode(profile: Message, time_nanos: int) -> bytes:
    """``profile`` as gzipped pprof. The decoding schema declares ``time_nanos`` repeated (packed on
    the wire), which pprof would not read: it is cleared and written back as the single varint it is."""
    del profile.time_nanos[:]
    data = profile.SerializeToString()
    if time_nanos:
        data += _TIME_NANOS_TAG + _varint(time_nanos & (2**64 - 1))
    # Fastest level, as Go's runtime/pprof writes its profiles; mtime 0 keeps the output reproducible.
    return gzip.compress(data, compresslevel=1, mtime=0)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
