"""The authorization report of one workload: what policy applies, and its hit counts.

Shared by `tulle authz` and the control plane's `GET /api/authz` (the
dashboard's policy section): the policy comes from the manifest's validated
`policy:` section, the counts from the proxies' `inbound_*_authz_*_total`.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tulle.codec.promtext import Sample, parse
from tulle.core.discovery import RouteMatch, parse_address
from tulle.core.policy import SERVER_DEFAULT_MODE, Authentication, PolicySpec
from tulle.viz.api_context import ApiContext, ApiError

AUTHZ_METRICS = {
    "inbound_http_authz_allow_total": ("http", "allow"),
    "inbound_http_authz_deny_total": ("http", "deny"),
    "inbound_tcp_authz_allow_total": ("tcp", "allow"),
    "inbound_tcp_authz_deny_total": ("tcp", "deny"),
}
FETCH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ProxyAdmin:
    instance: str
    admin: str  # HOST:PORT


# -- what applies ---------------------------------------------------------------


def _authentication_text(authentication: Authentication) -> str:
    if authentication.identities:
        return "identity " + " | ".join(authentication.identities)
    if authentication.networks:
        parts = []
        for rule in authentication.networks:
            text = rule.cidr
            if rule.except_:
                text += f" except {', '.join(rule.except_)}"
            parts.append(text)
        return "network " + " | ".join(parts)
    return "anyone (unauthenticated)"


def _match_text(match: RouteMatch) -> str:
    parts = []
    if match.method:
        parts.append(match.method)
    if match.path_exact is not None:
        parts.append(f"={match.path_exact}")
    elif match.path_prefix is not None:
        parts.append(f"{match.path_prefix}*")
    elif match.path_regex is not None:
        parts.append(f"~{match.path_regex}")
    parts.extend(f"{h.name}{'~' if h.regex else '='}{h.value}" for h in match.headers)
    return " ".join(parts) or "any request"


def describe(
    spec: PolicySpec, service: str, workloads: Collection[str] | None = None
) -> dict[str, Any]:
    """The policy of one workload as a JSON-ready document.

    `workloads`: the policy workloads that make up `service` when they are not
    named after it (Kubernetes: its pods, `<namespace>/<pod>`); a Server that
    selects several of them is listed once."""
    names = {service} if workloads is None else set(workloads)
    workload = next((w for w in spec.workloads if w.name in names), None)
    workload_mode = workload.default_mode if workload and workload.default_mode else None
    authentications = {a.name: a for a in spec.authentications}
    servers = list({s.name: s for s in spec.servers if s.workload in names}.values())
    server_names = {s.name for s in servers}
    routes = [r for r in spec.http_routes if r.server in server_names]
    route_server = {r.name: r.server for r in routes}
    policies = []
    for policy in spec.authorization_policies:
        if policy.target_server in server_names:
            target = {"server": policy.target_server}
            server = policy.target_server
        elif policy.target_route in route_server:
            target = {"httpRoute": policy.target_route}
            server = route_server[policy.target_route]
        else:
            continue
        policies.append(
            {
                "name": policy.name,
                "server": server,
                "target": target,
                "requires": [
                    {"name": name, "what": _authentication_text(authentications[name])}
                    for name in policy.required
                    if name in authentications
                ],
            }
        )
    return {
        "service": service,
        "mesh_default": spec.default_mode,
        "workload_default": workload_mode,
        # What ports no server selects get.
        "default": workload_mode or spec.default_mode,
        "probe_paths": list(workload.probe_paths) if workload else [],
        "servers": [
            {
                "name": s.name,
                "port": s.port,
                "protocol": s.protocol,
                "default": s.default_mode or SERVER_DEFAULT_MODE,
                "probe_paths": list(s.probe_paths),
            }
            for s in servers
        ],
        "routes": [
            {"name": r.name, "server": r.server, "matches": [_match_text(m) for m in r.matches]}
            for r in routes
        ],
        "policies": policies,
    }


# -- hit counts -------------------------------------------------------------------


def count_hits(samples: Iterable[Sample]) -> dict[tuple[str, str], dict[str, Any]]:
    """Sum authz counters by (server, policy): allow, deny, and per client identity."""
    hits: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in samples:
        kind = AUTHZ_METRICS.get(sample.name)
        if kind is None:
            continue
        _, verdict = kind
        key = (sample.label("server"), sample.label("policy"))
        entry = hits.setdefault(key, {"allow": 0.0, "deny": 0.0, "clients": {}})
        entry[verdict] += sample.value
        client = sample.label("client_id") or "(none)"
        per_client = entry["clients"].setdefault(client, {"allow": 0.0, "deny": 0.0})
        per_client[verdict] += sample.value
    return hits


def fetch_samples(proxy: ProxyAdmin) -> list[Sample]:
    """One proxy's /metrics; raises OSError or ParseError."""
    host, port = parse_address(proxy.admin)
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
        return parse(response.read().decode("utf-8", "replace"))


def proxies_from_state(document: Mapping[str, Any], service: str) -> list[ProxyAdmin]:
    found = []
    for instance in document.get("instances") or []:
        if isinstance(instance, dict) and instance.get("service") == service:
            admin = instance.get("admin")
            if isinstance(admin, str) and admin:
                found.append(ProxyAdmin(str(instance.get("name", admin)), admin))
    return found


def attach_hits(
    document: dict[str, Any], hits: Mapping[tuple[str, str], Mapping[str, Any]]
) -> None:
    """Add `allow`/`deny`/`clients` to each policy, and list decisions by defaults and probes."""
    listed: set[tuple[str, str]] = set()
    for policy in document["policies"]:
        key = (policy["server"], policy["name"])
        listed.add(key)
        entry = hits.get(key, {})
        policy["allow"] = entry.get("allow", 0.0)
        policy["deny"] = entry.get("deny", 0.0)
        policy["clients"] = entry.get("clients", {})
    document["other_decisions"] = [
        {"server": server, "policy": name, **entry}
        for (server, name), entry in sorted(hits.items())
        if (server, name) not in listed
    ]


async def api_authz(context: ApiContext, query: dict[str, str]) -> dict[str, Any]:
    """`GET /api/authz?service=X`: the report `tulle authz X` prints, as JSON.

    Hit counts come from the service's proxies among the scrape targets; a
    proxy that does not answer is listed under `unreachable`."""
    service = query.get("service", "").strip()
    if not service:
        raise ApiError(400, "service: which service's policy? (?service=NAME)")
    manifest = context.manifest()
    if manifest is None:
        raise ApiError(503, "the control plane has no manifest loaded yet")
    targets = [t for t in context.targets() if t.service == service]
    # Kubernetes pods are policy workloads of their own, `<namespace>/<pod>`.
    pods = [f"{t.namespace}/{t.instance}" for t in targets if t.namespace]
    document = describe(manifest.authorization, service, pods or None)
    proxies = [ProxyAdmin(t.instance, t.admin) for t in targets]
    results = await asyncio.gather(
        *(asyncio.to_thread(fetch_samples, proxy) for proxy in proxies), return_exceptions=True
    )
    samples: list[Sample] = []
    unreachable: list[str] = []
    for proxy, result in zip(proxies, results, strict=True):
        if isinstance(result, BaseException):
            unreachable.append(proxy.instance)
        else:
            samples.extend(result)
    attach_hits(document, count_hits(samples))
    document["proxies"] = [p.admin for p in proxies]
    document["unreachable"] = unreachable
    return document
