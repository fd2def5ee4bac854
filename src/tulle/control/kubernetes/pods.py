"""The proxies of meshed Pods as the metrics API's scrape targets, and their names.

With `--source kubernetes` the metrics API scrapes the proxy of every meshed
pod (annotation `tulle.io/meshed: "true"`) the Pod reflector holds: it needs
no other watch. A pod is scraped at `<podIP>:<admin port>`, the port being the
pod's `tulle.io/proxy-admin-port` annotation, else the proxy's default admin
port (4191, DESIGN.md); the injector (`tulle.k8s.inject`) always writes
the annotation. Pods that cannot run a proxy any more (phase Succeeded or Failed)
or have no IP yet are not targets; a pod whose proxy does not answer stays a
target, and the API shows it as not answering.

Names, so that the figures of a cluster read as Kubernetes names:

- a target's service is `<namespace>/<service>`: the first (by name) Service
  of its namespace whose selector selects the pod, else its workload's name;
- its workload is `KIND/NAME` from the owner reference: a ReplicaSet named
  `<deployment>-<pod-template-hash>` (the pod carries that label) is the
  Deployment's (`deploy/web`), so no ReplicaSet watch is needed; otherwise
  `sts/`, `ds/`, `rs/`, `job/` of the owner, or `pod/<name>` for a bare pod;
- `dst_service` labels of the proxies' outbound metrics (the authority each
  proxy asked for: `web`, `web.shop:8080`, a ClusterIP...) are renamed to the
  same `<namespace>/<service>` by `DestinationNames`, in the namespace of the
  proxy that sent them, so that edges and service figures meet. A name that
  is no Service of the cluster (an external host) is kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tulle.codec.promtext import Sample
from tulle.control.kubernetes.translate import (
    DEFAULT_CLUSTER_DOMAIN,
    MESHED_ANNOTATION,
    ClusterState,
    Key,
    Store,
    _version,
    expand_authority,
    is_ip,
)
from tulle.core.discovery import format_address
from tulle.core.scrape import ScrapeTarget
from tulle.k8s.inject import ADMIN_PORT_ANNOTATION
from tulle.net.capture import ADMIN_PORT

# Written on every pod by the injector (tulle.k8s.inject), which also makes
# the proxy listen on the pod's address rather than its loopback.
DEFAULT_PROXY_ADMIN_PORT = ADMIN_PORT
_TEMPLATE_HASH_LABEL = "pod-template-hash"
_OWNER_KINDS = {
    "ReplicaSet": "rs",
    "StatefulSet": "sts",
    "DaemonSet": "ds",
    "Job": "job",
    "Deployment": "deploy",
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def admin_port(pod: Mapping[str, Any]) -> int | None:
    """The proxy's admin port: the annotation, else the default; None when it is not a port."""
    text = _mapping(_mapping(pod.get("metadata")).get("annotations")).get(ADMIN_PORT_ANNOTATION)
    if text is None:
        return DEFAULT_PROXY_ADMIN_PORT
    if isinstance(text, str) and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    return None


def workload_of(name: str, meta: Mapping[str, Any]) -> str:
    """`KIND/NAME` of the controller owning a pod (`pod/<name>` when none does)."""
    owners = meta.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        owner = _mapping(owner)
        if owner.get("controller") is False:
            continue
        kind = _OWNER_KINDS.get(str(owner.get("kind")))
        owner_name = owner.get("name")
        if kind is None or not isinstance(owner_name, str) or not owner_name:
            continue
        template_hash = _mapping(meta.get("labels")).get(_TEMPLATE_HASH_LABEL)
        if kind == "rs" and isinstance(template_hash, str) and template_hash:
            deployment = owner_name.removesuffix(f"-{template_hash}")
            if deployment != owner_name:
                return f"deploy/{deployment}"
        return f"{kind}/{owner_name}"
    return f"pod/{name}"


Selector = Mapping[str, str]


def _selector_index(
    services: Store,
) -> dict[str, dict[tuple[str, str], list[tuple[str, Selector]]]]:
    """Services with a selector, by namespace and by one (the least) pair of it.

    A pod selected by a Service has every pair of its selector, so looking up
    the pod's own labels finds each candidate once: no pass over every
    Service of the namespace per pod (10,000 pods x 1,000 Services)."""
    index: dict[str, dict[tuple[str, str], list[tuple[str, Selector]]]] = {}
    for (namespace, name), service in services.items():
        selector = _mapping(_mapping(service.get("spec")).get("selector"))
        if selector and all(isinstance(v, str) for v in selector.values()):
            pair = min(selector.items())
            index.setdefault(namespace, {}).setdefault(pair, []).append((name, selector))
    return index


def _service_of(
    labels: Mapping[str, Any], index: Mapping[tuple[str, str], list[tuple[str, Selector]]]
) -> str | None:
    """The first Service, by name, whose selector selects a pod with `labels`."""
    names = [
        name
        for pair in labels.items()
        if isinstance(pair[1], str)
        for name, selector in index.get(pair, ())
        if all(labels.get(k) == v for k, v in selector.items())
    ]
    return min(names) if names else None


