"""From Kubernetes objects to the control plane's model (`Manifest`): pure, no I/O.

The Kubernetes source hands this module the objects its reflectors hold and
gets back the same `Manifest` the manifest file produces, which then goes
through the same watchers -> translators -> streams path. That is what makes
a proxy unable to tell the two sources apart.

Names. Each port of a Service is one destination, registered under
`<svc>.<ns>.svc.<cluster-domain>:<port>` and `<cluster-ip>:<port>`. The bare
name (no port) names port 80 when the Service has it, else its first port:
an authority without a port means 80, and today's proxy asks for names
without their port (it keys services by name), so a one-port Service on 8080
must answer to its bare name too. Short
names (`svc`, `svc.ns`, `svc.ns.svc`) are expanded in the caller's namespace
by `expand_authority`, before the lookup.

Endpoints come from EndpointSlices (`v1` or `v1beta1`, same fields here),
matched to a Service port by port name. An endpoint is used when its `ready`
condition is true or unset (the API's own reading of a missing condition);
when no endpoint of a port is ready, the ones that are both `serving` and
`terminating` are used instead (as kube-proxy does), so that a rollout's last
pods keep answering while they drain. Endpoints of meshed pods (annotation
`tulle.io/meshed: "true"`, set by the proxy injector) carry the pod's
identity `spiffe://<trust-domain>/ns/<ns>/sa/<service-account>`.

Routes come from Gateway API HTTPRoutes and GRPCRoutes whose parentRef is a
Service (Linkerd's GAMMA reading), and the retry budget and default timeout
from Tulle's `ServiceProfile`. Policy comes from Tulle's `Server`,
`MeshTLSAuthentication`, `NetworkAuthentication`, `AuthorizationPolicy` and
HTTPRoutes whose parentRef is a Server. In Kubernetes, a proxy's workload is
`<namespace>/<pod-name>`; a Server applies to every pod its podSelector
selects.

Every object is untrusted input: one that does not make sense is skipped and
reported in `problems` (the source logs each once); the others still apply.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tulle.control.kubernetes.client import Obj
from tulle.control.manifest import (
    DEFAULT_ENDPOINT_WEIGHT,
    PROTOCOL_HINTS,
    Manifest,
    ServiceSpec,
)
from tulle.core.discovery import (
    Backend,
    Endpoint,
    HeaderMatch,
    Profile,
    RetryBudgetSpec,
    Route,
    RouteMatch,
)
from tulle.core.duration import duration_ms
from tulle.core.policy import (
    MODES,
    Authentication,
    AuthorizationPolicySpec,
    HttpRouteSpec,
    NetworkRule,
    PolicySpec,
    ServerSpec,
    WorkloadPolicySpec,
)
from tulle.identity.spiffe import SpiffeId

Key = tuple[str, str]
Store = Mapping[Key, Obj]

MESHED_ANNOTATION = "tulle.io/meshed"
DEFAULT_POLICY_ANNOTATION = "tulle.io/default-inbound-policy"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
POLICY_GROUP = "policy.tulle.io"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_TRUST_DOMAIN = "cluster.local"

# appProtocol (and the port-name prefixes Istio/Linkerd users already write)
# to the protocol the endpoints' proxies expect.
APP_PROTOCOLS = {
    "http": "http/1.1",
    "kubernetes.io/h2c": "h2",
    "h2c": "h2",
    "http2": "h2",
    "grpc": "grpc",
    "tcp": "opaque",
}
PROXY_PROTOCOLS = {
    "HTTP/1": "http/1.1",
    "HTTP/2": "h2",
    "gRPC": "grpc",
    "opaque": "opaque",
    "unknown": "http/1.1",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Invalid(ValueError):
    """One object cannot be used; the message says why."""


@dataclass(slots=True)
class ClusterState:
    """What the reflectors hold, by kind."""

    services: Store = field(default_factory=dict)
    endpoint_slices: Store = field(default_factory=dict)
    pods: Store = field(default_factory=dict)
    http_routes: Store = field(default_factory=dict)
    grpc_routes: Store = field(default_factory=dict)
    service_profiles: Store = field(default_factory=dict)
    servers: Store = field(default_factory=dict)
    mesh_tls_authentications: Store = field(default_factory=dict)
    network_authentications: Store = field(default_factory=dict)
    authorization_policies: Store = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    default_policy: str = "all-unauthenticated"


@dataclass(slots=True)
class Translation:
    manifest: Manifest
    problems: list[str]


# -- small readers of untrusted JSON ---------------------------------------------


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{what}: expected an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{what}: expected a list")
    return value


def _str(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise Invalid(f"{what}: expected a string")
    return value


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise Invalid(f"{what}: expected a port number")
    return value


def _meta(obj: Obj) -> tuple[str, str]:
    meta = _map(obj.get("metadata"), "metadata")
    return _str(meta.get("namespace"), "metadata.namespace"), _str(meta.get("name"), "name")


def _labels(obj: Obj, key: str = "labels") -> Mapping[str, Any]:
    return _map(_map(obj.get("metadata"), "metadata").get(key), f"metadata.{key}")


def service_fqdn(name: str, namespace: str, cluster_domain: str) -> str:
    return f"{name}.{namespace}.svc.{cluster_domain}"


def _ip_authority(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


# -- names -----------------------------------------------------------------------------


def caller_namespace(context_token: str) -> str | None:
    """The namespace in a Destination context token: `{"ns": "..."}` (Linkerd's form)."""
    if not context_token.startswith("{"):
        return None
    try:
        data = json.loads(context_token)
    except ValueError:
        return None
    ns = data.get("ns") if isinstance(data, dict) else None
    return ns if isinstance(ns, str) and _DNS_LABEL.match(ns) else None


def expand_authority(path: str, namespace: str | None, cluster_domain: str) -> str:
    """`svc[:port]`, `svc.ns[:port]`, `svc.ns.svc[:port]` -> the full name, in `namespace`."""
    text = path.strip().lower()
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit()):
        host, sep, port = text, "", ""
    host = host.removesuffix(".")
    if not host or host.startswith("["):
        return path
    try:
        ipaddress.ip_address(host)
        return path
    except ValueError:
        pass
    labels = host.split(".")
    suffix = f"svc.{cluster_domain}"
    if len(labels) == 1 and namespace:
        host = f"{host}.{namespace}.{suffix}"
    elif len(labels) == 2 and _DNS_LABEL.match(labels[1]):
        host = f"{host}.{suffix}"
    elif len(labels) == 3 and labels[2] == "svc":
        host = f"{host}.{cluster_domain}"
    else:
        return path
    return f"{host}{sep}{port}"


