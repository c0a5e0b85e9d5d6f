"""The deployment files (compose.yaml, Dockerfile, deploy/config.yaml) checked statically.

No Docker engine runs these tests: compose.yaml is validated against the Compose
Specification's JSON Schema and read the way Compose reads it (anchors, ``$$`` escapes,
``${VAR:-default}``); every command that starts the project is checked against the
installed project (Celery app, console script and its subcommands); the shell and
python snippets that compose.yaml runs inside containers are executed here.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from scraper.config import load_config

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXAMPLE_CONFIG = REPO / "deploy" / "config.yaml"

CONFIG_IN_CONTAINER = "/etc/pprof-scraper/config.yaml"
SECRETS_DIR = "/run/secrets/"
CELERY_SUBCOMMANDS = {"worker", "beat", "flower"}
CLI_SUBCOMMANDS = {"run", "check", "plan", "targets", "deadletter", "init"}
PROJECT_SERVICES = {"beat", "worker", "flower"}
SHELLS = {"sh", "bash", "ash", "dash"}


# --------------------------------------------------------------------------- reading compose.yaml


_INTERPOLATION = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation: ``$$`` is a literal ``$``; ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``${VAR}`` and ``$VAR`` come from ``env``."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return env.get(match.group("bare"), "")
        body = match.group("braced")
        name, op, arg = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:-|-|:\?|\?|:\+|\+)?(.*)", body, re.S).groups()
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if not value:
                raise ValueError(f"compose needs ${name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def interpolated(node: Any, env: dict[str, str] | None = None) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    """compose.yaml as written (anchors and merge keys resolved, ``$`` not yet interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """compose.yaml as Compose runs it with no variables set: every default applied."""
    return interpolated(raw_compose)


@pytest.fixture(scope="module")
def example_config() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


def as_argv(value: str | list[str] | None) -> list[str]:
    """An entrypoint/command as Compose passes it: a list as is, a string split shell-like."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else shlex.split(value)


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The exec-form argument list of the last ``instruction`` (ENTRYPOINT, CMD) of the final stage."""
    found = [args for name, args in final_stage(dockerfile_instructions()) if name == instruction]
    assert found, f"the Dockerfile has no {instruction}"
    return json.loads(found[-1])


def service_argv(service: dict[str, Any]) -> list[str]:
    """The argv a service's container starts with: its entrypoint (else the image's) + its command
    (else the image's CMD, unless it overrides the entrypoint)."""
    built_here = "build" in service
    if "entrypoint" in service:
        entrypoint = as_argv(service["entrypoint"])
        command = as_argv(service.get("command"))
    else:
        entrypoint = dockerfile_exec_form("ENTRYPOINT") if built_here else []
        command = as_argv(service["command"]) if "command" in service else (
            dockerfile_exec_form("CMD") if built_here else [])
    return entrypoint + command


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, each as argv, without ``exec`` or leading assignments."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|(){}\n")
    lexer.whitespace_split = True
    command: list[str] = []
    for token in list(lexer) + [";"]:
        if token and set(token) <= set(";&|(){}\n"):
            while command and (command[0] == "exec" or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0])):
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(token)


def invocations(argv: list[str]) -> Iterator[list[str]]:
    """Every program argv a container command runs: itself, or each command of a ``sh -c`` script."""
    if argv and Path(argv[0]).name in SHELLS and "-c" in argv:
        yield from shell_commands(argv[argv.index("-c") + 1])
    elif argv:
        yield argv


def healthcheck_argv(test: str | list[str]) -> list[str]:
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return []


