"""`tulle stat|top|tap|routes|edges|check|apply`: the mesh's observability commands.

Every command is a thin client of the control plane's metrics API
(docs/api.md), so the CLI and the dashboard show the same numbers. Each has
`--json` (the API's document, unchanged) and a readable table. The API is
found with `--control`, else `TULLE_CONTROL_URL`, else the `control.http`
address in the `state.json` of the mesh `tulle.local.registry.find_state_dir`
picks (`--state-dir`, a running `.tulle/` here or in a parent, the current
mesh `tulle up` registered), else http://127.0.0.1:8084. Writes and tap send
the API token: `--token`, else `TULLE_API_TOKEN`, else the `api-token` file
of that same state directory, to a loopback control plane only.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import typer

from tulle.cli import observe_options
from tulle.cli.app import app
from tulle.core.checks import FAIL, OK, WARN, CheckReport
from tulle.core.credentials import CredentialError, read_token_file
from tulle.local.registry import find_state_dir
from tulle.local.state import StateDir
from tulle.viz.checks import preflight

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

DEFAULT_CONTROL_URL = "http://127.0.0.1:8084"
REQUEST_TIMEOUT_S = 10.0

_CONTROL_HELP = (
    "URL of the control plane's HTTP API. Default: TULLE_CONTROL_URL, else the control.http "
    "of the mesh's state.json (--state-dir, else ./.tulle, else the current mesh that "
    "`tulle up` registered), else http://127.0.0.1:8084."
)
STATE_DIR_HELP = (
    "The state directory of the mesh to act on. Default: ./.tulle (or a parent's) when its "
    "mesh runs, else the current mesh that `tulle up` registered (docs/local.md)."
)
_JSON_HELP = "Print the API's JSON document instead of a table."
_TOKEN_HELP = (
    "The control plane's API token (writes and tap need it). Default: TULLE_API_TOKEN, else "
    "the api-token file of ./.tulle (sent to a loopback control plane only)."
)
_WINDOW_HELP = "How far back to look: 10s .. 10m."


def _option(option: observe_options.Option, help: str) -> Any:
    """The typer option of a table entry of `observe_options`: spellings, default, variable."""
    return typer.Option(option.default, *option.spellings, envvar=option.envvar, help=help)


# Options several commands share (the tap and dashboard ones too).
CONTROL_OPTION = _option(observe_options.CONTROL, _CONTROL_HELP)
STATE_DIR_OPTION = _option(observe_options.STATE_DIR, STATE_DIR_HELP)
WINDOW_OPTION = _option(observe_options.WINDOW, _WINDOW_HELP)
JSON_OPTION = _option(observe_options.JSON, _JSON_HELP)
TOKEN_OPTION = typer.Option("", "--token", envvar="TULLE_API_TOKEN", help=_TOKEN_HELP)
NAMESPACE_OPTION = _option(
    observe_options.NAMESPACE,
    "Kubernetes: the namespace of SERVICE, or the only namespace to show. Default: every one.",
)
ALL_NAMESPACES_OPTION = _option(observe_options.ALL_NAMESPACES, "Kubernetes: every namespace.")
# `tulle stat svc/NAME`, as kubectl spells a Service.
SERVICE_KINDS = ("svc", "service", "services")


@cache
def _console() -> Console:
    # rich is imported only by the commands that draw with it: `--json` and
    # plain lines answer without it (it is a tenth of a second of CPU).
    from rich.console import Console

    # Piped output is not wrapped at 80 columns: the tables are wider than that.
    return Console(width=None if sys.stdout.isatty() else 200)


def _table(title: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(box=box.SIMPLE_HEAD, title=title)


class ControlUnreachable(Exception):
    pass


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _state_dir_once(state_dir: str, start: Path | None) -> Callable[[], Path | None]:
    # The control URL and the token both come from the mesh's state directory:
    # find it at most once, and only when one of them needs it.
    return cache(partial(find_state_dir, state_dir, start))


def _control_url(explicit: str, mesh: Callable[[], Path | None]) -> str:
    if explicit:
        url = explicit
    else:
        url = DEFAULT_CONTROL_URL
        found = mesh()
        document = (StateDir(found).read_state() if found is not None else None) or {}
        control = document.get("control")
        address = control.get("http") if isinstance(control, dict) else None
        if isinstance(address, str) and address:
            url = address
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def _api_token(explicit: str, control_url: str, mesh: Callable[[], Path | None]) -> str:
    if explicit:
        return explicit.strip()
    if not _is_loopback(control_url):
        return ""
    found = mesh()
    if found is None:
        return ""
    try:
        return read_token_file(StateDir(found).api_token_file)
    except CredentialError:
        return ""


def resolve_control_url(explicit: str, start: Path | None = None, *, state_dir: str = "") -> str:
    """--control as given; else the `control.http` of the mesh's state.json
    (`find_state_dir`); else 8084."""
    return _control_url(explicit, _state_dir_once(state_dir, start))


def resolve_api(
    control: str, token: str, start: Path | None = None, *, state_dir: str = ""
) -> tuple[str, str]:
    """The API's URL (`resolve_control_url`) and the token to send it: --token /
    TULLE_API_TOKEN, else the `api-token` file of the mesh's state directory,
    which is sent to a loopback control plane only (never to an address that
    leaves the machine); "" when there is none."""
    mesh = _state_dir_once(state_dir, start)
    url = _control_url(control, mesh)
    return url, _api_token(token, url, mesh)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def api_call(
    control: str,
    path: str,
    params: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
    token: str = "",
) -> tuple[int, Any]:
    """One API call; (status, decoded JSON). Raises ControlUnreachable."""
    query = {k: v for k, v in (params or {}).items() if v}
    url = f"{control}{path}" + (f"?{urlencode(query)}" if query else "")
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("content-type", "application/yaml")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlUnreachable(
            f"cannot reach the control plane at {control}: {reason}\n"
            "hint: is `tulle control` (or `tulle up`) running? pass --control URL otherwise"
        ) from None


def _get(control: str, path: str, params: dict[str, str], token: str = "") -> Any:
    try:
        status, document = api_call(control, path, params, token=token)
    except ControlUnreachable as exc:
        raise _fail(str(exc)) from None
    if status != 200:
        raise _fail(f"tulle: {document.get('error', f'HTTP {status}')}")
    return document


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}ms"


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2))


def _golden_columns(table: Table) -> None:
    for column in ("SUCCESS", "RPS", "P50", "P95", "P99", "TLS"):
        table.add_column(column, justify="right")


def _golden_cells(row: dict[str, Any]) -> list[str]:
    latency = row["latency_ms"]
    return [
        _pct(row["success_rate"]),
        f"{row['rps']:.2f}",
        _ms(latency["p50"]),
        _ms(latency["p95"]),
        _ms(latency["p99"]),
        f"{row['tls_share'] * 100:.0f}%",
    ]


def _namespace(namespace: str, all_namespaces: bool) -> str:
    if namespace and all_namespaces:
        raise typer.BadParameter(
            "give --namespace or --all-namespaces, not both", param_hint="--namespace"
        )
    return namespace


def _service_name(name: str, namespace: str) -> str:
    """A service of a Kubernetes namespace is `<namespace>/<service>` in the API."""
    return f"{namespace}/{name}" if namespace and name and "/" not in name else name


def stat_query(resource: str, kind: str, namespace: str) -> dict[str, str]:
    """The /api/stat query of `tulle stat RESOURCE`: SERVICE, svc/SERVICE, KIND/NAME or KIND."""
    head, slash, name = resource.partition("/")
    workload_kind = observe_options.WORKLOAD_KINDS.get(head.lower())
    if workload_kind is not None and (slash or not name):
        if kind not in ("service", "workload"):
            raise typer.BadParameter(
                f"{resource} names a workload: --kind {kind} does not apply", param_hint="--kind"
            )
        target = f"{workload_kind}/{name}" if name else workload_kind
        return {"kind": "workload", "workload": target, "namespace": namespace}
    if head.lower() in SERVICE_KINDS and slash:
        resource = name
    elif head.lower() in SERVICE_KINDS and not slash:
        resource = ""
    service = _service_name(resource, namespace)
    return {"kind": kind, "service": service, "namespace": namespace}


def _instances(row: dict[str, Any]) -> str:
    """How many proxies; `answering/all` when some do not answer their scrape."""
    answering = row.get("answering")
    if answering is None or answering == row["instances"]:
        return str(row["instances"])
    return f"{answering}/{row['instances']}"


@app.command("stat")
def stat(
    service: str = typer.Argument(
        "",
        help="What to show: SERVICE (or svc/SERVICE); in Kubernetes also a workload "
        "deploy/NAME (sts/, ds/, rs/, job/, pod/), or a kind alone (deploy) for every one of "
        "it. Default: every service.",
    ),
    kind: str = typer.Option(
        "service", "--kind", "-k", help="service, instance (each proxy) or workload."
    ),
    namespace: str = NAMESPACE_OPTION,
    all_namespaces: bool = ALL_NAMESPACES_OPTION,
    window: str = WINDOW_OPTION,
    as_json: bool = JSON_OPTION,
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
) -> None:
    """Golden metrics per service, instance or workload: success rate, RPS, latency, mTLS."""
    if kind not in ("service", "instance", "workload"):
        raise typer.BadParameter("expected service, instance or workload", param_hint="--kind")
    query = stat_query(service, kind, _namespace(namespace, all_namespaces))
    kind = query["kind"]
    url = resolve_control_url(control, state_dir=state_dir)
    document = _get(url, "/api/stat", {**query, "window": window})
    if as_json:
        _print_json(document)
        return
    table = _table(f"last {document['window_s']:g}s ({document['source']})")
    if kind == "workload":
        table.add_column("NAMESPACE")
        table.add_column("WORKLOAD")
    else:
        table.add_column("SERVICE")
    if kind == "instance":
        table.add_column("INSTANCE")
    else:
        table.add_column("INSTANCES", justify="right")
    table.add_column("REQUESTS", justify="right")
    _golden_columns(table)
    for row in document["rows"]:
        first = [row["namespace"], row["workload"]] if kind == "workload" else [row["service"]]
        second = row["instance"] if kind == "instance" else _instances(row)
        table.add_row(*first, second, str(row["requests"]), *_golden_cells(row))
    _console().print(table)
    for proxy in document.get("not_answering", []):
        name = proxy["instance"]
        if proxy.get("namespace"):
            name = f"{proxy['namespace']}/{name}"
        typer.echo(f"not answering: {name} ({proxy['admin']}): {proxy['error']}")


@app.command("routes")
def routes(
    service: str = typer.Argument(..., help="The service whose routes to show (or svc/NAME)."),
    namespace: str = NAMESPACE_OPTION,
    window: str = WINDOW_OPTION,
    as_json: bool = JSON_OPTION,
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
) -> None:
    """Golden metrics per route of one service (as its callers see it)."""
    head, slash, name = service.partition("/")
    if slash and head.lower() in SERVICE_KINDS:
        service = name
    service = _service_name(service, namespace)
    url = resolve_control_url(control, state_dir=state_dir)
    document = _get(url, "/api/routes", {"service": service, "window": window})
    if as_json:
        _print_json(document)
        return
    table = _table(f"{service}: routes, last {document['window_s']:g}s")
    table.add_column("ROUTE")
    table.add_column("REQUESTS", justify="right")
    _golden_columns(table)
    table.add_column("RETRIES", justify="right")
    table.add_column("FAULTED", justify="right")
    table.add_column("LIMITED", justify="right")
    table.add_column("MIRRORED", justify="right")
    for row in document["rows"]:
        table.add_row(
            row["route"],
            str(row["requests"]),
            *_golden_cells(row),
            str(row["retries"]),
            str(row.get("faults_injected", 0)),
            str(row.get("rate_limited", 0)),
            str(row.get("mirrored", 0)),
        )
    _console().print(table)
    # What the manifest injects into a route, one line each (longer than a cell).
    for row in document["rows"]:
        for key, label in (("fault", "fault"), ("mirror", "mirror"), ("rate_limit", "limit")):
            if row.get(key):
                typer.echo(f"{row['route']}: {label}: {row[key]}")
    limits = document.get("inbound_limits") or []
    if limits:
        inbound = _table(f"{service}: inbound rate limits (policy), last {document['window_s']:g}s")
        for column in ("LIMIT", "TARGET", "TOTAL", "PER CALLER", "ALLOWED", "LIMITED"):
            inbound.add_column(
                column, justify="right" if column in ("ALLOWED", "LIMITED") else "left"
            )
        for limit in limits:
            inbound.add_row(
                limit["name"],
                limit["target"],
                limit["total"] or "-",
                limit["per_caller"] or "-",
                str(limit.get("allowed", 0)),
                str(limit.get("limited", 0)),
            )
        _console().print(inbound)


@app.command("edges")
def edges(
    namespace: str = NAMESPACE_OPTION,
    all_namespaces: bool = ALL_NAMESPACES_OPTION,
    window: str = WINDOW_OPTION,
    as_json: bool = JSON_OPTION,
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
) -> None:
    """Who calls whom: rate, success, identities and whether the edge is mTLS."""
    namespace = _namespace(namespace, all_namespaces)
    url = resolve_control_url(control, state_dir=state_dir)
    document = _get(url, "/api/edges", {"window": window, "namespace": namespace})
    if as_json:
        _print_json(document)
        return
    table = _table(f"edges, last {document['window_s']:g}s")
    for column in ("SRC", "DST", "RPS", "SUCCESS", "CLIENT ID", "SERVER ID", "SECURED"):
        table.add_column(column)
    for row in document["rows"]:
        table.add_row(
            row["src"],
            row["dst"],
            f"{row['rps']:.2f}",
            _pct(row["success_rate"]),
            row["client_id"] or "-",
            row["server_id"] or "-",
            "🔒 yes" if row["secured"] else "no",
        )
    _console().print(table)


def _top_table(document: dict[str, Any], service: str) -> Table:
    title = f"top {service or 'all services'}: {document['events']} requests in the last "
    table = _table(title + f"{document['duration_s']:g}s")
    for column in ("SERVICE", "METHOD", "PATH", "COUNT", "SUCCESS", "P50", "MAX"):
        table.add_column(column, justify="right" if column in ("COUNT",) else "left")
    for row in document["rows"]:
        table.add_row(
            row["service"],
            row["method"],
            row["path"],
            str(row["count"]),
            _pct(row["success_rate"]),
            _ms(row["p50_ms"]),
            _ms(row["max_ms"]),
        )
    for error in document.get("errors", []):
        table.caption = f"not tapped: {error}"
    return table


@app.command("top")
def top(
    service: str = typer.Argument("", help="Only this service's proxies (default: every proxy)."),
    duration: float = typer.Option(
        2.0, "--duration", "-d", min=0.5, max=60, help="Seconds of live traffic per refresh."
    ),
    once: bool = typer.Option(False, "--once", help="Show one refresh and exit."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP + " Implies --once."),
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """The busiest paths right now (live, from tap), refreshing until Ctrl-C."""
    url, api_token = resolve_api(control, token, state_dir=state_dir)
    params = {"service": service, "duration": f"{duration:g}s"}

    def fetch() -> dict[str, Any]:
        document: dict[str, Any] = _get(url, "/api/top", params, api_token)
        return document

    if as_json or once:
        document = fetch()
        if as_json:
            _print_json(document)
        else:
            _console().print(_top_table(document, service))
        return
    try:
        from rich.live import Live

        with Live(console=_console(), auto_refresh=False) as live:
            while True:
                live.update(_top_table(fetch(), service), refresh=True)
    except KeyboardInterrupt:
        return


def _event_line(event: dict[str, Any]) -> str:
    if event.get("kind") == "error":
        return f"! {event.get('service')}/{event.get('instance')}: {event['error']}"
    parts = [
        f"{event.get('direction', '')[:3]:3}",
        f"{event.get('service', '')}/{event.get('instance', '')}",
        f"{event.get('method', '')} {event.get('authority', '')}{event.get('path', '')}",
        f"status={event.get('status')}",
    ]
    if event.get("grpc_status") is not None:
        parts.append(f"grpc-status={event['grpc_status']}")
    parts += [
        f"latency={event.get('latency_ms', 0):.1f}ms",
        f"src={event.get('src') or '-'} dst={event.get('dst') or '-'}",
        f"tls={'true' if event.get('tls') else 'false'}",
    ]
    if event.get("client_id"):
        parts.append(f"client_id={event['client_id']}")
    if event.get("server_id"):
        parts.append(f"server_id={event['server_id']}")
    if event.get("error"):
        parts.append(f"error={event['error']}")
    return " ".join(parts)


@app.command("tap")
def tap(
    service: str = typer.Argument(..., help="The service whose proxies to tap ('all': every one)."),
    path: str = typer.Option("", "--path", help="Only requests whose path starts with this."),
    method: str = typer.Option("", "--method", help="Only this HTTP method."),
    status: str = typer.Option("", "--status", help="Only this status (503) or class (5xx)."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="Stop after this many requests."),
    duration: float = typer.Option(
        30.0, "--duration", "-d", min=0.1, max=3600, help="Stop after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """Watch live requests through a service's proxies: method, path, status, latency, identity."""
    url, api_token = resolve_api(control, token, state_dir=state_dir)
    query = {
        "service": "" if service == "all" else service,
        "path": path,
        "method": method,
        "status": status,
        "limit": str(limit),
        "duration": f"{duration:g}",
    }
    target = f"{url}/api/tap?" + urlencode({k: v for k, v in query.items() if v})
    seen = 0
    request = urllib.request.Request(target)
    if api_token:
        request.add_header("authorization", f"Bearer {api_token}")
    try:
        with urllib.request.urlopen(request, timeout=duration + 10) as response:
            for raw in response:
                line = raw.strip()
                if not line:
                    continue
                event = json.loads(line)
                typer.echo(line.decode() if as_json else _event_line(event))
                sys.stdout.flush()
                seen += event.get("kind") == "event"
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except ValueError:
            message = f"HTTP {exc.code}"
        raise _fail(f"tulle tap: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _fail(
            f"cannot reach the control plane at {url}: {getattr(exc, 'reason', exc)}\n"
            "hint: is `tulle control` (or `tulle up`) running?"
        ) from None
    except KeyboardInterrupt:
        return
    if not as_json:
        typer.echo(f"{seen} requests", err=True)


