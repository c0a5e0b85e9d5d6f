"""Kubernetes discovery: Prometheus ``kubernetes_sd_configs`` for the pod, service, endpoints and node roles.

Objects are *listed* on every refresh (paged, ``limit=500``) rather than watched: a list is
one request per kind and namespace every ``refresh_interval``, simple to reason about and
enough for a scraper whose targets change on the scale of seconds, not milliseconds.
Labels are named and valued as Prometheus' ``discovery/kubernetes`` names them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from ..labels import ADDRESS
from .base import Discoverer, DiscoveryError, Targets
from .models import KubernetesSDConfig

PREFIX = "__meta_kubernetes_"
NAMESPACE = PREFIX + "namespace"
_PAGE_SIZE = 500
#: (connect, read) seconds for one list call
_REQUEST_TIMEOUT = (5.0, 30.0)
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
#: Node addresses in the order Prometheus prefers them for ``__address__``.
_NODE_ADDRESS_ORDER = ("InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname")

Object = dict[str, Any]


def _host_port(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sanitize(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


def _non_empty(labels: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in labels.items() if value}


def _object_meta_labels(meta: Object, role: str) -> dict[str, str]:
    """``<role>_name`` and each Kubernetes label and annotation, with its ``*present`` twin."""
    out = {f"{PREFIX}{role}_name": meta.get("name", "")}
    for kind, values in (("label", meta.get("labels")), ("annotation", meta.get("annotations"))):
        for key, value in (values or {}).items():
            name = _sanitize(key)
            out[f"{PREFIX}{role}_{kind}_{name}"] = value
            out[f"{PREFIX}{role}_{kind}present_{name}"] = "true"
    return out


# --------------------------------------------------------------------------- pod


def _pod_ready(status: Object) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", "")).lower()
    return "unknown"


def _pod_labels(pod: Object) -> dict[str, str]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    labels = {
        PREFIX + "pod_ip": status.get("podIP", ""),
        PREFIX + "pod_ready": _pod_ready(status),
        PREFIX + "pod_phase": status.get("phase", ""),
        PREFIX + "pod_node_name": spec.get("nodeName", ""),
        PREFIX + "pod_host_ip": status.get("hostIP", ""),
        PREFIX + "pod_uid": meta.get("uid", ""),
        **_object_meta_labels(meta, "pod"),
    }
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if controller is not None:
        labels[PREFIX + "pod_controller_kind"] = controller.get("kind", "")
        labels[PREFIX + "pod_controller_name"] = controller.get("name", "")
    return labels


def _containers(pod: Object) -> list[tuple[Object, bool]]:
    """(container, is_init) for the pod's containers, then its init containers, as Prometheus orders them."""
    spec = pod.get("spec") or {}
    return [(c, False) for c in spec.get("containers") or []] + [(c, True) for c in spec.get("initContainers") or []]


def _container_labels(container: Object, is_init: bool) -> dict[str, str]:
    return {
        PREFIX + "pod_container_name": container.get("name", ""),
        PREFIX + "pod_container_image": container.get("image", ""),
        PREFIX + "pod_container_init": "true" if is_init else "false",
    }


def _port_labels(port: Object, protocol: str | None = None) -> dict[str, str]:
    return {
        PREFIX + "pod_container_port_name": port.get("name", ""),
        PREFIX + "pod_container_port_number": str(port.get("containerPort", "")),
        PREFIX + "pod_container_port_protocol": protocol if protocol is not None else port.get("protocol", ""),
    }


def pod_targets(pod: Object) -> Targets:
    """One target per container port, and one per container without ports (address: the pod IP alone)."""
    status = pod.get("status") or {}
    ip = status.get("podIP", "")
    if not ip:  # starting or evicted: nothing to scrape
        return []
    group = {**_pod_labels(pod), NAMESPACE: (pod.get("metadata") or {}).get("namespace", "")}
    targets: Targets = []
    for container, is_init in _containers(pod):
        statuses = status.get("initContainerStatuses" if is_init else "containerStatuses") or []
        container_id = next((s.get("containerID", "") for s in statuses if s.get("name") == container.get("name")), "")
        base = {**group, **_container_labels(container, is_init), PREFIX + "pod_container_id": container_id}
        ports = container.get("ports") or []
        if not ports:
            targets.append(_non_empty({**base, ADDRESS: ip}))
        for port in ports:
            targets.append(_non_empty({**base, **_port_labels(port), ADDRESS: _host_port(ip, port.get("containerPort", ""))}))
    return targets


# --------------------------------------------------------------------------- service


def _service_labels(service: Object) -> dict[str, str]:
    meta = service.get("metadata") or {}
    return {NAMESPACE: meta.get("namespace", ""), **_object_meta_labels(meta, "service")}


