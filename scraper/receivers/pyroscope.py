"""Grafana Pyroscope as a receiver: its Connect push API, or the legacy ``/ingest`` API.

One call of :meth:`PyroscopeReceiver.push` is one attempt; the push task retries with
:func:`scraper.receivers.retry.retry_delay`. Before sending, the profile is checked against
Pyroscope's default limits, so that a profile the server would refuse fails at once with a
message saying why, instead of after a round trip (or ten, if the refusal looked retryable).
"""

from __future__ import annotations

import email.utils
import gzip
import json
import math
import re
import time
import zlib
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

import urllib3
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from .._proto import push_pb2, types_pb2
from ..config import PyroscopeReceiverConfig
from ..errors import (
    ConnectFailed,
    PushRejected,
    PushUnavailable,
    ScrapeError,
    ScrapeTimeout,
    SecretFileError,
    TLSError,
    TooManyRedirects,
)
from ..httpclient import DEFAULT_USER_AGENT, Deadline, HTTPClient, hide, read_body
from . import Profile

PUSH_PATH = "/push.v1.PusherService/Push"
#: The one label starting with ``__`` besides ``__name__`` that a push carries (as pyroscope.write keeps it).
DELTA_LABEL = "__delta__"
INGEST_PATH = "/ingest"

#: Pyroscope's default per-series and per-profile limits (validation.* flags of the distributor).
MAX_LABELS = 30
MAX_LABEL_NAME_BYTES = 1024
MAX_LABEL_VALUE_BYTES = 2048
MAX_PROFILE_BYTES = 4 * 1024 * 1024

#: Pyroscope 1.x's label names (``strict_label_names``; 2.x takes any non-empty UTF-8 name) and
#: metric names (the ``__name__`` value).
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# /ingest takes the series as "<app>{k=v,...}": the app name has its own alphabet, and a value
# cannot hold the characters that end it.
_INGEST_APP_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_INGEST_LABEL_NAME = re.compile(r"[A-Za-z0-9_.]+")
_INGEST_VALUE_FORBIDDEN = (",", "}")
#: Labels /ingest adds to every pprof series it stores (pkg/og/convert/pprof createLabels).
_INGEST_ADDED_LABELS = (("__delta__", "false"), ("pyroscope_spy", "unknown"))
#: How /ingest names a pprof profile from its sample types' display names, unless one of its sample
#: types is ``wall``: the first (substring, name) that a display name contains; else the last display name.
_INGEST_NAME_RULES = (("cpu", "process_cpu"), ("alloc_", "memory"), ("inuse_", "memory"), ("mutex_", "mutex"),
                      ("block_", "block"), ("goroutines", "goroutines"))

_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_STEP = 256 * 1024
# The measuring pass keeps what it inflates, for parsing, up to the size the gzip trailer states
# (Go writes one member), or up to this much when the trailer states more than the limit: a gzip
# bomb then costs no more than this at once, and a lying trailer no more than the limit.
_KEEP_INFLATED = 1024 * 1024
# An answer is an empty PushResponse or a short error; read no more than this of it.
_MAX_ANSWER_BYTES = 64 * 1024
_MAX_DETAIL_CHARS = 300

# Connect error codes that pyroscope.write retries even when the HTTP status is a 4xx other
# than 408/429 (Connect sends "aborted" as 409, for one).
_RETRYABLE_CONNECT_CODES = frozenset({"aborted", "unavailable", "deadline_exceeded", "unknown", "internal", "data_loss"})

USER_AGENT = DEFAULT_USER_AGENT


def series_labels(labels: dict[str, str], external_labels: dict[str, str]) -> list[tuple[str, str]]:
    """The labels of the pushed series: ``labels`` without names starting with ``__`` (except
    ``__name__``), then ``external_labels`` on top, sorted by name."""
    kept = {name: value for name, value in labels.items() if not name.startswith("__") or name == "__name__"}
    kept.update(external_labels)
    return sorted(kept.items())


def _inflated(body: bytes, limit: int) -> tuple[int, bytes | None]:
    """The size of ``body`` once gunzipped (every gzip member), or of ``body`` itself when it is not
    gzip, and those bytes when they were kept (see ``_KEEP_INFLATED``; else None). Stops counting
    past ``limit``: the size is then some number above ``limit``.

    Raises ValueError when the gzip stream is corrupt or cut short.
    """
    if not body.startswith(_GZIP_MAGIC):
        return len(body), body
    stated = int.from_bytes(body[-4:], "little")  # ISIZE of the last member
    keep = stated if stated <= limit else _KEEP_INFLATED
    total = 0
    kept: list[bytes] | None = []
    rest = body
    try:
        while rest:
            if not rest.startswith(_GZIP_MAGIC):
                raise ValueError("trailing bytes after the gzip stream")
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            pending = rest
            while not inflater.eof:
                chunk = inflater.decompress(pending, _INFLATE_STEP)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise ValueError("the gzip stream ends early")
                total += len(chunk)
                if total > limit:
                    return total, None
                if kept is not None and total <= keep:
                    kept.append(chunk)
                else:
                    kept = None
            rest = inflater.unused_data
    except zlib.error as exc:
        raise ValueError(f"not valid gzip: {exc}") from None
    return total, None if kept is None else b"".join(kept)


