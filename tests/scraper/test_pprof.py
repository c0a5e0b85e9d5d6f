"""validate_profile accepts what pprof accepts, and says what a rejected body looks like instead."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.validation_cost import sample_bomb
from scraper._proto import profile_pb2
from scraper.errors import BodyTooLarge, InvalidProfile, TooManySamples
from scraper.pprof import ProfileInfo, _as_pprof_reads_it, _consistent, _problem, _Profile, unpacked, validate_profile

DATA = Path(__file__).parent.parent / "data"
URL = "http://app:6060/debug/pprof/heap"
MiB = 1 << 20


def _manifest() -> dict[str, dict[str, str]]:
    """MANIFEST.tsv's ``summary`` column as key=value pairs, per file."""
    lines = (DATA / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        rows[row["file"]] = dict(p.split("=", 1) for p in row["summary"].split() if "=" in p)
    return rows


MANIFEST = _manifest()
GO_FILES = sorted(f for f in MANIFEST if f.startswith("go/"))
BAD_FILES = sorted(f for f in MANIFEST if f.startswith("bad/"))


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def raw(name: str) -> bytes:
    return gzip.decompress(read(name))


def rejection(body: bytes, **kwargs) -> str:
    with pytest.raises(InvalidProfile) as caught:
        validate_profile(body, url=URL, **kwargs)
    assert caught.value.url == URL
    assert caught.value.kind == "invalid_pprof"
    return str(caught.value)


def assert_quotes_at_most_80_bytes(message: str, body: bytes) -> None:
    for start in range(max(len(body) - 80, 0)):
        assert body[start : start + 81].decode("latin-1") not in message


# --- the real Go profiles ---------------------------------------------------------------------------


def test_the_corpus_matches_the_manifest() -> None:
    assert len(GO_FILES) == 33 and len(BAD_FILES) == 13
    assert {p.name for p in (DATA / "go").iterdir()} == {f.removeprefix("go/") for f in GO_FILES}
    assert {p.name for p in (DATA / "bad").iterdir()} == {f.removeprefix("bad/") for f in BAD_FILES}


@pytest.mark.parametrize("name", GO_FILES)
def test_every_go_profile_validates_with_the_manifests_sample_types_and_count(name: str) -> None:
    expected = MANIFEST[name]
    info = validate_profile(read(name), url=URL)

    assert isinstance(info, ProfileInfo)
    assert ",".join(f"{t}/{u}" for t, u in info.sample_types) == expected["types"]
    assert info.sample_count == int(expected["samples"])
    assert info.gzipped is True
    assert info.decompressed_size == len(raw(name))
    period_type = "{}/{}".format(*info.period_type) if info.period_type else "/"
    assert f"{period_type}:{info.period}" == expected["period"]
    assert (f"{info.duration_nanos / 1e9:.3f}s" if info.duration_nanos else "-") == expected["dur"]


@pytest.mark.parametrize("name", GO_FILES)
def test_every_go_profile_validates_uncompressed_too(name: str) -> None:
    body = raw(name)
    info = validate_profile(body)
    assert info.gzipped is False
    assert info.decompressed_size == len(body)
    assert info.sample_count == int(MANIFEST[name]["samples"])


def test_delta_profiles_with_negative_values_are_valid() -> None:
    profile = profile_pb2.Profile.FromString(raw("go/allocs_delta_1.pb.gz"))
    assert any(v < 0 for s in profile.sample for v in s.value)
    assert validate_profile(read("go/allocs_delta_1.pb.gz")).sample_count == 7


@pytest.mark.parametrize("name", GO_FILES)
def test_valid_go_profiles_are_accepted_by_the_bulk_check_without_the_slow_scan(name: str) -> None:
    # Speed, not correctness: the entry-by-entry scan only runs after the bulk check says no.
    body = raw(name)
    assert _consistent(_Profile.FromString(body), body)


def test_info_carries_time_and_period_of_a_cpu_profile() -> None:
    info = validate_profile(read("go/cpu_1.pb.gz"))
    assert info.sample_types == [("samples", "count"), ("cpu", "nanoseconds")]
    assert info.period_type == ("cpu", "nanoseconds")
    assert info.period == 10_000_000
    assert info.duration_nanos == 2_117_261_631
    assert info.time_nanos > 1_600_000_000 * 10**9


def test_fgprof_profile_without_period_type_has_none() -> None:
    info = validate_profile(read("go/fgprof_1.pb.gz"))
    assert info.period_type is None
    assert info.period == 0


# --- bodies that are not profiles --------------------------------------------------------------------

GOROUTINE_DEBUG1 = b"goroutine profile: total 35\n12 @ 0x43a1f6 0x44c5ae 0x44c585\n#\t0x44c584\tsync.runtime_notifyListWait+0x124\n"
HEAP_DEBUG1 = b"heap profile: 11461: 5477345 [571355: 283482985] @ heap/1048576\n1: 8192 [1: 8192] @ 0x40e3a5\n"
MUTEX_DEBUG1 = b"--- mutex:\ncycles/second=2400000000\nsampling period=5\n"
GOROUTINE_DEBUG2 = b"goroutine 1 [running]:\nmain.main()\n\t/src/main.go:12 +0x1d\n"


def _gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


BAD_BODIES: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty_body", lambda: read("bad/empty_body.pb.gz"), "empty body"),
    ("html_error_page", lambda: read("bad/html_error_page.html"), "HTML page, not a pprof profile (title '502 Bad Gateway')"),
    ("json_error", lambda: read("bad/json_error.json"), 'JSON, not a pprof profile: \'{"error":"unauthorized"'),
    (
        "go_cpu_profiling_in_use",
        lambda: read("bad/text_cpu_profiling_in_use.txt"),
        "plain text, not a pprof profile: 'Could not enable CPU profiling: cpu profiling already in use'",
    ),
    ("truncated_gzip_half", lambda: read("bad/truncated_gzip_half.pb.gz"), "truncated gzip"),
    ("truncated_gzip_header_only", lambda: read("bad/truncated_gzip_header_only.pb.gz"), "truncated gzip"),
    ("gzip_bad_crc", lambda: read("bad/gzip_bad_crc.pb.gz"), "gzip with a bad CRC"),
    ("gzip_of_garbage", lambda: read("bad/gzip_of_garbage.pb.gz"), "gzip-compressed binary data, not a pprof profile"),
    ("gzip_of_empty", lambda: read("bad/gzip_of_empty.pb.gz"), "gzip of an empty body"),
    ("double_gzip", lambda: read("bad/double_gzip.pb.gz"), "gzipped twice"),
    (
        "protobuf_not_a_profile",
        lambda: read("bad/not_a_profile_protobuf.pb.gz"),
        "field 1 (sample_type) at byte 0 is varint, expected length-delimited",
    ),
    (
        "protobuf_not_a_profile_uncompressed",
        lambda: read("bad/not_a_profile_protobuf_uncompressed.pb"),
        "binary data, not a pprof profile (field 1 (sample_type)",
    ),
    (
        "protobuf_without_string_table",
        lambda: read("bad/protobuf_unknown_field_only.pb.gz"),
        "protobuf, but not a pprof profile: it has no string table",
    ),
    ("illegal_wire_type", lambda: b"\x0f\x01\x02\x03", "illegal wire type 7 at byte 0"),
    ("protobuf_truncated", lambda: raw("go/heap_1.pb.gz")[:-7], "runs past the end of the data (truncated?)"),
    ("text_format_goroutine_debug1", lambda: GOROUTINE_DEBUG1, "pprof's text format (debug=1); scrape without ?debug"),
    ("text_format_heap_debug1", lambda: HEAP_DEBUG1, "pprof's text format (debug=1); scrape without ?debug"),
    ("text_format_mutex_debug1", lambda: MUTEX_DEBUG1, "pprof's text format (debug=1); scrape without ?debug"),
    ("goroutine_dump_debug2", lambda: GOROUTINE_DEBUG2, "goroutine dump (debug=2)"),
    ("gzipped_text_format", lambda: _gzipped(HEAP_DEBUG1), "gzip-compressed text, not a pprof profile: this is pprof's text"),
    ("gzipped_html", lambda: _gzipped(read("bad/html_error_page.html")), "gzip-compressed HTML page"),
    ("html_without_title", lambda: b"<html><body><h1>Forbidden</h1></body></html>", "HTML page, not a pprof profile (starts '<html>"),
    ("zstd", lambda: b"\x28\xb5\x2f\xfd" + bytes(20), "zstd-compressed data"),
    ("deflate", lambda: zlib.compress(raw("go/heap_1.pb.gz")), "deflate-compressed data"),
    ("trailing_garbage_after_gzip", lambda: read("go/heap_1.pb.gz") + b"garbage", "7 bytes of trailing data after 1 gzip member"),
    ("zero_padding_after_gzip", lambda: read("go/heap_1.pb.gz") + bytes(512), "512 bytes of trailing data"),
    (
        "two_profiles_concatenated",
        lambda: _gzipped(raw("go/heap_1.pb.gz") + raw("go/heap_2.pb.gz")),
        "two profiles concatenated into one body",
    ),
    (
        "two_gzipped_profiles_concatenated",
        lambda: read("go/cpu_1.pb.gz") + read("go/cpu_2.pb.gz"),
        "two profiles concatenated into one body",
    ),
]


