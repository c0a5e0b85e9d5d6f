"""Prometheus relabeling: rewrite, keep or drop a target's labels with ``relabel_configs``.

Same keys, defaults, validation and results as Prometheus' ``model/relabel``, so a rule copied
from a Prometheus or Alloy config does here what it does there. Regexes are RE2 in Prometheus;
they are translated to Python ``re`` here, and RE2 features Python lacks are translated
(``\\z``, ``(?<name>``, ``[[:alpha:]]``, ``\\Q..\\E``, ``(?i)`` mid-pattern) while Python-only
constructs RE2 refuses (backreferences, lookaround, possessive quantifiers) are refused too,
so a config accepted here is also a valid Prometheus config.

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


# --------------------------------------------------------------------------- RE2 -> Python re


class RegexError(ValueError):
    """A relabel regex is not valid RE2, or uses a construct that cannot be reproduced here."""


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
# RE2's Perl classes are ASCII-only, Python's are Unicode: spell them out.
_PERL_CLASSES = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
_CONTROL_ESCAPES = set("aftnrv")
_REPETITION = re.compile(r"\{(\d+)(,(\d*))?\}")
_HEX_BRACED = re.compile(r"x\{([0-9A-Fa-f]+)\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_NAMED_GROUP = re.compile(r"\(\?P?<([A-Za-z0-9_]+)>")


def _char(code: int) -> str:
    return re.escape(chr(code))


class _Translator:
    """One pass over an RE2 pattern, writing the equivalent Python pattern."""

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        # per open group: how many scoped flag groups a mid-group ``(?i)`` opened in it
        self.flag_scopes: list[list[str]] = [[]]

    def fail(self, message: str) -> RegexError:
        return RegexError(f"regex {self.src!r}: {message}")

    def run(self) -> str:
        while self.pos < len(self.src):
            char = self.src[self.pos]
            if char == "\\":
                self.escape()
            elif char == "[":
                self.char_class()
            elif char == "(":
                self.open_group()
            elif char == ")":
                if len(self.flag_scopes) == 1:
                    raise self.fail(f"unexpected ')' at offset {self.pos}")
                self.out.append(")" * len(self.flag_scopes.pop()) + ")")
                self.pos += 1
            elif char == "|":
                # RE2's (?i) lasts to the end of the group, across '|': close and reopen around it
                scopes = self.flag_scopes[-1]
                self.out.append(")" * len(scopes) + "|" + "".join(scopes))
                self.pos += 1
            elif char == "{":
                self.brace()
            elif char in "*+?":
                self.out.append(char)
                self.pos += 1
                self.no_possessive()
            else:
                self.out.append(char)
                self.pos += 1
        if len(self.flag_scopes) != 1:
            raise self.fail("missing ')'")
        self.out.append(")" * len(self.flag_scopes[0]))
        return "".join(self.out)

    def no_possessive(self) -> None:
        if self.src.startswith("?", self.pos):  # lazy quantifier: fine in both
            self.out.append("?")
            self.pos += 1
        if self.src.startswith(("+", "*"), self.pos):
            raise self.fail(f"invalid nested repetition operator at offset {self.pos} (RE2 has no possessive quantifiers)")

    def brace(self) -> None:
        match = _REPETITION.match(self.src, self.pos)
        if match is None:  # RE2 reads a '{' that starts no repetition as a literal; Python may not
            self.out.append("\\{")
            self.pos += 1
            return
        if int(match.group(1)) > 1000 or (match.group(3) and int(match.group(3)) > 1000):
            raise self.fail(f"repetition count above 1000 in {match.group(0)!r}")
        self.out.append(match.group(0))
        self.pos = match.end()
        self.no_possessive()

    def escape(self) -> None:
        if self.pos + 1 >= len(self.src):
            raise self.fail("trailing backslash")
        char = self.src[self.pos + 1]
        self.pos += 2
        if char in "123456789":
            raise self.fail(f"backreference \\{char} is not supported (RE2 has no backreferences)")
        if char in _PERL_CLASSES:
            self.out.append(f"[{_PERL_CLASSES[char]}]")
        elif char.lower() in _PERL_CLASSES:
            self.out.append(f"[^{_PERL_CLASSES[char.lower()]}]")
        elif char in "bB":
            self.out.append(f"(?a:\\{char})")  # ASCII word boundary, as RE2
        elif char == "A":
            self.out.append("\\A")
        elif char == "z":
            self.out.append("\\Z")  # RE2's end of text is Python's \Z
        elif char == "Z":
            raise self.fail("\\Z is not RE2; use \\z (or nothing: the regex is anchored already)")
        elif char == "Q":
            end = self.src.find("\\E", self.pos)
            literal = self.src[self.pos:] if end < 0 else self.src[self.pos:end]
            self.out.append(re.escape(literal))
            self.pos = len(self.src) if end < 0 else end + 2
        else:
            self.out.append(self.simple_escape(char))

    def simple_escape(self, char: str) -> str:
        """An escape that means one character (or a refused one), valid inside and outside classes."""
        if char in "pP":
            raise self.fail("Unicode classes (\\p, \\P) are not supported here")
        if char == "x":
            braced = _HEX_BRACED.match(self.src, self.pos - 1)
            if braced:
                self.pos = braced.end()
                return _char(int(braced.group(1), 16))
            digits = self.src[self.pos:self.pos + 2]
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise self.fail(f"invalid escape \\x{digits}")
            self.pos += 2
            return _char(int(digits, 16))
        if char == "0":
            digits = "0"
            while len(digits) < 3 and self.pos < len(self.src) and self.src[self.pos] in "01234567":
                digits += self.src[self.pos]
                self.pos += 1
            return _char(int(digits, 8))
        if char in _CONTROL_ESCAPES:
            return "\\" + char
        if char.isascii() and char.isalnum():
            raise self.fail(f"invalid escape sequence \\{char}")
        return re.escape(char)

    def char_class(self) -> None:
        start = self.pos
        self.pos += 1
        parts = ["["]
        if self.src.startswith("^", self.pos):
            parts.append("^")
            self.pos += 1
        first = True
        while True:
            if self.pos >= len(self.src):
                raise self.fail(f"missing ']' for the class at offset {start}")
            char = self.src[self.pos]
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            if char == "[" and self.src.startswith("[:", self.pos):
                end = self.src.find(":]", self.pos + 2)
                name = self.src[self.pos + 2:end] if end > 0 else ""
                if name.startswith("^"):
                    raise self.fail(f"negated POSIX class [:{name}:] is not supported here")
                if name not in _POSIX_CLASSES:
                    raise self.fail(f"unknown POSIX class [:{name}:]")
                parts.append(_POSIX_CLASSES[name])
                self.pos = end + 2
            elif char == "\\":
                if self.pos + 1 >= len(self.src):
                    raise self.fail("trailing backslash")
                escaped = self.src[self.pos + 1]
                self.pos += 2
                if escaped in _PERL_CLASSES:
                    parts.append(_PERL_CLASSES[escaped])
                elif escaped in "DWS":
                    parts.append("\\" + escaped)  # no ASCII spelling inside a class; differs only beyond ASCII
                elif escaped in "123456789":
                    raise self.fail(f"backreference \\{escaped} is not supported (RE2 has no backreferences)")
                else:
                    parts.append(self.simple_escape(escaped))
            else:
                # '[', '&', '~', '|' are plain in RE2 classes; Python warns of future set operations
                parts.append("\\" + char if char in "[&~|" else char)
                self.pos += 1
        parts.append("]")
        self.out.append("".join(parts))

    def open_group(self) -> None:
        src, pos = self.src, self.pos
        plain = "(?:" if src.startswith("(?:", pos) else "(" if not src.startswith("(?", pos) else ""
        if plain:
            self.out.append(plain)
            self.flag_scopes.append([])
            self.pos += len(plain)
            return
        named = _NAMED_GROUP.match(src, pos)
        if named:
            self.out.append(f"(?P<{named.group(1)}>")
            self.flag_scopes.append([])
            self.pos = named.end()
            return
        for prefix, what in (
            ("(?=", "lookahead"), ("(?!", "negative lookahead"), ("(?<=", "lookbehind"),
            ("(?<!", "negative lookbehind"), ("(?P=", "named backreference"), ("(?>", "atomic group"),
            ("(?#", "inline comment"), ("(?(", "conditional"),
        ):
            if src.startswith(prefix, pos):
                raise self.fail(f"{what} {prefix}...) is not supported (RE2 has none)")
        flags = _FLAGS.match(src, pos)
        if flags is None:
            raise self.fail(f"invalid group syntax at offset {pos}")
        on, off, end = flags.group(1), flags.group(2) or "", flags.group(3)
        for letter in on + off:
            if letter == "U":
                raise self.fail("the ungreedy flag (?U) is not supported here")
            if letter not in "ims":
                raise self.fail(f"unknown flag {letter!r} (RE2 knows i, m, s and U)")
        if not on and not off:
            raise self.fail(f"empty flag group at offset {pos}")
        spelled = f"(?{on}" + (f"-{off}" if off else "") + ":"
        self.out.append(spelled)
        self.pos = flags.end()
        if end == ":":
            self.flag_scopes.append([])
        else:  # (?i) alone: applies to the rest of the enclosing group
            self.flag_scopes[-1].append(spelled)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 relabel regex as Python ``re``; match it with ``fullmatch`` (Prometheus anchors it).

    Raises RegexError naming the construct that is not valid RE2 or cannot be reproduced.
    """
    translated = _Translator(pattern).run()
    try:
        return re.compile(f"(?s:{translated})")
    except re.error as exc:
        raise RegexError(f"regex {pattern!r} does not compile: {exc}") from None


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


