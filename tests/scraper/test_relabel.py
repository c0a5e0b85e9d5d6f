"""Relabeling behaves as Prometheus' model/relabel: same results, same validation, RE2 regexes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from scraper.config import ConfigError, parse_config, parse_config_text
from scraper.relabel import RegexError, RelabelConfig, compile_regex, expand, hashmod, relabel


def rules(*configs: dict[str, Any]) -> list[RelabelConfig]:
    return [RelabelConfig.model_validate(c) for c in configs]


ABC = {"a": "foo", "b": "bar", "c": "baz"}

# (name, input labels, rules, expected output; None = dropped)
CASES: list[tuple[str, dict[str, str], list[dict[str, Any]], dict[str, str] | None]] = [
    (
        "replace with ${1} in the replacement",
        ABC,
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {**ABC, "d": "choo-choo"},
    ),
    (
        "several source labels joined by the separator, then a second rule sees the first's result",
        ABC,
        [
            {"source_labels": ["a", "b"], "regex": "f(.*);(.*)r", "target_label": "a", "replacement": "b${1}${2}m"},
            {"source_labels": ["c", "a"], "regex": "(b).*b(.*)ba(.*)", "target_label": "d", "replacement": "$1$2$2$3"},
        ],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
    ),
    (
        "the regex is anchored: a partial match is no match",
        ABC,
        [{"source_labels": ["a"], "regex": "o", "target_label": "d", "replacement": "x"}],
        ABC,
    ),
    ("drop on match", ABC, [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}], None),
    ("drop without match keeps", ABC, [{"source_labels": ["a"], "regex": "f", "action": "drop"}], ABC),
    ("keep without match drops", ABC, [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}], None),
    ("keep on match", ABC, [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}], ABC),
    (
        "keep: a missing source label is the empty string",
        {"a": "foo"},
        [{"source_labels": ["missing"], "regex": "", "action": "keep"}],
        {"a": "foo"},
    ),
    (
        "keep with the default regex keeps everything",
        {"a": "foo"},
        [{"source_labels": ["missing"], "action": "keep"}],
        {"a": "foo"},
    ),
    (
        "no match: no replacement",
        ABC,
        [{"source_labels": ["a"], "regex": "(f).*", "target_label": "a", "replacement": "$1", "action": "replace"},
         {"source_labels": ["b"], "regex": "nope", "target_label": "b", "replacement": "x"}],
        {**ABC, "a": "f"},
    ),
    (
        "an empty replacement deletes the target label",
        ABC,
        [{"source_labels": ["a"], "regex": "foo", "target_label": "a", "replacement": ""}],
        {"b": "bar", "c": "baz"},
    ),
    (
        "default rule copies the source label",
        {"__address__": "10.0.0.1:8080"},
        [{"source_labels": ["__address__"], "target_label": "instance"}],
        {"__address__": "10.0.0.1:8080", "instance": "10.0.0.1:8080"},
    ),
    (
        "strip the port: a common recipe",
        {"__address__": "10.0.0.1:8080"},
        [{"source_labels": ["__address__"], "regex": "([^:]+)(?::\\d+)?", "target_label": "host"}],
        {"__address__": "10.0.0.1:8080", "host": "10.0.0.1"},
    ),
    (
        "target_label from a capture group",
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "target_label": "${1}", "replacement": "${2}"}],
        {"a": "some-name-value", "name": "value"},
    ),
    (
        "a target_label that expands to an invalid name is skipped",
        {"a": "some-0-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "target_label": "${1}", "replacement": "${2}"}],
        {"a": "some-0-value"},
    ),
    (
        "a target_label that expands to nothing is skipped",
        {"a": "some-name-value"},
        [{"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "target_label": "${3}", "replacement": "${1}"}],
        {"a": "some-name-value"},
    ),
    (
        "hashmod: Prometheus' own example value",
        ABC,
        [{"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {**ABC, "d": "976"},
    ),
    (
        "hashmod of a value with a newline",
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
    ),
    (
        "labelmap copies matching labels under new names",
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
    ),
    (
        "labelmap of Kubernetes pod labels",
        {"__meta_kubernetes_pod_label_app": "web", "__meta_kubernetes_pod_label_tier": "front", "x": "y"},
        [{"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"}],
        {"__meta_kubernetes_pod_label_app": "web", "__meta_kubernetes_pod_label_tier": "front", "x": "y",
         "app": "web", "tier": "front"},
    ),
    (
        "labelmap onto an existing label overwrites it",
        {"__meta_x": "new", "x": "old"},
        [{"regex": "__meta_(.*)", "action": "labelmap"}],
        {"__meta_x": "new", "x": "new"},
    ),
    (
        "labeldrop",
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labeldrop"}],
        {"a": "foo"},
    ),
    (
        "labelkeep",
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
    ),
    (
        "lowercase",
        {"foo": "bAr123Foo", "test": "bar"},
        [{"source_labels": ["foo"], "target_label": "foo_lowercase", "action": "lowercase"}],
        {"foo": "bAr123Foo", "test": "bar", "foo_lowercase": "bar123foo"},
    ),
    (
        "uppercase",
        {"foo": "bAr123Foo", "test": "bar"},
        [{"source_labels": ["foo"], "target_label": "foo_uppercase", "action": "uppercase"}],
        {"foo": "bAr123Foo", "test": "bar", "foo_uppercase": "BAR123FOO"},
    ),
    (
        "lowercase maps one character at a time, as Go's strings.ToLower (no dotted i, no final sigma)",
        {"a": "İSTANBUL ΌΣΟΣ"},
        [{"source_labels": ["a"], "target_label": "b", "action": "lowercase"}],
        {"a": "İSTANBUL ΌΣΟΣ", "b": "istanbul όσοσ"},
    ),
    (
        "uppercase maps one character at a time, as Go's strings.ToUpper (ß and ﬀ stay, ᾳ is ᾼ)",
        {"a": "straße ﬀ ᾳ"},
        [{"source_labels": ["a"], "target_label": "b", "action": "uppercase"}],
        {"a": "straße ﬀ ᾳ", "b": "STRAßE ﬀ ᾼ"},
    ),
    (
        "lowercase of a missing label removes the target",
        {"a": "x", "t": "old"},
        [{"source_labels": ["missing"], "target_label": "t", "action": "lowercase"}],
        {"a": "x"},
    ),
    (
        "keepequal keeps when the target label equals the source",
        {"a": "foo", "b": "foo", "c": "bar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "keepequal"}],
        {"a": "foo", "b": "foo", "c": "bar"},
    ),
    (
        "keepequal drops when it differs",
        {"a": "foo", "b": "foo", "c": "bar"},
        [{"source_labels": ["a"], "target_label": "c", "action": "keepequal"}],
        None,
    ),
    (
        "dropequal drops when equal",
        {"a": "foo", "b": "foo", "c": "bar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "dropequal"}],
        None,
    ),
    (
        "dropequal keeps when different",
        {"a": "foo", "b": "foo", "c": "bar"},
        [{"source_labels": ["a"], "target_label": "c", "action": "dropequal"}],
        {"a": "foo", "b": "foo", "c": "bar"},
    ),
    (
        "'.' matches a newline: Prometheus compiles with (?s)",
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "regex": "foo.bar", "action": "keep"}],
        {"a": "foo\nbar"},
    ),
    (
        "a custom separator",
        {"a": "foo", "b": "bar"},
        [{"source_labels": ["a", "b"], "separator": "-", "regex": "foo-bar", "action": "keep"}],
        {"a": "foo", "b": "bar"},
    ),
    (
        "labels with empty values are removed",
        {"__address__": "h:1", "empty": ""},
        [],
        {"__address__": "h:1"},
    ),
    (
        "the action is read case-insensitively",
        ABC,
        [{"source_labels": ["a"], "regex": "foo", "action": "DROP"}],
        None,
    ),
    (
        "(?i) in the middle of a pattern lasts to the end of the group, across '|'",
        {"a": "fooBAR"},
        [{"source_labels": ["a"], "regex": "foo(?i)bar|baz", "action": "keep"}],
        {"a": "fooBAR"},
    ),
    (
        "(?i) does not reach back before itself",
        {"a": "FOObar"},
        [{"source_labels": ["a"], "regex": "foo(?i)bar|baz", "action": "keep"}],
        None,
    ),
    (
        "a named group in the replacement",
        {"a": "web-7"},
        [{"source_labels": ["a"], "regex": "(?P<app>[a-z]+)-(?<n>\\d+)", "target_label": "app",
          "replacement": "$app/${n}"}],
        {"a": "web-7", "app": "web/7"},
    ),
    (
        "a sharding rule: hash into __tmp_shard, keep shard 1, the temporary label is gone with labeldrop",
        {"__address__": "10.0.0.1:8080"},
        [
            {"source_labels": ["__address__"], "modulus": 4, "target_label": "__tmp_shard", "action": "hashmod"},
            {"source_labels": ["__tmp_shard"], "regex": str(hashmod("10.0.0.1:8080", 4)), "action": "keep"},
            {"regex": "__tmp_shard", "action": "labeldrop"},
        ],
        {"__address__": "10.0.0.1:8080"},
    ),
]


@pytest.mark.parametrize(("labels", "configs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_relabel_gives_prometheus_results(
    labels: dict[str, str], configs: list[dict[str, Any]], expected: dict[str, str] | None
) -> None:
    before = dict(labels)
    assert relabel(labels, rules(*configs)) == expected
    assert labels == before  # the input is not modified


def test_hashmod_uses_the_last_8_bytes_of_md5_big_endian_as_prometheus() -> None:
    import hashlib

    digest = hashlib.md5(b"baz").digest()  # noqa: S324
    assert hashmod("baz", 2**64 - 1) == int.from_bytes(digest[8:], "big") % (2**64 - 1)
    assert hashmod("baz", 1000) == 976


def test_hashmod_spreads_a_fleet_over_the_shards() -> None:
    shards = [hashmod(f"10.0.{i // 256}.{i % 256}:8080", 4) for i in range(4000)]
    counts = [shards.count(s) for s in range(4)]
    assert all(800 < c < 1200 for c in counts), counts


# (template, expected) against the match of "(?P<first>a+)(b+)?(c*)" on "aac"
EXPAND_CASES = [
    ("$1", "aa"),
    ("${1}", "aa"),
    ("$first", "aa"),
    ("${first}", "aa"),
    ("$1x", ""),  # the name is "1x": no such group
    ("${1}x", "aax"),
    ("$2", ""),  # did not take part in the match
    ("$3", "c"),
    ("$9", ""),  # no such group
    ("$$1", "$1"),
    ("cost: $", "cost: $"),  # a malformed '$' stays literal
    ("${1", "${1"),
    ("$-", "$-"),
    ("${01}", ""),  # a leading zero makes it a name, not a number
    ("no dollars", "no dollars"),
]


@pytest.mark.parametrize(("template", "expected"), EXPAND_CASES, ids=[c[0] for c in EXPAND_CASES])
def test_expand_follows_go_regexp_expand(template: str, expected: str) -> None:
    match = compile_regex("(?P<first>a+)(b+)?(c*)").search("aac")
    assert match is not None
    assert expand(template, match) == expected


# (RE2 pattern, values it fully matches, values it does not)
RE2_CASES: list[tuple[str, list[str], list[str]]] = [
    ("[[:alpha:]]+[[:digit:]]", ["abc1"], ["abc", "1"]),
    ("[^[:space:]]+", ["a-b"], ["a b"]),
    ("\\d+", ["123"], ["١٢٣"]),  # RE2's \d is ASCII only
    ("\\w+", ["a_1"], ["é"]),
    ("\\Qa.b\\E", ["a.b"], ["axb"]),
    ("a\\z", ["a"], []),
    ("x{,3}", ["x{,3}"], ["xxx"]),  # RE2 reads this as literal text
    ("a{2,3}", ["aa", "aaa"], ["a", "aaaa"]),
    ("(?i)foo", ["FOO", "foo"], ["fo"]),
    ("(?i:a)b", ["Ab"], ["AB"]),
    ("\\x41\\x{42}", ["AB"], []),
    ("[a&&b]", ["&"], []),
    ("(?:ab)+", ["abab"], ["aba"]),
]


@pytest.mark.parametrize(("pattern", "good", "bad"), RE2_CASES, ids=[c[0] for c in RE2_CASES])
def test_re2_patterns_mean_what_they_mean_in_re2(pattern: str, good: list[str], bad: list[str]) -> None:
    compiled = compile_regex(pattern)
    assert all(compiled.search(v) for v in good)
    assert not any(compiled.search(v) for v in bad)


# (RE2 pattern, input, what "$1" expands to; None = no match): results Go's regexp gives
# (checked with Go 1.19, the Go of Prometheus 2.42). Python's re disagrees on the repeated groups.
GO_MATCHES: list[tuple[str, str, str | None]] = [
    ("(a*)*", "aaa", "aaa"),
    ("(a*)+", "aaa", "aaa"),
    ("([^/]*)*", "aaa", "aaa"),
    ("(.*?)*", "aaa", "aaa"),
    ("(a|)*", "aaa", "a"),
    ("(?U)(a*)(a*)", "aaa", ""),  # ungreedy: the first group takes nothing
    ("(\\pL+)\\d", "éa1", "éa"),
    ("(\\p{Greek}+)", "αβ", "αβ"),
    ("([[:^alpha:]]+)", "12-", "12-"),
    ("([[:^alpha:]]+)", "a1", None),
    ("(?i)(straße)", "STRASSE", None),  # simple case folding only
]


@pytest.mark.parametrize(("pattern", "value", "group"), GO_MATCHES, ids=[f"{c[0]} on {c[1]}" for c in GO_MATCHES])
def test_groups_are_what_go_regexp_gives(pattern: str, value: str, group: str | None) -> None:
    labels = {"a": value}
    result = relabel(labels, rules({"source_labels": ["a"], "regex": pattern, "target_label": "b", "replacement": "<$1>"}))
    assert result == (labels if group is None else {**labels, "b": f"<{group}>"})


def test_a_regex_that_unbalances_the_anchoring_matches_as_in_prometheus() -> None:
    # Prometheus compiles "^(?s:" + regex + ")$" and searches: "a)|(b" means "starts with a or ends with b"
    keep = rules({"source_labels": ["a"], "regex": "a)|(b", "action": "keep"})
    assert [v for v in ("axyz", "xyzb", "xyz") if relabel({"a": v}, keep)] == ["axyz", "xyzb"]


REFUSED = [
    ("(a)\\1", "invalid escape sequence: \\1"),
    ("(?P<x>a)(?P=x)", "invalid perl operator: (?P"),
    ("foo(?=bar)", "invalid perl operator: (?="),
    ("foo(?!bar)", "invalid perl operator: (?!"),
    ("(?<=a)b", "invalid perl operator: (?<="),
    ("(?<!a)b", "invalid perl operator: (?<!"),
    ("(?>a)", "invalid perl operator: (?>"),
    ("a*+", "bad repetition operator: *+"),
    ("a++", "bad repetition operator: ++"),
    ("(?x)a", "invalid perl operator: (?x"),
    ("a\\Z", "invalid escape sequence: \\Z"),
    ("\\u0041", "invalid escape sequence: \\u"),
    ("x{1001}", "invalid repetition size: {1001}"),
    ("\\C", "invalid escape sequence \\C"),  # C++ RE2 has it (any byte), Go does not
    ("(", "missing )"),
    ("a)", "unexpected )"),
    ("[a", "missing ]"),
    ("[[:nope:]]", "invalid character class range: [:nope:]"),
]


@pytest.mark.parametrize(("pattern", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_go_regexp_refuses_is_refused_with_re2s_reason(pattern: str, message: str) -> None:
    with pytest.raises(RegexError, match=re.escape(f"regex {pattern!r} is not valid RE2: ") + ".*" + re.escape(message)):
        compile_regex(pattern)


def test_an_escaped_backslash_before_c_and_c_in_a_literal_are_fine() -> None:
    assert compile_regex("\\\\C").search("\\C")
    assert compile_regex("\\Q\\C\\E").search("\\C")


INVALID = [
    ({"action": "hashmod", "source_labels": ["a"], "target_label": "b"}, "requires non-zero modulus"),
    ({"source_labels": ["a"]}, "replace action requires 'target_label' value"),
    ({"action": "hashmod", "modulus": 2}, "hashmod action requires 'target_label' value"),
    ({"action": "lowercase", "source_labels": ["a"]}, "lowercase action requires 'target_label'"),
    ({"action": "keepequal", "source_labels": ["a"]}, "keepequal action requires 'target_label'"),
    ({"source_labels": ["a"], "target_label": "1abc"}, "'1abc' is invalid 'target_label' for replace action"),
    ({"source_labels": ["a"], "target_label": "a-b"}, "'a-b' is invalid 'target_label'"),
    ({"action": "hashmod", "modulus": 2, "target_label": "$1"}, "invalid 'target_label' for hashmod"),
    ({"action": "uppercase", "source_labels": ["a"], "target_label": "b", "replacement": "x"},
     "'replacement' can not be set for uppercase action"),
    ({"action": "labelmap", "replacement": "1abc"}, "invalid 'replacement' for labelmap action"),
    ({"action": "dropequal", "source_labels": ["a"], "target_label": "b", "regex": "x"},
     "requires only 'source_labels' and 'target_label'"),
    ({"action": "keepequal", "source_labels": ["a"], "target_label": "b", "separator": ","},
     "requires only 'source_labels' and 'target_label'"),
    ({"action": "labeldrop", "regex": "x", "source_labels": ["a"]}, "labeldrop action requires only 'regex'"),
    ({"action": "labelkeep", "regex": "x", "target_label": "a"}, "labelkeep action requires only 'regex'"),
    ({"action": "labelkeep", "regex": "x", "replacement": "y"}, "labelkeep action requires only 'regex'"),
    ({"action": "rewrite"}, "Input should be 'replace'"),
    ({"source_labels": ["bad-name"], "action": "keep"}, "invalid label name"),
    ({"regex": "(a)\\1", "action": "keep"}, "is not valid RE2: invalid escape sequence: \\1"),
    ({"action": "keep", "typo": 1}, "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("config", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_rules_are_refused_as_prometheus_refuses_them(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RelabelConfig.model_validate(config)


def test_valid_edge_rules_are_accepted() -> None:
    RelabelConfig.model_validate({"action": "keepequal", "source_labels": ["a"], "target_label": "b", "regex": "(.*)"})
    RelabelConfig.model_validate({"source_labels": ["a"], "target_label": "${1}_x", "regex": "(.*)"})
    RelabelConfig.model_validate({"action": "labelmap", "regex": "x_(.*)", "replacement": "y_$1"})
    RelabelConfig.model_validate({"action": "drop", "modulus": 3})


def test_a_bad_rule_in_a_config_file_names_its_field() -> None:
    data = {
        "scrape": {"app": {"targets": [{"__address__": "h:1"}], "forward_to": ["store"],
                           "relabel_configs": [{"action": "keep"}, {"action": "hashmod", "target_label": "s"}]}},
        "write": {"store": {"type": "file"}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.problems == ["scrape.app.relabel_configs[1]: relabel configuration for hashmod requires non-zero modulus"]


def _job_from_yaml(relabel_yaml: str, targets: str = '[{__address__: "h:1"}]') -> Any:
    text = (f"scrape:\n  app:\n    targets: {targets}\n    forward_to: [store]\n    relabel_configs:\n{relabel_yaml}\n"
            "write:\n  store: {type: file}\n")
    return parse_config_text(text).scrape["app"]


def test_an_unquoted_true_in_a_rule_is_the_string_true_as_in_prometheus_examples() -> None:
    job = _job_from_yaml("      - source_labels: [scrape]\n        regex: true\n        action: keep")
    assert relabel({"scrape": "true"}, job.relabel_configs) == {"scrape": "true"}
    assert relabel({"scrape": "True"}, job.relabel_configs) is None


def test_unquoted_numbers_in_a_rule_are_strings_as_written() -> None:
    job = _job_from_yaml(
        "      - {source_labels: [a], target_label: port, replacement: 8080}\n"
        "      - {source_labels: [a], target_label: ratio, replacement: 1.50}\n"
        "      - {source_labels: [a], target_label: shard, modulus: 4, action: hashmod}"
    )
    result = relabel({"a": "x"}, job.relabel_configs)
    assert result is not None and (result["port"], result["ratio"]) == ("8080", "1.50")
    assert job.relabel_configs[2].modulus == 4


def test_an_empty_regex_matches_only_the_empty_string_as_in_prometheus() -> None:
    job = _job_from_yaml("      - source_labels: [a]\n        regex:\n        action: keep")
    assert relabel({"b": "x"}, job.relabel_configs) == {"b": "x"}
    assert relabel({"a": "x"}, job.relabel_configs) is None


def test_an_action_with_no_value_is_refused_as_prometheus_refuses_it() -> None:
    with pytest.raises(ConfigError, match=re.escape("scrape.app.relabel_configs[0].action: relabel action cannot be empty")):
        _job_from_yaml("      - source_labels: [a]\n        action:")


def test_unquoted_scalars_in_static_target_labels_are_strings_as_written() -> None:
    job = _job_from_yaml("      []", targets='[{__address__: "h:1", port: 8080, debug: true, ratio: 1.50}]')
    assert job.targets == [{"__address__": "h:1", "port": "8080", "debug": "true", "ratio": "1.50"}]


def test_a_value_with_a_lone_surrogate_is_matched_not_a_crash() -> None:
    # json.loads('"\\ud800"') gives one; Go's JSON decoder would have made it U+FFFD
    result = relabel({"a": "x\ud800"}, rules({"source_labels": ["a"], "regex": "x(.*)", "target_label": "b"}))
    assert result is not None and result["b"].startswith("\ufffd")
