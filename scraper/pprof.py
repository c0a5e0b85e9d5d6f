"""Is a scraped body a pprof profile? Decompress it with a bound, decode it, check it as pprof does.

A body is accepted when Go's ``profile.ParseData`` would accept it: gzip (by its magic bytes, whatever
the headers said) or raw protobuf, then the validity rules of pprof's decoder and ``CheckValid``.
Anything else is an :class:`InvalidProfile` whose message says what the body looks like instead
(an HTML page, JSON, plain text, pprof's text format, broken gzip, …), quoting at most ~80 bytes of it.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ._proto import profile_pb2
from .errors import BodyTooLarge, InvalidProfile

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_SIZE_LIMIT = 64 * 1024 * 1024

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


def _schemas() -> tuple[type[Message], type[Message], type[Message]]:
    """Three message classes: the profile (leniently), its references merged, a location's lines merged.

    Profile is profile.proto's, with ``string_table`` as bytes and ``time_nanos`` repeated. bytes:
    upb refuses a proto3 string that is not UTF-8, but pprof takes any bytes, and Go label values or
    C++ symbol names need not be UTF-8. repeated: a second ``time_nanos`` is how pprof notices two
    profiles concatenated into one body. Neither changes the wire format.

    ProfileRefs reads the same bytes with each repeated sub-message declared singular, so protobuf's
    merge rule concatenates, in C, every entry's ids and string indices into one list per field: the
    checks then work on a few flat lists instead of touching each sample, location and line from
    Python, which costs about a microsecond per object. Indices are read as uint64 so that a negative
    int64 shows up as a huge number and one ``max`` checks both ends of the range. A location's lines
    stay bytes, so that their count tells a line without a function_id apart, and LineRefs merges them
    in a second step. (Sample values are still counted one sample at a time: Go writes two or fewer
    values unpacked, so no merged form keeps the per-sample count.)
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
    _add_message(refs, "MappingRefs", id=(1, u64), filename=(5, u64), build_id=(6, u64))
    _add_message(refs, "LocationRefs", id=(1, u64), mapping_id=(2, u64), line=(4, _F.TYPE_BYTES))
    _add_message(refs, "LineRefs", function_id=(1, u64))
    _add_message(refs, "FunctionRefs", id=(1, u64), name=(2, u64), system_name=(3, u64), filename=(4, u64))
    _add_message(
        refs,
        "ProfileRefs",
        sample=(2, "SampleRefs"),
        mapping=(3, "MappingRefs"),
        location=(4, "LocationRefs"),
        function=(5, "FunctionRefs"),
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(profile)
    pool.Add(refs)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{profile.package}.Profile")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_REFS_PACKAGE}.ProfileRefs")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_REFS_PACKAGE}.LineRefs")),
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


_Profile, _ProfileRefs, _LineRefs = _schemas()


def validate_profile(body: bytes, *, url: str | None = None, size_limit: int = DEFAULT_SIZE_LIMIT) -> ProfileInfo:
    """Check that ``body`` is a valid pprof profile, gzip-compressed or not, and describe it.

    Raises :class:`BodyTooLarge` as soon as the (decompressed) profile exceeds ``size_limit`` bytes,
    and :class:`InvalidProfile` for anything that is not a profile.
    """
    return parse_profile(body, url=url, size_limit=size_limit)[0]


def parse_profile(body: bytes, *, url: str | None = None,
                  size_limit: int = DEFAULT_SIZE_LIMIT) -> tuple[ProfileInfo, Message]:
    """:func:`validate_profile`, also handing back the decoded profile, so that work on it (a delta)
    does not decompress and decode the body a second time. Its ``string_table`` holds bytes and its
    ``time_nanos`` is repeated (see ``_schemas``); the rest is profile.proto's ``Profile``."""
    if not body:
        raise InvalidProfile("empty body: the target answered with no data where a pprof profile was expected", url)
    gzipped = body.startswith(GZIP_MAGIC)
    if gzipped:
        data = _gunzip(body, size_limit, url)
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
    try:
        profile = _Profile.FromString(data)
    except DecodeError:
        raise InvalidProfile(_describe(data, gzipped, None), url) from None
    problem = _problem(profile, data)
    if problem is not None:
        raise InvalidProfile(_describe(data, gzipped, problem), url)
    return _info(profile, gzipped, len(data)), profile


def as_gzip(body: bytes) -> bytes:
    """The body as gzip: itself when it already is, else compressed (the file store keeps ``.pb.gz``)."""
    if body.startswith(GZIP_MAGIC):
        return body
    # Fastest level, as Go's runtime/pprof writes its profiles; mtime 0 keeps the output reproducible.
    return gzip.compress(body, compresslevel=1, mtime=0)


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


def _problem(p: Message, data: bytes) -> str | None:
    """What makes the decoded ``p`` not a valid pprof profile, or None when it is one."""
    if not p.string_table:
        return "protobuf, but not a pprof profile: it has no string table"
    if _consistent(p, data):
        return None
    # The bulk check only says yes or no; find the rule broken, one entry at a time. It can come back
    # empty for encodings no real encoder writes (a scalar field repeated inside one entry), which the
    # merged lists cannot tell apart from a broken rule.
    broken = _first_rule_broken(p)
    return f"malformed pprof profile: {broken}" if broken else None


