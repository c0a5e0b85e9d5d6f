"""Service discovery against real sources: files on disk, an HTTP SD server, a DNS server and a
Kubernetes API stand-in, all on 127.0.0.1; then resolve_targets and the plan."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import yaml

from scraper.config import ConfigError, ScrapeJob, parse_config
from scraper.discovery import (
    DiscoveryError,
    DNSSDConfig,
    FileSDConfig,
    HTTPSDConfig,
    KubernetesSDConfig,
    build_discoverers,
    resolve_targets,
)
from scraper.discovery.dns import DNSDiscovery
from scraper.discovery.file import FileDiscovery
from scraper.discovery.http import HTTPDiscovery
from scraper.discovery.kubernetes import KubernetesDiscovery
from scraper.plan import make_plan, plan

# --------------------------------------------------------------------------- a JSON HTTP server


Route = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, Any, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _JSONServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append((parts.path, parts.query, headers))
        status, body, content_type = self.server.route(parts.path, parse_qs(parts.query), headers)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _JSONServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, route: Route) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.route = route
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def serve() -> Iterator[Callable[[Route], _JSONServer]]:
    servers: list[_JSONServer] = []

    def start(route: Route) -> _JSONServer:
        server = _JSONServer(route)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- file_sd


def test_file_sd_reads_json_and_yaml_groups_with_their_labels_and_path(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([
        {"targets": ["10.0.0.1:6060", "10.0.0.2:6060"], "labels": {"env": "prod", "__address__": "ignored"}},
        {"targets": ["10.0.0.3:6060"]},
    ]))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump([{"targets": ["10.0.1.1:6060"], "labels": {"env": "dev"}}]))
    (tmp_path / "c.txt").write_text("not matched")
    discovery = FileDiscovery(FileSDConfig(files=[str(tmp_path / "*.json"), str(tmp_path / "*.yaml")]))

    targets = discovery.refresh()

    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.yaml")
    assert targets == [
        {"env": "prod", "__address__": "10.0.0.1:6060", "__meta_filepath": a},
        {"env": "prod", "__address__": "10.0.0.2:6060", "__meta_filepath": a},
        {"__address__": "10.0.0.3:6060", "__meta_filepath": a},
        {"env": "dev", "__address__": "10.0.1.1:6060", "__meta_filepath": b},
    ]
    assert discovery.last_error is None
    assert discovery.refresh_interval == 300.0


def test_file_sd_changed_sees_rewrites_new_files_and_removals_by_stat(tmp_path: Path) -> None:
    first = tmp_path / "one.json"
    first.write_text(json.dumps([{"targets": ["h1:1"]}]))
    discovery = FileDiscovery(FileSDConfig(files=[str(tmp_path / "*.json")], refresh_interval="1h"))
    discovery.refresh()
    assert not discovery.changed()
    assert not discovery.due(discovery.last_refresh + 10)  # type: ignore[operator]

    first.write_text(json.dumps([{"targets": ["h1:1", "h2:2"]}]))
    os.utime(first, ns=(1, 1))  # a different mtime even on a coarse clock
    assert discovery.changed()
    assert discovery.due(discovery.last_refresh + 10)  # type: ignore[operator]
    assert [t["__address__"] for t in discovery.refresh()] == ["h1:1", "h2:2"]
    assert not discovery.changed()

    (tmp_path / "two.json").write_text(json.dumps([{"targets": ["h3:3"]}]))
    assert discovery.changed()
    assert [t["__address__"] for t in discovery.refresh()] == ["h1:1", "h2:2", "h3:3"]

    first.unlink()
    assert discovery.changed()
    assert [t["__address__"] for t in discovery.refresh()] == ["h3:3"]


def test_file_sd_a_broken_file_keeps_its_last_good_targets_and_says_why(tmp_path: Path) -> None:
    good, other = tmp_path / "good.yml", tmp_path / "other.yml"
    good.write_text("- targets: ['h1:1']\n")
    other.write_text("- targets: ['h2:2']\n")
    discovery = FileDiscovery(FileSDConfig(files=[str(tmp_path / "*.yml")]))
    discovery.refresh()

    good.write_text("- targets: ['h1:1'\n")  # broken YAML
    other.write_text("- targets: ['h2:2', 'h4:4']\n")
    with pytest.raises(DiscoveryError, match=r"file_sd .*good\.yml: not valid YAML"):
        discovery.refresh()
    assert [t["__address__"] for t in discovery.targets] == ["h1:1", "h2:2", "h4:4"]
    assert "good.yml" in (discovery.last_error or "")

    good.write_text(json.dumps({"targets": ["h1:1"]}))  # valid YAML, wrong shape
    with pytest.raises(DiscoveryError, match="expected a list of target groups, got dict"):
        discovery.refresh()

    good.write_text("- targets: ['h5:5']\n")
    assert [t["__address__"] for t in discovery.refresh()] == ["h5:5", "h2:2", "h4:4"]
    assert discovery.last_error is None


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"targets": "h:1"}], r"\.targets must be a list of strings"),
        ([{"targets": ["h:1"], "labels": {"a": 1}}], r"\.labels must map strings to strings"),
        ([{"targets": ["h:1"], "label": {}}], "unknown key"),
        (["h:1"], r"target group \[0\] is not a mapping"),
    ],
)
def test_file_sd_names_what_is_wrong_with_a_group(tmp_path: Path, groups: Any, message: str) -> None:
    (tmp_path / "t.json").write_text(json.dumps(groups))
    with pytest.raises(DiscoveryError, match=message):
        FileDiscovery(FileSDConfig(files=[str(tmp_path / "t.json")])).refresh()


def _file_sd(tmp_path: Path, name: str, text: str) -> FileDiscovery:
    (tmp_path / name).write_text(text)
    return FileDiscovery(FileSDConfig(files=[str(tmp_path / name)]))


def test_file_sd_yaml_label_values_are_strings_as_written_as_in_prometheus(tmp_path: Path) -> None:
    discovery = _file_sd(tmp_path, "t.yml", "- targets: [h:1]\n  labels: {port: 8080, debug: true, ratio: 1.50, none: ~}\n")
    [target] = discovery.refresh()
    assert {k: target[k] for k in ("port", "debug", "ratio", "none")} == {
        "port": "8080", "debug": "true", "ratio": "1.50", "none": ""}


def test_file_sd_a_json_number_as_a_label_value_refuses_the_file_as_in_prometheus(tmp_path: Path) -> None:
    discovery = _file_sd(tmp_path, "t.json", '[{"targets": ["h:1"], "labels": {"port": 8080}}]')
    with pytest.raises(DiscoveryError, match=r"\.labels must map strings to strings"):
        discovery.refresh()


def test_file_sd_an_empty_target_is_dropped_alone_for_having_no_address(tmp_path: Path) -> None:
    discovery = _file_sd(tmp_path, "t.yml", "- targets: ['h:1', '', 'h:2']\n")
    job = ScrapeJob.model_validate({"forward_to": ["store"], "file_sd_configs": [{"files": ["unused.yml"]}]})
    kept, dropped = resolve_targets(job, discovery.refresh())
    assert [t["__address__"] for t in kept] == ["h:1", "h:2"]
    assert [d.reason for d in dropped] == ["no __address__ after relabeling"]


def test_file_sd_a_key_given_twice_refuses_the_file_as_in_prometheus(tmp_path: Path) -> None:
    discovery = _file_sd(tmp_path, "t.yml", "- targets: ['h:1']\n  labels: {env: a, env: b}\n")
    with pytest.raises(DiscoveryError, match=r"not valid YAML: key 'env' appears twice in one mapping"):
        discovery.refresh()
    assert discovery.targets == []


@pytest.mark.parametrize("pattern", ["targets/*.txt", "a/*/b.json", "targets"])
def test_file_sd_patterns_follow_prometheus_rules(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid file pattern"):
        FileSDConfig(files=[pattern])


# --------------------------------------------------------------------------- http_sd


@dataclass
class _HTTPSDState:
    status: int = 200
    body: Any = field(default_factory=list)
    content_type: str = "application/json"


def test_http_sd_reads_groups_sets_meta_url_and_sends_the_configured_credentials(
    serve: Callable[[Route], _JSONServer],
) -> None:
    state = _HTTPSDState(body=[{"targets": ["10.0.0.1:6060"], "labels": {"team": "a"}}, {"targets": []}])
    server = serve(lambda path, query, headers: (state.status, state.body, state.content_type))
    url = f"{server.url}/sd?zone=1"
    discovery = HTTPDiscovery(HTTPSDConfig(url=url, http_client_config={"bearer_token": "s3cret"}))

    assert discovery.refresh() == [{"team": "a", "__address__": "10.0.0.1:6060", "__meta_url": url}]
    path, query, headers = server.requests[-1]
    assert (path, query, headers["authorization"]) == ("/sd", "zone=1", "Bearer s3cret")
    assert discovery.refresh_interval == 60.0


def test_http_sd_a_failed_refresh_keeps_the_last_good_list_and_records_the_error(
    serve: Callable[[Route], _JSONServer],
) -> None:
    state = _HTTPSDState(body=[{"targets": ["h1:1", "h2:2"]}])
    server = serve(lambda path, query, headers: (state.status, state.body, state.content_type))
    discovery = HTTPDiscovery(HTTPSDConfig(url=f"{server.url}/sd"))
    good = discovery.refresh()

    state.status, state.body = 503, b"overloaded"
    with pytest.raises(DiscoveryError, match="HTTP 503"):
        discovery.refresh()
    assert discovery.targets == good
    assert "http_sd" in (discovery.last_error or "") and "503" in (discovery.last_error or "")

    state.status, state.body, state.content_type = 200, b"<html>", "text/html"
    with pytest.raises(DiscoveryError, match="Content-Type is 'text/html', expected application/json"):
        discovery.refresh()
    state.body, state.content_type = b"[{", "application/json; charset=utf-8"
    with pytest.raises(DiscoveryError, match="not valid JSON"):
        discovery.refresh()
    state.body = [None]
    with pytest.raises(DiscoveryError, match="null target group"):
        discovery.refresh()
    assert discovery.targets == good

    state.body = [{"targets": ["h3:3"]}]
    assert [t["__address__"] for t in discovery.refresh()] == ["h3:3"]
    assert discovery.last_error is None


def test_http_sd_an_unreachable_server_is_a_discovery_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    discovery = HTTPDiscovery(HTTPSDConfig(url=f"http://127.0.0.1:{port}/sd"))
    with pytest.raises(DiscoveryError, match=f"http_sd http://127.0.0.1:{port}/sd"):
        discovery.refresh()
    assert discovery.targets == []


def test_http_sd_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="url must be an http"):
        HTTPSDConfig(url="ftp://example.com/sd")


# --------------------------------------------------------------------------- dns_sd


class _DNSServer:
    """A UDP DNS server on 127.0.0.1 answering from ``records``; names in ``servfail`` fail."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()
        self.stopped = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            data, peer = self.sock.recvfrom(4096)
            if self.stopped:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            name, kind = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif (name, kind) in self.records:
                response.answer.append(dns.rrset.from_text_list(question.name, 30, "IN", kind, self.records[name, kind]))
            elif not any(known == name for known, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        # closing a socket does not wake a thread blocked in recvfrom: a last datagram does
        self.stopped = True
        self.sock.sendto(b"", self.sock.getsockname())
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[_DNSServer]:
    server = _DNSServer()
    yield server
    server.close()


def test_dns_sd_srv_records_become_targets_with_prometheus_labels(dns_server: _DNSServer) -> None:
    dns_server.records[("_pprof._tcp.example.com.", "SRV")] = [
        "0 5 6060 app-1.example.com.",
        "0 5 6061 app-2.example.com.",
    ]
    discovery = DNSDiscovery(DNSSDConfig(names=["_pprof._tcp.example.com"]), nameservers=[dns_server.address])

    targets = sorted(discovery.refresh(), key=lambda t: t["__address__"])

    assert targets == [
        {"__address__": "app-1.example.com:6060", "__meta_dns_name": "_pprof._tcp.example.com",
         "__meta_dns_srv_record_target": "app-1.example.com.", "__meta_dns_srv_record_port": "6060"},
        {"__address__": "app-2.example.com:6061", "__meta_dns_name": "_pprof._tcp.example.com",
         "__meta_dns_srv_record_target": "app-2.example.com.", "__meta_dns_srv_record_port": "6061"},
    ]
    assert discovery.refresh_interval == 30.0


def test_dns_sd_a_and_aaaa_records_take_the_configured_port(dns_server: _DNSServer) -> None:
    dns_server.records[("app.example.com.", "A")] = ["10.0.0.1", "10.0.0.2"]
    dns_server.records[("app.example.com.", "AAAA")] = ["fd00::1"]

    a = DNSDiscovery(DNSSDConfig(names=["app.example.com"], type="a", port=6060), nameservers=[dns_server.address])
    aaaa = DNSDiscovery(DNSSDConfig(names=["app.example.com"], type="AAAA", port=6060), nameservers=[dns_server.address])

    assert sorted(t["__address__"] for t in a.refresh()) == ["10.0.0.1:6060", "10.0.0.2:6060"]
    assert aaaa.refresh() == [{"__address__": "[fd00::1]:6060", "__meta_dns_name": "app.example.com"}]


def test_dns_sd_a_missing_name_has_no_targets_and_a_failing_one_keeps_its_last_good(dns_server: _DNSServer) -> None:
    dns_server.records[("a.example.com.", "A")] = ["10.0.0.1"]
    dns_server.records[("b.example.com.", "A")] = ["10.0.0.2"]
    config = DNSSDConfig(names=["a.example.com", "b.example.com", "missing.example.com"], type="A", port=80)
    discovery = DNSDiscovery(config, nameservers=[dns_server.address])
    assert [t["__address__"] for t in discovery.refresh()] == ["10.0.0.1:80", "10.0.0.2:80"]

    dns_server.servfail.add("b.example.com.")
    dns_server.records[("a.example.com.", "A")] = ["10.0.0.9"]
    with pytest.raises(DiscoveryError, match="dns_sd A b.example.com: lookup failed"):
        discovery.refresh()
    assert [t["__address__"] for t in discovery.targets] == ["10.0.0.9:80", "10.0.0.2:80"]
    assert "b.example.com" in (discovery.last_error or "")


def test_dns_sd_a_records_need_a_port() -> None:
    with pytest.raises(ValueError, match="port is required for type A"):
        DNSSDConfig(names=["x.example.com"], type="A")


# --------------------------------------------------------------------------- kubernetes_sd

_TOKEN = "stand-in-token"


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, **({"namespace": namespace} if namespace else {}), "uid": f"uid-{name}", **extra}