# -- destinations --------------------------------------------------------------------


def _protocol_of_port(port: Mapping[str, Any]) -> str:
    app = _str(port.get("appProtocol"), "appProtocol").lower()
    if app in APP_PROTOCOLS:
        return APP_PROTOCOLS[app]
    name = _str(port.get("name"), "ports[].name").lower()
    for prefix in ("grpc", "h2c", "http2", "http", "tcp"):
        if name == prefix or name.startswith(prefix + "-"):
            return APP_PROTOCOLS[prefix]
    return "http/1.1"


def _slices_by_service(slices: Store) -> dict[Key, list[tuple[Key, Obj]]]:
    result: dict[Key, list[tuple[Key, Obj]]] = {}
    for key, obj in slices.items():
        service = _labels(obj).get(SERVICE_NAME_LABEL)
        if isinstance(service, str) and service:
            result.setdefault((key[0], service), []).append((key, obj))
    return result


def pod_identity(pod: Obj | None, trust_domain: str) -> str | None:
    """The SPIFFE ID of a meshed pod; None when the pod is not meshed (or unknown)."""
    if pod is None:
        return None
    if _labels(pod, "annotations").get(MESHED_ANNOTATION) != "true":
        return None
    namespace, _ = _meta(pod)
    spec = _map(pod.get("spec"), "spec")
    account = _str(spec.get("serviceAccountName"), "spec.serviceAccountName") or "default"
    return SpiffeId(trust_domain, namespace, account).uri


def is_ip(text: str) -> bool:
    # inet_pton: the C parser, ten times cheaper than ipaddress for 10,000 addresses.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return True
    return False


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    ip: str
    ready: bool
    draining: bool  # serving and terminating
    pod: Key | None