def _consistent(p: Message, data: bytes) -> bool:
    """Whether ``p`` keeps every rule of pprof's decoder and ``CheckValid``, judged on merged lists."""
    strings = p.string_table
    n = len(strings)
    if strings[0] or (len(p.time_nanos) > 1 and p.time_nanos[0]):
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
    label = refs.sample.label
    for merged in (
        refs.mapping.filename,
        refs.mapping.build_id,
        refs.function.name,
        refs.function.system_name,
        refs.function.filename,
        label.key,
        label.str,
        label.num_unit,
    ):
        if merged and max(merged) >= n:
            return False

    mapping_ids = _distinct_ids(refs.mapping.id, len(p.mapping))
    function_ids = _distinct_ids(refs.function.id, len(p.function))
    location_ids = _distinct_ids(refs.location.id, len(p.location))
    if mapping_ids is None or function_ids is None or location_ids is None:
        return False
    if not mapping_ids.issuperset(m for m in set(refs.location.mapping_id) if m):
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


def _distinct_ids(merged: Sequence[int], count: int) -> set[int] | None:
    """The ids, if each of ``count`` entries has its own non-zero id; a zero id is left off the wire."""
    ids = set(merged)
    if len(ids) != count or len(merged) != count or 0 in ids:
        return None
    return ids


def _first_rule_broken(p: Message) -> str | None:
    """The first of pprof's rules ``p`` breaks, in words, checking one entry at a time (slow, exact)."""
    strings = p.string_table
    n = len(strings)
    if strings[0]:
        return f"string_table[0] must be the empty string, is {strings[0][:20]!r}"
    if len(p.time_nanos) > 1 and p.time_nanos[0]:
        return "time_nanos appears twice: two profiles concatenated into one body"

    for where, i in _string_indices(p):
        if not 0 <= i < n:
            return f"{where} is string index {i}, outside the {n}-entry string table"

    for kind, entries in (("mapping", p.mapping), ("function", p.function), ("location", p.location)):
        seen: set[int] = set()
        for e in entries:
            if e.id == 0:
                return f"a {kind} has id 0, which is reserved"
            if e.id in seen:
                return f"two {kind}s have id {e.id}"
            seen.add(e.id)
    mapping_ids = {m.id for m in p.mapping}
    function_ids = {f.id for f in p.function}
    for loc in p.location:
        if loc.mapping_id and loc.mapping_id not in mapping_ids:
            return f"location {loc.id} refers to mapping {loc.mapping_id}, which does not exist"
        for line in loc.line:
            if line.function_id not in function_ids:
                return f"location {loc.id} has a line in function {line.function_id}, which does not exist"

    types = len(p.sample_type)
    if p.sample and not types:
        return f"it has {len(p.sample)} samples but no sample_type to say what they measure"
    location_ids = {loc.id for loc in p.location}
    for i, s in enumerate(p.sample):
        if len(s.value) != types:
            return f"sample {i} has {len(s.value)} values but there are {types} sample types"
        for lid in s.location_id:
            if lid not in location_ids:
                return f"sample {i} refers to location {lid}, which does not exist"
    return None


def _string_indices(p: Message) -> Iterator[tuple[str, int]]:
    """Every string index in ``p``, with where it is."""
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
            yield f"sample {i} label str", label.str
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


def _describe(data: bytes, gzipped: bool, problem: str | None) -> str:
    """Why ``data`` (the body, decompressed) is not a profile, naming what it looks like."""
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
    return f"{prefix}binary data, not a pprof profile ({_wire_problem(data)}); it starts {data[:24]!r}"


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


_PROFILE_FIELDS = profile_pb2.Profile.DESCRIPTOR.fields_by_number
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}
_MAX_FIELDS_SCANNED = 100_000


def _wire_problem(data: bytes) -> str:
    """The first thing wrong at the top level of ``data`` as protobuf, for the error message."""
    pos, end = 0, len(data)
    for _ in range(_MAX_FIELDS_SCANNED):
        if pos >= end:
            return "a nested message is malformed"
        start = pos
        key, pos = _varint(data, pos)
        if key is None:
            return f"truncated field key at byte {start}"
        number, wire = key >> 3, key & 7
        if wire > 5:
            return f"illegal wire type {wire} at byte {start}"
        if number == 0:
            return f"field number 0 at byte {start}"
        known = _PROFILE_FIELDS.get(number)
        if known is not None:
            expected = 2 if known.message_type or known.type == known.TYPE_STRING else 0
            if wire != expected and not (expected == 0 and wire == 2 and known.is_repeated):
                return (
                    f"field {number} ({known.name}) at byte {start} is {_WIRE_NAMES[wire]}, "
                    f"expected {_WIRE_NAMES[expected]}"
                )
        if wire == 0:
            value, pos = _varint(data, pos)
            if value is None:
                return f"truncated varint at byte {start}"
        elif wire == 2:
            length, pos = _varint(data, pos)
            if length is None or pos + length > end:
                return f"field {number} at byte {start} runs past the end of the data (truncated?)"
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                return f"field {number} at byte {start} runs past the end of the data (truncated?)"
        else:
            return f"{_WIRE_NAMES[wire]} wire type at byte {start}, which pprof never uses"
    return "malformed protobuf"


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        value |= (data[i] & 0x7F) << shift
        if data[i] < 0x80:
            return value, i + 1
        shift += 7
    return None, pos


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"
