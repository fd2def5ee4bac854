"""`tulle authz SERVICE`: the authorization policy that applies to a service, and its hit counts.

The policy comes from the manifest (`--manifest`, else the one the `tulle up`
mesh serves, else `mesh.yaml`). Hit counts come straight from
the service's proxies: their `/metrics` counters
`inbound_{http,tcp}_authz_{allow,deny}_total{server,policy,client_id}`, read
from the admin listeners given with `--proxy-admin` or listed in the
`state.json` of the mesh (`tulle.local.registry.find_state_dir` picks it).
The metrics API offers no raw series, and a proxy's own
counters are the exact numbers anyway.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tulle.cli.app import app
from tulle.cli.observe import (
    NAMESPACE_OPTION,
    STATE_DIR_OPTION,
    ControlUnreachable,
    api_call,
    resolve_control_url,
)
from tulle.codec.promtext import ParseError, Sample
from tulle.control.manifest import Manifest, ManifestError, load_manifest
from tulle.core.discovery import parse_address
from tulle.local.registry import find_state_dir
from tulle.local.state import StateDir
from tulle.viz.authz_report import (
    ProxyAdmin,
    attach_hits,
    count_hits,
    describe,
    fetch_samples,
    proxies_from_state,
)

console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)


# -- the command ------------------------------------------------------------------


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _choose_manifest(
    explicit: Path | None, state: Mapping[str, Any], state_dir: Path | None
) -> Path:
    if explicit is not None:
        return explicit
    served = state.get("manifest")
    if isinstance(served, str) and served and state_dir is not None:
        path = Path(served)
        # Relative paths in state.json are relative to the mesh's directory.
        return path if path.is_absolute() else state_dir.parent / path
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


def _from_control_plane(
    service: str, namespace: str, control: str, state_dir: str, as_json: bool
) -> None:
    """The report of the control plane's `GET /api/authz` (a Kubernetes service: NS/NAME)."""
    head, slash, name = service.partition("/")
    if slash and head.lower() in ("svc", "service"):
        service = name
    if namespace and "/" not in service:
        service = f"{namespace}/{service}"
    url = resolve_control_url(control, state_dir=state_dir)
    try:
        status, document = api_call(url, "/api/authz", {"service": service})
    except ControlUnreachable as exc:
        raise _fail(str(exc)) from None
    if status != 200:
        raise _fail(f"tulle authz: {document.get('error', f'HTTP {status}')}")
    if as_json:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    unreachable = [
        f"no hit counts from {instance}: its proxy does not answer"
        for instance in document["unreachable"]
    ]
    answered = len(document.get("proxies", [])) - len(unreachable)
    _render(document, unreachable, answered)


@app.command("authz")
def authz(
    service: str = typer.Argument(..., help="The service (workload) whose policy to show."),
    manifest_path: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="The manifest to read. Default: the one the `tulle up` mesh serves (--state-dir, "
        "./.tulle or the current mesh), else ./mesh.yaml.",
    ),
    proxy_admin: list[str] = typer.Option(
        [],
        "--proxy-admin",
        help="HOST:PORT of a proxy admin listener to read hit counts from (repeatable). "
        "Default: the service's proxies in the mesh's state.json.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of tables."),
    state_dir: str = STATE_DIR_OPTION,
    namespace: str = NAMESPACE_OPTION,
    control: str = typer.Option(
        "",
        "--control",
        envvar="TULLE_CONTROL_URL",
        help="Ask this control plane's HTTP API (policy and hit counts of its scraped "
        "proxies) instead of reading the manifest; implied by --namespace (Kubernetes).",
    ),
) -> None:
    """Show the authorization policies that apply to SERVICE, and how often each decided."""
    if namespace or control:
        _from_control_plane(service, namespace, control, state_dir, as_json)
        return
    found = find_state_dir(state_dir)
    state = (StateDir(found).read_state() if found is not None else None) or {}
    path = _choose_manifest(manifest_path, state, found)
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