@dataclass(frozen=True, slots=True)
class ParsedSlice:
    """One EndpointSlice, checked once per resourceVersion."""

    ports: Mapping[str, int]  # port name -> number
    endpoints: tuple[SliceEndpoint, ...]


def parse_slice(obj: Obj) -> ParsedSlice | None:
    """None for slices of other address types (FQDN)."""
    if _str(obj.get("addressType"), "addressType", "IPv4") not in ("IPv4", "IPv6"):
        return None
    ports: dict[str, int] = {}
    for port in _list(obj.get("ports"), "ports"):
        port = _map(port, "ports[]")
        if port.get("port") is not None:
            ports[_str(port.get("name"), "ports[].name")] = _port(port.get("port"), "ports[].port")
    endpoints = []
    for item in _list(obj.get("endpoints"), "endpoints"):
        item = _map(item, "endpoints[]")
        conditions = _map(item.get("conditions"), "endpoints[].conditions")
        is_ready = conditions.get("ready") is not False
        is_draining = conditions.get("serving") is True and conditions.get("terminating") is True
        if not (is_ready or is_draining):
            continue
        ref = _map(item.get("targetRef"), "endpoints[].targetRef")
        pod: Key | None = None
        if ref.get("kind") == "Pod":
            pod = (
                _str(ref.get("namespace"), "targetRef.namespace"),
                _str(ref.get("name"), "targetRef.name"),
            )
        for address in _list(item.get("addresses"), "endpoints[].addresses"):
            ip = _str(address, "addresses[]")
            if not is_ip(ip):
                raise Invalid(f"addresses[]: {ip!r} is not an IP address")
            endpoints.append(SliceEndpoint(ip, is_ready, is_draining, pod))
    return ParsedSlice(ports, tuple(endpoints))


class TranslationCache:
    """Parsed slices and pod identities, reused while an object's resourceVersion holds.

    A rebuild after one change then re-reads one object, not every slice and
    pod of the cluster. Objects without a resourceVersion are never cached.
    """

    def __init__(self) -> None:
        self.slices: dict[Key, tuple[str, ParsedSlice | None]] = {}
        self.identities: dict[tuple[Key, str], tuple[str, str | None]] = {}
        # Service -> (fingerprint, its entries in Manifest.services).
        self.services: dict[Key, tuple[tuple[Any, ...], dict[str, ServiceSpec]]] = {}

    def parsed(self, key: Key, obj: Obj) -> ParsedSlice | None:
        version = _version(obj)
        hit = self.slices.get(key)
        if hit is not None and version and hit[0] == version:
            return hit[1]
        parsed = parse_slice(obj)  # raises Invalid
        if version:
            self.slices[key] = (version, parsed)
        return parsed

    def identity(self, key: Key, pod: Obj | None, trust_domain: str) -> str | None:
        if pod is None:
            return None
        version = _version(pod)
        hit = self.identities.get((key, trust_domain))
        if hit is not None and version and hit[0] == version:
            return hit[1]
        identity = pod_identity(pod, trust_domain)
        if version:
            self.identities[(key, trust_domain)] = (version, identity)
        return identity

    def prune(self, state: ClusterState) -> None:
        """Forget deleted objects."""
        for key in [k for k in self.slices if k not in state.endpoint_slices]:
            del self.slices[key]
        for id_key in [k for k in self.identities if k[0] not in state.pods]:
            del self.identities[id_key]
        for key in [k for k in self.services if k not in state.services]:
            del self.services[key]


def _version(obj: Obj) -> str:
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else ""


def endpoints_for_port(
    slices: Iterable[tuple[Key, Obj]],
    port_name: str,
    pods: Store,
    settings: Settings,
    protocol: str,
    cache: TranslationCache,
) -> tuple[Endpoint, ...]:
    ready: dict[tuple[str, int], Endpoint] = {}
    draining: dict[tuple[str, int], Endpoint] = {}
    hint = PROTOCOL_HINTS[protocol]
    for key, obj in slices:
        parsed = cache.parsed(key, obj)
        if parsed is None:
            continue
        number = parsed.ports.get(port_name)
        if number is None:
            continue
        for item in parsed.endpoints:
            labels: dict[str, str] = {}
            identity = None
            if item.pod is not None:
                identity = cache.identity(item.pod, pods.get(item.pod), settings.trust_domain)
                labels = {"namespace": item.pod[0], "pod": item.pod[1]}
            endpoint = Endpoint(
                address=(item.ip, number),
                weight=DEFAULT_ENDPOINT_WEIGHT,
                identity=identity,
                protocol_hint=hint if identity else None,
                labels=labels,
            )
            (ready if item.ready else draining)[endpoint.address] = endpoint
    chosen = ready or draining
    return tuple(chosen[a] for a in sorted(chosen))


