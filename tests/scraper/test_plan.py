"""The plan: one spec per (job, target, enabled profile type), with URL, labels, timeout and a stable offset."""

from __future__ import annotations

from collections import Counter

import pytest

from scraper.config import parse_config_text
from scraper.errors import UnknownJobError
from scraper.plan import next_slot, plan, spec_for, with_port

#: The seed's own example (Grafana Agent's phlare.scrape docs), written in this project's format.
SEED_EXAMPLE = """
scrape:
  local:
    targets:
      - {__address__: "localhost:4100", app: phlare}
      - {__address__: "localhost:12345", app: agent}
    forward_to: [local]
    profiling_config:
      profile.fgprof: {path: /debug/fgprof, delta: true, enabled: true}
      profile.block: {enabled: false}
      profile.mutex: {enabled: false}
write:
  local: {type: file, path: ./profiles}
"""

#: The URLs the seed's documentation lists for that example.
SEED_URLS = {
    "http://localhost:4100/debug/pprof/allocs",
    "http://localhost:4100/debug/pprof/goroutine",
    "http://localhost:4100/debug/pprof/profile?seconds=14",
    "http://localhost:4100/debug/fgprof?seconds=14",
    "http://localhost:12345/debug/pprof/allocs",
    "http://localhost:12345/debug/pprof/goroutine",
    "http://localhost:12345/debug/pprof/profile?seconds=14",
    "http://localhost:12345/debug/fgprof?seconds=14",
}


def one_job(extra: str = "", target: str = '{__address__: "host:4100"}') -> str:
    return f"""
scrape:
  j:
    targets: [{target}]
    forward_to: [f]
{extra}
write:
  f: {{type: file}}
"""


def test_the_seeds_example_plans_exactly_the_eight_urls_it_lists() -> None:
    urls = [spec.url for spec in plan(parse_config_text(SEED_EXAMPLE))]
    assert len(urls) == 8
    assert set(urls) == SEED_URLS


def test_labels_are_the_public_target_labels_plus_job_instance_service_name_and_name() -> None:
    config = parse_config_text(one_job(target='{__address__: "host:4100", app: api, __hidden: x}'))
    spec = next(s for s in plan(config) if s.profile_type == "goroutine")
    assert spec.labels == {"app": "api", "job": "j", "instance": "host:4100", "service_name": "j", "__name__": "goroutine"}


def test_a_targets_own_service_name_wins_over_the_job_name() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1", service_name: checkout}'))
    assert {s.labels["service_name"] for s in plan(config)} == {"checkout"}


def test_job_name_sets_the_job_label() -> None:
    config = parse_config_text(one_job("    job_name: payments"))
    assert {s.labels["job"] for s in plan(config)} == {"payments"}


def test_seconds_goes_only_to_delta_types_even_with_params() -> None:
    config = parse_config_text(one_job("    params: {debug: ['0'], tag: [a, b]}"))
    by_type = {s.profile_type: s.url for s in plan(config)}
    assert by_type["process_cpu"] == "http://host:4100/debug/pprof/profile?debug=0&seconds=14&tag=a&tag=b"
    assert by_type["memory"] == "http://host:4100/debug/pprof/allocs?debug=0&tag=a&tag=b"


def test_delta_profiling_duration_sets_seconds() -> None:
    config = parse_config_text(one_job("    scrape_interval: 30s\n    delta_profiling_duration: 10s"))
    cpu = next(s for s in plan(config) if s.profile_type == "process_cpu")
    assert cpu.url.endswith("?seconds=10")
    assert cpu.delta_seconds == 10


def test_a_delta_types_timeout_waits_out_the_profiling_window() -> None:
    specs = {s.profile_type: s for s in plan(parse_config_text(one_job()))}
    assert specs["process_cpu"].timeout_s == 14 + 15
    assert specs["memory"].timeout_s == 15


@pytest.mark.parametrize("address, scheme, expected", [
    ("host", "http", "host:80"), ("host", "https", "host:443"), ("host:9", "https", "host:9"),
    ("[::1]", "http", "[::1]:80"), ("[::1]:7", "http", "[::1]:7"), ("::1", "https", "[::1]:443"),
])
def test_an_address_without_a_port_gets_the_schemes_port(address: str, scheme: str, expected: str) -> None:
    assert with_port(address, scheme) == expected


def test_https_and_path_prefix_shape_the_url() -> None:
    config = parse_config_text(one_job("    scheme: https\n    profiling_config: {path_prefix: /app/}", '{__address__: "h"}'))
    memory = next(s for s in plan(config) if s.profile_type == "memory")
    assert memory.url == "https://h:443/app/debug/pprof/allocs"
    assert memory.labels["instance"] == "h:443"


def test_custom_profile_types_are_planned_under_their_name() -> None:
    config = parse_config_text(one_job("    profiling_config: {profile.custom: {wall: {enabled: true, path: /debug/wall, delta: true}}}"))
    wall = next(s for s in plan(config) if s.profile_type == "wall")
    assert wall.labels["__name__"] == "wall"
    assert wall.url == "http://host:4100/debug/wall?seconds=14"