def service_targets(service: Object) -> Targets:
    """One target per service port, at ``<name>.<namespace>.svc:<port>``."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    group = _service_labels(service)
    kind = spec.get("type", "")
    targets: Targets = []
    for port in spec.get("ports") or []:
        labels = {
            **group,
            ADDRESS: _host_port(f"{meta.get('name', '')}.{meta.get('namespace', '')}.svc", port.get("port", "")),
            PREFIX + "service_port_name": port.get("name", ""),
            PREFIX + "service_port_number": str(port.get("port", "")),
            PREFIX + "service_port_protocol": port.get("protocol", ""),
            PREFIX + "service_type": kind,
        }
        if "appProtocol" in port:
            labels[PREFIX + "service_port_app_protocol"] = port["appProtocol"]
        if kind == "ExternalName":
            labels[PREFIX + "service_external_name"] = spec.get("externalName", "")
        else:
            labels[PREFIX + "service_cluster_ip"] = spec.get("clusterIP", "")
        targets.append(_non_empty(labels))
    return targets


# --------------------------------------------------------------------------- endpoints


def endpoints_targets(endpoints: Object, pods: dict[tuple[str, str], Object], services: dict[tuple[str, str], Object]) -> Targets:
    """One target per (address, port) of the Endpoints object, with its pod's and service's labels.

    ``pods`` and ``services`` are keyed by (namespace, name). Ports of a matched pod's containers
    that no endpoint port covers become targets too, as in Prometheus.
    """
    meta = endpoints.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    group = {NAMESPACE: namespace, PREFIX + "endpoints_name": name}
    service = services.get((namespace, name))
    if service is not None:
        group.update(_service_labels(service))
    group.update(_object_meta_labels(meta, "endpoints"))

    targets: Targets = []
    seen_pods: dict[tuple[str, str], tuple[Object, set[Any]]] = {}

    def add(address: Object, port: Object, ready: str) -> None:
        labels = {
            **group,
            ADDRESS: _host_port(address.get("ip", ""), port.get("port", "")),
            PREFIX + "endpoint_port_name": port.get("name", ""),
            PREFIX + "endpoint_port_protocol": port.get("protocol", ""),
            PREFIX + "endpoint_ready": ready,
            PREFIX + "endpoint_port_app_protocol": port.get("appProtocol", ""),
            PREFIX + "endpoint_node_name": address.get("nodeName", ""),
            PREFIX + "endpoint_hostname": address.get("hostname", ""),
        }
        ref = address.get("targetRef") or {}
        if ref:
            labels[PREFIX + "endpoint_address_target_kind"] = ref.get("kind", "")
            labels[PREFIX + "endpoint_address_target_name"] = ref.get("name", "")
        pod = pods.get((ref.get("namespace") or namespace, ref.get("name", ""))) if ref.get("kind") == "Pod" else None
        if pod is not None:
            pod_key = (pod["metadata"].get("namespace", ""), pod["metadata"].get("name", ""))
            seen_pods.setdefault(pod_key, (pod, set()))[1].add(port.get("port"))
            labels.update(_pod_labels(pod))
            match = next(
                ((c, is_init, cp) for c, is_init in _containers(pod) for cp in c.get("ports") or []
                 if cp.get("containerPort") == port.get("port")),
                None,
            )
            if match is not None:
                container, is_init, container_port = match
                labels.update(_container_labels(container, is_init))
                labels.update(_port_labels(container_port, protocol=port.get("protocol", "")))
        targets.append(_non_empty(labels))

    for subset in endpoints.get("subsets") or []:
        for port in subset.get("ports") or []:
            for address in subset.get("addresses") or []:
                add(address, port, "true")
            for address in subset.get("notReadyAddresses") or []:
                add(address, port, "false")

    for pod, covered in seen_pods.values():
        ip = (pod.get("status") or {}).get("podIP", "")
        if not ip:
            continue
        for container, is_init in _containers(pod):
            for port in container.get("ports") or []:
                if port.get("containerPort") in covered:
                    continue
                targets.append(_non_empty({
                    **group, **_pod_labels(pod), **_container_labels(container, is_init), **_port_labels(port),
                    ADDRESS: _host_port(ip, port.get("containerPort", "")),
                }))
    return targets


# --------------------------------------------------------------------------- node


def node_targets(node: Object) -> Targets:
    """The node's kubelet: its preferred address and kubelet port; ``instance`` is the node name."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    by_type: dict[str, str] = {}
    for entry in status.get("addresses") or []:
        by_type.setdefault(entry.get("type", ""), entry.get("address", ""))
    host = next((by_type[t] for t in _NODE_ADDRESS_ORDER if by_type.get(t)), "")
    if not host:
        return []
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port", 0)
    labels = {
        **_object_meta_labels(meta, "node"),
        PREFIX + "node_provider_id": spec.get("providerID", ""),
        **{f"{PREFIX}node_address_{_sanitize(kind)}": address for kind, address in by_type.items()},
        ADDRESS: _host_port(host, port),
        "instance": meta.get("name", ""),
    }
    return [_non_empty(labels)]