_MARKS = {OK: "[green]√[/green]", WARN: "[yellow]‼[/yellow]", FAIL: "[red]✗[/red]"}


def render_report(report: CheckReport) -> None:
    """The one way a check report is shown, for the mesh checks and --pre alike."""
    console = _console()
    for category in report.categories:
        console.print(f"[bold]{category.name}[/bold]")
        console.print("-" * max(len(category.name), 10))
        for check in category.checks:
            detail = f" [dim]({check.detail})[/dim]" if check.detail else ""
            console.print(f"{_MARKS.get(check.status, '?')} {check.name}{detail}", highlight=False)
            if check.hint:
                console.print(f"    [cyan]hint:[/cyan] {check.hint}", highlight=False)
        console.print()
    console.print(
        "[green]Status check results are √[/green]"
        if report.ok
        else "[red]Status check results are ✗[/red]"
    )


@app.command("check")
def check(
    pre: bool = typer.Option(
        False, "--pre", help="Pre-flight checks only: they need no running mesh."
    ),
    as_json: bool = JSON_OPTION,
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
    kubernetes: bool = typer.Option(
        False, "--kubernetes", help="Check the mesh installed in a Kubernetes cluster."
    ),
    kubeconfig: str = typer.Option("", "--kubeconfig", help="With --kubernetes: the kubeconfig."),
    namespace: str = typer.Option(
        "tulle", "--namespace", help="With --kubernetes: the control plane's namespace."
    ),
) -> None:
    """Health checks of the mesh (or --pre: of this machine); exits 1 when one fails."""
    if kubernetes:
        from tulle.cli.kube_check import run_kubernetes_checks

        report = run_kubernetes_checks(kubeconfig or None, namespace)
    elif pre:
        report = preflight()
    else:
        url = resolve_control_url(control, state_dir=state_dir)
        try:
            status, document = api_call(url, "/api/check")
        except ControlUnreachable as exc:
            report = CheckReport()
            message, _, hint = str(exc).partition("\nhint: ")
            report.category("control plane").add("control plane reachable", False, message, hint)
        else:
            if status != 200:
                raise _fail(f"tulle check: {document.get('error', f'HTTP {status}')}")
            report = CheckReport.from_json(document)
    if as_json:
        _print_json(report.to_json())
    else:
        render_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("apply")