def test_relabeled_scheme_path_and_params_override_the_jobs_for_that_target() -> None:
    target = '{__address__: "h:1", __scheme__: https, __profile_path__: /custom, __param_x: "1"}'
    config = parse_config_text(one_job("    params: {x: ['0']}", target))
    assert {s.url for s in plan(config)} == {"https://h:1/custom?x=1", "https://h:1/custom?seconds=14&x=1"}


def test_the_same_target_listed_twice_is_planned_once() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1"}, {__address__: "h:1"}'))
    assert len(plan(config)) == 5


def test_offsets_are_stable_across_plans() -> None:
    config = parse_config_text(SEED_EXAMPLE)
    assert [s.offset_s for s in plan(config)] == [s.offset_s for s in plan(parse_config_text(SEED_EXAMPLE))]


def test_offsets_of_a_fleet_spread_evenly_over_the_interval() -> None:
    targets = ", ".join(f'{{__address__: "10.{i // 62500}.{i // 250 % 250}.{i % 250}:6060"}}' for i in range(10_000))
    only_goroutine = "    profiling_config: {profile.memory: {enabled: false}, profile.block: {enabled: false}, " \
                     "profile.mutex: {enabled: false}, profile.process_cpu: {enabled: false}}"
    specs = plan(parse_config_text(one_job(only_goroutine, target=targets)))
    buckets = Counter(int(s.offset_s) for s in specs)  # 15 one-second buckets
    mean = len(specs) / 15
    assert len(buckets) == 15
    assert all(abs(count - mean) < 0.15 * mean for count in buckets.values()), buckets


def test_every_profile_type_of_a_target_shares_its_slot() -> None:
    specs = plan(parse_config_text(one_job(target='{__address__: "a:1"}, {__address__: "b:1"}')))
    by_target = {(s.target_key, s.offset_s) for s in specs}
    assert len(by_target) == 2
    assert len({s.key for s in specs}) == 10


def test_next_slot_is_pinned_to_absolute_time() -> None:
    spec = plan(parse_config_text(one_job()))[0]
    first = next_slot(spec, 1_000_000.0)
    assert 1_000_000.0 < first <= 1_000_000.0 + spec.interval_s
    assert (first - spec.offset_s) % spec.interval_s == pytest.approx(0, abs=1e-6)
    assert next_slot(spec, first) == pytest.approx(first + spec.interval_s)


def test_a_worker_rebuilds_the_same_spec_from_the_message_fields() -> None:
    config = parse_config_text(SEED_EXAMPLE)
    for spec in plan(config):
        assert spec_for(config, spec.job, spec.target_labels, spec.profile_type) == spec


def test_every_spec_carries_its_jobs_sample_limit() -> None:
    config = parse_config_text(one_job("    sample_limit: 5000"))
    assert {spec.sample_limit for spec in plan(config)} == {5000}


def test_a_job_missing_from_this_processs_config_is_named() -> None:
    with pytest.raises(UnknownJobError, match="job 'gone' is not in this process's config"):
        spec_for(parse_config_text(SEED_EXAMPLE), "gone", {"__address__": "h:1"}, "memory")


def test_meta_labels_stay_out_of_the_message() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1", __meta_kubernetes_pod_name: p}'))
    assert all("__meta_kubernetes_pod_name" not in s.target_labels for s in plan(config))


def test_a_worker_rebuilds_the_inferred_service_name_from_a_message_without_metadata() -> None:
    config = parse_config_text(one_job(target='{__address__: "10.1.2.3:6060", __meta_kubernetes_namespace: shop, '
                                              '__meta_kubernetes_pod_container_name: cart}'))
    for spec in plan(config):
        assert spec.labels["service_name"] == "shop/cart"
        assert not any(name.startswith("__meta_") for name in spec.target_labels)
        assert spec_for(config, spec.job, spec.target_labels, spec.profile_type) == spec


def test_resolving_service_name_into_the_message_keeps_the_targets_key_and_slot() -> None:
    inferred = plan(parse_config_text(one_job(target='{__address__: "h:1", __meta_docker_container_name: web}')))
    explicit = plan(parse_config_text(one_job(target='{__address__: "h:1", service_name: web}')))
    assert [(s.key, s.target_key, s.offset_s) for s in inferred] == [(s.key, s.target_key, s.offset_s) for s in explicit]


def test_a_target_label_name_overrides_the_profile_name_of_every_type_as_alloy_honours_it() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1", __name__: app_heap}'))
    specs = plan(config)
    assert {s.labels["__name__"] for s in specs} == {"app_heap"}
    assert len({s.key for s in specs}) == len(specs)  # still one series and slot per profile type
    assert all(spec_for(config, s.job, s.target_labels, s.profile_type) == s for s in specs)


def test_a_target_naming_a_godeltaprof_type_stores_it_under_the_plain_name() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1", __name__: godeltaprof_mutex}'))
    assert {s.labels["__name__"] for s in plan(config)} == {"mutex"}


def test_an_empty_target_name_label_leaves_the_profile_types_names() -> None:
    config = parse_config_text(one_job(target='{__address__: "h:1", __name__: ""}'))
    assert {s.labels["__name__"] for s in plan(config)} == {"memory", "block", "goroutine", "mutex", "process_cpu"}
