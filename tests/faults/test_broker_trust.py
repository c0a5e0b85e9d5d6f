"""The broker is the trust boundary. Workers never unpickle what they find in Redis; with
``SCRAPER_SECURITY_*`` set they run only messages signed by a certificate in their store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme

from scraper.config import load_config
from scraper.plan import spec_for
from scraper.scrape import push_id
from scraper.settings import Settings
from scraper.status import TargetHealth
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import PprofTarget
from tests.faults.support import BUILTIN_OFF, status_of, stored_ids, write_config
from worker.celery_app import create_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
INTERVAL_S = 2

#: Sends one scrape task the way any process of the project does, with its SCRAPER_* environment.
SEND = """
import json, sys
from worker.celery_app import app
job, address, scheduled_at = json.loads(sys.argv[1])
app.send_task("scraper.scrape", args=(job, "goroutine", {"__address__": address}, scheduled_at), queue="scrape")
"""


class Unpickled:
    """Creates a file when unpickled: what a malicious pickle in the queue would do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.path,)


@dataclass
class Bench:
    target: PprofTarget
    store: Path
    config: Path
    env: dict[str, str]
    redis: redis.Redis
    worker: Proc

    def send(self, scheduled_at: float, *, unsigned: bool = False, **env: str) -> None:
        """Send a scrape of the target for ``scheduled_at`` from another process, with ``env`` added
        to this bench's environment, or with its signing settings taken out (``unsigned``)."""
        full = {k: v for k, v in {**self.env, **env}.items() if not (unsigned and k.startswith("SCRAPER_SECURITY_"))}
        subprocess.run([sys.executable, "-c", SEND, json.dumps(["demo", self.target.address, scheduled_at])],
                       env=full, cwd=REPO, check=True, timeout=30)

    def stored(self, scheduled_at: float) -> bool:
        spec = spec_for(load_config(self.config), "demo", {"__address__": self.target.address}, "goroutine")
        return push_id(spec, scheduled_at) in stored_ids(self.store)


def _bench(tmp: Path, redis_url: str, **env: str) -> tuple[Bench, PprofTarget]:
    target = PprofTarget().start()
    store = tmp / "profiles"
    config = write_config(
        tmp / "config.yaml",
        {"demo": {"targets": [{"__address__": target.address}], "forward_to": ["files"],
                  "scrape_interval": f"{INTERVAL_S}s",
                  "profiling_config": {**BUILTIN_OFF, "profile.goroutine": {"enabled": True}}}},
        {"files": {"type": "file", "path": str(store)}})
    full_env = scraper_env(redis_url, config, **env)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return Bench(target, store, config, full_env, client, start_worker(full_env, tmp)), target


@pytest.fixture(scope="module")
def plain(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    bench, target = _bench(tmp_path_factory.mktemp("plain"), redis_url)
    try:
        yield bench
    finally:
        bench.worker.stop()
        target.stop()


def test_a_pickled_message_is_refused_unopened_and_the_worker_goes_on(plain: Bench, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    app = create_app(Settings(broker_url=plain.env["SCRAPER_BROKER_URL"], config=plain.config))
    app.send_task("scraper.scrape", args=("demo", "goroutine", {"__address__": plain.target.address}, 1.0),
                  kwargs={"payload": Unpickled(marker)}, serializer="pickle", queue="scrape")
    plain.worker.wait_for_output("Refusing to deserialize untrusted content of type pickle", timeout=10)
    assert not marker.exists()
    assert plain.redis.llen("scrape") == 0, "dropped, not left in the queue to come back"

    plain.send(2.0)
    wait_until(lambda: plain.stored(2.0), timeout=10, message="a JSON message sent after it to be run")
    assert plain.worker.process.poll() is None


def _signer(ca: trustme.CA, name: str, directory: Path) -> dict[str, str]:
    """SCRAPER_SECURITY_* for a new RSA key and certificate, trusting the certificates in ``directory``."""
    leaf = ca.issue_cert(f"{name}.pprof-scraper.test", key_type=trustme.KeyType.RSA)
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    return {"SCRAPER_SECURITY_KEY": str(key), "SCRAPER_SECURITY_CERTIFICATE": str(cert)}


@dataclass
class SignedBench:
    bench: Bench
    trusted: dict[str, str]
    stranger: dict[str, str]


@pytest.fixture(scope="module")
def signed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedBench]:
    tmp = tmp_path_factory.mktemp("signed")
    keys, store = tmp / "keys", tmp / "trusted"
    keys.mkdir()
    store.mkdir()
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    trusted = {**_signer(ca, "scraper", keys), "SCRAPER_SECURITY_CERT_STORE": str(store)}
    os.link(trusted["SCRAPER_SECURITY_CERTIFICATE"], store / "scraper.pem")
    stranger = {**_signer(ca, "stranger", keys), "SCRAPER_SECURITY_CERT_STORE": str(store)}
    bench, target = _bench(tmp, redis_url, **trusted)
    beat = start_beat(bench.env, tmp)
    try:
        yield SignedBench(bench, trusted, stranger)
    finally:
        beat.stop()
        bench.worker.stop()
        target.stop()


def test_with_signing_beat_and_workers_sign_and_verify_every_scrape(signed: SignedBench) -> None:
    bench = signed.bench
    wait_until(lambda: len(stored_ids(bench.store)) >= 2, timeout=4 * INTERVAL_S + 10,
               message="profiles from signed scrapes")
    assert status_of(bench.redis, "demo", "goroutine").health == TargetHealth.UP
    assert "Refusing" not in bench.worker.output()


def test_with_signing_a_message_signed_by_a_trusted_key_is_run(signed: SignedBench) -> None:
    signed.bench.send(3.0, **signed.trusted)
    wait_until(lambda: signed.bench.stored(3.0), timeout=10, message="the signed scrape's profile")


def test_with_signing_an_unsigned_message_is_refused(signed: SignedBench) -> None:
    bench = signed.bench
    bench.send(4.0, unsigned=True)
    bench.worker.wait_for_output("Refusing to deserialize untrusted content of type json", timeout=10)
    assert not bench.stored(4.0)


def test_with_signing_a_message_signed_by_a_key_not_in_the_store_is_refused(signed: SignedBench) -> None:
    bench = signed.bench
    bench.send(5.0, **signed.stranger)
    bench.worker.wait_for_output("Unknown certificate", timeout=10)
    assert not bench.stored(5.0)
    assert bench.worker.process.poll() is None