@pytest.mark.parametrize(("make_body", "phrase"), [row[1:] for row in BAD_BODIES], ids=[row[0] for row in BAD_BODIES])
def test_bad_body_is_rejected_saying_what_it_looks_like(make_body: Callable[[], bytes], phrase: str) -> None:
    body = make_body()
    message = rejection(body)
    assert phrase in message
    assert message.endswith(f"({URL})")
    assert_quotes_at_most_80_bytes(message, body)


@pytest.mark.parametrize("name", BAD_FILES)
def test_every_bad_file_is_rejected_as_invalid(name: str) -> None:
    rejection(read(name))


def test_html_error_page_is_rejected_as_html() -> None:
    assert "HTML page" in rejection(read("bad/html_error_page.html"))


def test_long_text_is_quoted_only_up_to_72_bytes() -> None:
    body = b"x" * 10_000
    message = rejection(body)
    assert "'" + "x" * 72 + "…'" in message
    assert "x" * 73 not in message


def test_a_long_html_title_is_cut_short() -> None:
    body = b"<!doctype html><title>" + b"t" * 500 + b"</title>"
    message = rejection(body)
    assert "t" * 72 + "…" in message
    assert "t" * 73 not in message


def test_binary_garbage_quotes_only_its_first_bytes() -> None:
    body = bytes(range(8, 256)) * 4
    message = rejection(body)
    assert "binary data, not a pprof profile" in message
    assert_quotes_at_most_80_bytes(message, body)


