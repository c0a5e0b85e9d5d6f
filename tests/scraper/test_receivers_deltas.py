"""What each receiver gets of a cumulative profile: Pyroscope its delta marked ``__delta__="false"``,
the file store the profile as the target served it; and a baseline scrape shows in the target status."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import redis

from scraper import status
from scraper._proto import profile_pb2
from scraper.config import parse_config
from scraper.errors import PushRejected
from scraper.plan import ScrapeSpec
from scraper.receivers import Profile, build_receiver
from scraper.status import read_statuses
from tests.conftest import DATA
from tests.pyroscope_standin import PyroscopeStandIn

SERVED = (DATA / "go/allocs_2.pb.gz").read_bytes()
DELTA = (DATA / "go/allocs_delta_1.pb.gz").read_bytes()
LABELS = {"job": "api", "instance": "10.0.0.7:6060", "service_name": "api", "__name__": "memory"}


def cumulative(delta: bytes | None = DELTA, **fields: object) -> Profile:
    return Profile(id="p1", labels=dict(LABELS), body=SERVED, start=1_767_225_600.0, end=1_767_225_600.5,
                   url="http://10.0.0.7:6060/debug/pprof/allocs", cumulative=["alloc_objects", "alloc_space"],
                   is_delta=delta is not None, delta=delta, **fields)


def receiver(name: str, settings: dict[str, object]):
    return build_receiver(name, parse_config({"write": {name: settings}}).write[name])


@pytest.mark.parametrize("api", ["push", "ingest"])
def test_pyroscope_gets_the_delta_of_a_cumulative_profile(api: str) -> None:
    with PyroscopeStandIn() as pyroscope:
        receiver("pyro", {"type": "pyroscope", "url": pyroscope.url, "api": api}).push(cumulative())
    (request,) = pyroscope.pushes
    sent = request.series[0].samples[0].profile if api == "push" else request.profile
    assert sent == profile_pb2.Profile.FromString(gzip.decompress(DELTA))


def test_a_pushed_cumulative_profile_carries_delta_false_and_no_other_double_underscore_label() -> None:
    with PyroscopeStandIn() as pyroscope:
        receiver("pyro", {"type": "pyroscope", "url": pyroscope.url}).push(cumulative())
    labels = pyroscope.pushes[0].series[0].labels
    assert ("__delta__", "false") in labels
    assert [name for name, _ in labels if name.startswith("__")] == ["__delta__", "__name__"]


def test_a_godeltaprof_profile_is_pushed_as_served_with_delta_false() -> None:
    profile = Profile(id="p2", labels=dict(LABELS), body=DELTA, start=1.0, end=2.0,
                      url="http://10.0.0.7:6060/debug/pprof/delta_heap", is_delta=True)
    with PyroscopeStandIn() as pyroscope:
        receiver("pyro", {"type": "pyroscope", "url": pyroscope.url}).push(profile)
    series = pyroscope.pushes[0].series[0]
    assert series.samples[0].raw_profile == DELTA
    assert series.label_dict["__delta__"] == "false"


def test_a_baseline_scrape_has_nothing_for_pyroscope() -> None:
    with PyroscopeStandIn() as pyroscope, pytest.raises(PushRejected, match="nothing to send"):
        receiver("pyro", {"type": "pyroscope", "url": pyroscope.url}).push(cumulative(delta=None))
    assert not pyroscope.requests


def test_the_file_store_keeps_the_served_totals_and_says_which_sample_types_are_cumulative(tmp_path: Path) -> None:
    store = receiver("files", {"type": "file", "path": str(tmp_path)})
    store.push(cumulative())
    (sidecar_path,) = tmp_path.rglob("*.json")
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["cumulative"] == ["alloc_objects", "alloc_space"]
    assert sidecar["labels"] == dict(sorted(LABELS.items()))
    assert next(tmp_path.rglob("*.pb.gz")).read_bytes() == SERVED


def test_a_scrape_that_became_the_baseline_says_so_in_the_target_status(redis_client: redis.Redis) -> None:
    spec = ScrapeSpec(job="api", profile_type="memory", url="http://10.0.0.7:6060/debug/pprof/allocs",
                      labels=dict(LABELS), target_labels={"__address__": "10.0.0.7:6060"}, interval_s=15,
                      timeout_s=15, offset_s=0, forward_to=("pyro",), key="k1")
    status.register_specs(redis_client, [spec])
    status.record_scrape(redis_client, spec, start=1.0, duration=0.1, error=None, worker="w:1", delta="first")
    (recorded,) = read_statuses(redis_client)
    assert recorded.delta == "first"
    assert recorded.delta_note == "baseline: first scrape of this series, nothing pushed to Pyroscope yet"
    status.record_scrape(redis_client, spec, start=16.0, duration=0.1, error=None, worker="w:1", delta="delta")
    assert read_statuses(redis_client)[0].delta_note is None