def every_invocation(compose: dict[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    """(service, where, argv) for every program any service runs: its main command and its healthcheck."""
    for name, service in compose["services"].items():
        for argv in invocations(service_argv(service)):
            yield name, "command", argv
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            for argv in invocations(healthcheck_argv(test)):
                yield name, "healthcheck", argv


def program(argv: list[str]) -> tuple[str, list[str]]:
    """(program name, its arguments), seeing through ``python -m <module>``."""
    name = Path(argv[0]).name
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and len(argv) > 2 and argv[1] == "-m":
        return argv[2], argv[3:]
    return name, argv[1:]


def celery_app_and_subcommand(args: list[str]) -> tuple[str | None, str | None]:
    """The ``-A``/``--app`` value and the subcommand of a ``celery`` argv."""
    app = subcommand = None
    rest = iter(args)
    for arg in rest:
        if arg in ("-A", "--app"):
            app = next(rest, None)
        elif arg.startswith("--app="):
            app = arg.split("=", 1)[1]
        elif not arg.startswith("-") and subcommand is None:
            subcommand = arg
            break
    return app, subcommand


def option_values(args: list[str], *names: str) -> list[str]:
    """Every value given to the options ``names`` (``-P gevent``, ``--pool gevent``, ``--pool=gevent``)."""
    values = []
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                values.append(args[index + 1])
            elif name.startswith("--") and arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def project_invocations(compose: dict[str, Any]) -> list[tuple[str, str, str, list[str]]]:
    """(service, where, program, args) for every invocation of ``celery`` or ``pprof-scraper``."""
    found = []
    for service, where, argv in every_invocation(compose):
        name, args = program(argv)
        if name in ("celery", "pprof-scraper"):
            found.append((service, where, name, args))
    return found


def celery_worker_invocations(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for service, _where, name, args in project_invocations(compose):
        if name == "celery" and celery_app_and_subcommand(args)[1] == "worker":
            out.append((service, args))
    return out


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each volume of a service, short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            mounts.append((parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else "rw"))
        else:
            mode = "ro" if volume.get("read_only") else "rw"
            mounts.append((volume.get("source", ""), volume["target"], mode))
    return mounts


def secret_names(service: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


def secret_targets(service: dict[str, Any]) -> set[str]:
    """The paths at which a service sees its secrets."""
    out = set()
    for s in service.get("secrets", []):
        if isinstance(s, str):
            out.add(SECRETS_DIR + s)
        else:
            target = s.get("target", s["source"])
            out.add(target if target.startswith("/") else SECRETS_DIR + target)
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node


# --------------------------------------------------------------------------- reading the Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        name, _, args = full.partition(" ")
        instructions.append((name.upper(), args.strip()))
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM."""
    out: list[list[tuple[str, str]]] = []
    for name, args in instructions:
        if name == "FROM":
            out.append([])
        if out:
            out[-1].append((name, args))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return stages(instructions)[-1]


def global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    out = {}
    for name, args in instructions:
        if name == "FROM":
            break
        if name == "ARG" and "=" in args:
            key, value = args.split("=", 1)
            out[key.strip()] = value.strip().strip('"')
    return out


def stage_base(from_args: str, args: dict[str, str]) -> str:
    image = from_args.split()[0]
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


# --------------------------------------------------------------------------- the installed project


def pyproject_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def regular_package_dir(name: str) -> Path | None:
    """The directory of the top-level package ``name`` if it exists as a real package (with an
    ``__init__.py``), else None. Nothing is imported."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        if (Path(location) / "__init__.py").is_file():
            return Path(location)
    return None


def require_worker_package() -> Path:
    package = regular_package_dir("worker")
    if package is None:
        pytest.skip("the `worker` package (the Celery app and the CLI) does not exist yet")
    return package


def run_in_checkout(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` from the checkout's root, so the project imports from this tree even
    if the virtualenv's editable install predates a package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


# =========================================================================== compose.yaml: shape


def test_compose_file_is_valid_against_the_compose_specification(raw_compose: dict[str, Any]) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(raw_compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors)


def test_compose_runs_redis_beat_workers_flower_pyroscope_and_a_demo_target(compose: dict[str, Any]) -> None:
    assert {"redis", "beat", "worker", "flower", "pyroscope", "demo"} <= set(compose["services"])


def test_compose_starts_with_no_environment_variables_set() -> None:
    """Every ``${VAR}`` has a default, and every literal ``$`` meant for a container shell is ``$$``."""
    text = COMPOSE_FILE.read_text()
    without_escapes = text.replace("$$", "")
    bare = re.findall(r"\$(?!\{)[A-Za-z_]\w*", without_escapes)
    assert not bare, f"bare $VAR in compose.yaml (write $${{VAR}} for the container, ${{VAR:-default}} for Compose): {bare}"
    for body in re.findall(r"\$\{([^}]*)\}", without_escapes):
        assert re.fullmatch(r"[A-Za-z_]\w*:?-.+", body), f"${{{body}}} has no default, so `docker compose up` needs it set"


def test_services_built_from_this_checkout_use_its_dockerfile(compose: dict[str, Any]) -> None:
    for name in PROJECT_SERVICES:
        build = compose["services"][name]["build"]
        assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


# =========================================================================== compose.yaml: project commands


def test_every_project_command_is_celery_dash_a_worker_or_the_pprof_scraper_cli(compose: dict[str, Any]) -> None:
    found = project_invocations(compose)
    assert {service for service, *_ in found} >= PROJECT_SERVICES | {"config-check"}
    for service, where, name, args in found:
        if name == "celery":
            app, subcommand = celery_app_and_subcommand(args)
            assert app == "worker", f"{service} {where}: celery must be given `-A worker`, got {app!r}"
            assert subcommand in CELERY_SUBCOMMANDS, f"{service} {where}: `celery -A worker {subcommand}` is not one of {sorted(CELERY_SUBCOMMANDS)}"
        else:
            assert args and args[0] in CLI_SUBCOMMANDS, f"{service} {where}: `pprof-scraper {' '.join(args)}` names no subcommand of the CLI"


def test_the_celery_app_named_by_dash_a_loads_and_has_each_subcommand_compose_uses(compose: dict[str, Any]) -> None:
    require_worker_package()
    used = sorted({celery_app_and_subcommand(args)[1] for _s, _w, name, args in project_invocations(compose) if name == "celery"})
    for subcommand in used:
        result = run_in_checkout(["-m", "celery", "-A", "worker", subcommand, "--help"])
        assert result.returncode == 0, f"`celery -A worker {subcommand} --help` failed:\n{result.stdout}\n{result.stderr}"


def test_pprof_scraper_commands_name_the_console_script_and_a_subcommand_it_has(compose: dict[str, Any]) -> None:
    scripts = pyproject_scripts()
    assert "pprof-scraper" in scripts, "pyproject.toml [project.scripts] has no pprof-scraper"
    module, _, function = scripts["pprof-scraper"].partition(":")
    package = require_worker_package() if module.split(".")[0] == "worker" else None
    if package is not None:
        relative = Path(*module.split(".")[1:])
        assert (package / relative.with_suffix(".py")).is_file() or (package / relative / "__init__.py").is_file(), \
            f"the console script's module {module} does not exist"
    used = sorted({args[0] for _s, _w, name, args in project_invocations(compose) if name == "pprof-scraper"})
    assert used, "no service runs the pprof-scraper CLI"
    for subcommand in used:
        result = run_in_checkout(["-c", f"import sys; from {module} import {function}; sys.exit({function}([{subcommand!r}, '--help']))"])
        assert result.returncode == 0, f"`pprof-scraper {subcommand} --help` failed:\n{result.stdout}\n{result.stderr}"


def test_the_image_entrypoint_is_the_console_script() -> None:
    entrypoint = dockerfile_exec_form("ENTRYPOINT")
    assert entrypoint[0] in pyproject_scripts()


def test_workers_use_the_gevent_pool_given_on_the_command_line(compose: dict[str, Any]) -> None:
    workers = celery_worker_invocations(compose)
    assert workers, "no service runs `celery -A worker worker`"
    for service, args in workers:
        assert option_values(args, "-P", "--pool") == ["gevent"], f"{service}: the pool must be `-P gevent` on the command line"


def test_worker_concurrency_matches_scraper_concurrency(compose: dict[str, Any]) -> None:
    for service, args in celery_worker_invocations(compose):
        given = option_values(args, "-c", "--concurrency")
        assert given == [environment(compose["services"][service])["SCRAPER_CONCURRENCY"]], \
            f"{service}: `-c` {given} differs from SCRAPER_CONCURRENCY"


def test_workers_consume_both_the_scrape_and_the_push_queue(compose: dict[str, Any]) -> None:
    """A queue nobody consumes grows in Redis until noeviction makes Redis refuse writes."""
    queues: set[str] = set()
    for _service, args in celery_worker_invocations(compose):
        for value in option_values(args, "-Q", "--queues"):
            queues.update(value.split(","))
    assert {"scrape", "push"} <= queues


def test_workers_scale_with_deploy_replicas(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert isinstance(worker["deploy"]["replicas"], int) and worker["deploy"]["replicas"] >= 1
    assert "container_name" not in worker, "a fixed container_name prevents --scale worker=N"
    assert not worker.get("ports"), "published host ports collide when workers are scaled"


def test_two_beats_run_so_one_can_stand_by(compose: dict[str, Any]) -> None:
    beat = compose["services"]["beat"]
    assert beat["deploy"]["replicas"] == 2
    assert "container_name" not in beat and not beat.get("ports")
    assert [celery_app_and_subcommand(args)[1] for s, w, n, args in project_invocations(compose)
            if s == "beat" and w == "command"] == ["beat"]


def test_beat_and_workers_start_after_redis_is_healthy_and_the_config_checked(compose: dict[str, Any]) -> None:
    for name in ("beat", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["config-check"]["condition"] == "service_completed_successfully"
    check = compose["services"]["config-check"]
    assert service_argv(check) == ["pprof-scraper", "check", CONFIG_IN_CONTAINER]
    assert check["restart"] == "no"


# =========================================================================== compose.yaml: healthchecks


def test_beat_and_worker_healthchecks_fetch_the_projects_own_ready_endpoint_with_python(compose: dict[str, Any]) -> None:
    for name in ("beat", "worker"):
        service = compose["services"][name]
        argv = healthcheck_argv(service["healthcheck"]["test"])
        assert Path(argv[0]).name.startswith("python") and argv[1] == "-c", f"{name}: {argv}"
        assert "/-/ready" in argv[2] and "SCRAPER_HTTP_PORT" in argv[2]
        assert environment(service)["SCRAPER_HTTP_PORT"].isdigit()


def test_beat_and_workers_serve_http_to_the_compose_network_and_publish_nothing(compose: dict[str, Any]) -> None:
    for name in ("beat", "worker"):
        service = compose["services"][name]
        assert environment(service)["SCRAPER_HTTP_ADDRESS"] == "0.0.0.0"
        assert "ports" not in service, f"{name} publishes its unauthenticated HTTP endpoint"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/-/ready" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("service", ["beat", "worker"])
def test_healthcheck_passes_on_200_and_fails_otherwise(compose: dict[str, Any], health_server, service: str) -> None:
    port, handler = health_server
    argv = healthcheck_argv(compose["services"][service]["healthcheck"]["test"])
    env = {**os.environ, "SCRAPER_HTTP_PORT": str(port)}
    run = lambda: subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)  # noqa: E731
    assert run().returncode == 0
    handler.status = 503
    assert run().returncode != 0


# =========================================================================== compose.yaml: redis


def redis_server_argv(redis: dict[str, Any]) -> list[str]:
    """The ``redis-server`` arguments of the redis service (run by the image's entrypoint script or not)."""
    [argv] = [argv for argv in invocations(service_argv(redis)) if "redis-server" in argv]
    return argv[argv.index("redis-server") + 1:]


def test_redis_appends_every_write_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    args = redis_server_argv(redis)
    assert option_values(args, "--appendonly") == ["yes"]
    assert option_values(args, "--maxmemory-policy") == ["noeviction"]
    assert any(target == "/data" for _s, target, _m in volume_mounts(redis)), "redis' /data must be a volume"


def test_redis_requires_the_password_of_its_secret_and_every_process_reads_the_same_file(
        compose: dict[str, Any], tmp_path: Path) -> None:
    redis = compose["services"]["redis"]
    # "-" last: redis-server reads stdin as config only as its first or last argument, and the
    # image's entrypoint puts options in front of the first
    assert redis_server_argv(redis)[-1] == "-", "the password reaches redis-server as its config on standard input"
    assert "/run/secrets/redis_password" in secret_targets(redis)
    # run the container's script against a stand-in docker-entrypoint.sh that records what it gets
    secret, record = tmp_path / "redis_password", tmp_path / "redis-server-got"
    secret.write_text("0123abcd\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-entrypoint.sh").write_text(f"#!/bin/sh\n{{ echo \"$*\"; cat; }} > {shlex.quote(str(record))}\n")
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    argv = [a.replace("/run/secrets/redis_password", str(secret)) for a in service_argv(redis)]
    done = subprocess.run(argv, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    args, config = record.read_text().split("\n", 1)
    assert args.startswith("redis-server ") and args.endswith(" -") and "0123abcd" not in args
    assert config == 'requirepass "0123abcd"\n'
    # the healthcheck authenticates (a Redis with a password answers an anonymous PING with NOAUTH)
    health = healthcheck_argv(redis["healthcheck"]["test"])
    assert "REDISCLI_AUTH" in health[-1] and "/run/secrets/redis_password" in health[-1] and "PONG" in health[-1]
    for name in PROJECT_SERVICES | {"config-check"}:
        service = compose["services"][name]
        assert environment(service)["SCRAPER_BROKER_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert "/run/secrets/redis_password" in secret_targets(service), name


def test_every_service_reaches_the_same_redis(compose: dict[str, Any]) -> None:
    for name in PROJECT_SERVICES:
        url = urlsplit(environment(compose["services"][name])["SCRAPER_BROKER_URL"])
        assert url.scheme == "redis" and url.hostname == "redis"


# =========================================================================== compose.yaml: flower


def test_flower_is_read_only_capped_and_takes_its_login_from_the_environment(compose: dict[str, Any]) -> None:
    [args] = [args for s, w, name, args in project_invocations(compose) if s == "flower" and w == "command"]
    assert celery_app_and_subcommand(args) == ("worker", "flower")
    assert "--read_only" in args
    assert option_values(args, "--max-tasks") == ["10000"]
    assert not any(a.startswith("--basic-auth") for a in args), "the login must not be on a command line ps shows"
    assert any(str(port).endswith(":5555") for port in compose["services"]["flower"]["ports"])


def _run_flower_script(compose: dict[str, Any], tmp_path: Path, secret: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run flower's container script with a stand-in ``celery`` that records its arguments."""
    flower = compose["services"]["flower"]
    argv = service_argv(flower)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "celery-args"
    stand_in = bin_dir / "celery"
    stand_in.write_text(f"#!/bin/sh\n{{ for a in \"$@\"; do printf '%s\\n' \"$a\"; done; "
                        f"printf 'env FLOWER_BASIC_AUTH=%s\\n' \"$FLOWER_BASIC_AUTH\"; }} > {shlex.quote(str(record))}\n")
    stand_in.chmod(0o755)
    secret_file = tmp_path / "flower_basic_auth"
    secret_file.write_text(secret)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FLOWER_BASIC_AUTH_FILE": str(secret_file)}
    assert environment(flower)["FLOWER_BASIC_AUTH_FILE"].startswith(SECRETS_DIR)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30), record


def test_flower_script_hands_the_login_from_its_secret_file_to_flower_in_its_environment(compose: dict[str, Any], tmp_path: Path) -> None:
    result, record = _run_flower_script(compose, tmp_path, "admin:s3cret, with space\n")
    assert result.returncode == 0, result.stderr
    args = record.read_text().splitlines()
    assert args[:3] == ["-A", "worker", "flower"]
    assert "env FLOWER_BASIC_AUTH=admin:s3cret, with space" in args
    assert not any("s3cret" in a for a in args if not a.startswith("env "))


def test_flower_refuses_to_start_without_a_login(compose: dict[str, Any], tmp_path: Path) -> None:
    result, record = _run_flower_script(compose, tmp_path, "")
    assert result.returncode != 0
    assert not record.exists(), "flower must not start when its login file is empty"


# =========================================================================== compose.yaml: config and secrets


def test_the_config_is_mounted_read_only_into_beat_and_every_worker(compose: dict[str, Any]) -> None:
    for name in ("beat", "worker", "config-check"):
        service = compose["services"][name]
        assert ("./deploy/config.yaml", CONFIG_IN_CONTAINER, "ro") in volume_mounts(service), name
        assert environment(service)["SCRAPER_CONFIG"] == CONFIG_IN_CONTAINER
    for name, service in compose["services"].items():
        for _source, target, mode in volume_mounts(service):
            if target == CONFIG_IN_CONTAINER:
                assert mode == "ro", f"{name} mounts the config writable"


def test_secrets_are_files_and_no_secret_value_is_written_in_compose(compose: dict[str, Any]) -> None:
    defined = compose.get("secrets", {})
    for name, secret in defined.items():
        assert set(secret) == {"file"}, f"secret {name} must come from a file, not {sorted(set(secret) - {'file'})}"
    secretish = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|BASIC_AUTH|API_KEY|PRIVATE_KEY", re.I)
    for name, service in compose["services"].items():
        assert secret_names(service) <= set(defined), f"{name} uses a secret not defined at the top level"
        for key, value in environment(service).items():
            if key.endswith("_FILE"):
                assert value.startswith(SECRETS_DIR), f"{name}: {key} must point into {SECRETS_DIR}"
                assert value in secret_targets(service), f"{name}: {key} names a secret the service does not mount"
            else:
                assert not secretish.search(key), f"{name}: {key} looks like a secret given inline; use a *_FILE and a secret"
            if "://" in value:
                assert urlsplit(value).password is None, f"{name}: {key} carries a password in its URL"


def test_every_run_secrets_path_in_compose_is_mounted_where_it_is_used(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for path, value in walk(service):
            for used in re.findall(r"/run/secrets/[\w.-]+", str(value)):
                assert used in secret_targets(service), f"{name}.{path} uses {used}, which {name} does not mount"


def test_the_demo_works_out_of_the_box_with_clearly_marked_placeholder_secrets(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        path = REPO / secret["file"]
        assert path.is_file() and path.read_text().strip(), f"secret {name}: {secret['file']} is missing or empty"
        assert "demo-placeholder" in path.name, f"secret {name}: the committed default must be named as a placeholder"


def test_every_file_option_of_the_config_points_into_run_secrets_and_the_workers_mount_it(
        compose: dict[str, Any], example_config: dict[str, Any]) -> None:
    worker_secrets = secret_targets(compose["services"]["worker"])
    files = [(path, value) for path, value in walk(example_config) if path.rsplit(".", 1)[-1].endswith("_file")]
    assert files, "the example config shows no *_file secret"
    for path, value in files:
        assert str(value).startswith(SECRETS_DIR), f"{path}: {value} is not under {SECRETS_DIR}"
        assert value in worker_secrets, f"{path}: {value} is not mounted into the workers"


def test_the_config_has_no_inline_secret(example_config: dict[str, Any]) -> None:
    inline = {"password", "bearer_token", "credentials", "client_secret"}
    found = [path for path, _ in walk(example_config) if path.rsplit(".", 1)[-1] in inline]
    assert not found, f"secret given inline in deploy/config.yaml: {found}"


# =========================================================================== deploy/config.yaml


def test_the_example_config_is_valid_for_the_project() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.scrape and config.write


def test_the_example_config_scrapes_and_pushes_to_services_of_the_compose_file(
        compose: dict[str, Any], example_config: dict[str, Any]) -> None:
    services = set(compose["services"])
    for job, body in example_config["scrape"].items():
        for target in body["targets"]:
            host = target["__address__"].rsplit(":", 1)[0]
            assert host in services, f"scrape.{job}: {host} is not a service of compose.yaml"
    for name, receiver in example_config["write"].items():
        if receiver["type"] == "pyroscope":
            assert urlsplit(receiver["url"]).hostname in services, f"write.{name}: not a service of compose.yaml"


def test_the_file_store_writes_into_a_volume_of_the_workers(compose: dict[str, Any], example_config: dict[str, Any]) -> None:
    named_volumes = set(compose.get("volumes") or {})
    mounts = volume_mounts(compose["services"]["worker"])
    for name, receiver in example_config["write"].items():
        if receiver["type"] == "file":
            path = receiver["path"]
            assert any(path.startswith(target.rstrip("/") + "/") and source in named_volumes for source, target, _ in mounts), \
                f"write.{name}: {path} is not on a named volume of the workers"


# =========================================================================== Dockerfile


def test_dockerfile_builds_in_two_stages_on_python_3_11_slim() -> None:
    instructions = dockerfile_instructions()
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "the Dockerfile must be multi-stage"
    args = global_args(instructions)
    for stage in all_stages:
        assert stage_base(stage[0][1], args) == "python:3.11-slim"


def test_the_image_installs_the_pinned_versions_with_the_kubernetes_client() -> None:
    *build_stages, _ = stages(dockerfile_instructions())
    build_runs = " ".join(args for stage in build_stages for name, args in stage if name == "RUN")
    assert "pip install -c constraints.txt '.[kubernetes]'" in build_runs


def test_dockerfile_installs_the_checkout_with_pip_in_a_build_stage_and_copies_only_the_result() -> None:
    *build_stages, final = stages(dockerfile_instructions())
    build_runs = " ".join(args for stage in build_stages for name, args in stage if name == "RUN")
    assert re.search(r"pip install (\S+ )*'?\.(\[[\w,]+\])?'?(\s|$)", build_runs), "a build stage must `pip install .`"
    final_runs = " ".join(args for name, args in final if name == "RUN")
    assert not re.search(r"apt-get install|apk add|pip install|\bgcc\b|build-essential", final_runs), \
        "the final stage must not install build tools or packages"
    names = {stage[0][1].split()[-1] for stage in build_stages if " AS " in stage[0][1].upper()}
    assert any(name == "COPY" and re.search(r"--from=(\S+)", args) and re.search(r"--from=(\S+)", args).group(1) in names
               for name, args in final), "the final stage must COPY --from a build stage"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for name, args in final_stage(dockerfile_instructions()) if name == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the image runs as {users[-1]}"


def test_dockerfile_defaults_to_printing_the_cli_help() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["pprof-scraper"]
    assert dockerfile_exec_form("CMD") == ["--help"]


def test_dockerfile_workdir_is_the_data_dir_the_workers_keep_on_a_volume(compose: dict[str, Any]) -> None:
    final = final_stage(dockerfile_instructions())
    workdir = [args for name, args in final if name == "WORKDIR"][-1]
    env_text = " ".join(args for name, args in final if name == "ENV")
    assert f"SCRAPER_DATA_DIR={workdir}" in env_text
    assert any(target == workdir for _s, target, _m in volume_mounts(compose["services"]["worker"]))


def test_dockerignore_keeps_secrets_the_virtualenv_and_git_out_of_the_build_context() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "deploy/secrets"} <= patterns


# =========================================================================== deploy/: other hosts

HOST_FILES = {name: REPO / "deploy" / name for name in ("compose.worker-host.yaml", "compose.sentinel.yaml")}


@pytest.mark.parametrize("name", sorted(HOST_FILES))
def test_the_other_hosts_compose_files_are_valid_against_the_compose_specification(name: str) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(HOST_FILES[name].read_text())))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors)


def test_a_worker_host_runs_the_same_workers_against_an_external_redis_and_a_beat_only_if_asked(
        compose: dict[str, Any]) -> None:
    host = interpolated(yaml.safe_load(HOST_FILES["compose.worker-host.yaml"].read_text()))
    assert "redis" not in host["services"]
    assert service_argv(host["services"]["worker"]) == service_argv(compose["services"]["worker"])
    assert host["services"]["beat"]["profiles"] == ["beat"]
    for name, service in host["services"].items():
        env = environment(service)
        assert urlsplit(env["SCRAPER_BROKER_URL"]).hostname not in (None, "redis", "localhost"), name
        assert env["SCRAPER_BROKER_PASSWORD_FILE"] in secret_targets(service), name
        assert (REPO / "deploy" / host["secrets"]["redis_password"]["file"]).is_file()
        assert (REPO / "deploy" / service["build"]["context"]).resolve() == REPO


def test_the_sentinel_variant_names_every_sentinel_and_the_master(compose: dict[str, Any]) -> None:
    from scraper.broker import SentinelURL

    sentinel = interpolated(yaml.safe_load(HOST_FILES["compose.sentinel.yaml"].read_text()))
    for name in ("worker", "beat"):
        env = sentinel["services"][name]["environment"]
        assert len(SentinelURL.parse(env["SCRAPER_BROKER_URL"]).sentinels) == 3
        assert env["SCRAPER_SENTINEL_MASTER"] == "mymaster"
