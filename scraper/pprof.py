"""Is a scraped body a pprof profile? Decompress it with a bound, decode it, check it as pprof does.

A body is accepted when Go's ``profile.ParseData`` would accept it: gzip (by its magic bytes, whatever
the headers said) or raw protobuf, then the validity rules of pprof's decoder and ``CheckValid``.
Anything else is an :class:`InvalidProfile` whose message says what the body looks like instead
(an HTML page, JSON, plain text, pprof's text format, broken gzip, …), quoting at most ~80 bytes of it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ._proto import profile_pb2
from .errors import BodyTooLarge, InvalidProfile, TooManySamples

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_SIZE_LIMIT = 64 * 1024 * 1024
#: Samples a profile may hold unless the job says otherwise (0: no limit). A real profile as large as
#: the default body_size_limit holds about 550,000 (pprof's large.cpu: 120 bytes a sample), so this
#: refuses none that the size limit lets through, while a sample bomb (4 bytes a sample, 16.7 million
#: in 64 MiB) is stopped after counting a million: decoding that many costs ~1 s and ~110 MB.
DEFAULT_SAMPLE_LIMIT = 1_000_000

# Output per zlib call: big enough that a typical profile takes one call, small enough that a gzip
# bomb overshoots the limit by at most this much before it is stopped.
_CHUNK = 1 << 20
_PREVIEW_BYTES = 72


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What validation learned about a profile; strings are decoded leniently (bad UTF-8 replaced)."""

    sample_types: list[tuple[str, str]]
    sample_count: int
    gzipped: bool
    decompressed_size: int
    period_type: tuple[str, str] | None
    period: int
    duration_nanos: int
    time_nanos: int


# The schemas validation decodes with, all built from profile.proto once at import.
_F = descriptor_pb2.FieldDescriptorProto
_REFS_PACKAGE = "pprof_scraper.refs"
_WIRE_PACKAGE = "pprof_scraper.wire"


def _schemas() -> tuple[type[Message], type[Message], type[Message], type[Message]]:
    """Four message classes: the profile (leniently), its references merged, a location's lines
    merged, and the profile with every entry merged into one, to check wire types.

    Profile is profile.proto's, with ``string_table`` as bytes and ``time_nanos`` repeated. bytes:
    upb refuses a proto3 string that is not UTF-8, but pprof takes any bytes, and Go label values or
    C++ symbol names need not be UTF-8. repeated: a second ``time_nanos`` is how pprof notices two
    profiles concatenated into one body. Neither changes the wire format.

    ProfileRefs reads the same bytes with each repeated sub-message declared singular, so protobuf's
    merge rule concatenates, in C, every entry's references and string indices into one list per
    field: the checks then work on a few flat lists instead of touching each sample, location and line
    from Python, which costs about a microsecond per object. Indices are read as uint64 so that a negative
    int64 shows up as a huge number and one ``max`` checks both ends of the range. A location's lines
    stay bytes, so that their count tells a line without a function_id apart, and LineRefs merges them
    in a second step. (Sample values are still counted one sample at a time: Go writes two or fewer
    values unpacked, so no merged form keeps the per-sample count.) ProfileRefs also keeps each
    ``period_type`` whole, to count them (upb merges a second one into the first, pprof replaces it).

    WireProfile is profile.proto with every repeated sub-message declared singular: upb keeps a field
    of the wrong wire type (pprof refuses it) as an unknown field of the message it is in, and merging
    gathers those of every entry into a handful of messages, whose size then tells whether any exist.
    """
    profile = descriptor_pb2.FileDescriptorProto()
    profile_pb2.DESCRIPTOR.CopyToProto(profile)
    (message,) = (m for m in profile.message_type if m.name == "Profile")
    for field in message.field:
        if field.name == "string_table":
            field.type = _F.TYPE_BYTES
        elif field.name == "time_nanos":
            field.label = _F.LABEL_REPEATED

    refs = descriptor_pb2.FileDescriptorProto(
        name="pprof_scraper_refs.proto", package=_REFS_PACKAGE, syntax="proto3"
    )
    u64 = _F.TYPE_UINT64
    _add_message(refs, "LabelRefs", key=(1, u64), str=(2, u64), num_unit=(4, u64))
    _add_message(refs, "SampleRefs", location_id=(1, u64), label=(3, "LabelRefs"))
    _add_message(refs, "MappingRefs", filename=(5, u64), build_id=(6, u64))
    _add_message(refs, "LocationRefs", line=(4, _F.TYPE_BYTES))
    _add_message(refs, "LineRefs", function_id=(1, u64))
    _add_message(refs, "FunctionRefs", name=(2, u64), system_name=(3, u64), filename=(4, u64))
    _add_message(
        refs,
        "ProfileRefs",
        sample=(2, "SampleRefs"),
        mapping=(3, "MappingRefs"),
        location=(4, "LocationRefs"),
        function=(5, "FunctionRefs"),
        period_type=(11, _F.TYPE_BYTES),
    )

    wire = descriptor_pb2.FileDescriptorProto()
    profile_pb2.DESCRIPTOR.CopyToProto(wire)
    wire.name, wire.package = "pprof_scraper_wire.proto", _WIRE_PACKAGE
    for message in wire.message_type:
        for field in message.field:
            if field.type == _F.TYPE_MESSAGE:
                field.label = _F.LABEL_OPTIONAL
                field.type_name = field.type_name.replace(f".{profile.package}.", f".{_WIRE_PACKAGE}.")
            elif field.type == _F.TYPE_STRING:
                field.type = _F.TYPE_BYTES

    pool = descriptor_pool.DescriptorPool()
    for file in (profile, refs, wire):
        pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{profile.package}.Profile")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_REFS_PACKAGE}.ProfileRefs")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_REFS_PACKAGE}.LineRefs")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_WIRE_PACKAGE}.Profile")),
    )


