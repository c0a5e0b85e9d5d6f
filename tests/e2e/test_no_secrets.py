"""No secret anywhere: run the whole system with credentials that really work, then look for them
in everything an operator or a broker reader can see.

Three jobs scrape targets that check their credentials (a bearer token, a basic-auth password, an
OAuth2 client secret traded for an access token at a token endpoint run here), a fourth job's
target refuses it with 401 and echoes the header it got, as a careless server might. Profiles go
to two Pyroscope stand-ins that check a ``password_file`` password and a bearer token, and to the
file store. Redis, Flower and the login of each have their own password. Worker, beat and Flower
log at debug level.

Then every secret is searched for, as it is and base64-encoded at any alignment, in: every Redis
key and value (Celery messages unwrapped: envelope JSON, base64 body, nested JSON and msgpack),
Flower's API and pages, the three logs, the processes' command lines, the worker's ``/metrics``
and ``/targets``, the file store's sidecars, and the output of ``targets``, ``plan``, ``check``
and ``deadletter list``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from urllib.parse import parse_qs

import msgpack
import pytest
import redis
import requests

from scraper.broker import connect_redis
from tests.conftest import DATA, free_port, redis_server_binary, wait_until
from tests.e2e.processes import Proc
from tests.fakes import GO_BODIES
from tests.pyroscope_standin import PyroscopeStandIn

pytestmark = pytest.mark.slow

INTERVAL_S = 2

#: Distinctive values, so that a hit is never a coincidence.
SECRETS = {
    "target bearer token": "tgtbearer-7Hq2xV9mKp4Lw8Zr",
    "target basic-auth password": "tgtbasicpw-3Nf6tY1cRj5Gs0Db",
    "oauth2 client secret": "oauthsecret-9Vm2Kx7Qp4Tz1Wc",
    "oauth2 access token": "oauthtoken-5Rb8Hn3Ls6Jd2Fy",
    "refused job's bearer token": "refusedtok-1Ck4Pw7Ux0Ea9Mg",
    "pyroscope password (password_file)": "pyropasswd-8Dz3Gv6Bn1Sq5Xh",
    "pyroscope bearer token": "pyrotoken-2Yt9Jm4Wf7Lk0Ar",
    "redis password": "redispass-6Ue1Qc8Zx3Vb5Np",
    "flower password": "flowerpw-4Ks7Rd2Hy9Tm6Gw",
}
TARGET_USER, OAUTH_CLIENT_ID, PYRO_USER, FLOWER_USER = "scraper", "scraper-client", "pyro-user", "admin"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------- servers that check credentials

Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]]


class Server:
    """A loopback HTTP server answering with ``handle(method, path, headers, body)``; counts 200s per path."""

    def __init__(self, handle: Handler) -> None:
        self.ok: dict[str, int] = {}
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                status, content_type, answer = handle(self.command, path,
                                                      {k.lower(): v for k, v in self.headers.items()}, body)
                if status == 200:
                    server.ok[path] = server.ok.get(path, 0) + 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _serve  # noqa: N815 - http.server's names

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def pprof_target(expected_authorization: str) -> Server:
    """Serves Go's pprof bodies to requests carrying ``expected_authorization``; anything else gets a
    401 that echoes the Authorization header it got."""

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        got = headers.get("authorization", "")
        if got != expected_authorization:
            return 401, "text/plain", f"401 Unauthorized: you sent Authorization: {got!r}\n".encode()
        name = GO_BODIES.get(path)
        if name is None:
            return 404, "text/plain", b"404 page not found\n"
        return 200, "application/octet-stream", (DATA / name).read_bytes()

    return Server(handle)


def token_endpoint() -> Server:
    """OAuth2's client-credentials grant: a token for the right client id and secret only."""
    client = basic(OAUTH_CLIENT_ID, SECRETS["oauth2 client secret"])

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        form = parse_qs(body.decode())
        if method != "POST" or headers.get("authorization") != client or form.get("grant_type") != ["client_credentials"]:
            return 401, "application/json", b'{"error": "invalid_client"}'
        token = {"access_token": SECRETS["oauth2 access token"], "token_type": "bearer", "expires_in": 3600}
        return 200, "application/json", json.dumps(token).encode()

    return Server(handle)


# --------------------------------------------------------------------------- looking for secrets