def _profile_head_class() -> type[Message]:
    """A view of a pprof profile with only what the limits need: sample types, samples (left as
    bytes, never decoded) and strings. Parsing it costs a tenth of inflating the body."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="pprof_scraper_head.proto", package="pprof_scraper.head",
                                              syntax="proto3")
    value_type = file.message_type.add(name="ValueType")
    value_type.field.add(name="type", number=1, label=f.LABEL_OPTIONAL, type=f.TYPE_INT64)
    head = file.message_type.add(name="Head")
    head.field.add(name="sample_type", number=1, label=f.LABEL_REPEATED, type=f.TYPE_MESSAGE,
                   type_name=".pprof_scraper.head.ValueType")
    head.field.add(name="sample", number=2, label=f.LABEL_REPEATED, type=f.TYPE_BYTES)
    head.field.add(name="string_table", number=6, label=f.LABEL_REPEATED, type=f.TYPE_BYTES)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pprof_scraper.head.Head"))


_ProfileHead = _profile_head_class()


@dataclass(frozen=True)
class ProfileFacts:
    """What Pyroscope's limits look at in a profile."""

    #: bytes once gunzipped; past MAX_PROFILE_BYTES, some number above it (counting stopped there)
    size: int
    #: the sample type names, in order (empty when the profile is over the size limit: not parsed)
    sample_types: list[str]
    samples: int


def profile_facts(body: bytes) -> ProfileFacts:
    """Measure ``body`` (gzip or raw pprof) for the limits; raises ValueError saying what is wrong."""
    size, data = _inflated(body, MAX_PROFILE_BYTES)
    if size > MAX_PROFILE_BYTES:
        return ProfileFacts(size, [], 0)
    if data is None:  # not kept, but within the limit: safe to inflate whole
        data = gzip.decompress(body)
    try:
        head = _ProfileHead.FromString(data)
        strings = head.string_table
        types = [strings[vt.type].decode("utf-8", "replace") for vt in head.sample_type]
    except (DecodeError, IndexError):
        raise ValueError("not a pprof profile") from None
    return ProfileFacts(size, types, len(head.sample))


def limit_problems(labels: list[tuple[str, str]], facts: ProfileFacts, *, max_samples: int,
                   strict_label_names: bool) -> list[str]:
    """What Pyroscope (with default limits, and ``max_samples``) would refuse about a series with
    ``labels`` and a profile described by ``facts``, one sentence each; empty when it would take it.
    ``strict_label_names``: label names as Pyroscope 1.x wants them, else as 2.x (any UTF-8)."""
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{len(labels)} labels, more than the {MAX_LABELS} allowed")
    for name, value in labels:
        if len(name.encode()) > MAX_LABEL_NAME_BYTES:
            problems.append(f"label name {name[:40]!r}... is longer than {MAX_LABEL_NAME_BYTES} bytes")
        elif not name:
            problems.append("a label name is empty")
        elif strict_label_names and name != "__name__" and not _LABEL_NAME.fullmatch(name):
            problems.append(f"label name {name!r} does not match [a-zA-Z_][a-zA-Z0-9_.]* (strict_label_names)")
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            problems.append(f"the value of label {name[:40]!r} is longer than {MAX_LABEL_VALUE_BYTES} bytes")
    if not dict(labels).get("service_name"):
        problems.append("the service_name label is empty")
    name = dict(labels).get("__name__", "")
    if not name:
        problems.append("the profile has no name (__name__ is empty)")
    elif strict_label_names and not _METRIC_NAME.fullmatch(name):
        problems.append(f"the profile name (__name__) {name!r} does not match [a-zA-Z_:][a-zA-Z0-9_:]* "
                        "(strict_label_names)")
    if facts.size > MAX_PROFILE_BYTES:
        problems.append(f"the profile is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB uncompressed")
    if max_samples and facts.samples > max_samples:
        problems.append(f"the profile has {facts.samples} samples, more than max_samples ({max_samples})")
    for sample_type in facts.sample_types:
        if "-" in sample_type:
            problems.append(f"sample type {sample_type!r} contains '-'")
    return problems


