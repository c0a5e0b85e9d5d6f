"""The config file: the seed's names and defaults, and errors that name their field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scraper.config import parse_config, parse_config_text
from scraper.durations import format_duration, parse_duration
from scraper.errors import ConfigError

MINIMAL = """
scrape:
  local:
    targets: [{__address__: "localhost:4100"}]
    forward_to: [files]
write:
  files: {type: file, path: ./profiles}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    return info.value.problems


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("15s", 15), ("1m30s", 90), ("2h", 7200), ("1h2m3s", 3723), ("1d", 86400), ("0", 0),
])
def test_durations_accept_go_and_prometheus_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["15", "fifteen seconds", "1x", "", 15])
def test_a_duration_without_a_unit_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_print_back_in_go_form() -> None:
    assert format_duration(timedelta(seconds=90.5)) == "1m30s500ms"


def test_a_job_given_only_targets_and_forward_to_gets_the_seeds_defaults() -> None:
    job = parse_config_text(MINIMAL).scrape["local"]
    assert job.scrape_interval == timedelta(seconds=15)
    assert job.scrape_timeout == timedelta(seconds=15)
    assert job.effective_delta_duration == timedelta(seconds=14)
    assert job.scheme == "http"
    assert job.body_size_limit == 64 * 1024 * 1024
    assert job.http_client_config.follow_redirects is True
    assert job.http_client_config.enable_http_2 is True
    profiling = job.profiling_config
    assert (profiling.memory.enabled, profiling.memory.path, profiling.memory.delta) == (True, "/debug/pprof/allocs", False)
    assert (profiling.process_cpu.path, profiling.process_cpu.delta) == ("/debug/pprof/profile", True)
    assert (profiling.fgprof.enabled, profiling.fgprof.path, profiling.fgprof.delta) == (False, "/debug/fgprof", True)
    assert profiling.godeltaprof_memory.path == "/debug/pprof/delta_heap"
    assert sorted(profiling.enabled_types()) == ["block", "goroutine", "memory", "mutex", "process_cpu"]


def test_a_builtin_profile_type_given_in_part_keeps_its_other_defaults() -> None:
    config = parse_config_text(MINIMAL.replace(
        'forward_to: [files]', 'forward_to: [files]\n    profiling_config: {profile.fgprof: {enabled: true}}'))
    fgprof = config.scrape["local"].profiling_config.fgprof
    assert (fgprof.enabled, fgprof.path, fgprof.delta) == (True, "/debug/fgprof", True)


def test_godeltaprof_types_are_stored_under_the_plain_names() -> None:
    config = parse_config_text(MINIMAL.replace(
        'forward_to: [files]',
        'forward_to: [files]\n    profiling_config: {profile.godeltaprof_mutex: {enabled: true}, profile.mutex: {enabled: false}}'))
    enabled = config.scrape["local"].profiling_config.enabled_types()
    assert enabled["godeltaprof_mutex"][0] == "mutex"


def test_an_unknown_key_is_an_error_naming_it() -> None:
    assert problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    scrape_intervall: 10s")) == [
        "scrape.local.scrape_intervall: unknown key (check its spelling)"]


def test_a_key_given_twice_is_an_error_with_its_line() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    forward_to: [other]"))
    assert "'forward_to' appears twice" in problems[0]


def test_sample_limit_defaults_to_a_million_and_a_negative_one_is_an_error_naming_it() -> None:
    assert parse_config_text(MINIMAL).scrape["local"].sample_limit == 1_000_000
    assert parse_config_text(MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    sample_limit: 0")
                             ).scrape["local"].sample_limit == 0
    problems = problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    sample_limit: -1"))
    assert len(problems) == 1 and problems[0].startswith("scrape.local.sample_limit:"), problems


def test_a_target_without_address_is_named_by_job_and_index() -> None:
    problems = problems_of(MINIMAL.replace('[{__address__: "localhost:4100"}]', '[{__address__: "a:1"}, {app: x}]'))
    assert problems == ["scrape.local.targets: targets[1] has no __address__"]


def test_an_address_with_a_path_is_refused() -> None:
    problems = problems_of(MINIMAL.replace("localhost:4100", "http://localhost:4100/debug"))
    assert "must be host[:port] without a scheme or path" in problems[0]