def _add_message(file: descriptor_pb2.FileDescriptorProto, name: str, /, **fields: tuple[int, int | str]) -> None:
    """Add a message whose scalar fields are repeated and whose message fields (named by type) singular."""
    message = file.message_type.add(name=name)
    for field_name, (number, kind) in fields.items():
        if isinstance(kind, str):
            type_name = f".{file.package}.{kind}"
            message.field.add(
                name=field_name, number=number, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE, type_name=type_name
            )
        else:
            message.field.add(name=field_name, number=number, label=_F.LABEL_REPEATED, type=kind)


_Profile, _ProfileRefs, _LineRefs, _WireProfile = _schemas()


def validate_profile(body: bytes, *, url: str | None = None, size_limit: int = DEFAULT_SIZE_LIMIT,
                     sample_limit: int = 0, data: bytes | None = None) -> ProfileInfo:
    """Check that ``body`` is a valid pprof profile, gzip-compressed or not, and describe it.

    Raises :class:`BodyTooLarge` as soon as the (decompressed) profile exceeds ``size_limit`` bytes,
    :class:`TooManySamples` when it holds more than ``sample_limit`` samples (0: no limit), counted
    before anything is decoded, and :class:`InvalidProfile` for anything that is not a profile.
    ``data``, when given, is ``body`` already decompressed (:func:`unpacked`).
    """
    return parse_profile(body, url=url, size_limit=size_limit, sample_limit=sample_limit, data=data)[0]