def _target(key: Key, pod: Mapping[str, Any], index: Mapping[str, Any]) -> ScrapeTarget | None:
    namespace, name = key
    meta = _mapping(pod.get("metadata"))
    if _mapping(meta.get("annotations")).get(MESHED_ANNOTATION) != "true":
        return None
    status = _mapping(pod.get("status"))
    ip = status.get("podIP")
    port = admin_port(pod)
    if status.get("phase") in ("Succeeded", "Failed") or not isinstance(ip, str) or not ip:
        return None
    if port is None or not is_ip(ip):
        return None
    labels = _mapping(meta.get("labels"))
    workload = workload_of(name, meta)
    service = _service_of(labels, index.get(namespace, {})) or workload.partition("/")[2]
    return ScrapeTarget(
        f"{namespace}/{service}",
        name,
        format_address((ip, port)),
        namespace=namespace,
        workload=workload,
    )


class PodTargets:
    """`proxy_targets`, reusing each pod's target while its resourceVersion and the
    Services hold: a look costs a dict lookup per pod, not a parse of it."""

    def __init__(self) -> None:
        self._services: frozenset[tuple[Key, str]] = frozenset()
        self._index: dict[str, dict[tuple[str, str], list[tuple[str, Selector]]]] = {}
        self._by_pod: dict[Key, tuple[str, ScrapeTarget | None]] = {}

    def current(self, state: ClusterState) -> list[ScrapeTarget]:
        services = frozenset((key, _version(obj)) for key, obj in state.services.items())
        if services != self._services or any(v == "" for _, v in services):
            self._services = services
            self._index = _selector_index(state.services)
            self._by_pod = {}
        by_pod: dict[Key, tuple[str, ScrapeTarget | None]] = {}
        targets: list[ScrapeTarget] = []
        for key, pod in state.pods.items():
            version = _version(pod)
            hit = self._by_pod.get(key)
            if hit is None or not version or hit[0] != version:
                hit = (version, _target(key, pod, self._index))
            by_pod[key] = hit
            if hit[1] is not None:
                targets.append(hit[1])
        self._by_pod = by_pod  # deleted pods are forgotten
        return targets


def proxy_targets(state: ClusterState) -> list[ScrapeTarget]:
    """Every meshed pod's proxy that can be scraped, named as the module says."""
    index = _selector_index(state.services)
    found = (_target(key, pod, index) for key, pod in state.pods.items())
    return sorted(target for target in found if target is not None)


class DestinationNames:
    """Renames `dst_service` labels to `<namespace>/<service>` (see the module)."""

    def __init__(self, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.cluster_domain = cluster_domain
        self._services: set[Key] = set()
        self._cluster_ips: dict[str, str] = {}
        # (namespace, label) -> name: labels repeat in every scrape.
        self._cache: dict[tuple[str, str], str] = {}

    def update(self, services: Store) -> None:
        """Follow the cluster's Services (called after each rebuild of the model)."""
        known = set(services)
        cluster_ips: dict[str, str] = {}
        for (namespace, name), service in services.items():
            spec = _mapping(service.get("spec"))
            ips = spec.get("clusterIPs")
            for ip in [spec.get("clusterIP"), *(ips if isinstance(ips, list) else [])]:
                if isinstance(ip, str) and ip and ip != "None":
                    cluster_ips[ip] = f"{namespace}/{name}"
        if known != self._services or cluster_ips != self._cluster_ips:
            self._services, self._cluster_ips = known, cluster_ips
            self._cache = {}

    def name(self, namespace: str, label: str) -> str:
        key = (namespace, label)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = self._cache[key] = self._resolve(namespace, label)
        return found

    def _resolve(self, namespace: str, label: str) -> str:
        text = label.strip().lower()
        host, sep, port = text.rpartition(":")
        if not (sep and host and port.isdigit()):
            host = text
        host = host.removeprefix("[").removesuffix("]")
        by_ip = self._cluster_ips.get(host)
        if by_ip is not None:
            return by_ip
        full = expand_authority(label, namespace, self.cluster_domain)
        host = full.rpartition(":")[0] if ":" in full else full
        suffix = f".svc.{self.cluster_domain}"
        if host.endswith(suffix):
            parts = host.removesuffix(suffix).split(".")
            if len(parts) == 2 and (parts[1], parts[0]) in self._services:
                return f"{parts[1]}/{parts[0]}"
        return label

    def relabel(self, target: ScrapeTarget, samples: Iterable[Sample]) -> list[Sample]:
        """`samples` of `target` with their `dst_service` renamed (a pod's only)."""
        if not target.namespace:
            return list(samples)
        renamed: list[Sample] = []
        for sample in samples:
            labels = sample.labels
            for index, (key, value) in enumerate(labels):
                if key == "dst_service" and value:
                    name = self.name(target.namespace, value)
                    if name != value:
                        labels = (*labels[:index], (key, name), *labels[index + 1 :])
                        sample = Sample(sample.name, labels, sample.value)
                    break
            renamed.append(sample)
        return renamed