# Recorded-style API objects, trimmed to the fields discovery reads.
PODS = [
    {
        "metadata": _meta(
            "web-7d9f-abc", "shop",
            labels={"app": "web", "app.kubernetes.io/name": "web", "canary": ""},
            annotations={"pyroscope.io/service_name": "shop-web"},
            ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "controller": True}],
        ),
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {"name": "app", "image": "shop/web:1.2", "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "pprof", "containerPort": 6060, "protocol": "TCP"},
                ]},
                {"name": "sidecar", "image": "envoy:1"},
            ],
            "initContainers": [{"name": "init", "image": "busybox"}],
        },
        "status": {
            "phase": "Running", "podIP": "10.1.0.5", "hostIP": "192.168.1.10",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "containerID": "containerd://aaa"},
                                  {"name": "sidecar", "containerID": "containerd://bbb"}],
        },
    },
    {
        "metadata": _meta("worker-0", "shop", labels={"app": "worker"},
                          ownerReferences=[{"kind": "StatefulSet", "name": "worker", "controller": True}]),
        "spec": {"nodeName": "node-1", "containers": [{"name": "worker", "image": "shop/worker:3",
                                                        "ports": [{"containerPort": 6060, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.1.0.6", "hostIP": "192.168.1.10"},
    },
    {
        "metadata": _meta("pending", "shop", labels={"app": "web"}),
        "spec": {"containers": [{"name": "app", "image": "shop/web:1.2"}]},
        "status": {"phase": "Pending"},
    },
    {
        "metadata": _meta("api-1", "other", labels={"app": "api"}),
        "spec": {"nodeName": "node-2", "containers": [{"name": "api", "image": "api:9",
                                                        "ports": [{"containerPort": 9000, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.2.0.7", "hostIP": "192.168.1.11",
                   "conditions": [{"type": "Ready", "status": "False"}]},
    },
]
SERVICES = [
    {
        "metadata": _meta("web", "shop", labels={"app": "web"}, annotations={"team": "storefront"}),
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "grpc", "port": 9090, "protocol": "TCP", "appProtocol": "grpc"},
        ]},
    },
    {"metadata": _meta("ext", "shop"), "spec": {"type": "ExternalName", "externalName": "example.com",
                                                 "ports": [{"port": 443, "protocol": "TCP"}]}},
]
ENDPOINTS = [
    {
        "metadata": _meta("web", "shop", labels={"endpointslice.kubernetes.io/skip-mirror": "true"}),
        "subsets": [{
            "addresses": [{"ip": "10.1.0.5", "nodeName": "node-1",
                           "targetRef": {"kind": "Pod", "name": "web-7d9f-abc", "namespace": "shop"}}],
            "notReadyAddresses": [{"ip": "10.1.0.9", "targetRef": {"kind": "Pod", "name": "gone", "namespace": "shop"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }],
    },
]
NODES = [
    {
        "metadata": _meta("node-1", labels={"kubernetes.io/hostname": "node-1"}, annotations={"zone": "a"}),
        "spec": {"providerID": "aws:///eu-west-1a/i-1"},
        "status": {"addresses": [{"type": "Hostname", "address": "node-1"},
                                 {"type": "InternalIP", "address": "192.168.1.10"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
    },
    {"metadata": _meta("no-address"), "status": {}},
]
_KINDS = {"pods": PODS, "services": SERVICES, "endpoints": ENDPOINTS, "nodes": NODES}


@dataclass
class _KubeState:
    """What the stand-in API server answers: objects by kind, a page size, namespaces that fail."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: list(v) for k, v in _KINDS.items()})
    page_size: int = 2
    failing_namespaces: set[str] = field(default_factory=set)


def _status(code: int, reason: str, message: str) -> tuple[int, Any, str]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                  "reason": reason, "code": code}, "application/json"


def _kube_route(state: _KubeState) -> Route:
    """The list calls of the core/v1 API, with label selectors (equality only) and paging."""

    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any, str]:
        if headers.get("authorization") != f"Bearer {_TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "v1"]:
            return _status(404, "NotFound", f"no route {path}")
        namespace = parts[3] if len(parts) == 5 and parts[2] == "namespaces" else None
        kind = parts[-1]
        if kind not in state.objects or (namespace is None and len(parts) != 3):
            return _status(404, "NotFound", f"no route {path}")
        if namespace in state.failing_namespaces:
            return _status(500, "InternalError", f"etcd is sad about {namespace}")
        items = [o for o in state.objects[kind] if namespace is None or o["metadata"].get("namespace") == namespace]
        for term in (query.get("labelSelector") or [""])[0].split(","):
            if term:
                key, _, value = term.partition("=")
                items = [o for o in items if (o["metadata"].get("labels") or {}).get(key) == value]
        start = int((query.get("continue") or ["0"])[0])
        page = items[start:start + state.page_size]
        more = start + state.page_size < len(items)
        metadata = {"resourceVersion": "42", **({"continue": str(start + state.page_size)} if more else {})}
        return 200, {"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page}, "application/json"

    return route


@pytest.fixture
def kube(serve: Callable[[Route], _JSONServer], tmp_path: Path) -> tuple[_KubeState, _JSONServer, Path]:
    """The stand-in API server and a kubeconfig file pointing at it with a bearer token."""
    state = _KubeState()
    server = serve(_kube_route(state))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": server.url}}],
        "users": [{"name": "tester", "user": {"token": _TOKEN}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester"}}],
    }))
    return state, server, kubeconfig


def _by_address(targets: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {t["__address__"]: t for t in targets}


def test_kubernetes_pod_role_one_target_per_container_port_or_per_container_without_ports(kube: Any) -> None:
    _state, server, kubeconfig = kube
    discovery = KubernetesDiscovery(KubernetesSDConfig(role="pod", kubeconfig_file=kubeconfig,
                                                       namespaces={"names": ["shop"]}))
    targets = discovery.refresh()

    assert sorted((t["__address__"], t.get("__meta_kubernetes_pod_container_name")) for t in targets) == [
        ("10.1.0.5", "init"), ("10.1.0.5", "sidecar"), ("10.1.0.5:6060", "app"), ("10.1.0.5:8080", "app"),
        ("10.1.0.6:6060", "worker"),
    ]
    web = _by_address(targets)["10.1.0.5:6060"]
    assert web == {
        "__address__": "10.1.0.5:6060",
        "__meta_kubernetes_namespace": "shop",
        "__meta_kubernetes_pod_name": "web-7d9f-abc",
        "__meta_kubernetes_pod_ip": "10.1.0.5",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_host_ip": "192.168.1.10",
        "__meta_kubernetes_pod_uid": "uid-web-7d9f-abc",
        "__meta_kubernetes_pod_label_app": "web",
        "__meta_kubernetes_pod_labelpresent_app": "true",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "web",
        "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
        "__meta_kubernetes_pod_labelpresent_canary": "true",  # an empty label: present, without a value
        "__meta_kubernetes_pod_annotation_pyroscope_io_service_name": "shop-web",
        "__meta_kubernetes_pod_annotationpresent_pyroscope_io_service_name": "true",
        "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
        "__meta_kubernetes_pod_controller_name": "web-7d9f",
        "__meta_kubernetes_pod_container_name": "app",
        "__meta_kubernetes_pod_container_image": "shop/web:1.2",
        "__meta_kubernetes_pod_container_init": "false",
        "__meta_kubernetes_pod_container_id": "containerd://aaa",
        "__meta_kubernetes_pod_container_port_name": "pprof",
        "__meta_kubernetes_pod_container_port_number": "6060",
        "__meta_kubernetes_pod_container_port_protocol": "TCP",
    }
    init = next(t for t in targets if t.get("__meta_kubernetes_pod_container_name") == "init")
    assert init["__meta_kubernetes_pod_container_init"] == "true"
    assert "__meta_kubernetes_pod_container_port_number" not in init
    worker = _by_address(targets)["10.1.0.6:6060"]
    assert worker["__meta_kubernetes_pod_ready"] == "unknown"
    assert worker["__meta_kubernetes_pod_controller_kind"] == "StatefulSet"
    assert "__meta_kubernetes_pod_container_port_name" not in worker
    # paged: 3 pods in shop, 2 per page
    assert [parse_qs(q) for p, q, _ in server.requests] == [{"limit": ["500"]}, {"limit": ["500"], "continue": ["2"]}]
    assert all(p == "/api/v1/namespaces/shop/pods" for p, _, _ in server.requests)


def test_kubernetes_pod_role_selectors_and_all_namespaces(kube: Any) -> None:
    _state, server, kubeconfig = kube
    config = KubernetesSDConfig(role="pod", kubeconfig_file=kubeconfig,
                                selectors=[{"role": "pod", "label": "app=api", "field": "spec.nodeName=node-2"}])
    targets = KubernetesDiscovery(config).refresh()

    assert [t["__address__"] for t in targets] == ["10.2.0.7:9000"]
    assert targets[0]["__meta_kubernetes_pod_ready"] == "false"
    path, query, _ = server.requests[-1]
    assert path == "/api/v1/pods"
    assert parse_qs(query) == {"labelSelector": ["app=api"], "fieldSelector": ["spec.nodeName=node-2"], "limit": ["500"]}


def test_kubernetes_service_role(kube: Any) -> None:
    _, _, kubeconfig = kube
    targets = KubernetesDiscovery(KubernetesSDConfig(role="service", kubeconfig_file=kubeconfig)).refresh()

    assert _by_address(targets) == {
        "web.shop.svc:80": {
            "__address__": "web.shop.svc:80", "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_service_name": "web",
            "__meta_kubernetes_service_label_app": "web", "__meta_kubernetes_service_labelpresent_app": "true",
            "__meta_kubernetes_service_annotation_team": "storefront",
            "__meta_kubernetes_service_annotationpresent_team": "true",
            "__meta_kubernetes_service_port_name": "http", "__meta_kubernetes_service_port_number": "80",
            "__meta_kubernetes_service_port_protocol": "TCP", "__meta_kubernetes_service_type": "ClusterIP",
            "__meta_kubernetes_service_cluster_ip": "10.96.0.10",
        },
        "web.shop.svc:9090": {
            "__address__": "web.shop.svc:9090", "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_service_name": "web",
            "__meta_kubernetes_service_label_app": "web", "__meta_kubernetes_service_labelpresent_app": "true",
            "__meta_kubernetes_service_annotation_team": "storefront",
            "__meta_kubernetes_service_annotationpresent_team": "true",
            "__meta_kubernetes_service_port_name": "grpc", "__meta_kubernetes_service_port_number": "9090",
            "__meta_kubernetes_service_port_protocol": "TCP", "__meta_kubernetes_service_type": "ClusterIP",
            "__meta_kubernetes_service_cluster_ip": "10.96.0.10",
            "__meta_kubernetes_service_port_app_protocol": "grpc",
        },
        "ext.shop.svc:443": {
            "__address__": "ext.shop.svc:443", "__meta_kubernetes_namespace": "shop",
            "__meta_kubernetes_service_name": "ext",
            "__meta_kubernetes_service_port_number": "443", "__meta_kubernetes_service_port_protocol": "TCP",
            "__meta_kubernetes_service_type": "ExternalName", "__meta_kubernetes_service_external_name": "example.com",
        },
    }


def test_kubernetes_endpoints_role_joins_pods_and_services(kube: Any) -> None:
    _, _, kubeconfig = kube
    config = KubernetesSDConfig(role="endpoints", kubeconfig_file=kubeconfig, namespaces={"names": ["shop"]})
    targets = _by_address(KubernetesDiscovery(config).refresh())

    assert sorted(targets) == ["10.1.0.5:6060", "10.1.0.5:8080", "10.1.0.9:8080"]
    ready = targets["10.1.0.5:8080"]
    assert {k: v for k, v in ready.items() if k.startswith(("__meta_kubernetes_endpoint", "__meta_kubernetes_service_name"))} == {
        "__meta_kubernetes_endpoints_name": "web",
        "__meta_kubernetes_endpoints_label_endpointslice_kubernetes_io_skip_mirror": "true",
        "__meta_kubernetes_endpoints_labelpresent_endpointslice_kubernetes_io_skip_mirror": "true",
        "__meta_kubernetes_endpoint_port_name": "http",
        "__meta_kubernetes_endpoint_port_protocol": "TCP",
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_node_name": "node-1",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": "web-7d9f-abc",
        "__meta_kubernetes_service_name": "web",
    }
    assert ready["__meta_kubernetes_pod_name"] == "web-7d9f-abc"
    assert ready["__meta_kubernetes_pod_container_name"] == "app"
    assert ready["__meta_kubernetes_pod_container_port_name"] == "http"
    assert ready["__meta_kubernetes_service_label_app"] == "web"

    not_ready = targets["10.1.0.9:8080"]  # its pod is not listed: endpoint labels only
    assert not_ready["__meta_kubernetes_endpoint_ready"] == "false"
    assert not any(k.startswith("__meta_kubernetes_pod_") for k in not_ready)

    uncovered = targets["10.1.0.5:6060"]  # the pod's pprof port, not in the endpoints
    assert uncovered["__meta_kubernetes_pod_container_port_name"] == "pprof"
    assert not any(k.startswith("__meta_kubernetes_endpoint_") for k in uncovered)
    assert uncovered["__meta_kubernetes_endpoints_name"] == "web"


def test_kubernetes_node_role_through_api_server_without_credentials(serve: Callable[[Route], _JSONServer]) -> None:
    state = _KubeState()
    route = _kube_route(state)
    server = serve(lambda path, query, headers: route(path, query, {**headers, "authorization": f"Bearer {_TOKEN}"}))
    targets = KubernetesDiscovery(KubernetesSDConfig(role="node", api_server=server.url)).refresh()

    assert targets == [{
        "__address__": "192.168.1.10:10250",
        "instance": "node-1",
        "__meta_kubernetes_node_name": "node-1",
        "__meta_kubernetes_node_label_kubernetes_io_hostname": "node-1",
        "__meta_kubernetes_node_labelpresent_kubernetes_io_hostname": "true",
        "__meta_kubernetes_node_annotation_zone": "a",
        "__meta_kubernetes_node_annotationpresent_zone": "true",
        "__meta_kubernetes_node_provider_id": "aws:///eu-west-1a/i-1",
        "__meta_kubernetes_node_address_Hostname": "node-1",
        "__meta_kubernetes_node_address_InternalIP": "192.168.1.10",
    }]
    assert server.requests[-1][0] == "/api/v1/nodes"


def test_kubernetes_a_failing_namespace_keeps_its_last_good_targets(kube: Any) -> None:
    state, _, kubeconfig = kube
    config = KubernetesSDConfig(role="pod", kubeconfig_file=kubeconfig, namespaces={"names": ["shop", "other"]})
    discovery = KubernetesDiscovery(config)
    assert len(discovery.refresh()) == 6

    state.failing_namespaces.add("shop")
    state.objects["pods"] = [p for p in PODS if p["metadata"]["name"] != "api-1"]
    with pytest.raises(DiscoveryError, match="listing pod objects in namespace shop at .*HTTP 500.*etcd is sad about shop"):
        discovery.refresh()
    assert len(discovery.targets) == 5  # shop's last good five; other is now empty
    assert "namespace shop" in (discovery.last_error or "")


def test_kubernetes_bad_credentials_and_missing_config_are_clear_errors(
    kube: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _server, kubeconfig = kube
    wrong = tmp_path / "wrong-kubeconfig"
    wrong.write_text(kubeconfig.read_text().replace(_TOKEN, "nope"))
    with pytest.raises(DiscoveryError, match=r"HTTP 401 Unauthorized: Unauthorized"):
        KubernetesDiscovery(KubernetesSDConfig(role="pod", kubeconfig_file=wrong)).refresh()

    with pytest.raises(DiscoveryError, match="cannot load kubeconfig_file"):
        KubernetesDiscovery(KubernetesSDConfig(role="pod", kubeconfig_file=tmp_path / "absent")).refresh()

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DiscoveryError, match="cannot load in-cluster config"):
        KubernetesDiscovery(KubernetesSDConfig(role="node")).refresh()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"role": "pod", "selectors": [{"role": "service", "label": "a=b"}]}, "pod role supports only pod selectors"),
        ({"role": "endpoints", "selectors": [{"role": "pod"}, {"role": "pod"}]}, "duplicated selector role: pod"),
        ({"role": "pod", "kubeconfig_file": "k", "api_server": "http://x"}, "cannot use 'kubeconfig_file' and 'api_server'"),
        ({"role": "ingress"}, "Input should be 'pod', 'service', 'endpoints' or 'node'"),
        ({"role": "pod", "api_server": "x:6443"}, "api_server must be an http"),
    ],
)
def test_kubernetes_config_validation(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KubernetesSDConfig.model_validate(config)


# --------------------------------------------------------------------------- resolve_targets and the plan


def _config(job: dict[str, Any]) -> Any:
    return parse_config({"scrape": {"app": {"forward_to": ["store"], **job}}, "write": {"store": {"type": "file"}}})


def test_a_job_needs_targets_or_a_discovery_config() -> None:
    with pytest.raises(ConfigError, match="targets is required unless the job has file_sd_configs"):
        _config({})
    assert _config({"targets": []}).scrape["app"].targets == []
    job = _config({"file_sd_configs": [{"files": ["t/*.json"]}]}).scrape["app"]
    assert job.targets == [] and job.file_sd_configs[0].refresh_interval.total_seconds() == 300


def test_sd_config_errors_name_their_field() -> None:
    with pytest.raises(ConfigError) as caught:
        _config({"dns_sd_configs": [{"names": ["x"], "type": "A"}],
                 "http_sd_configs": [{"url": "http://x/sd", "http_client_config": {"bearer_tokn": "t"}}]})
    assert sorted(caught.value.problems) == [
        "scrape.app.dns_sd_configs[0]: port is required for type A (only SRV records carry a port)",
        "scrape.app.http_sd_configs[0].http_client_config.bearer_tokn: unknown key (check its spelling)",
    ]


def test_kubernetes_sd_without_the_client_installed_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes now fails, as when not installed
    with pytest.raises(ConfigError) as caught:
        _config({"kubernetes_sd_configs": [{"role": "pod"}]})
    assert caught.value.problems == [
        "scrape.app.kubernetes_sd_configs[0]: kubernetes_sd_configs needs the Kubernetes client, an optional part: "
        "pip install 'pprof-scraper[kubernetes]'"
    ]


def test_resolve_targets_merges_relabels_drops_and_dedupes() -> None:
    job = _config({
        "targets": [{"__address__": "static:6060", "env": "prod"}],
        "file_sd_configs": [{"files": ["t/*.json"]}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_app"], "regex": "batch", "action": "drop"},
            {"regex": "__meta_kubernetes_pod_label_(.+)", "action": "labelmap"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "pprof|", "action": "keep"},
            {"source_labels": ["__address__"], "regex": "nowhere", "target_label": "__address__", "replacement": ""},
        ],
    }).scrape["app"]
    discovered = [
        {"__address__": "10.0.0.1:6060", "__meta_kubernetes_pod_label_app": "web",
         "__meta_kubernetes_pod_container_port_name": "pprof", "__meta_filepath": "a.json"},
        {"__address__": "10.0.0.1:6060", "__meta_kubernetes_pod_label_app": "web",
         "__meta_kubernetes_pod_container_port_name": "pprof", "__meta_filepath": "b.json"},  # same target again
        {"__address__": "10.0.0.2:8080", "__meta_kubernetes_pod_container_port_name": "http"},
        {"__address__": "10.0.0.3:6060", "__meta_kubernetes_pod_label_app": "batch"},
        {"__address__": "nowhere"},
        {"__address__": "10.0.0.4/debug"},
    ]

    kept, dropped = resolve_targets(job, discovered)

    assert kept == [
        {"__address__": "static:6060", "env": "prod"},
        {"__address__": "10.0.0.1:6060", "__meta_kubernetes_pod_label_app": "web",
         "__meta_kubernetes_pod_container_port_name": "pprof", "__meta_filepath": "a.json", "app": "web"},
    ]
    assert [(d.labels["__address__"], d.reason) for d in dropped] == [
        ("10.0.0.2:8080", "dropped by relabel_configs"),
        ("10.0.0.3:6060", "dropped by relabel_configs"),
        ("nowhere", "no __address__ after relabeling"),
        ("10.0.0.4/debug", "__address__ '10.0.0.4/debug' must be host[:port] without a scheme or path"),
    ]
    assert dropped[0].as_dict() == {"labels": discovered[2], "reason": "dropped by relabel_configs"}


def test_resolve_targets_drops_targets_with_invalid_label_names() -> None:
    job = _config({"file_sd_configs": [{"files": ["t/*.json"]}],
                   "relabel_configs": [{"regex": "__meta_(.*)", "action": "labelmap"}]})
    kept, dropped = resolve_targets(job.scrape["app"], [{"__address__": "h:1", "__meta_x-y": "v"}])
    assert kept == [] and dropped[0].reason == "invalid label name(s) after relabeling: x-y"


_CPU_ONLY = {"profile.memory": {"enabled": False}, "profile.block": {"enabled": False},
             "profile.mutex": {"enabled": False}, "profile.goroutine": {"enabled": False}}


def _planned(job: dict[str, Any], discovered: list[dict[str, str]]) -> Any:
    """The plan of one job "app" (process_cpu only) and its dropped targets."""
    config = _config({"profiling_config": _CPU_ONLY, "file_sd_configs": [{"files": ["t.json"]}], **job})
    return make_plan(config, {"app": discovered})


def test_rules_see_the_labels_prometheus_sets_before_relabeling() -> None:
    result = _planned({
        "job_name": "shop",
        "params": {"module": ["cpu", "x"]},
        "relabel_configs": [
            {"source_labels": ["job"], "regex": "shop", "action": "keep"},
            {"source_labels": ["__param_module"], "regex": "cpu", "action": "keep"},
            {"source_labels": ["__scrape_interval__", "__scrape_timeout__"], "regex": "15s;15s", "action": "keep"},
            {"source_labels": ["__scheme__", "__address__"], "separator": "://", "target_label": "endpoint"},
        ],
    }, [{"__address__": "h:1"}])
    [spec] = result.specs
    assert spec.labels["endpoint"] == "http://h:1"
    assert spec.url == "http://h:1/debug/pprof/profile?module=cpu&module=x&seconds=14"


def test_a_rule_may_change_the_scheme_and_a_param_through_their_labels() -> None:
    [spec] = _planned({
        "params": {"module": ["cpu"]},
        "relabel_configs": [
            {"source_labels": ["job"], "regex": "app", "target_label": "__scheme__", "replacement": "https"},
            {"source_labels": ["__param_module"], "target_label": "__param_module", "replacement": "${1}2"},
        ],
    }, [{"__address__": "h:1"}]).specs
    assert spec.url == "https://h:1/debug/pprof/profile?module=cpu2&seconds=14"


def test_labels_set_before_relabeling_leave_targets_as_they_were_without_rules() -> None:
    [spec] = _planned({"params": {"module": ["cpu"]}}, [{"__address__": "h:1", "env": "prod"}]).specs
    assert spec.target_labels == {"__address__": "h:1", "env": "prod", "service_name": "app"}
    assert spec.labels == {"env": "prod", "job": "app", "instance": "h:1", "service_name": "app",
                           "__name__": "process_cpu"}


@pytest.mark.parametrize("address", ["h", "h:21"])
def test_a_scheme_other_than_http_or_https_refuses_the_target(address: str) -> None:
    result = _planned({"relabel_configs": [{"target_label": "__scheme__", "replacement": "ftp"}]},
                      [{"__address__": address}])
    assert result.specs == []
    assert [d.reason for d in result.dropped["app"]] == ['invalid scheme: "ftp" (__scheme__ must be http or https)']


def test_a_target_interval_other_than_the_jobs_is_refused_with_the_reason() -> None:
    result = _planned({"relabel_configs": [{"target_label": "__scrape_interval__", "replacement": "1m"}]},
                      [{"__address__": "h:1"}])
    assert result.specs == []
    assert result.dropped["app"][0].reason.startswith("__scrape_interval__ '1m' differs from the job's scrape_interval (15s)")


def test_labelkeep_of_the_public_labels_leaves_the_jobs_timing() -> None:
    result = _planned({"relabel_configs": [{"regex": "__address__|env", "action": "labelkeep"}]},
                      [{"__address__": "h:1", "env": "prod"}])
    assert [s.url for s in result.specs] == ["http://h:1/debug/pprof/profile?seconds=14"]


def test_discovered_targets_plan_with_service_name_from_kubernetes_metadata(kube: Any) -> None:
    _, _, kubeconfig = kube
    config = _config({
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig), "namespaces": {"names": ["shop"]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "pprof", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
        "profiling_config": {"profile.memory": {"enabled": False}, "profile.block": {"enabled": False},
                             "profile.mutex": {"enabled": False}, "profile.goroutine": {"enabled": False}},
    })
    discoverers = build_discoverers(config.scrape["app"])
    assert [type(d) for d in discoverers] == [KubernetesDiscovery]
    kept, dropped = resolve_targets(config.scrape["app"], discoverers[0].refresh())

    specs = plan(config, {"app": kept})

    assert [(s.url, s.labels) for s in specs] == [(
        "http://10.1.0.5:6060/debug/pprof/profile?seconds=14",
        {"pod": "web-7d9f-abc", "job": "app", "instance": "10.1.0.5:6060", "service_name": "shop-web",
         "__name__": "process_cpu"},
    )]
    assert not any(k.startswith("__meta_") for k in specs[0].target_labels)
    assert len(dropped) == 4


def test_build_discoverers_makes_one_per_sd_entry(tmp_path: Path) -> None:
    job = ScrapeJob.model_validate({
        "forward_to": ["store"],
        "file_sd_configs": [{"files": [str(tmp_path / "*.json")]}, {"files": [str(tmp_path / "*.yml")]}],
        "http_sd_configs": [{"url": "http://127.0.0.1:1/sd", "refresh_interval": "5s"}],
        "dns_sd_configs": [{"names": ["_x._tcp.example.com"]}],
        "kubernetes_sd_configs": [{"role": "node", "api_server": "http://127.0.0.1:1"}],
    })
    discoverers = build_discoverers(job)
    assert [type(d).__name__ for d in discoverers] == [
        "FileDiscovery", "FileDiscovery", "HTTPDiscovery", "DNSDiscovery", "KubernetesDiscovery",
    ]
    assert [d.refresh_interval for d in discoverers] == [300.0, 300.0, 5.0, 30.0, 30.0]
    assert all(d.due(0.0) for d in discoverers)  # never refreshed