# --------------------------------------------------------------------------- the discoverer


class KubernetesDiscovery(Discoverer):
    """Targets of one ``kubernetes_sd_configs`` entry, listed again at every refresh.

    The API client comes from ``kubeconfig_file`` (its current context), else ``api_server``
    (no credentials, e.g. ``kubectl proxy``), else the in-cluster service account. Each namespace
    is its own source: a namespace whose list fails keeps its last good targets.
    """

    def __init__(self, config: KubernetesSDConfig) -> None:
        super().__init__(config.refresh_interval.total_seconds())
        self.config = config
        self._api: k8s_client.CoreV1Api | None = None

    def _get_api(self) -> k8s_client.CoreV1Api:
        if self._api is None:
            self._api = k8s_client.CoreV1Api(self._api_client())
        return self._api

    def _api_client(self) -> k8s_client.ApiClient:
        config = self.config
        try:
            if config.kubeconfig_file is not None:
                return k8s_config.new_client_from_config(config_file=str(config.kubeconfig_file))
            configuration = k8s_client.Configuration()
            if config.api_server is not None:
                configuration.host = config.api_server.rstrip("/")
            else:
                k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s_client.ApiClient(configuration)
        except (ConfigException, OSError, ValueError) as exc:
            where = f"kubeconfig_file {config.kubeconfig_file}" if config.kubeconfig_file else "in-cluster config"
            raise DiscoveryError(f"kubernetes_sd: cannot load {where}: {exc}") from None

    def close(self) -> None:
        """Close pooled connections."""
        if self._api is not None:
            self._api.api_client.close()
            self._api = None

    def _list(self, kind: str, namespace: str | None) -> list[Object]:
        """Every object of ``kind`` in ``namespace`` (None: all), with the kind's selector, page by page."""
        api = self._get_api()
        call: Callable[..., Any]
        if kind == "node":
            call = api.list_node
        elif namespace is None:
            call = getattr(api, f"list_{kind}_for_all_namespaces")
        else:
            call = functools.partial(getattr(api, f"list_namespaced_{kind}"), namespace)
        selector = self.config.selector(kind)
        kwargs: dict[str, Any] = {
            "label_selector": selector.label if selector else None,
            "field_selector": selector.field if selector else None,
            "limit": _PAGE_SIZE,
            "_preload_content": False,  # plain JSON: the generated models are slow and not needed
            "_request_timeout": _REQUEST_TIMEOUT,
        }
        where = f"{kind} objects" + (f" in namespace {namespace}" if namespace else "")
        items: list[Object] = []
        token: str | None = None
        while True:
            try:
                response: Any = call(_continue=token, **kwargs)  # _preload_content=False: the raw answer
                body = json.loads(response.data)
            except ApiException as exc:
                detail = _api_error_message(exc)
                raise DiscoveryError(
                    f"kubernetes_sd: listing {where} at {api.api_client.configuration.host}: "
                    f"HTTP {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
                ) from None
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                raise DiscoveryError(
                    f"kubernetes_sd: listing {where} at {api.api_client.configuration.host}: {exc}"
                ) from None
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def _lookup(self) -> dict[str, Targets | DiscoveryError]:
        self._get_api()  # a config that cannot be loaded fails the whole refresh, not each namespace
        role = self.config.role
        namespaces: list[str | None] = [None] if role == "node" else list(self.config.namespaces.names) or [None]
        results: dict[str, Targets | DiscoveryError] = {}
        for namespace in namespaces:
            source = f"{role}/{namespace or '*'}"
            try:
                results[source] = self._targets(role, namespace)
            except DiscoveryError as exc:
                results[source] = exc
        return results

    def _targets(self, role: str, namespace: str | None) -> Targets:
        if role == "pod":
            return [t for pod in self._list("pod", namespace) for t in pod_targets(pod)]
        if role == "service":
            return [t for service in self._list("service", namespace) for t in service_targets(service)]
        if role == "node":
            return [t for node in self._list("node", None) for t in node_targets(node)]
        pods = _by_key(self._list("pod", namespace))
        services = _by_key(self._list("service", namespace))
        return [t for eps in self._list("endpoints", namespace) for t in endpoints_targets(eps, pods, services)]


def _by_key(objects: list[Object]) -> dict[tuple[str, str], Object]:
    """Objects keyed by (namespace, name)."""
    return {((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", "")): o for o in objects}


def _api_error_message(exc: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, when the server sent one."""
    try:
        return str(json.loads(exc.body or "").get("message", ""))
    except (ValueError, AttributeError):
        return ""