def _route_match(match: Mapping[str, Any], what: str) -> RouteMatch:
    path = _map(match.get("path"), f"{what}.path")
    kind = _str(path.get("type"), f"{what}.path.type", "PathPrefix")
    value = _str(path.get("value"), f"{what}.path.value", "/")
    if not value.startswith("/") and kind != "RegularExpression":
        raise Invalid(f"{what}.path.value: must start with /")
    headers = []
    for h in _list(match.get("headers"), f"{what}.headers"):
        h = _map(h, f"{what}.headers[]")
        regex = _str(h.get("type"), "headers[].type", "Exact") == "RegularExpression"
        name = _str(h.get("name"), "headers[].name").lower()
        if not name:
            raise Invalid(f"{what}.headers[].name: required")
        if regex:
            _compile(_str(h.get("value"), "headers[].value"), f"{what}.headers[].value")
        headers.append(HeaderMatch(name, _str(h.get("value"), "headers[].value"), regex))
    method = _str(match.get("method"), f"{what}.method") or None
    if kind == "Exact":
        return RouteMatch(path_exact=value, method=method, headers=tuple(headers))
    if kind == "RegularExpression":
        _compile(value, f"{what}.path.value")
        return RouteMatch(path_regex=value, method=method, headers=tuple(headers))
    if kind != "PathPrefix":
        raise Invalid(f"{what}.path.type: {kind!r} is not Exact, PathPrefix or RegularExpression")
    prefix = None if value == "/" else value
    return RouteMatch(path_prefix=prefix, method=method, headers=tuple(headers))


def _grpc_match(match: Mapping[str, Any], what: str) -> RouteMatch:
    method = _map(match.get("method"), f"{what}.method")
    service = _str(method.get("service"), f"{what}.method.service")
    name = _str(method.get("method"), f"{what}.method.method")
    headers = tuple(
        HeaderMatch(
            _str(_map(h, "h").get("name"), "headers[].name").lower(),
            _str(_map(h, "h").get("value"), "headers[].value"),
        )
        for h in _list(match.get("headers"), f"{what}.headers")
    )
    if service and name:
        return RouteMatch(path_exact=f"/{service}/{name}", method="POST", headers=headers)
    if service:
        return RouteMatch(path_prefix=f"/{service}/", method="POST", headers=headers)
    if name:
        return RouteMatch(path_regex=f"^/[^/]+/{re.escape(name)}$", method="POST", headers=headers)
    return RouteMatch(headers=headers)


