"""Go/Prometheus duration strings (``500ms``, ``15s``, ``1m30s``, ``2h``, ``1d``) as timedelta."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def parse_duration(value: Any) -> timedelta:
    """Return the duration a Go/Prometheus string names; a bare number is refused (which unit?)."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a duration is a string with a unit, like '15s' or '1m30s', not {value!r}")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise ValueError(f"{value!r} is not a duration; use forms like '500ms', '15s', '1m30s', '2h'")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("a duration cannot be empty")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Return the shortest Go-style string for ``value`` (``1m30s``, ``500ms``)."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


#: A config field holding a duration: parsed from Go/Prometheus strings, shown back in that form.
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