def parse_profile(body: bytes, *, url: str | None = None, size_limit: int = DEFAULT_SIZE_LIMIT,
                  sample_limit: int = 0, data: bytes | None = None) -> tuple[ProfileInfo, Message]:
    """:func:`validate_profile`, also handing back the decoded profile, so that work on it (a delta)
    does not decompress and decode the body a second time. Its ``string_table`` holds bytes and its
    ``time_nanos`` is repeated (see ``_schemas``); the rest is profile.proto's ``Profile``."""
    if not body:
        raise InvalidProfile("empty body: the target answered with no data where a pprof profile was expected", url)
    gzipped = body.startswith(GZIP_MAGIC)
    if gzipped:
        data = _gunzip(body, size_limit, url) if data is None or len(data) > size_limit else data
        if not data:
            raise InvalidProfile("gzip of an empty body: the target compressed nothing instead of a profile", url)
        if data.startswith(GZIP_MAGIC):
            raise InvalidProfile(
                "gzipped twice: the decompressed body is gzip again (a proxy or middleware compressing "
                "pprof's already-gzipped output?); pprof reads only one layer",
                url,
            )
    else:
        if len(body) > size_limit:
            raise BodyTooLarge(f"profile is {_size(len(body))}, over the {_size(size_limit)} body_size_limit", url)
        data = body
    if sample_limit and len(data) >= _MIN_SAMPLE_BYTES * (sample_limit + 1):
        _check_sample_count(data, sample_limit, url)
    try:
        profile = _Profile.FromString(data)
    except DecodeError:
        profile = None  # upb refuses some encodings pprof reads (varints over 5 bytes): decide below
    if profile is not None and profile.string_table and _consistent(profile, data):
        return _info(profile, gzipped, len(data)), profile
    # The bulk check only says yes or no. Read the body as pprof does (re-encoded for upb, when upb
    # reads it otherwise), then check its rules one entry at a time: slow, exact.
    if profile is None or not _read_as_pprof_does(data):
        try:
            profile = _Profile.FromString(_as_pprof_reads_it(data))
        except _Malformed as exc:
            problem = None if exc.wire else f"malformed pprof profile: {exc.message}"
            raise InvalidProfile(_describe(data, gzipped, problem, exc.message), url) from None
    problem = _problem(profile)
    if problem is not None:
        raise InvalidProfile(_describe(data, gzipped, problem, None), url)
    return _info(profile, gzipped, len(data)), profile


def unpacked(body: bytes, limit: int) -> bytes | None:
    """``body`` decompressed (itself when it is not gzip) when that is at most ``limit`` bytes and
    its gzip is sound; None when it is larger (decompression stops just past ``limit``, so never
    more work than that) or broken, which validation then reports."""
    if not body.startswith(GZIP_MAGIC):
        return body if len(body) <= limit else None
    try:
        return _gunzip(body, limit, None)
    except (BodyTooLarge, InvalidProfile):
        return None


def _gunzip(body: bytes, limit: int, url: str | None) -> bytes:
    """Decompress every gzip member of ``body``, never holding more than ``limit`` (+ one chunk) bytes."""
    out = bytearray()
    rest = body
    members = 0
    while rest:
        if not rest.startswith(GZIP_MAGIC):
            # Go's gzip reader (and so pprof and Pyroscope) fails on anything after the last member.
            raise InvalidProfile(
                f"{len(rest)} bytes of trailing data after {members} gzip member{'s' if members != 1 else ''}, "
                f"starting {rest[:16]!r}; pprof's gzip reader rejects this",
                url,
            )
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing; zlib checks CRC and length
        pending = rest
        while True:
            try:
                chunk = member.decompress(pending, min(_CHUNK, limit - len(out) + 1))
            except zlib.error as exc:
                raise InvalidProfile(_gzip_error(str(exc), len(body)), url) from None
            out += chunk
            if len(out) > limit:
                raise BodyTooLarge(
                    f"gzip body ({_size(len(body))}) decompresses to more than the "
                    f"{_size(limit)} body_size_limit; stopped there (a gzip bomb, or raise body_size_limit)",
                    url,
                )
            if member.eof:
                break
            pending = member.unconsumed_tail
            if not chunk and not pending:
                raise InvalidProfile(
                    f"truncated gzip: the stream ends early after {len(body)} bytes "
                    f"({len(out)} decompressed); the response was cut off",
                    url,
                )
        members += 1
        rest = member.unused_data
    return bytes(out)