def test_a_profile_split_over_several_gzip_members_is_valid_like_gos_multistream_reader() -> None:
    data = raw("go/heap_3.pb.gz")
    body = b"".join(_gzipped(data[i : i + 1000]) for i in range(0, len(data), 1000))
    info = validate_profile(body)
    assert info.sample_count == 56
    assert info.decompressed_size == len(data)


# --- size limits and gzip bombs ----------------------------------------------------------------------


def gzip_of_zeros(mib: int) -> bytes:
    """``mib`` MiB of zeros as one gzip member, without ever holding them or compressing each MiB.

    A full flush ends a deflate block on a byte boundary with nothing referring back, so one compressed
    MiB of zeros can be repeated: about 1 KiB per MiB, 1 MiB for a 1 GiB bomb.
    """
    zeros = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    one_mib = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    last_block = deflate.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + one_mib * mib + last_block + struct.pack("<II", crc, (mib * MiB) & 0xFFFFFFFF)


def test_the_bomb_builder_makes_real_gzip() -> None:
    assert gzip.decompress(gzip_of_zeros(3)) == bytes(3 * MiB)


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    bomb = gzip_of_zeros(1024)
    assert len(bomb) < 2 * MiB
    return bomb


@pytest.mark.parametrize("limit", [MiB, 64 * MiB], ids=["1MiB", "64MiB-default"])
def test_a_gzip_bomb_is_cut_off_at_the_limit_with_little_memory(gigabyte_bomb: bytes, limit: int) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge) as caught:
            validate_profile(gigabyte_bomb, url=URL, size_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "body_size_limit" in str(caught.value) and caught.value.kind == "too_large"
    # What was decompressed before the cut-off plus its buffer's growth slack (an eighth), then the
    # last 1 MiB chunk twice (zlib builds it, then hands it over) and the compressed input left.
    assert peak < limit * 1.2 + 2 * MiB + len(gigabyte_bomb)
    assert peak < 1024 * MiB / 10


def test_the_size_limit_is_on_the_decompressed_profile_inclusive() -> None:
    body = read("go/heap_1.pb.gz")
    size = len(raw("go/heap_1.pb.gz"))
    assert validate_profile(body, size_limit=size).decompressed_size == size
    with pytest.raises(BodyTooLarge):
        validate_profile(body, size_limit=size - 1)


def test_an_uncompressed_body_over_the_limit_is_too_large() -> None:
    body = raw("go/heap_1.pb.gz")
    assert validate_profile(body, size_limit=len(body)).gzipped is False
    with pytest.raises(BodyTooLarge):
        validate_profile(body, size_limit=len(body) - 1)


def test_a_profile_larger_than_one_decompression_chunk_validates() -> None:
    profile = minimal_profile()
    profile.string_table.append("c" * (3 * MiB))
    profile.comment.append(len(profile.string_table) - 1)
    info = validate_profile(_gzipped(profile.SerializeToString()))
    assert info.decompressed_size > 3 * MiB


# --- pprof's validity rules, one hand-built profile each ---------------------------------------------


def minimal_profile() -> profile_pb2.Profile:
    """A small valid profile: one sample of one frame, with a label, and every string field used."""
    p = profile_pb2.Profile()
    p.string_table.extend(["", "samples", "count", "main.main", "main.go", "/bin/app", "build", "worker", "w1"])
    p.sample_type.add(type=1, unit=2)
    p.period_type.type, p.period_type.unit, p.period = 1, 2, 1
    p.mapping.add(id=1, filename=5, build_id=6)
    p.function.add(id=1, name=3, system_name=3, filename=4)
    p.location.add(id=1, mapping_id=1).line.add(function_id=1, line=7)
    p.sample.add(location_id=[1], value=[5]).label.add(key=7, str=8)
    p.time_nanos = 1_700_000_000_000_000_000
    return p


def test_the_minimal_profile_is_valid() -> None:
    info = validate_profile(minimal_profile().SerializeToString())
    assert info.sample_types == [("samples", "count")]
    assert info.sample_count == 1


def _string_index_rows() -> list[tuple[str, Callable[[profile_pb2.Profile, int], None], str]]:
    def setter(path: str) -> Callable[[profile_pb2.Profile, int], None]:
        def set_index(p: profile_pb2.Profile, i: int) -> None:
            *parents, leaf = path.split(".")
            target = p
            for part in parents:
                target = target[0] if part == "0" else getattr(target, part)
            setattr(target, leaf, i)

        return set_index

    def add_comment(p: profile_pb2.Profile, i: int) -> None:
        p.comment.append(i)

    def numeric_label_unit(p: profile_pb2.Profile, i: int) -> None:
        # pprof reads num_unit only for a numeric label; a string label's is ignored (VALID_ODDITIES)
        p.sample[0].label.add(key=7, num=3, num_unit=i)

    fields = {
        "sample_type.0.type": "sample_type[0].type",
        "sample_type.0.unit": "sample_type[0].unit",
        "sample.0.label.0.key": "sample 0 label key",
        "sample.0.label.0.str": "sample 0 label str",
        "mapping.0.filename": "mapping 1 filename",
        "mapping.0.build_id": "mapping 1 build_id",
        "function.0.name": "function 1 name",
        "function.0.system_name": "function 1 system_name",
        "function.0.filename": "function 1 filename",
        "drop_frames": "drop_frames",
        "keep_frames": "keep_frames",
        "default_sample_type": "default_sample_type",
        "doc_url": "doc_url",
        "period_type.type": "period_type.type",
        "period_type.unit": "period_type.unit",
    }
    rows = [(path, setter(path), where) for path, where in fields.items()]
    rows.append(("comment", add_comment, "comment[0]"))
    rows.append(("numeric_label.num_unit", numeric_label_unit, "sample 0 label num_unit"))
    return rows


@pytest.mark.parametrize("bad_index", [9, 1000, -1], ids=["just-past-the-end", "far-past-the-end", "negative"])
@pytest.mark.parametrize(("set_index", "where"), [r[1:] for r in _string_index_rows()], ids=[r[0] for r in _string_index_rows()])
def test_a_string_index_outside_the_string_table_is_malformed(
    set_index: Callable[[profile_pb2.Profile, int], None], where: str, bad_index: int
) -> None:
    p = minimal_profile()
    set_index(p, bad_index)
    message = rejection(p.SerializeToString())
    assert f"malformed pprof profile: {where} is string index {bad_index}, outside the 9-entry string table" in message


def _mutation(change: Callable[[profile_pb2.Profile], object]) -> Callable[[], bytes]:
    def build() -> bytes:
        p = minimal_profile()
        change(p)
        return p.SerializeToString()

    return build


MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    ("no_string_table", _mutation(lambda p: p.ClearField("string_table")), "it has no string table"),
    ("first_string_not_empty", _mutation(lambda p: p.string_table.__setitem__(0, "x")), "string_table[0] must be the empty string"),
    ("samples_without_sample_type", _mutation(lambda p: p.ClearField("sample_type")), "1 samples but no sample_type"),
    ("too_few_values", _mutation(lambda p: p.sample[0].ClearField("value")), "sample 0 has 0 values but there are 1 sample types"),
    ("too_many_values", _mutation(lambda p: p.sample[0].value.append(6)), "sample 0 has 2 values but there are 1 sample types"),
    ("unknown_sample_location", _mutation(lambda p: p.sample[0].location_id.append(99)), "sample 0 refers to location 99"),
    ("sample_location_zero", _mutation(lambda p: p.sample[0].location_id.append(0)), "sample 0 refers to location 0"),
    ("mapping_id_zero", _mutation(lambda p: p.mapping.add(id=0)), "a mapping has id 0, which is reserved"),
    ("duplicate_mapping_id", _mutation(lambda p: p.mapping.add(id=1)), "two mappings have id 1"),
    ("function_id_zero", _mutation(lambda p: p.function.add(id=0, name=3)), "a function has id 0, which is reserved"),
    ("duplicate_function_id", _mutation(lambda p: p.function.add(id=1)), "two functions have id 1"),
    ("location_id_zero", _mutation(lambda p: p.location.add(id=0)), "a location has id 0, which is reserved"),
    ("duplicate_location_id", _mutation(lambda p: p.location.add(id=1)), "two locations have id 1"),
    (
        "line_with_unknown_function",
        _mutation(lambda p: p.location[0].line.add(function_id=42)),
        "location 1 has a line in function 42, which does not exist",
    ),
    (
        "line_without_function",
        _mutation(lambda p: p.location[0].line.add(line=3)),
        "location 1 has a line in function 0, which does not exist",
    ),
    (
        "concatenated_profiles",
        lambda: minimal_profile().SerializeToString() * 2,
        "time_nanos appears twice: two profiles concatenated into one body",
    ),
]