def apply(
    file: Path = typer.Option(
        ..., "--file", "-f", help="YAML: services whose routes, splits, timeouts, retries change."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="The file is a whole manifest: replace instead of merging."
    ),
    as_json: bool = JSON_OPTION,
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """Change a running mesh: merge FILE into the control plane's manifest (validated first)."""
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise _fail(f"tulle apply: cannot read {file}: {exc.strerror or exc}") from None
    url, api_token = resolve_api(control, token, state_dir=state_dir)
    params = {"source": str(file), "mode": "replace" if replace else "merge"}
    try:
        status, document = api_call(
            url,
            "/api/apply",
            params,
            body=body,
            token=api_token,
        )
    except ControlUnreachable as exc:
        raise _fail(str(exc)) from None
    if as_json:
        _print_json(document)
    if status == 200 and document.get("ok"):
        if not as_json:
            changed = ", ".join(document["changed"]) or "-"
            added = ", ".join(document["added"]) or "-"
            typer.echo(f"applied {file}: changed {changed}; added {added}")
            typer.echo("proxies follow within a second (the control plane streams the change)")
        return
    if not as_json:
        problems = document.get("problems") or [{"text": document.get("error", f"HTTP {status}")}]
        typer.echo(f"tulle apply: {file} refused, nothing changed:", err=True)
        for problem in problems:
            typer.echo(f"  {problem['text']}", err=True)
    raise typer.Exit(1)


def wait_for_api(control: str, timeout_s: float = 10.0) -> bool:
    """True once the API answers (for scripts that start a mesh and then query it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api_call(control, "/api", timeout=1.0)
            return True
        except ControlUnreachable:
            time.sleep(0.1)
    return False