def _group(match: re.Match[str], ref: _GroupRef) -> str:
    if ref.number is not None:
        return (match.group(ref.number) or "") if ref.number <= match.re.groups else ""
    return (match.group(ref.name) or "") if ref.name in match.re.groupindex else ""


def expand(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` filled in as Go's Regexp.Expand does.

    A name is the longest run of letters, digits and '_' (``$1x`` is group ``1x``, which is empty);
    a group that does not exist or did not take part is empty; a malformed ``$`` stays literal.
    """
    parts = _parse_template(template)
    if len(parts) == 1:  # the common "$1" or a plain name: no join
        return parts[0] if isinstance(parts[0], str) else _group(match, parts[0])
    return "".join([part if isinstance(part, str) else _group(match, part) for part in parts])


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

    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("action", mode="before")
    @classmethod
    def _lowercase_action(cls, value: Any) -> Any:
        # Prometheus reads the action case-insensitively
        return value.lower() if isinstance(value, str) else value

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
    def pattern(self) -> re.Pattern[str]:
        """The compiled regex; match it with ``fullmatch`` (anchored at both ends, as in Prometheus)."""
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


@dataclass(frozen=True, slots=True)
class _Rule:
    """A RelabelConfig's values, read once: the rules run for every target of a fleet."""

    action: str
    source_labels: tuple[str, ...]
    separator: str
    fullmatch: Callable[[str], re.Match[str] | None]
    target_label: str
    replacement: str
    modulus: int

    @classmethod
    def of(cls, config: RelabelConfig) -> _Rule:
        return cls(config.action, tuple(config.source_labels), config.separator, config.pattern.fullmatch,
                   config.target_label, config.replacement, config.modulus)


def _apply(rule: _Rule, labels: dict[str, str]) -> bool:
    """Apply one rule to ``labels`` in place; False when the rule drops the target."""
    value = rule.separator.join([labels.get(name, "") for name in rule.source_labels])
    action = rule.action
    if action == "replace":
        match = rule.fullmatch(value)
        if match is not None:
            target = expand(rule.target_label, match)
            if LABEL_NAME.match(target):  # a target expanded to an invalid name is skipped, as in Prometheus
                _set(labels, target, expand(rule.replacement, match))
    elif action == "keep":
        return rule.fullmatch(value) is not None
    elif action == "drop":
        return rule.fullmatch(value) is None
    elif action == "keepequal":
        return labels.get(rule.target_label, "") == value
    elif action == "dropequal":
        return labels.get(rule.target_label, "") != value
    elif action == "hashmod":
        _set(labels, rule.target_label, str(hashmod(value, rule.modulus)))
    elif action == "lowercase":
        _set(labels, rule.target_label, value.lower())
    elif action == "uppercase":
        _set(labels, rule.target_label, value.upper())
    elif action == "labelmap":
        for name, label_value in sorted(labels.items()):
            match = rule.fullmatch(name)
            if match is not None:
                _set(labels, expand(rule.replacement, match), label_value)
    elif action == "labeldrop":
        for name in [n for n in labels if rule.fullmatch(n)]:
            del labels[name]
    elif action == "labelkeep":
        for name in [n for n in labels if not rule.fullmatch(n)]:
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