@pytest.mark.parametrize(("make_body", "phrase"), [r[1:] for r in MALFORMED], ids=[r[0] for r in MALFORMED])
def test_a_profile_breaking_a_pprof_rule_is_rejected_naming_the_rule(make_body: Callable[[], bytes], phrase: str) -> None:
    assert phrase in rejection(make_body())
    assert phrase in rejection(_gzipped(make_body()))


VALID_ODDITIES: list[tuple[str, Callable[[], bytes]]] = [
    ("string_table_only", lambda: profile_pb2.Profile(string_table=[""]).SerializeToString()),
    ("no_samples_but_sample_types", _mutation(lambda p: p.ClearField("sample"))),
    ("negative_values", _mutation(lambda p: p.sample[0].value.__setitem__(0, -12345))),
    ("location_without_mapping", _mutation(lambda p: setattr(p.location[0], "mapping_id", 0))),
    ("sample_without_locations", _mutation(lambda p: p.sample[0].ClearField("location_id"))),
    ("sparse_large_ids", _mutation(lambda p: p.location.add(id=2**63 + 5).line.add(function_id=1))),
    ("unknown_fields", lambda: minimal_profile().SerializeToString() + b"\xa0\x06\x01"),
    ("numeric_label", _mutation(lambda p: p.sample[0].label.add(key=7, num=-3, num_unit=2))),
    ("non_utf8_label_value", lambda: minimal_profile().SerializeToString().replace(b"w1", b"\xff\xfe")),
]