def base64_forms(secret: str) -> list[str]:
    """The base64 text that any base64 encoding of ``secret`` contains, at each of the three byte
    alignments, in the standard and the URL-safe alphabet."""
    forms = []
    raw = secret.encode()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        first_group = -(-shift // 3)  # the first 3-byte group that holds secret bytes only
        last_group = (shift + len(raw)) // 3
        core = encoded[first_group * 4:last_group * 4]
        forms += [core, core.replace("+", "-").replace("/", "_")]
    return forms


SEARCHED = {name: [secret, *base64_forms(secret)] for name, secret in SECRETS.items()}
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def leaves(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def layers(where: str, data: object, depth: int = 0) -> Iterator[tuple[str, str]]:
    """``data`` as text, then everything that decodes out of it (JSON, msgpack, base64 runs), recursively."""
    if isinstance(data, str):
        raw = data.encode()
    elif isinstance(data, bytes):
        raw = data
    else:
        raw = repr(data).encode()
    yield where, raw.decode("utf-8", "replace")
    if depth >= 5:
        return
    structure: object = None
    try:
        structure = json.loads(raw)
        kind = "json"
    except ValueError:
        try:
            structure = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            kind = "msgpack"
        except Exception:  # noqa: BLE001, S110 - msgpack raises many kinds on random bytes: not a structure
            pass
    if isinstance(structure, (dict, list)):
        for leaf in leaves(structure):
            if isinstance(leaf, (str, bytes)):
                yield from layers(f"{where} > {kind}", leaf, depth + 1)
        return  # its strings are looked into one by one: scanning the whole text again would repeat that
    for run in _BASE64_RUN.findall(raw):
        try:
            decoded = base64.b64decode(run + b"=" * (-len(run) % 4), altchars=b"-_" if b"-" in run or b"_" in run else None)
        except (binascii.Error, ValueError):
            continue
        yield from layers(f"{where} > base64", decoded, depth + 1)


def leaks(where: str, data: object) -> list[str]:
    found = []
    for layer, text in layers(where, data):
        for name, forms in SEARCHED.items():
            hit = next((form for form in forms if form in text), None)
            if hit is not None:
                at = text.index(hit)
                found.append(f"{name} in {layer}: ...{text[max(0, at - 120):at + len(hit) + 40]!r}...")
    return found


def redis_contents(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key and every value in the database, read according to its type."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        where = f"redis {kind} {key.decode(errors='replace')!r}"
        yield f"redis key {key!r}", key
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        elif kind == "stream":
            values = [item for _, fields in client.xrange(key) for pair in fields.items() for item in pair]
        else:
            values = []
        for value in values:
            if value is not None:
                yield where, value


# --------------------------------------------------------------------------- the system


@dataclass
class System:
    redis_url: str
    client: redis.Redis
    env: dict[str, str]
    config: Path
    store: Path
    http_port: int
    flower_url: str
    targets: dict[str, Server]
    pyro_basic: PyroscopeStandIn
    pyro_bearer: PyroscopeStandIn
    procs: dict[str, Proc]

    def flower(self, path: str) -> requests.Response:
        response = requests.get(self.flower_url + path, auth=(FLOWER_USER, SECRETS["flower password"]), timeout=10)
        response.raise_for_status()
        return response

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=60, cwd=self.config.parent)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of its own that wants a password."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", "", "--appendonly", "no", "--requirepass", SECRETS["redis password"]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://:{SECRETS['redis password']}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=15, message="the password-protected redis-server to answer")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def write_config(path: Path, store: Path, password_file: Path, targets: dict[str, Server],
                 pyro_basic: PyroscopeStandIn, pyro_bearer: PyroscopeStandIn) -> None:
    common = f"""\
    scrape_interval: {INTERVAL_S}s
    scrape_timeout: {INTERVAL_S}s
    profiling_config:
      profile.block: {{enabled: false}}
      profile.mutex: {{enabled: false}}
      profile.process_cpu: {{enabled: false}}"""
    path.write_text(f"""\
scrape:
  bearer:
    targets: [{{__address__: "{targets['bearer'].address}", app: bearer-app}}]
    forward_to: [pyro_basic]
    http_client_config:
      bearer_token: "{SECRETS['target bearer token']}"
{common}
  basic:
    targets: [{{__address__: "{targets['basic'].address}", app: basic-app}}]
    forward_to: [pyro_bearer]
    http_client_config:
      basic_auth: {{username: {TARGET_USER}, password: "{SECRETS['target basic-auth password']}"}}
{common}
  oauth:
    targets: [{{__address__: "{targets['oauth'].address}", app: oauth-app}}]
    forward_to: [files]
    http_client_config:
      oauth2:
        client_id: {OAUTH_CLIENT_ID}
        client_secret: "{SECRETS['oauth2 client secret']}"
        token_url: "http://{targets['token'].address}/oauth2/token"
        scopes: [profiles.read]
{common}
  refused:
    targets: [{{__address__: "{targets['bearer'].address}", app: refused-app}}]
    forward_to: [files]
    http_client_config:
      bearer_token: "{SECRETS["refused job's bearer token"]}"
{common}
write:
  pyro_basic:
    type: pyroscope
    url: {pyro_basic.url}
    basic_auth: {{username: {PYRO_USER}, password_file: "{password_file}"}}
  pyro_bearer:
    type: pyroscope
    url: {pyro_bearer.url}
    bearer_token: "{SECRETS['pyroscope bearer token']}"
    remote_timeout: 5s
  files: {{type: file, path: "{store}"}}
""")


@pytest.fixture
def system(tmp_path: Path, secured_redis: str) -> Iterator[System]:
    targets = {
        "bearer": pprof_target(f"Bearer {SECRETS['target bearer token']}"),
        "basic": pprof_target(basic(TARGET_USER, SECRETS["target basic-auth password"])),
        "oauth": pprof_target(f"Bearer {SECRETS['oauth2 access token']}"),
        "token": token_endpoint(),
    }
    password_file = tmp_path / "pyroscope_password"
    password_file.write_text(SECRETS["pyroscope password (password_file)"] + "\n")
    password_file.chmod(0o600)
    store, config = tmp_path / "profiles", tmp_path / "scraper.yaml"
    procs: dict[str, Proc] = {}
    with PyroscopeStandIn(basic_auth=(PYRO_USER, SECRETS["pyroscope password (password_file)"])) as pyro_basic, \
            PyroscopeStandIn(bearer_token=SECRETS["pyroscope bearer token"]) as pyro_bearer:
        write_config(config, store, password_file, targets, pyro_basic, pyro_bearer)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPER_", "FLOWER_"))}
        env.update(SCRAPER_BROKER_URL=secured_redis, SCRAPER_CONFIG=str(config), SCRAPER_LOG_LEVEL="DEBUG")
        http_port, flower_port = free_port(), free_port()
        celery = [sys.executable, "-m", "celery", "-A", "worker"]
        try:
            procs["worker"] = Proc("worker", celery + [
                "worker", "-P", "gevent", "-c", "20", "-Q", "scrape,push", "-n", "worker@%h", "-l", "DEBUG",
                "--without-mingle", "--without-gossip"], {**env, "SCRAPER_HTTP_PORT": str(http_port)}, tmp_path)
            procs["worker"].wait_for_output("ready.")
            procs["beat"] = Proc("beat", celery + ["beat", "-l", "DEBUG", "--pidfile="], env, tmp_path)
            # The login comes from the environment, as docs/flower.md says: not on the command line.
            procs["flower"] = Proc("flower", celery + [
                "flower", f"--port={flower_port}", "--address=127.0.0.1", "--logging=debug", "--read_only",
                "--max-tasks=10000"], {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{SECRETS['flower password']}"},
                tmp_path)
            procs["flower"].wait_for_output("Visit me at")
            yield System(secured_redis, connect_redis(secured_redis), env, config, store, http_port,
                         f"http://127.0.0.1:{flower_port}", targets, pyro_basic, pyro_bearer, procs)
        finally:
            for proc in procs.values():
                proc.stop()
            for server in targets.values():
                server.close()


# --------------------------------------------------------------------------- the test


def task_rows(system: System) -> dict[str, dict]:
    return system.flower("/api/tasks?limit=10000").json()


def test_no_secret_reaches_redis_flower_logs_metrics_or_cli_output(system: System) -> None:
    seen: list[tuple[str, object]] = []

    # The credentials work: profiles flow through every job that has the right ones.
    wait_until(lambda: system.pyro_basic.pushes and system.pyro_bearer.pushes and list(system.store.rglob("*.json")),
               timeout=6 * INTERVAL_S + 20, message="profiles at both Pyroscope stand-ins and in the file store")
    assert {s.label_dict["job"] for r in system.pyro_basic.pushes for s in r.series} == {"bearer"}
    assert {s.label_dict["job"] for r in system.pyro_bearer.pushes for s in r.series} == {"basic"}
    assert {json.loads(p.read_text())["labels"]["job"] for p in system.store.rglob("*.json")} == {"oauth"}
    assert system.targets["token"].ok, "the oauth2 job never got a token"

    # Flower sees every kind of task, the refused job's errors among them.
    def flower_rows() -> tuple[dict, dict, list[dict]] | None:
        rows = task_rows(system).values()
        scrapes = [r for r in rows if r["name"] == "scraper.scrape" and r["state"] == "SUCCESS"
                   and r["args"].startswith("bearer ")]
        pushes = [r for r in rows if r["name"] == "scraper.push" and r["state"] == "SUCCESS"
                  and r["args"].startswith("pyro_basic ")]
        down = [r for r in rows if "down (http_status)" in (r["result"] or "")]
        return (scrapes[0], pushes[0], down) if scrapes and pushes and down else None

    scrape_row, push_row, down_rows = wait_until(flower_rows, timeout=6 * INTERVAL_S + 20,
                                                 message="Flower to show a scrape, a push and a 401")
    assert re.fullmatch(rf"bearer {system.targets['bearer'].address} (memory|goroutine)(,(memory|goroutine))* "
                        r"@\d\d:\d\d:\d\d\.\d{3}Z", scrape_row["args"])
    assert scrape_row["kwargs"] == "{}"
    assert push_row["args"].startswith(f"pyro_basic bearer {system.targets['bearer'].address} ")

    # A push held by its receiver sits in Redis's unacked hash, whole: look at Redis then.
    release = system.pyro_bearer.hold()
    held_from = len(system.pyro_bearer.requests)
    wait_until(lambda: len(system.pyro_bearer.requests) > held_from and system.client.hlen("unacked"),
               timeout=6 * INTERVAL_S, message="a push held in flight")
    seen += list(redis_contents(system.client))
    release.set()

    for row_id in [scrape_row["uuid"], push_row["uuid"],
                   *[r["uuid"] for r in down_rows[:3]]]:
        seen.append((f"flower /api/task/info/{row_id}", system.flower(f"/api/task/info/{row_id}").text))
        seen.append((f"flower page /task/{row_id}", system.flower(f"/task/{row_id}").text))
    for path in ("/api/tasks?limit=10000", "/api/workers?refresh=1", "/api/task/types", "/api/queues/length",
                 "/workers", "/tasks", "/broker", "/metrics", "/healthcheck"):
        seen.append((f"flower {path}", system.flower(path).text))
    worker_name = next(iter(system.flower("/api/workers").json()))
    seen.append((f"flower page /worker/{worker_name}", system.flower(f"/worker/{worker_name}").text))

    http = f"http://127.0.0.1:{system.http_port}"
    for path in ("/", "/metrics", "/targets", "/targets?health=down", "/-/ready"):
        seen.append((f"worker http {path}", requests.get(http + path, timeout=10).text))
    down = system.cli("targets", "--json", "--health", "down")
    assert "401 Unauthorized" in down, "the refused job's error is not recorded"
    for args in (["targets", "--json"], ["targets"], ["targets", "--dropped", "--json"], ["deadletter", "list"],
                 ["plan", str(system.config), "--json"], ["plan", str(system.config)], ["check", str(system.config)]):
        seen.append((f"pprof-scraper {' '.join(args)}", system.cli(*args)))
    seen += [(f"file store {p.name}", p.read_bytes()) for p in system.store.rglob("*.json")]
    for name, proc in system.procs.items():
        seen.append((f"{name} command line", Path(f"/proc/{proc.process.pid}/cmdline").read_bytes()))

    # With the worker gone, beat's scrape messages wait in the queue's list: look at Redis again.
    system.procs["worker"].stop()
    wait_until(lambda: system.client.llen("scrape"), timeout=4 * INTERVAL_S, message="scrape messages queued")
    seen += list(redis_contents(system.client))
    for proc in system.procs.values():
        proc.stop()
        seen.append((f"{proc.name} log", proc.output()))

    # The search looked where it matters: Celery message bodies decoded, logs at debug level.
    decoded = [text for where, data in seen if where.startswith("redis") for layer, text in layers(where, data)
               if layer.endswith("> base64")]
    assert any('"pyro_bearer"' in text for text in decoded), "no push message body was decoded from Redis"
    addresses = [server.address for server in system.targets.values()]
    assert any(a in text for text in decoded for a in addresses), "no scrape message body was decoded from Redis"
    for name in ("worker", "beat"):
        assert " DEBUG " in system.procs[name].output(), f"{name} log is not at debug level"
    assert "[D " in system.procs["flower"].output(), "flower log is not at debug"

    found = [leak for where, data in seen for leak in leaks(where, data)]
    assert not found, "secrets leaked:\n" + "\n".join(found)