def ingest_name(labels: list[tuple[str, str]]) -> str:
    """The ``name`` query parameter of ``/ingest``: ``<service_name>{k=v,...}`` over every label but
    ``service_name`` and those starting with ``__`` (the server ignores those, names the profile from
    the form and sets ``__delta__`` itself).

    Raises ValueError when the labels cannot be written in that form.
    """
    values = dict(labels)
    service = values.get("service_name", "")
    if not _INGEST_APP_NAME.fullmatch(service):
        raise ValueError(
            f"the ingest API needs a service_name label of letters, digits and _ . / -, got {service!r}"
        )
    pairs = []
    for name, value in labels:
        if name == "service_name" or name.startswith("__"):
            continue
        if not _INGEST_LABEL_NAME.fullmatch(name):
            raise ValueError(f"label name {name!r} is not letters, digits, _ and . as the ingest API requires")
        if any(ch in value for ch in _INGEST_VALUE_FORBIDDEN):
            raise ValueError(f"the value of label {name!r} contains ',' or '}}', which the ingest API cannot carry")
        if value != value.strip():
            raise ValueError(f"the value of label {name!r} starts or ends with a space, which the ingest API trims")
        pairs.append(f"{name}={value}")
    return f"{service}{{{','.join(pairs)}}}"


def ingest_stored_name(name: str, sample_types: list[str]) -> str:
    """The ``__name__`` ``/ingest`` stores a profile with ``sample_types`` under when every sample type
    is displayed as ``name``: ``name`` itself unless the server's naming rules replace it."""
    if "wall" in sample_types:
        return "wall"
    if name in ("space", "objects"):
        return "memory"
    return next((named for part, named in _INGEST_NAME_RULES if part in name), name)