def test_a_delta_duration_not_shorter_than_the_interval_is_refused() -> None:
    problems = problems_of(MINIMAL.replace(
        "forward_to: [files]", "forward_to: [files]\n    scrape_interval: 10s\n    delta_profiling_duration: 10s"))
    assert problems[0].startswith("scrape.local: delta_profiling_duration (10.0s) must be shorter than scrape_interval")


def test_an_interval_under_one_second_is_refused() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    scrape_interval: 500ms"))
    assert "scrape_interval must be at least 1s" in problems[0]


def test_forward_to_a_receiver_that_does_not_exist_is_refused() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [files, pyro]"))
    assert problems == ["scrape.local.forward_to: 'pyro' is not a receiver under write: (files)"]


def test_two_auth_methods_in_one_http_client_config_name_both() -> None:
    problems = problems_of(MINIMAL.replace(
        "forward_to: [files]",
        "forward_to: [files]\n    http_client_config: {bearer_token: t, basic_auth: {username: u, password: p}}"))
    assert "got bearer_token and basic_auth" in problems[0]


@pytest.mark.parametrize("block, fields", [
    ("basic_auth: {username: u, password: p, password_file: /f}", "password and password_file"),
    ("authorization: {credentials: c, credentials_file: /f}", "credentials and credentials_file"),
    ("oauth2: {client_id: i, client_secret: s, client_secret_file: /f, token_url: 'http://t'}",
     "client_secret and client_secret_file"),
])
def test_a_secret_and_its_file_are_exclusive(block: str, fields: str) -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", f"forward_to: [files]\n    http_client_config: {{{block}}}"))
    assert f"at most one of {fields} may be set" in problems[0]


def test_a_custom_profile_type_needs_enabled_and_path() -> None:
    problems = problems_of(MINIMAL.replace(
        "forward_to: [files]", "forward_to: [files]\n    profiling_config: {profile.custom: {wall: {path: /w}}}"))
    assert "custom profile type 'wall' needs enabled" in problems[0]


def test_a_custom_profile_type_given_twice_is_refused() -> None:
    text = MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.custom:
        wall: {enabled: true, path: /a}
        wall: {enabled: true, path: /b}""")
    assert "'wall' appears twice" in problems_of(text)[0]


def test_a_custom_profile_type_may_not_take_a_builtin_name() -> None:
    problems = problems_of(MINIMAL.replace(
        "forward_to: [files]",
        "forward_to: [files]\n    profiling_config: {profile.custom: {memory: {enabled: true, path: /heap}}}"))
    assert "change profile.memory instead" in problems[0]


def test_two_enabled_types_requesting_one_url_are_refused_naming_both() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.custom: {wall: {enabled: true, path: /debug/pprof/profile, delta: true}}"""))
    assert problems == ["scrape.local.profiling_config: profile.process_cpu and profile.custom.wall both request "
                        "/debug/pprof/profile: enable one of them, or give one another path"]