def _gzip_error(reason: str, size: int) -> str:
    if "incorrect data check" in reason:
        return f"gzip with a bad CRC: the {size}-byte body is corrupt (its CRC-32 check fails)"
    if "incorrect length check" in reason:
        return f"gzip with a bad length trailer: the {size}-byte body is corrupt"
    return f"corrupt gzip: {reason.removeprefix('Error -3 while decompressing data: ')}"


# The smallest sample on the wire: its tag and a zero length (``12 00``).
_MIN_SAMPLE_BYTES = 2
_SAMPLE_TAG = 2 << 3 | 2


def _check_sample_count(data: bytes, limit: int, url: str | None) -> None:
    """Raise TooManySamples once the top level of ``data`` holds more than ``limit`` samples.

    Reads only tags and lengths, and stops at the first sample over the limit, so a sample bomb
    costs about ``limit`` steps of this loop (Python, which lets other threads run) instead of a full
    decode holding the GIL and about 110 bytes a sample. Malformed data stops the count: decoding says why.
    """
    samples = pos = 0
    end = len(data)
    try:
        while pos < end:
            key, pos = _go_varint(data, pos)
            wire = key & 7
            if wire == 0:
                _, pos = _go_varint(data, pos)
            elif wire == 2:
                length, pos = _go_varint(data, pos)
                pos += length
                if key == _SAMPLE_TAG:
                    samples += 1
                    if samples > limit:
                        raise TooManySamples(
                            f"profile has more than {limit} samples, over the job's sample_limit "
                            f"({_size(end)} decompressed; stopped counting there)",
                            url,
                        )
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                return
    except _Malformed:
        return


def _consistent(p: Message, data: bytes) -> bool:
    """Whether ``p`` keeps every rule of pprof's decoder and ``CheckValid``, judged on merged lists.

    Yes only when pprof surely agrees; any doubt (an encoding upb reads differently from pprof,
    a rule that may be broken) is settled one entry at a time by :func:`_problem`.
    """
    strings = p.string_table
    n = len(strings)
    if strings[0] or len(p.time_nanos) > 1:
        return False
    indices = [p.drop_frames, p.keep_frames, p.default_sample_type, p.doc_url, p.period_type.type, p.period_type.unit]
    indices += p.comment
    for vt in p.sample_type:
        indices += (vt.type, vt.unit)
    if min(indices) < 0 or max(indices) >= n:
        return False
    try:
        refs = _ProfileRefs.FromString(data)
        line_function_ids = _LineRefs.FromString(b"".join(refs.location.line)).function_id
    except DecodeError:
        return False
    if len(refs.period_type) > 1 or not _wire_types_as_pprof_expects(data):
        return False
    label = refs.sample.label
    for merged in (
        refs.mapping.filename,
        refs.mapping.build_id,
        refs.function.name,
        refs.function.system_name,
        refs.function.filename,
        label.key,
        label.str,
        label.num_unit,  # pprof reads it only for numeric labels: out of range here is a doubt, not a no
    ):
        if merged and max(merged) >= n:
            return False

    # Ids one entry at a time: the last id of an entry counts, as in pprof, and none may be 0 or shared.
    # (A location's mapping_id may name no mapping: pprof leaves that location without one.)
    function_ids = _distinct_ids([f.id for f in p.function])
    location_ids = _distinct_ids([loc.id for loc in p.location])
    if function_ids is None or location_ids is None or _distinct_ids([m.id for m in p.mapping]) is None:
        return False
    # A line without a function_id adds nothing to the merged list, so count them.
    if len(line_function_ids) != len(refs.location.line) or not function_ids.issuperset(line_function_ids):
        return False

    samples = len(p.sample)
    if not samples:
        return True
    types = len(p.sample_type)
    if not types or not location_ids.issuperset(refs.sample.location_id):
        return False
    for s in p.sample:
        if len(s.value) != types:
            return False
    return True


