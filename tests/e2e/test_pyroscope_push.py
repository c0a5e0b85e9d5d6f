"""What reaches Pyroscope from real processes: the labels `pprof-scraper plan` shows, discovered
targets included; what Pyroscope would refuse is dead-lettered at once with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from scraper import delivery
from tests.conftest import wait_until
from tests.e2e.processes import Proc, scraper_env, start_beat, start_worker
from tests.fakes import pprof_target
from tests.pyroscope_standin import PyroscopeStandIn

pytestmark = pytest.mark.slow

INTERVAL_S = 3
CLI = str(Path(sys.executable).parent / "pprof-scraper")


def test_discovered_pods_keep_their_inferred_service_names_and_the_plans_labels_up_to_pyroscope(
        tmp_path: Path, redis_url: str, procs: list[Proc]) -> None:
    with pprof_target() as cart, pprof_target() as web, PyroscopeStandIn() as pyroscope:
        # Two pods of one job, as Kubernetes discovery describes them; file_sd carries the metadata
        # as plain labels and relabeling turns them into the __meta_kubernetes_* labels Alloy reads.
        (tmp_path / "pods.json").write_text(json.dumps([
            {"targets": [cart.address], "labels": {"ns": "shop", "container": "cart"}},
            {"targets": [web.address], "labels": {"ns": "shop", "container": "web"}},
        ]))
        config = tmp_path / "c.yaml"
        config.write_text(f"""
scrape:
  k8s:
    file_sd_configs: [{{files: ["{tmp_path}/pods.json"]}}]
    relabel_configs:
      - {{source_labels: [ns], target_label: __meta_kubernetes_namespace}}
      - {{source_labels: [container], target_label: __meta_kubernetes_pod_container_name}}
      - {{action: labeldrop, regex: "ns|container"}}
    forward_to: [pyroscope]
    scrape_interval: {INTERVAL_S}s
    profiling_config: {{profile.process_cpu: {{enabled: false}}, profile.memory: {{enabled: false}},
                        profile.block: {{enabled: false}}, profile.mutex: {{enabled: false}}}}
write:
  pyroscope: {{type: pyroscope, url: "{pyroscope.url}"}}
""")
        planned = subprocess.run([CLI, "plan", str(config), "--json"], check=False, capture_output=True, text=True, timeout=60)
        assert planned.returncode == 0, planned.stderr
        plan_labels = sorted(sorted(json.loads(line)["labels"].items()) for line in planned.stdout.splitlines())
        assert sorted(dict(labels)["service_name"] for labels in plan_labels) == ["shop/cart", "shop/web"]

        env = scraper_env(redis_url, config)
        procs.append(start_worker(env, tmp_path))
        procs.append(start_beat(env, tmp_path))

        def pushed() -> list[list[tuple[str, str]]]:
            return sorted({tuple(s.labels) for r in pyroscope.pushes for s in r.series}, key=list)

        wait_until(lambda: len(pushed()) >= 2, timeout=2 * INTERVAL_S + 20,
                   message="a push from each discovered pod")
        assert [list(labels) for labels in pushed()] == plan_labels


def test_a_profile_over_the_receivers_max_samples_is_dead_lettered_at_once_with_the_reason(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, procs: list[Proc]) -> None:
    with pprof_target() as target, PyroscopeStandIn() as pyroscope:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
scrape:
  api:
    targets: [{{__address__: "{target.address}"}}]
    forward_to: [pyroscope]
    scrape_interval: {INTERVAL_S}s
    profiling_config: {{profile.process_cpu: {{enabled: false}}, profile.memory: {{enabled: false}},
                        profile.block: {{enabled: false}}, profile.mutex: {{enabled: false}}}}
write:
  pyroscope: {{type: pyroscope, url: "{pyroscope.url}", max_samples: 1}}
""")
        env = scraper_env(redis_url, config)
        procs.append(start_worker(env, tmp_path))
        procs.append(start_beat(env, tmp_path))
        [entry, *_] = wait_until(lambda: delivery.list_dead_letters(redis_client), timeout=2 * INTERVAL_S + 20,
                                 message="the goroutine profile in the dead-letter list")
        assert entry.attempts == 1
        assert "not sent, Pyroscope would refuse it" in entry.error and "more than max_samples (1)" in entry.error
        assert pyroscope.requests == []