def ingest_sample_type_config(name: str, sample_types: list[str]) -> dict[str, dict[str, str]]:
    """The ``sample_type_config`` that makes ``/ingest`` store a profile with ``sample_types`` under
    ``name``, as the push API does. The server names a profile from its sample types (block's
    ``contentions`` as ``mutex``, ``goroutine`` as ``goroutines``, ``samples`` as ``process_cpu``), or
    from their display names when the form gives them: each is displayed as ``name``.

    Raises ValueError when the server would store it under another name whatever the form says.
    """
    filed = ingest_stored_name(name, sample_types)
    if filed != name:
        raise ValueError(f"the ingest API stores profile {name!r} (sample types {', '.join(sample_types)}) as "
                         f"{filed!r} whatever the client says; send it with api: push")
    return {sample_type: {"display-name": name} for sample_type in sample_types}


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for (delay-seconds or an HTTP-date),
    or None when it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def _connect_error(body: bytes) -> tuple[str | None, str]:
    """The Connect error code (if the body is a Connect error) and a one-line description."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        code = data["code"]
        message = str(data.get("message", ""))
        return code, f"{code}: {message}" if message else code
    first_line = text.splitlines()[0] if text else ""
    return None, first_line


class PyroscopeReceiver:
    """A Receiver that sends each profile to Pyroscope, one attempt per call."""

    #: Pyroscope 2.x computes no deltas: cumulative profiles must arrive as their change.
    wants_deltas = True
    #: a push waits on its connection, which yields to the other greenlets of a worker
    blocks = False

    def __init__(self, name: str, config: PyroscopeReceiverConfig) -> None:
        self.name = name
        self.config = config
        self._client = HTTPClient(config, user_agent=USER_AGENT)
        self._path = INGEST_PATH if config.api == "ingest" else PUSH_PATH
        self._endpoint = config.url + self._path
        #: the endpoint as messages show it: no userinfo
        self.display_url = _without_userinfo(self._endpoint)
        self._who = f"pyroscope receiver {name!r} ({self.display_url})"

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def push(self, profile: Profile) -> None:
        """Send ``profile`` once. Raises PushRejected when the server refused it (or would, by its
        limits) and PushUnavailable when it could not take it now."""
        labels = series_labels(profile.labels, self.config.external_labels)
        if profile.is_delta:
            # Pyroscope 1.x deltas memory again unless told not to; 2.x drops the label.
            labels = sorted([*labels, (DELTA_LABEL, "false")])
        raw_profile = profile.body_for(self.wants_deltas)
        if raw_profile is None:
            raise PushRejected(f"{self._who}: a cumulative profile without a delta (a baseline) has nothing to send")
        try:
            facts = profile_facts(raw_profile)
        except ValueError as exc:
            raise PushRejected(f"{self._who}: not sent, Pyroscope would refuse it: the profile is {exc}") from None
        ingest = self.config.api == "ingest"
        # /ingest stores its own labels beside ours: they count toward the limit too
        stored = labels + [pair for pair in _INGEST_ADDED_LABELS if pair[0] not in dict(labels)] if ingest else labels
        problems = limit_problems(stored, facts, max_samples=self.config.max_samples,
                                  strict_label_names=self.config.strict_label_names)
        params: list[tuple[str, str]] | None = None
        if ingest:
            try:
                params = [
                    ("name", ingest_name(labels)),
                    ("from", str(int(profile.start))),
                    ("until", str(math.ceil(profile.end))),
                ]
                sample_type_config = ingest_sample_type_config(dict(labels).get("__name__", ""), facts.sample_types)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise PushRejected(f"{self._who}: not sent, Pyroscope would refuse it: {'; '.join(problems)}")

        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        timeout_s = self.config.remote_timeout.total_seconds()
        if params is None:
            body = _push_request(labels, profile, raw_profile).SerializeToString()
            headers.update({
                "Content-Type": "application/proto",
                "Connect-Protocol-Version": "1",
                "Connect-Timeout-Ms": str(max(1, int(timeout_s * 1000))),
            })
        else:
            # The form pyroscope-go sends: the profile, and display names that name it as the push API does.
            body, headers["Content-Type"] = urllib3.encode_multipart_formdata({
                "profile": ("profile.pprof", raw_profile, "application/octet-stream"),
                "sample_type_config": ("sample_type_config.json", json.dumps(sample_type_config).encode(),
                                       "application/json"),
            })
        self._send(body, headers, params, timeout_s)

    def _send(self, body: bytes, headers: dict[str, str], params: list[tuple[str, str]] | None, timeout_s: float) -> None:
        deadline = Deadline(timeout_s, self.display_url, timeout_field="remote_timeout", peer="receiver")
        try:
            reply = self._client.request("POST", self._endpoint, deadline, body=body, headers=headers, params=params)
        except ScrapeTimeout:
            raise PushUnavailable(f"{self._who}: no answer within remote_timeout ({timeout_s:g}s)") from None
        except TLSError as exc:
            raise PushUnavailable(f"{self._who}: TLS failed: {exc.reason}") from None
        except ConnectFailed as exc:
            raise PushUnavailable(f"{self._who}: cannot connect: {exc.reason}") from None
        except TooManyRedirects as exc:
            raise PushRejected(f"{self._who}: {exc.reason}; set url to the address that answers") from None
        except ScrapeError as exc:  # the oauth2 token endpoint's answer
            raise PushUnavailable(f"{self._who}: {exc.reason}") from None
        except SecretFileError as exc:  # a mounted secret being rotated: worth another try
            raise PushUnavailable(f"{self._who}: {exc}") from None
        secrets = [*reply.secrets, *headers.values()]

        response = reply.response
        with response:
            try:
                answer, _ = read_body(response, deadline, _MAX_ANSWER_BYTES)
            except ScrapeError as exc:
                raise PushUnavailable(f"{self._who}: the answer broke off: {hide(exc.reason, secrets)}") from None
        status = response.status_code
        if status == 200:
            return

        code, detail = _connect_error(answer)
        message = f"{self._who}: HTTP {status}"
        if detail:
            message += f": {hide(detail[:_MAX_DETAIL_CHARS], secrets)}"
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            if self.config.retry_on_http_429:
                raise PushUnavailable(message, retry_after=retry_after)
            raise PushRejected(f"{message} (not retried: retry_on_http_429 is false)")
        if status == 408 or status >= 500:
            raise PushUnavailable(message, retry_after=retry_after)
        if 400 <= status < 500:
            if params is None and code in _RETRYABLE_CONNECT_CODES:
                raise PushUnavailable(message, retry_after=retry_after)
            raise PushRejected(message)
        if 300 <= status < 400:
            location = hide(_without_userinfo(response.headers.get("Location", "")), secrets)
            why = "" if self.config.follow_redirects else " (follow_redirects is false)"
            raise PushRejected(f"{message}: redirected to {location!r}{why}; set url to the address that answers")
        raise PushRejected(f"{message}: only 200 means the profile was taken")


def _push_request(labels: list[tuple[str, str]], profile: Profile,
                  raw_profile: bytes | None = None) -> push_pb2.PushRequest:
    """The push of ``raw_profile`` (default: ``profile.body``) as ``profile``'s sample, with ``labels``."""
    return push_pb2.PushRequest(
        series=[
            push_pb2.RawProfileSeries(
                labels=[types_pb2.LabelPair(name=name, value=value) for name, value in labels],
                samples=[push_pb2.RawSample(raw_profile=raw_profile or profile.body, ID=profile.id)],
            )
        ]
    )