@pytest.mark.parametrize("make_body", [r[1] for r in VALID_ODDITIES], ids=[r[0] for r in VALID_ODDITIES])
def test_unusual_but_valid_profiles_are_accepted(make_body: Callable[[], bytes]) -> None:
    validate_profile(make_body())
    validate_profile(_gzipped(make_body()))


def test_sample_types_with_invalid_utf8_are_reported_with_replacement_characters() -> None:
    body = minimal_profile().SerializeToString().replace(b"samples", b"sampl\xff\xfe")
    assert validate_profile(body).sample_types == [("sampl\ufffd\ufffd", "count")]


# --- never anything but InvalidProfile / BodyTooLarge ------------------------------------------------

CORPUS = [read(name) for name in GO_FILES]


@st.composite
def mutated(draw: st.DrawFn, gzip_it: bool) -> bytes:
    data = bytearray(raw(draw(st.sampled_from(GO_FILES))) if not gzip_it else draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 12))]
    return bytes(data)


def _only_expected_errors(body: bytes) -> ProfileInfo | None:
    try:
        return validate_profile(body, size_limit=4 * MiB)
    except (InvalidProfile, BodyTooLarge):
        return None


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated(gzip_it=True))
def test_a_mutated_gzip_body_only_ever_raises_scrape_errors(body: bytes) -> None:
    _only_expected_errors(body)