def test_a_node_target_with_wall_time_at_the_cpu_path_passes_with_process_cpu_off() -> None:
    config = parse_config_text(MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.process_cpu: {enabled: false}
      profile.custom: {wall: {enabled: true, path: /debug/pprof/profile, delta: true}}"""))
    assert "wall" in config.scrape["local"].profiling_config.enabled_types()


def test_every_problem_is_listed_at_once() -> None:
    text = MINIMAL.replace("forward_to: [files]", "forward_to: [files]\n    scheme: ftp\n    bogus: 1")
    assert len(problems_of(text)) == 2


def test_secrets_do_not_show_in_the_repr_of_a_config() -> None:
    config = parse_config_text(MINIMAL.replace(
        "forward_to: [files]", "forward_to: [files]\n    http_client_config: {bearer_token: s3cr3t-t0ken}"))
    assert "s3cr3t-t0ken" not in repr(config)
    assert "s3cr3t-t0ken" not in str(config.model_dump())


def test_enable_http_2_set_explicitly_warns_that_requests_speaks_http_1_1() -> None:
    config = parse_config_text(MINIMAL.replace(
        "forward_to: [files]", "forward_to: [files]\n    http_client_config: {enable_http_2: true}"))
    assert any("HTTP/1.1" in w for w in config.warnings())
    assert parse_config_text(MINIMAL).warnings() == []


def test_enable_http_2_set_explicitly_on_a_receiver_warns_too() -> None:
    config = parse_config({"write": {"pyro": {"type": "pyroscope", "url": "http://p:4040", "enable_http_2": True}}})
    assert config.warnings() == ["write.pyro.enable_http_2: requests speaks HTTP/1.1 only; pushes go over HTTP/1.1"]


def test_an_empty_config_is_refused_rather_than_taken_for_scrape_nothing() -> None:
    assert problems_of("# saved half-way by an editor\n") == ["the config is empty; give at least scrape: and write:"]


PYROSCOPE = """
scrape: {{}}
write:
  pyro: {{type: pyroscope, url: "http://pyroscope:4040"{extra}}}
"""


def test_a_pyroscope_receiver_checks_16000_samples_utf8_label_names_and_a_1h_window_by_default() -> None:
    receiver = parse_config_text(PYROSCOPE.format(extra="")).write["pyro"]
    assert (receiver.max_samples, receiver.strict_label_names) == (16_000, False)
    assert receiver.reject_older_than == timedelta(hours=1)


def test_a_reject_older_than_that_is_not_a_duration_is_refused_naming_the_field() -> None:
    [problem] = problems_of(PYROSCOPE.format(extra=", reject_older_than: -1h"))
    assert problem.startswith("write.pyro.reject_older_than: '-1h' is not a duration")


def test_a_negative_max_samples_is_refused_naming_the_field() -> None:
    [problem] = problems_of(PYROSCOPE.format(extra=", max_samples: -1"))
    assert problem.startswith("write.pyro.max_samples: ")


def test_a_custom_type_an_ingest_receiver_would_store_under_another_name_is_refused() -> None:
    [problem] = problems_of("""
scrape:
  api:
    targets: [{__address__: "h:1"}]
    forward_to: [legacy]
    profiling_config: {profile.custom: {my_cpu: {enabled: true, path: /debug/cpu2}}}
write:
  legacy: {type: pyroscope, url: "http://p:4040", api: ingest}
""")
    assert problem == ("scrape.api.profiling_config.profile.custom.my_cpu: write.legacy has api: ingest, where "
                       "Pyroscope stores a profile named 'my_cpu' as 'process_cpu'; rename the type or use api: push")


def test_the_same_custom_type_is_fine_for_the_push_api() -> None:
    config = parse_config_text("""
scrape:
  api:
    targets: [{__address__: "h:1"}]
    forward_to: [pyro]
    profiling_config: {profile.custom: {my_cpu: {enabled: true, path: /debug/cpu2}}}
write:
  pyro: {type: pyroscope, url: "http://p:4040"}
""")
    assert config.scrape["api"].profiling_config.enabled_types()["my_cpu"][0] == "my_cpu"


def test_the_readmes_dotted_custom_type_form_is_the_nested_form() -> None:
    dotted = parse_config_text(MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.custom.wall: {enabled: true, path: /debug/pprof/wall, delta: true}"""))
    nested = parse_config_text(MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.custom: {wall: {enabled: true, path: /debug/pprof/wall, delta: true}}"""))
    assert dotted == nested
    assert dotted.scrape["local"].profiling_config.custom["wall"].delta


def test_a_custom_type_given_in_both_forms_is_refused() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", """forward_to: [files]
    profiling_config:
      profile.custom.wall: {enabled: true, path: /a}
      profile.custom: {wall: {enabled: true, path: /b}}"""))
    assert "custom profile type 'wall' is given twice" in problems[0]


def test_alloys_spelling_enable_http2_is_accepted_beside_enable_http_2() -> None:
    config = parse_config_text(MINIMAL.replace(
        "forward_to: [files]", "forward_to: [files]\n    http_client_config: {enable_http2: false}"))
    assert config.scrape["local"].http_client_config.enable_http_2 is False


def test_an_unknown_receiver_is_listed_beside_the_other_problems_not_after_them() -> None:
    problems = problems_of(MINIMAL.replace("forward_to: [files]", "forward_to: [nope]\n    scheme: ftp"))
    assert len(problems) == 2
    assert any(p.startswith("scrape.local.scheme:") for p in problems)
    assert "scrape.local.forward_to: 'nope' is not a receiver under write: (files)" in problems


def test_a_yaml_syntax_error_names_the_file_and_where(tmp_path) -> None:
    from scraper.config import load_config

    path = tmp_path / "broken.yaml"
    path.write_text("scrape:\n  a: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"not valid YAML at line 3, column 1 of {path}: ")
    assert "<unicode string>" not in str(info.value)