def _compile(pattern: str, what: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise Invalid(f"{what}: not a regular expression: {exc}") from None


def _duration(value: Any, what: str) -> float | None:
    text = _str(value, what)
    if not text:
        return None
    # Gateway API: "0s" is no timeout at all, so zero is allowed here.
    milliseconds = duration_ms(text)
    if isinstance(milliseconds, str):
        raise Invalid(f"{what}: expected a duration like 500ms or 2s, got {text!r}")
    return milliseconds / 1000 or None


def _parents_service(route: Obj, namespace: str, service: str, port: int) -> bool:
    spec = _map(route.get("spec"), "spec")
    for ref in _list(spec.get("parentRefs"), "spec.parentRefs"):
        ref = _map(ref, "parentRefs[]")
        if _str(ref.get("kind"), "kind") != "Service" or _str(ref.get("group"), "group") not in (
            "",
            "core",
        ):
            continue
        if _str(ref.get("name"), "name") != service:
            continue
        if ref.get("namespace") not in (None, namespace):
            continue
        if ref.get("port") is not None and ref.get("port") != port:
            continue
        return True
    return False


def _by_namespace(store: Store) -> dict[str, list[tuple[Key, Obj]]]:
    result: dict[str, list[tuple[Key, Obj]]] = {}
    for key, obj in sorted(store.items()):
        result.setdefault(key[0], []).append((key, obj))
    return result


def _routes_of(
    in_namespace: list[tuple[Key, Obj]],
    grpc: bool,
    namespace: str,
    service: str,
    port: int,
    settings: Settings,
) -> tuple[list[Route], list[Backend]]:
    routes: list[Route] = []
    backends: list[Backend] = []
    attached = [
        (key, obj) for key, obj in in_namespace if _parents_service(obj, namespace, service, port)
    ]
    for (_, route_name), obj in attached:
        spec = _map(obj.get("spec"), "spec")
        for i, rule in enumerate(_list(spec.get("rules"), "spec.rules")):
            rule = _map(rule, f"rules[{i}]")
            what = f"rules[{i}].matches"
            matches = tuple(
                _grpc_match(_map(m, what), what) if grpc else _route_match(_map(m, what), what)
                for m in _list(rule.get("matches"), what)
            )
            timeouts = _map(rule.get("timeouts"), f"rules[{i}].timeouts")
            retry = _map(rule.get("retry"), f"rules[{i}].retry")
            codes = tuple(_status(c) for c in _list(retry.get("codes"), f"rules[{i}].retry.codes"))
            routes.append(
                Route(
                    name=f"{route_name}.{i}",
                    matches=matches,
                    timeout_s=_duration(timeouts.get("request"), "timeouts.request"),
                    retryable=True if retry else None,
                    retry_statuses=codes,
                )
            )
            refs = _list(rule.get("backendRefs"), f"rules[{i}].backendRefs")
            if refs and not backends and not matches:
                for ref in refs:
                    ref = _map(ref, "backendRefs[]")
                    if _str(ref.get("kind"), "kind", "Service") != "Service":
                        raise Invalid("backendRefs[].kind: only Service is supported")
                    name = _str(ref.get("name"), "backendRefs[].name")
                    ref_port = ref.get("port", port)
                    weight = ref.get("weight", 1)
                    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                        raise Invalid("backendRefs[].weight: expected a whole number >= 0")
                    fqdn = service_fqdn(name, namespace, settings.cluster_domain)
                    backends.append(
                        Backend(
                            service=f"{fqdn}:{_port(ref_port, 'backendRefs[].port')}", weight=weight
                        )
                    )
    return routes, backends


def _status(code: Any) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code < 600:
        raise Invalid(f"retry.codes[]: {code!r} is not an HTTP status")
    return code


def _profile_settings(profile: Obj | None) -> tuple[RetryBudgetSpec, float | None]:
    if profile is None:
        return RetryBudgetSpec(), None
    spec = _map(profile.get("spec"), "spec")
    budget = _map(spec.get("retryBudget"), "spec.retryBudget")
    default = RetryBudgetSpec()

    def number(key: str, fallback: float) -> float:
        value = budget.get(key, fallback)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise Invalid(f"spec.retryBudget.{key}: expected a number >= 0")
        return float(value)

    ttl = _duration(budget.get("ttl"), "spec.retryBudget.ttl")
    return (
        RetryBudgetSpec(
            ratio=number("retryRatio", default.ratio),
            min_retries_per_second=number("minRetriesPerSecond", default.min_retries_per_second),
            ttl_s=ttl if ttl is not None else default.ttl_s,
        ),
        _duration(spec.get("timeout"), "spec.timeout"),
    )


def _services(
    state: ClusterState, settings: Settings, problems: list[str], cache: TranslationCache
) -> dict[str, ServiceSpec]:
    slices = _slices_by_service(state.endpoint_slices)
    http_routes = _by_namespace(state.http_routes)
    grpc_routes_ns = _by_namespace(state.grpc_routes)
    result: dict[str, ServiceSpec] = {}
    for (namespace, name), obj in sorted(state.services.items()):
        try:
            fingerprint = _fingerprint(
                obj,
                slices.get((namespace, name), []),
                state,
                http_routes.get(namespace, []) + grpc_routes_ns.get(namespace, []),
                cache,
                settings,
            )
            cached = cache.services.get((namespace, name))
            if fingerprint is not None and cached is not None and cached[0] == fingerprint:
                result.update(cached[1])
                continue
            spec = _map(obj.get("spec"), "spec")
            if spec.get("type") == "ExternalName":
                continue
            cluster_ip = _str(spec.get("clusterIP"), "spec.clusterIP")
            fqdn = service_fqdn(name, namespace, settings.cluster_domain)
            budget, default_timeout = _profile_settings(
                state.service_profiles.get((namespace, name))
            )
            ports = _list(spec.get("ports"), "spec.ports")
            numbers = [
                _port(_map(p, "spec.ports[]").get("port"), "spec.ports[].port") for p in ports
            ]
            # The port a name without one means: 80, else the Service's first.
            bare_port = 80 if 80 in numbers else (numbers[0] if numbers else None)
            built: dict[str, ServiceSpec] = {}
            for port in ports:
                port = _map(port, "spec.ports[]")
                number = _port(port.get("port"), "spec.ports[].port")
                protocol = _protocol_of_port(port)
                routes, backends = _routes_of(
                    http_routes.get(namespace, []), False, namespace, name, number, settings
                )
                grpc_routes, grpc_backends = _routes_of(
                    grpc_routes_ns.get(namespace, []), True, namespace, name, number, settings
                )
                service = ServiceSpec(
                    name=fqdn,
                    port=number,
                    protocol=protocol,
                    endpoints=endpoints_for_port(
                        slices.get((namespace, name), ()),
                        _str(port.get("name"), "spec.ports[].name"),
                        state.pods,
                        settings,
                        protocol,
                        cache,
                    ),
                    profile=Profile(
                        routes=tuple(routes + grpc_routes),
                        retry_budget=budget,
                        backends=tuple(backends or grpc_backends),
                        timeout_s=default_timeout,
                    ),
                )
                keys = [f"{fqdn}:{number}"]
                if cluster_ip and cluster_ip != "None":
                    keys.append(f"{_ip_authority(cluster_ip)}:{number}")
                if number == bare_port:
                    keys += [k.rpartition(":")[0] for k in keys]
                for key in keys:
                    built[key] = service
            result.update(built)  # all the Service's ports, or none of them
            if fingerprint is not None:
                cache.services[(namespace, name)] = (fingerprint, built)
        except Invalid as exc:
            problems.append(f"Service {namespace}/{name}: {exc}")
    return result


def _fingerprint(
    service: Obj,
    slices: list[tuple[Key, Obj]],
    state: ClusterState,
    routes: list[tuple[Key, Obj]],
    cache: TranslationCache,
    settings: Settings,
) -> tuple[Any, ...] | None:
    """Every resourceVersion a Service's translation depends on; None: do not cache."""
    versions: list[Any] = [settings, _version(service)]
    for key, obj in slices:
        versions.append((key, _version(obj)))
        parsed = cache.parsed(key, obj)
        for item in parsed.endpoints if parsed is not None else ():
            if item.pod is not None:
                pod = state.pods.get(item.pod)
                versions.append(_version(pod) if pod is not None else None)
    versions += [(key, _version(obj)) for key, obj in routes]
    profile = state.service_profiles.get(_meta(service))
    versions.append(_version(profile) if profile is not None else None)
    if any(v == "" or (isinstance(v, tuple) and v[1] == "") for v in versions):
        return None
    return tuple(versions)


# -- policy ---------------------------------------------------------------------


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    match_labels = _map(selector.get("matchLabels"), "podSelector.matchLabels")
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in _list(selector.get("matchExpressions"), "podSelector.matchExpressions"):
        expr = _map(expr, "matchExpressions[]")
        key = _str(expr.get("key"), "matchExpressions[].key")
        op = _str(expr.get("operator"), "matchExpressions[].operator")
        values = _list(expr.get("values"), "matchExpressions[].values")
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise Invalid(f"matchExpressions[].operator: {op!r} is not an operator")
    return True


def _container_port(pod: Obj, name: str) -> int | None:
    spec = _map(pod.get("spec"), "spec")
    for container in _list(spec.get("containers"), "spec.containers"):
        for port in _list(_map(container, "containers[]").get("ports"), "ports"):
            port = _map(port, "ports[]")
            if port.get("name") == name:
                return _port(port.get("containerPort"), "containerPort")
    return None


def _local_ref(ref: Any, what: str, namespace: str) -> tuple[str, str, str]:
    ref = _map(ref, what)
    kind = _str(ref.get("kind"), f"{what}.kind")
    name = _str(ref.get("name"), f"{what}.name")
    ref_ns = _str(ref.get("namespace"), f"{what}.namespace") or namespace
    if not kind or not name:
        raise Invalid(f"{what}: needs kind and name")
    return kind, ref_ns, name


def _policy(state: ClusterState, settings: Settings, problems: list[str]) -> PolicySpec:
    servers: list[ServerSpec] = []
    workloads: list[WorkloadPolicySpec] = []
    # Sorted and grouped once: a Server selects pods of its own namespace only.
    pods_by_namespace = _by_namespace(state.pods)
    for (namespace, pod_name), pod in itertools.chain.from_iterable(pods_by_namespace.values()):
        # Read without the checking helpers: this runs for every pod on every rebuild.
        meta = pod.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        mode = annotations.get(DEFAULT_POLICY_ANNOTATION) if isinstance(annotations, dict) else None
        if isinstance(mode, str) and mode in MODES:
            workloads.append(WorkloadPolicySpec(f"{namespace}/{pod_name}", default_mode=mode))
    for (namespace, name), obj in sorted(state.servers.items()):
        try:
            spec = _map(obj.get("spec"), "spec")
            selector = _map(spec.get("podSelector"), "spec.podSelector")
            protocol_name = _str(spec.get("proxyProtocol"), "spec.proxyProtocol", "unknown")
            if protocol_name not in PROXY_PROTOCOLS:
                raise Invalid(
                    f"spec.proxyProtocol: {protocol_name!r} is not one of "
                    + ", ".join(PROXY_PROTOCOLS)
                )
            mode = _str(spec.get("accessPolicy"), "spec.accessPolicy") or None
            if mode is not None and mode not in MODES:
                raise Invalid(f"spec.accessPolicy: {mode!r} is not one of {', '.join(MODES)}")
            probes = tuple(_str(p, "probePaths[]") for p in _list(spec.get("probePaths"), "x"))
            port_value = spec.get("port")
            for (pod_ns, pod_name), pod in pods_by_namespace.get(namespace, ()):
                if not _selects(selector, _labels(pod)):
                    continue
                if isinstance(port_value, str):
                    number = _container_port(pod, port_value)
                    if number is None:
                        continue
                else:
                    number = _port(port_value, "spec.port")
                servers.append(
                    ServerSpec(
                        name=f"{namespace}/{name}",
                        workload=f"{pod_ns}/{pod_name}",
                        port=number,
                        protocol=PROXY_PROTOCOLS[protocol_name],
                        default_mode=mode,
                        probe_paths=probes,
                    )
                )
        except Invalid as exc:
            problems.append(f"Server {namespace}/{name}: {exc}")

    authentications: dict[str, Authentication] = {}
    for (namespace, name), obj in sorted(state.mesh_tls_authentications.items()):
        try:
            spec = _map(obj.get("spec"), "spec")
            identities = [_str(i, "spec.identities[]") for i in _list(spec.get("identities"), "x")]
            for ref in _list(spec.get("identityRefs"), "spec.identityRefs"):
                kind, ref_ns, ref_name = _local_ref(ref, "identityRefs[]", namespace)
                if kind != "ServiceAccount":
                    raise Invalid("identityRefs[].kind: only ServiceAccount is supported")
                identities.append(SpiffeId(settings.trust_domain, ref_ns, ref_name).uri)
            if not identities:
                raise Invalid("spec: needs identities or identityRefs")
            key = f"{namespace}/{name}"
            authentications[key] = Authentication(key, identities=tuple(identities))
        except Invalid as exc:
            problems.append(f"MeshTLSAuthentication {namespace}/{name}: {exc}")
    for (namespace, name), obj in sorted(state.network_authentications.items()):
        try:
            spec = _map(obj.get("spec"), "spec")
            rules = []
            for net in _list(spec.get("networks"), "spec.networks"):
                net = _map(net, "networks[]")
                cidr = _str(net.get("cidr"), "networks[].cidr")
                excepts = tuple(_str(e, "except[]") for e in _list(net.get("except"), "except"))
                for c in (cidr, *excepts):
                    try:
                        ipaddress.ip_network(c, strict=False)
                    except ValueError:
                        raise Invalid(f"networks[]: {c!r} is not a CIDR") from None
                rules.append(NetworkRule(cidr, excepts))
            if not rules:
                raise Invalid("spec.networks: needs at least one network")
            key = f"{namespace}/{name}"
            authentications[key] = Authentication(key, networks=tuple(rules))
        except Invalid as exc:
            problems.append(f"NetworkAuthentication {namespace}/{name}: {exc}")

    http_routes: list[HttpRouteSpec] = []
    for (namespace, name), obj in sorted(state.http_routes.items()):
        try:
            spec = _map(obj.get("spec"), "spec")
            for ref in _list(spec.get("parentRefs"), "spec.parentRefs"):
                ref = _map(ref, "parentRefs[]")
                if ref.get("kind") != "Server" or ref.get("group") != POLICY_GROUP:
                    continue
                matches: list[RouteMatch] = []
                for i, rule in enumerate(_list(spec.get("rules"), "spec.rules")):
                    what = f"rules[{i}].matches"
                    for m in _list(_map(rule, "rules[]").get("matches"), what):
                        matches.append(_route_match(_map(m, what), what))
                server = f"{namespace}/{_str(ref.get('name'), 'parentRefs[].name')}"
                http_routes.append(HttpRouteSpec(f"{namespace}/{name}", server, tuple(matches)))
        except Invalid as exc:
            problems.append(f"HTTPRoute {namespace}/{name}: {exc}")

    policies: list[AuthorizationPolicySpec] = []
    for (namespace, name), obj in sorted(state.authorization_policies.items()):
        try:
            spec = _map(obj.get("spec"), "spec")
            kind, _, target = _local_ref(spec.get("targetRef"), "spec.targetRef", namespace)
            if kind not in ("Server", "HTTPRoute"):
                raise Invalid("spec.targetRef.kind: only Server and HTTPRoute are supported")
            required: list[str] = []
            for ref in _list(spec.get("requiredAuthenticationRefs"), "requiredAuthenticationRefs"):
                ref_kind, ref_ns, ref_name = _local_ref(
                    ref, "requiredAuthenticationRefs[]", namespace
                )
                key = f"{ref_ns}/{ref_name}"
                if ref_kind == "ServiceAccount":
                    key = f"sa:{key}"
                    identity = SpiffeId(settings.trust_domain, ref_ns, ref_name).uri
                    authentications.setdefault(key, Authentication(key, identities=(identity,)))
                elif ref_kind not in ("MeshTLSAuthentication", "NetworkAuthentication"):
                    raise Invalid(f"requiredAuthenticationRefs[].kind: {ref_kind!r} unsupported")
                required.append(key)
            if not required:
                # Linkerd's rule: an AuthorizationPolicy with no authentication grants anyone.
                key = "tulle:unauthenticated"
                authentications.setdefault(key, Authentication(key, unauthenticated=True))
                required.append(key)
            full = f"{namespace}/{target}"
            policies.append(
                AuthorizationPolicySpec(
                    name=f"{namespace}/{name}",
                    target_server=full if kind == "Server" else None,
                    target_route=full if kind == "HTTPRoute" else None,
                    required=tuple(required),
                )
            )
        except Invalid as exc:
            problems.append(f"AuthorizationPolicy {namespace}/{name}: {exc}")

    return PolicySpec(
        default_mode=settings.default_policy,
        workloads=tuple(workloads),
        servers=tuple(servers),
        authentications=tuple(authentications.values()),
        http_routes=tuple(http_routes),
        authorization_policies=tuple(policies),
    )


def translate(
    state: ClusterState,
    settings: Settings = Settings(),
    cache: TranslationCache | None = None,
) -> Translation:
    """The model for `state`; pass the same `cache` to successive calls to reuse work."""
    problems: list[str] = []
    if cache is None:
        cache = TranslationCache()
    else:
        cache.prune(state)
    services = _services(state, settings, problems, cache)
    authorization = _policy(state, settings, problems)
    manifest = Manifest(services=services, source="kubernetes", authorization=authorization)
    return Translation(manifest, problems)
