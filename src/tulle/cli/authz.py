"""`tulle authz SERVICE`: the authorization policy that applies to a service, and its hit counts.

The policy comes from the manifest (`--manifest`, else the one a `tulle up`
mesh in this directory serves, else `mesh.yaml`). Hit counts come straight from
the service's proxies: their `/metrics` counters
`inbound_{http,tcp}_authz_{allow,deny}_total{server,policy,client_id}`, read
from the admin listeners given with `--proxy-admin` or listed in
`.tulle/state.json`. The metrics API offers no raw series, and a proxy's own
counters are the exact numbers anyway.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tulle.cli.main import app
from tulle.cli.observe import find_state_file
from tulle.control.manifest import Manifest, ManifestError, load_manifest
from tulle.core.discovery import RouteMatch, parse_address
from tulle.core.policy import SERVER_DEFAULT_MODE, Authentication, PolicySpec
from tulle.viz.promtext import ParseError, Sample, parse

AUTHZ_METRICS = {
    "inbound_http_authz_allow_total": ("http", "allow"),
    "inbound_http_authz_deny_total": ("http", "deny"),
    "inbound_tcp_authz_allow_total": ("tcp", "allow"),
    "inbound_tcp_authz_deny_total": ("tcp", "deny"),
}
FETCH_TIMEOUT_S = 2.0

console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)


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


def describe(spec: PolicySpec, service: str) -> dict[str, Any]:
    """The policy of one workload as a JSON-ready document."""
    workload = next((w for w in spec.workloads if w.name == service), None)
    workload_mode = workload.default_mode if workload and workload.default_mode else None
    authentications = {a.name: a for a in spec.authentications}
    servers = [s for s in spec.servers if s.workload == service]
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


# -- the command ------------------------------------------------------------------


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _state_document(state_file: Path | None) -> dict[str, Any]:
    if state_file is None:
        return {}
    try:
        loaded = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _choose_manifest(
    explicit: Path | None, state: Mapping[str, Any], state_file: Path | None
) -> Path:
    if explicit is not None:
        return explicit
    served = state.get("manifest")
    if isinstance(served, str) and served and state_file is not None:
        path = Path(served)
        # Relative paths in state.json are relative to the mesh's directory.
        return path if path.is_absolute() else state_file.parent.parent / path
    return Path("mesh.yaml")


def _count(value: float) -> str:
    return f"{value:.0f}"


def _render(document: Mapping[str, Any], unreachable: Sequence[str], proxies: int) -> None:
    service = escape(document["service"])
    default_from = "workload" if document["workload_default"] else "mesh"
    console.print(
        f"[bold]{service}[/]: ports no server selects get [bold]{document['default']}[/] "
        f"(from the {default_from} default)"
        + (f"; probe paths {', '.join(document['probe_paths'])}" if document["probe_paths"] else "")
    )
    servers = Table(title="Servers", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("server", "port", "protocol", "default", "probe paths"):
        servers.add_column(column)
    for s in document["servers"]:
        port = str(s["port"]) if s["port"] is not None else "all"
        servers.add_row(
            escape(s["name"]), port, s["protocol"], s["default"], ", ".join(s["probe_paths"])
        )
    if document["servers"]:
        console.print(servers)
    if document["routes"]:
        routes = Table(title="HTTP routes", box=box.SIMPLE_HEAD, title_justify="left")
        for column in ("route", "server", "matches"):
            routes.add_column(column)
        for r in document["routes"]:
            routes.add_row(escape(r["name"]), escape(r["server"]), escape("; ".join(r["matches"])))
        console.print(routes)
    policies = Table(
        title=f"Authorization policies (hits from {proxies} prox{'y' if proxies == 1 else 'ies'})",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for column in ("policy", "target", "requires (all of)", "allowed", "denied"):
        policies.add_column(column, justify="right" if column in ("allowed", "denied") else "left")
    for p in document["policies"]:
        kind, name = next(iter(p["target"].items()))
        requires = "\n".join(f"{r['name']}: {r['what']}" for r in p["requires"])
        policies.add_row(
            escape(p["name"]),
            escape(f"{kind} {name}"),
            escape(requires),
            _count(p.get("allow", 0.0)),
            _count(p.get("deny", 0.0)),
        )
    for other in document.get("other_decisions", []):
        policies.add_row(
            escape(other["policy"]),
            escape(f"server {other['server']}" if other["server"] else "(no server)"),
            "",
            _count(other["allow"]),
            _count(other["deny"]),
        )
    console.print(policies)
    if not document["servers"]:
        console.print("No server selects a port of this service: only the default applies.")
    for problem in unreachable:
        console.print(f"[yellow]warning:[/] {escape(problem)}")


@app.command("authz")
def authz(
    service: str = typer.Argument(..., help="The service (workload) whose policy to show."),
    manifest_path: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="The manifest to read. Default: the one the `tulle up` mesh of ./.tulle serves, "
        "else ./mesh.yaml.",
    ),
    proxy_admin: list[str] = typer.Option(
        [],
        "--proxy-admin",
        help="HOST:PORT of a proxy admin listener to read hit counts from (repeatable). "
        "Default: the service's proxies in ./.tulle/state.json.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of tables."),
) -> None:
    """Show the authorization policies that apply to SERVICE, and how often each decided."""
    state_file = find_state_file()
    state = _state_document(state_file)
    path = _choose_manifest(manifest_path, state, state_file)
    try:
        manifest: Manifest = load_manifest(path)
    except ManifestError as exc:
        raise _fail(f"cannot use the manifest:\n{exc}") from None
    if service not in manifest.services:
        known = ", ".join(sorted(manifest.services)) or "none"
        raise _fail(f'no service named "{service}" in {path} (services: {known})')
    document = describe(manifest.authorization, service)
    proxies: list[ProxyAdmin] = []
    for text in proxy_admin:
        try:
            parse_address(text)
        except ValueError as exc:
            raise _fail(f"bad --proxy-admin: {exc}") from None
        proxies.append(ProxyAdmin(text, text))
    if not proxies:
        proxies = proxies_from_state(state, service)
    samples: list[Sample] = []
    unreachable: list[str] = []
    for proxy in proxies:
        try:
            samples.extend(fetch_samples(proxy))
        except (OSError, urllib.error.URLError, ParseError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            unreachable.append(f"no hit counts from {proxy.instance} ({proxy.admin}): {reason}")
    attach_hits(document, count_hits(samples))
    document["proxies"] = [p.admin for p in proxies]
    document["unreachable"] = unreachable
    if as_json:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    _render(document, unreachable, len(proxies) - len(unreachable))
