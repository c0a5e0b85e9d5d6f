"""Prometheus relabeling: rewrite, keep or drop a target's labels with ``relabel_configs``.

Same keys, defaults, validation and results as Prometheus' ``model/relabel``, so a rule copied
from a Prometheus or Alloy config does here what it does there. Regexes are RE2, as Go's
regexp is, run by Google's RE2 library (``google-re2``): the same syntax and the same matches
and groups as in Prometheus.

This module does not import :mod:`scraper.config`: the config imports it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import re2
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

#: Label names accepted in ``source_labels`` and ``target_label``: the rule static targets follow in config.py.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.]*$")
#: A ``labelmap`` replacement or a ``replace`` target_label with ``$`` variables (Prometheus' relabelTargetLegacy,
#: with the '.' that label names may hold here).
_LABEL_NAME_TEMPLATE = re.compile(r"^(?:(?:[a-zA-Z_.]|\$(?:\{\w+\}|\w+))+[\w.]*)+$")

Action = Literal[
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod",
    "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase",
]

_DEFAULT_SEPARATOR = ";"
_DEFAULT_REGEX = "(.*)"
_DEFAULT_REPLACEMENT = "$1"


# --------------------------------------------------------------------------- RE2


class RegexError(ValueError):
    """A relabel regex is not valid in Go's regexp syntax (RE2)."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad regex is reported once, as a config error, not on stderr too

class Match(NamedTuple):
    """What a regex matched: ``groups[0]`` the whole match, ``groups[n]`` group n (None when it
    took no part), and the group numbers by name. Plain values, read once from re2's match."""

    groups: tuple[str | None, ...]
    names: dict[str, int]