@FUZZ
@given(mutated(gzip_it=False))
def test_a_mutated_protobuf_only_ever_raises_scrape_errors_and_what_passes_keeps_every_rule(body: bytes) -> None:
    if _only_expected_errors(body) is not None:
        assert _problem(_Profile.FromString(_as_pprof_reads_it(body))) is None
    _only_expected_errors(_gzipped(body))


# --- side by side with Go's parser (github.com/google/pprof/profile.ParseData) ------------------------
# Each body is the smallest of its class found by differential fuzzing; BASE is a valid 60-byte profile.

BASE = "0a04080110021204080110052208080122040801100a2a060801100320043200320773616d706c65733205636f756e7432046d61696e3204662e676f"
_TABLES = "2a060801100320043200320773616d706c65733205636f756e7432046d61696e3204662e676f"  # function and strings of BASE

GO_ACCEPTS: list[tuple[str, str]] = [
    ("location_mapping_id_naming_no_mapping_leaves_it_without_one", "0a0408011002120408011005220a080110072204080110" + "0a" + _TABLES),
    ("string_label_num_unit_out_of_range_is_ignored", "0a0408011002120c080110051a060803100420632208080122040801100a" + _TABLES),
    ("period_type_given_twice_keeps_the_last", BASE + "5a04080110635a020801"),
    ("tag_written_in_six_bytes", BASE + "d0808080800001"),
    ("time_nanos_zero_then_set", BASE + "48004805"),
]

GO_REFUSES: list[tuple[str, str, str]] = [
    ("drop_frames_length_delimited", BASE + "3a0101", "field 7 (drop_frames) at byte 60 is length-delimited, expected varint"),
    (
        "location_address_as_fixed64",
        "0a04080110021204080110052211080119000000000000000022040801100a" + _TABLES,
        "field 3 (location.address) at byte 16 is 64-bit, expected varint",
    ),
    ("unknown_field_as_group", BASE + "a301a401", "start-group wire type at byte 60"),
    ("time_nanos_packed", BASE + "4a0105", "field 9 (time_nanos) at byte 60 is length-delimited, expected varint"),
    ("time_nanos_set_then_given_again", BASE + "480048054807", "time_nanos appears twice"),
    (
        "one_function_repeating_its_id_while_another_has_none",
        "0a040801100212040801100522060801220208022a060801080210032a021003320032077361"
        + "6d706c65733205636f756e7432046d61696e3204662e676f",
        "a function has id 0, which is reserved",
    ),
]


@pytest.mark.parametrize("body", [r[1] for r in GO_ACCEPTS], ids=[r[0] for r in GO_ACCEPTS])
def test_a_profile_go_accepts_is_accepted(body: str) -> None:
    validate_profile(bytes.fromhex(body))
    validate_profile(_gzipped(bytes.fromhex(body)))