def _distinct_ids(ids: list[int]) -> set[int] | None:
    """The ids as a set, if none is 0 (reserved) and no two are the same."""
    distinct = set(ids)
    return distinct if len(distinct) == len(ids) and 0 not in distinct else None


# Reading as pprof's own decoder (profile/encode.go) does, for bodies upb reads otherwise: the field
# numbers and types are profile.proto's. A known field must have its type's wire type (a repeated
# number may also come packed); an unknown field is skipped unless it is a group; a singular field
# given twice keeps its last value, a message included; varints take up to 10 bytes. Stricter on
# purpose (docs/pprof.md): field number 0 and numbers from 2^29 are refused.

_MESSAGES = {m.name: m for m in profile_pb2.DESCRIPTOR.message_types_by_name.values()}
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}
_MAX_FIELD_NUMBER = (1 << 29) - 1


class _Malformed(Exception):
    """Why pprof's decoder refuses a body; ``wire`` when its protobuf encoding is what is broken."""

    def __init__(self, message: str, wire: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.wire = wire


def _go_varint(data: bytes, pos: int, base: int = 0) -> tuple[int, int]:
    """The varint at ``pos`` and where it ends; ``base`` is where ``data`` starts in the body."""
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        value |= (data[i] & 0x7F) << shift
        if data[i] < 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, i + 1
        shift += 7
    if len(data) - pos >= 10:
        raise _Malformed(f"varint longer than 10 bytes at byte {base + pos}")
    raise _Malformed(f"truncated varint at byte {base + pos}")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_as_pprof_does(data: bytes) -> bool:
    """Whether upb reads ``data`` as pprof does: with fields of the wire types pprof expects, and at
    most one period_type (upb merges two, pprof keeps the last)."""
    try:
        return _wire_types_as_pprof_expects(data) and len(_ProfileRefs.FromString(data).period_type) <= 1
    except DecodeError:
        return False


def _wire_types_as_pprof_expects(data: bytes) -> bool:
    """No field of a wrong wire type, no group: upb keeps both as unknown fields, pprof refuses them."""
    try:
        merged = _WireProfile.FromString(data)
    except DecodeError:
        return False
    size = merged.ByteSize()
    merged.DiscardUnknownFields()
    return merged.ByteSize() == size


def _as_pprof_reads_it(data: bytes, kind: str = "Profile", base: int = 0) -> bytes:
    """``data`` re-encoded as pprof reads it, for upb: every varint as short as it goes, unknown
    fields dropped, only the last of a singular message. Raises _Malformed where pprof's decoder
    fails. ``base`` is where ``data`` starts in the body, for the messages."""
    fields = _MESSAGES[kind].fields_by_number
    out: list[bytes] = []
    last: dict[int, bytes] = {}  # singular messages: pprof keeps the last
    time_nanos = 0
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = _go_varint(data, pos, base)
        number, wire = key >> 3, key & 7
        if wire in (3, 4):
            raise _Malformed(f"{_WIRE_NAMES[wire]} wire type at byte {base + start}, which pprof never uses")
        if wire > 5:
            raise _Malformed(f"illegal wire type {wire} at byte {base + start}")
        if not 0 < number <= _MAX_FIELD_NUMBER:
            raise _Malformed(f"field number {number} at byte {base + start}, which protobuf does not allow")
        value, payload = 0, b""
        if wire == 0:
            value, pos = _go_varint(data, pos, base)
        elif wire == 2:
            length, pos = _go_varint(data, pos, base)
            if length > end - pos:
                raise _Malformed(f"field {number} at byte {base + start} runs past the end of the data (truncated?)")
            payload, pos = data[pos : pos + length], pos + length
        else:
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Malformed(f"field {number} at byte {base + start} runs past the end of the data (truncated?)")
        field = fields.get(number)
        if field is None:
            continue
        scalar = field.message_type is None and field.type not in (field.TYPE_STRING, field.TYPE_BYTES)
        if scalar and wire == 2 and field.is_repeated:  # packed: pprof reads it if every varint is whole
            at = 0
            while at < len(payload):
                _, at = _go_varint(payload, at, base + pos - len(payload))
        elif wire != (0 if scalar else 2):
            where = field.name if kind == "Profile" else f"{kind.lower()}.{field.name}"
            raise _Malformed(f"field {number} ({where}) at byte {base + start} is {_WIRE_NAMES[wire]}, "
                             f"expected {_WIRE_NAMES[0 if scalar else 2]}")
        if field.message_type is not None:
            payload = _as_pprof_reads_it(payload, field.message_type.name, base + pos - len(payload))
            if not field.is_repeated:
                last[number] = payload
                continue
        if wire == 2:
            out.append(_varint_bytes(number << 3 | 2) + _varint_bytes(len(payload)) + payload)
            continue
        if field.name == "time_nanos" and kind == "Profile":
            if time_nanos:
                raise _Malformed("time_nanos appears twice: two profiles concatenated into one body", wire=False)
            time_nanos = value
        out.append(_varint_bytes(number << 3) + _varint_bytes(value))
    out += (_varint_bytes(n << 3 | 2) + _varint_bytes(len(m)) + m for n, m in last.items())
    return b"".join(out)


def _problem(p: Message) -> str | None:
    """The first of pprof's rules (its postDecode and CheckValid) that ``p``, read as pprof reads
    it, breaks, in words; None when it is a valid profile. One entry at a time: slow, exact."""
    strings = p.string_table
    n = len(strings)
    if not n:
        return "protobuf, but not a pprof profile: it has no string table"
    if strings[0]:
        return f"malformed pprof profile: string_table[0] must be the empty string, is {strings[0][:20]!r}"
    if any(p.time_nanos[:-1]):
        return "malformed pprof profile: time_nanos appears twice: two profiles concatenated into one body"
    for where, i in _string_indices(p):
        if not 0 <= i < n:
            return f"malformed pprof profile: {where} is string index {i}, outside the {n}-entry string table"
    broken = _reference_broken(p)
    return f"malformed pprof profile: {broken}" if broken else None


def _reference_broken(p: Message) -> str | None:
    ids: dict[str, set[int]] = {}
    for kind, entries in (("mapping", p.mapping), ("function", p.function), ("location", p.location)):
        seen = ids[kind] = set()
        for e in entries:
            if e.id == 0:
                return f"a {kind} has id 0, which is reserved"
            if e.id in seen:
                return f"two {kind}s have id {e.id}"
            seen.add(e.id)
    # (A location's mapping_id may name no mapping: pprof leaves that location without one.)
    for loc in p.location:
        for line in loc.line:
            if line.function_id not in ids["function"]:
                return f"location {loc.id} has a line in function {line.function_id}, which does not exist"
    types = len(p.sample_type)
    if p.sample and not types:
        return f"it has {len(p.sample)} samples but no sample_type to say what they measure"
    for i, s in enumerate(p.sample):
        if len(s.value) != types:
            return f"sample {i} has {len(s.value)} values but there are {types} sample types"
        for lid in s.location_id:
            if lid not in ids["location"]:
                return f"sample {i} refers to location {lid}, which does not exist"
    return None


def _string_indices(p: Message) -> Iterator[tuple[str, int]]:
    """Every string index pprof looks up in ``p``, with where it is."""
    yield "drop_frames", p.drop_frames
    yield "keep_frames", p.keep_frames
    yield "default_sample_type", p.default_sample_type
    yield "doc_url", p.doc_url
    yield "period_type.type", p.period_type.type
    yield "period_type.unit", p.period_type.unit
    for i, c in enumerate(p.comment):
        yield f"comment[{i}]", c
    for i, vt in enumerate(p.sample_type):
        yield f"sample_type[{i}].type", vt.type
        yield f"sample_type[{i}].unit", vt.unit
    for m in p.mapping:
        yield f"mapping {m.id} filename", m.filename
        yield f"mapping {m.id} build_id", m.build_id
    for f in p.function:
        yield f"function {f.id} name", f.name
        yield f"function {f.id} system_name", f.system_name
        yield f"function {f.id} filename", f.filename
    for i, s in enumerate(p.sample):
        for label in s.label:
            yield f"sample {i} label key", label.key
            # pprof reads str when it is set, else num_unit when num or num_unit is
            if label.str:
                yield f"sample {i} label str", label.str
            elif label.num_unit:
                yield f"sample {i} label num_unit", label.num_unit


def _info(p: Message, gzipped: bool, size: int) -> ProfileInfo:
    strings = p.string_table

    def text(i: int) -> str:
        return strings[i].decode("utf-8", "replace")

    return ProfileInfo(
        sample_types=[(text(vt.type), text(vt.unit)) for vt in p.sample_type],
        sample_count=len(p.sample),
        gzipped=gzipped,
        decompressed_size=size,
        period_type=(text(p.period_type.type), text(p.period_type.unit)) if p.HasField("period_type") else None,
        period=p.period,
        duration_nanos=p.duration_nanos,
        time_nanos=p.time_nanos[-1] if p.time_nanos else 0,
    )


# What a body that is not a profile looks like. Only reached on failure, so it may take its time.

_TEXT_FORMAT = re.compile(rb"\s*(?:[a-z_]+ profile: |--- (?:mutex|contention):)")
_GOROUTINE_DUMP = re.compile(rb"\s*goroutine \d+ \[")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_SNIFF_BYTES = 512


def _describe(data: bytes, gzipped: bool, problem: str | None, wire: str | None) -> str:
    """Why ``data`` (the body, decompressed) is not a profile, naming what it looks like: ``problem``
    is the pprof rule it breaks, ``wire`` what is wrong with it as protobuf."""
    prefix = "gzip-compressed " if gzipped else ""
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if _GOROUTINE_DUMP.match(head):
        return f"{prefix}goroutine dump (debug=2), not a pprof profile: {_preview(head)}; scrape without ?debug"
    if _TEXT_FORMAT.match(head):
        return (
            f"{prefix}text, not a pprof profile: this is pprof's text format (debug=1); scrape without ?debug "
            f"(starts {_preview(head)})"
        )
    if _looks_like_text(head):
        if head[:1] == b"<":
            title = _TITLE.search(data[:4096])
            shown = f"title {_preview(title.group(1))}" if title else f"starts {_preview(head)}"
            return (
                f"{prefix}HTML page, not a pprof profile ({shown}); "
                "an error or login page from the target or a proxy?"
            )
        if head[:1] in (b"{", b"["):
            return f"{prefix}JSON, not a pprof profile: {_preview(head)}"
        first_line = head.split(b"\n", 1)[0]
        return f"{prefix}plain text, not a pprof profile: {_preview(first_line)}"
    if problem is not None:
        return f"{prefix}{problem}"
    compression = _other_compression(data)
    if compression:
        return (
            f"{compression}-compressed data, not a pprof profile: pprof bodies are gzip or raw protobuf "
            f"(did the server apply Content-Encoding: {compression}?)"
        )
    return f"{prefix}binary data, not a pprof profile ({wire}); it starts {data[:24]!r}"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", "replace")
    readable = sum((c.isprintable() and c != "\ufffd") or c in "\t\r\n" for c in text)
    return readable >= 0.95 * len(text)


def _preview(raw: bytes) -> str:
    """At most ``_PREVIEW_BYTES`` of ``raw`` on one line, quoted."""
    text = " ".join(raw[:_PREVIEW_BYTES].decode("utf-8", "replace").split())
    return repr(text + "…" if len(raw) > _PREVIEW_BYTES else text)


def _other_compression(data: bytes) -> str | None:
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if len(data) >= 2 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0:
        return "deflate"
    return None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"