class Regex:
    """A relabel regex compiled by RE2 (see :func:`compile_regex`)."""

    def __init__(self, pattern: str, compiled: Any) -> None:
        #: the regex as written in the config
        self.pattern = pattern
        self._search = compiled.search
        self._names: dict[str, int] = dict(compiled.groupindex)

    def search(self, value: str) -> Match | None:
        """The match in ``value`` (anchored: the whole value), or None."""
        try:
            found = self._search(value)
        except UnicodeEncodeError:
            # A lone surrogate (from a JSON "\\ud800") is no UTF-8; Go's JSON decoder makes it U+FFFD
            found = self._search(value.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        return None if found is None else Match((found.group(0), *found.groups()), self._names)


def _byte_escape_at(pattern: str) -> int:
    """The offset of a ``\\C`` escape in ``pattern`` (C++ RE2's any-byte; Go refuses it), or -1."""
    pos = 0
    while (pos := pattern.find("\\", pos)) >= 0:
        if pattern.startswith("Q", pos + 1):  # \Q...\E is literal text
            end = pattern.find("\\E", pos + 2)
            if end < 0:
                return -1
            pos = end + 2
            continue
        if pattern.startswith("C", pos + 1):
            return pos
        pos += 2
    return -1


def compile_regex(pattern: str) -> Regex:
    """Compile a relabel regex as Prometheus does: RE2 syntax wrapped in ``^(?s:...)$``, so it is
    anchored at both ends and '.' matches a newline too. Match the result with ``search``, as Go's
    MatchString does (a pattern like ``a)|(b`` unbalances the wrapping in both).

    Raises RegexError with RE2's reason when the pattern does not compile.
    """
    offset = _byte_escape_at(pattern)
    if offset >= 0:
        raise RegexError(f"regex {pattern!r} is not valid RE2: invalid escape sequence \\C at offset {offset}")
    try:
        compiled = re2.compile(f"^(?s:{pattern})$", _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(f"regex {pattern!r} is not valid RE2: {reason}") from None
    return Regex(pattern, compiled)


# --------------------------------------------------------------------------- $1 / ${name} expansion


def _is_name_char(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] == "L" or unicodedata.category(char) == "Nd"


class _GroupRef(NamedTuple):
    """A ``$`` reference in a template: a group number, or a group name."""

    number: int | None
    name: str


@functools.lru_cache(maxsize=1024)
def _parse_template(template: str) -> tuple[str | _GroupRef, ...]:
    """``template`` split into literal text and group references, once per distinct template."""
    parts: list[str | _GroupRef] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        if before:
            parts.append(before)
        if not dollar:
            return tuple(parts)
        if rest.startswith("$"):
            parts.append("$")
            rest = rest[1:]
            continue
        braced = rest.startswith("{")
        body = rest[1:] if braced else rest
        length = 0
        while length < len(body) and _is_name_char(body[length]):
            length += 1
        if length == 0 or (braced and not body.startswith("}", length)):
            parts.append("$")
            continue
        name = body[:length]
        rest = body[length + 1:] if braced else body[length:]
        numeric = name.isascii() and name.isdigit() and not (name.startswith("0") and len(name) > 1)
        parts.append(_GroupRef(int(name) if numeric else None, name))


def _group(match: Match, ref: _GroupRef) -> str:
    number = ref.number if ref.number is not None else match.names.get(ref.name)
    return (match.groups[number] or "") if number is not None and number < len(match.groups) else ""


def expand(template: str, match: Match) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` filled in as Go's Regexp.Expand does.

    A name is the longest run of letters, digits and '_' (``$1x`` is group ``1x``, which is empty);
    a group that does not exist or did not take part is empty; a malformed ``$`` stays literal.
    """
    parts = _parse_template(template)
    if len(parts) == 1:  # the common "$1" or a plain name: no join
        return parts[0] if isinstance(parts[0], str) else _group(match, parts[0])
    return "".join([part if isinstance(part, str) else _group(match, part) for part in parts])


# --------------------------------------------------------------------------- Go's strings.ToLower/ToUpper


@functools.lru_cache(maxsize=4096)
def _lower_char(char: str) -> str:
    # Python's full mapping gives 'İ' two characters; its simple mapping, Go's, is the first
    return char.lower()[0]


@functools.lru_cache(maxsize=4096)
def _upper_char(char: str) -> str:
    # Where the full mapping has several characters ('ß' -> 'SS') the simple one is the titlecase
    # character when that is one ('ᾳ' -> 'ᾼ'), else the character itself
    for mapped in (char.upper(), char.title()):
        if len(mapped) == 1:
            return mapped
    return char


def go_lower(value: str) -> str:
    """``value`` as Go's strings.ToLower makes it: each character's simple lowercase mapping
    (``İSTANBUL`` -> ``istanbul``; no final sigma)."""
    return value.lower() if value.isascii() else "".join(map(_lower_char, value))


def go_upper(value: str) -> str:
    """``value`` as Go's strings.ToUpper makes it: each character's simple uppercase mapping
    (``straße`` -> ``STRAßE``)."""
    return value.upper() if value.isascii() else "".join(map(_upper_char, value))


# --------------------------------------------------------------------------- the config


class RelabelConfig(BaseModel):
    """One relabeling rule, with Prometheus' keys, defaults and validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_labels: list[str] = []
    separator: str = _DEFAULT_SEPARATOR
    regex: str = _DEFAULT_REGEX
    modulus: int = Field(default=0, ge=0, lt=2**64)
    target_label: str = ""
    replacement: str = _DEFAULT_REPLACEMENT
    action: Action = "replace"

    _pattern: Regex = PrivateAttr()

    @field_validator("action", mode="before")
    @classmethod
    def _lowercase_action(cls, value: Any) -> Any:
        if value is None:  # `action:` with no value
            raise ValueError("relabel action cannot be empty")
        # Prometheus reads the action case-insensitively
        return value.lower() if isinstance(value, str) else value

    @field_validator("separator", "regex", "target_label", "replacement", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # Go's YAML reads a key with no value into a string field as "": `regex:` is the regex ""
        # (matching only the empty string), `replacement:` is "", not the defaults
        return "" if value is None else value

    @field_validator("source_labels", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("source_labels")
    @classmethod
    def _source_label_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not LABEL_NAME.match(name)]
        if bad:
            raise ValueError(f"invalid label name(s) {', '.join(map(repr, bad))}; names match [a-zA-Z_][a-zA-Z0-9_.]*")
        return value

    @model_validator(mode="after")
    def _prometheus_rules(self) -> RelabelConfig:
        action, target = self.action, self.target_label
        if action == "hashmod" and self.modulus == 0:
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        if action in ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal") and not target:
            raise ValueError(f"relabel configuration for {action} action requires 'target_label' value")
        if action == "replace" and not (_LABEL_NAME_TEMPLATE if "$" in target else LABEL_NAME).match(target):
            raise ValueError(f"{target!r} is invalid 'target_label' for {action} action")
        if action in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not LABEL_NAME.match(target):
            raise ValueError(f"{target!r} is invalid 'target_label' for {action} action")
        if action in ("lowercase", "uppercase", "keepequal", "dropequal") and self.replacement != _DEFAULT_REPLACEMENT:
            raise ValueError(f"'replacement' can not be set for {action} action")
        if action == "labelmap" and not _LABEL_NAME_TEMPLATE.match(self.replacement):
            raise ValueError(f"{self.replacement!r} is invalid 'replacement' for {action} action")
        if action in ("keepequal", "dropequal") and (
            self.regex != _DEFAULT_REGEX or self.modulus or self.separator != _DEFAULT_SEPARATOR
        ):
            raise ValueError(f"{action} action requires only 'source_labels' and 'target_label', and no other fields")
        if action in ("labeldrop", "labelkeep") and (
            self.source_labels or target or self.modulus
            or self.separator != _DEFAULT_SEPARATOR or self.replacement != _DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"{action} action requires only 'regex', and no other fields")
        try:
            self._pattern = compile_regex(self.regex)
        except RegexError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def pattern(self) -> Regex:
        """The compiled regex, anchored at both ends as in Prometheus; match it with ``search``."""
        return self._pattern


# --------------------------------------------------------------------------- applying rules


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod: the last 8 bytes of md5(value) as a big-endian uint64, modulo ``modulus``."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus  # noqa: S324 - not for security


def _set(labels: dict[str, str], name: str, value: str) -> None:
    # Setting a label to "" removes it, as in Prometheus' labels.Builder
    if value:
        labels[name] = value
    else:
        labels.pop(name, None)


_MATCH_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class _Rule:
    """A RelabelConfig's values, read once: the rules run for every target of a fleet."""

    action: str
    source_labels: tuple[str, ...]
    separator: str
    search: Callable[[str], Match | None]
    target_label: str
    replacement: str
    modulus: int

    @classmethod
    def of(cls, config: RelabelConfig) -> _Rule:
        # re2 costs ~10 us a search from Python (25x re), and a fleet's label names and many of
        # its values repeat: remember the last matches
        search = functools.lru_cache(maxsize=_MATCH_CACHE_SIZE)(config.pattern.search)
        return cls(config.action, tuple(config.source_labels), config.separator, search,
                   config.target_label, config.replacement, config.modulus)


def _apply(rule: _Rule, labels: dict[str, str]) -> bool:
    """Apply one rule to ``labels`` in place; False when the rule drops the target."""
    value = rule.separator.join([labels.get(name, "") for name in rule.source_labels])
    action = rule.action
    if action == "replace":
        match = rule.search(value)
        if match is not None:
            target = expand(rule.target_label, match)
            if LABEL_NAME.match(target):  # a target expanded to an invalid name is skipped, as in Prometheus
                _set(labels, target, expand(rule.replacement, match))
    elif action == "keep":
        return rule.search(value) is not None
    elif action == "drop":
        return rule.search(value) is None
    elif action == "keepequal":
        return labels.get(rule.target_label, "") == value
    elif action == "dropequal":
        return labels.get(rule.target_label, "") != value
    elif action == "hashmod":
        _set(labels, rule.target_label, str(hashmod(value, rule.modulus)))
    elif action == "lowercase":
        _set(labels, rule.target_label, go_lower(value))
    elif action == "uppercase":
        _set(labels, rule.target_label, go_upper(value))
    elif action == "labelmap":
        for name, label_value in sorted(labels.items()):
            match = rule.search(name)
            if match is not None:
                _set(labels, expand(rule.replacement, match), label_value)
    elif action == "labeldrop":
        for name in [n for n in labels if rule.search(n)]:
            del labels[name]
    elif action == "labelkeep":
        for name in [n for n in labels if not rule.search(n)]:
            del labels[name]
    return True


class Relabeler:
    """A list of rules read once and applied to many label sets (a job's whole fleet)."""

    def __init__(self, configs: list[RelabelConfig]) -> None:
        self._rules = [_Rule.of(config) for config in configs]

    def __call__(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The rules applied in order to a copy of ``labels``; None when a rule drops the target.

        Labels whose value ends up empty are removed, as Prometheus does.
        """
        out = {name: value for name, value in labels.items() if value}
        for rule in self._rules:
            if not _apply(rule, out):
                return None
        return out


def relabel(labels: dict[str, str], configs: list[RelabelConfig]) -> dict[str, str] | None:
    """Apply ``configs`` in order to a copy of ``labels``; None when a rule drops the target.

    Labels whose value ends up empty are removed, as Prometheus does. To relabel many label
    sets with the same rules, build one :class:`Relabeler` and call it for each.
    """
    return Relabeler(configs)(labels)