@pytest.mark.parametrize(("body", "phrase"), [r[1:] for r in GO_REFUSES], ids=[r[0] for r in GO_REFUSES])
def test_a_profile_go_refuses_is_refused_saying_why(body: str, phrase: str) -> None:
    assert phrase in rejection(bytes.fromhex(body))
    assert phrase in rejection(_gzipped(bytes.fromhex(body)))


def test_of_two_period_types_the_last_is_reported_as_go_keeps_it() -> None:
    info = validate_profile(bytes.fromhex(BASE + "5a04080110635a020801"))
    assert info.period_type == ("samples", "")


def test_a_field_behind_a_long_tag_is_read() -> None:
    assert validate_profile(bytes.fromhex(BASE + "d0808080800001")).duration_nanos == 1


def _with_flag_byte(gzipped: bytes, bits: int) -> bytes:
    return gzipped[:3] + bytes([gzipped[3] | bits]) + gzipped[4:]


STRICTER_THAN_GO: list[tuple[str, Callable[[], bytes], str]] = [
    ("field_number_zero", lambda: bytes.fromhex(BASE + "0001"), "field number 0 at byte 60"),
    ("field_number_2_to_the_29", lambda: bytes.fromhex(BASE + "8080808010" + "01"), "field number 536870912 at byte 60"),
    (
        "gzip_header_with_a_reserved_flag_bit",
        lambda: _with_flag_byte(_gzipped(bytes.fromhex(BASE)), 0x20),
        "corrupt gzip: unknown header flags set",
    ),
    ("legacy_text_heap_profile", lambda: HEAP_DEBUG1, "pprof's text format (debug=1)"),
]


@pytest.mark.parametrize(("make_body", "phrase"), [r[1:] for r in STRICTER_THAN_GO], ids=[r[0] for r in STRICTER_THAN_GO])
def test_what_go_accepts_but_we_refuse_on_purpose_is_refused_saying_why(make_body: Callable[[], bytes], phrase: str) -> None:
    # docs/pprof.md, "Differences from Go's pprof parser"
    assert phrase in rejection(make_body())


# --- sample_limit ------------------------------------------------------------------------------------


def _samples(count: int) -> bytes:
    return bytes.fromhex(BASE) + bytes.fromhex("12021001") * (count - 1)


def test_a_profile_with_more_samples_than_sample_limit_is_refused_by_name() -> None:
    with pytest.raises(TooManySamples) as caught:
        validate_profile(_gzipped(_samples(101)), url=URL, sample_limit=100)
    assert caught.value.kind == "sample_limit"
    assert "more than 100 samples, over the job's sample_limit" in str(caught.value)


def test_a_profile_with_exactly_sample_limit_samples_is_valid() -> None:
    assert validate_profile(_samples(100), sample_limit=100).sample_count == 100


def test_sample_limit_zero_means_no_limit() -> None:
    assert validate_profile(_samples(101), sample_limit=0).sample_count == 101


def test_a_sample_bomb_is_refused_before_decoding_with_memory_near_its_decompressed_size() -> None:
    bomb = sample_bomb(4 * MiB)  # a million samples; the worker test serves the full 16.7 million
    tracemalloc.start()
    try:
        with pytest.raises(TooManySamples):
            validate_profile(bomb, url=URL, size_limit=4 * MiB, sample_limit=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the decompressed profile (built once, then copied out of zlib's buffer), nothing per sample
    assert peak < 2.5 * 4 * MiB


def test_a_body_that_decompresses_within_the_limit_is_handed_back_decompressed_once() -> None:
    body = (DATA / "go" / "heap_1.pb.gz").read_bytes()
    data = unpacked(body, 64 * 1024)

    assert data == gzip.decompress(body)
    assert validate_profile(body, data=data) == validate_profile(body)


def test_a_body_past_the_limit_or_broken_is_not_unpacked_and_validation_says_why() -> None:
    body = (DATA / "go" / "heap_1.pb.gz").read_bytes()

    assert unpacked(body, 1024) is None
    assert unpacked(body[:-8], 64 * 1024) is None
    with pytest.raises(InvalidProfile, match="truncated gzip"):
        validate_profile(body[:-8])
