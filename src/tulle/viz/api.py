"""The metrics API: one HTTP/JSON API for the CLI and the dashboard (docs/api.md).

Served by `tulle control` on its HTTP port (8084). Figures come from a
`MetricsSource`: the built-in scraper's window store, or Prometheus when the
control plane runs with `--prometheus-url`. Live tap is relayed from the
proxies' `/tap`. Every answer is JSON, except `/api/tap`, which streams one
JSON object per line (`application/x-ndjson`) until its end or the client
leaves. Errors are JSON too: `{"error": "..."}` with a 4xx/5xx status.

A deliberately small HTTP/1.1 server on asyncio streams: one request per
connection, like the admin listener; its traffic is a few calls a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tulle.codec.promtext import ParseError, parse
from tulle.control.manifest import ManifestError
from tulle.core.checks import CERT_EXPIRY_WARN_S, CheckReport
from tulle.core.credentials import bearer, host_allowed, origin_allowed, token_matches
from tulle.core.scrape import ScrapeTarget
from tulle.k8s.inject import ADMIN_PORT_ANNOTATION, PROXY_CONTAINER
from tulle.local.manifest import load_local_manifest
from tulle.net.small_http import CLIENT_GONE, bound_address, close_server, parse_head, read_head
from tulle.viz import aggregate, authz_report, dashboard, route_config
from tulle.viz.api_context import (
    DEFAULT_WINDOW_S,
    MAX_WINDOW_S,
    ApiContext,
    ApiError,
    query_seconds,
    read_window,
)
from tulle.viz.apply import apply_manifest
from tulle.viz.http_client import FetchError, request
from tulle.viz.prometheus import PrometheusError, PrometheusSource
from tulle.viz.tap_relay import relay, select_targets, summarize_top
from tulle.viz.window import WindowData, WindowStore

log = logging.getLogger(__name__)

DEFAULT_TOP_DURATION_S = 5.0
MAX_REQUEST_BODY = 1024 * 1024
_READ_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 1.5


# What a credential guards: writes, and tap (live request paths and identities).
GUARDED_PATHS = frozenset({"/api/apply", "/api/tap", "/api/top"})
_YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _json_or_yaml(content_type: str) -> bool:
    return (
        content_type == "application/json"
        or content_type in _YAML_TYPES
        or (content_type.startswith("application/") and content_type.endswith(("+json", "+yaml")))
    )


def _in_namespace(row: dict[str, Any], namespace: str, name: str) -> bool:
    """Whether a row is of `namespace`: Kubernetes names read `<namespace>/<name>`."""
    if "namespace" in row:
        return bool(row["namespace"] == namespace)
    return str(row.get(name, "")).startswith(f"{namespace}/")


def _not_ready_hint(target: ScrapeTarget) -> str:
    if target.namespace:
        return (
            f"is the pod's proxy running? `kubectl -n {target.namespace} logs {target.instance} "
            f"-c {PROXY_CONTAINER}`; it is scraped at {target.admin} (the pod's IP and its "
            f"{ADMIN_PORT_ANNOTATION} annotation)"
        )
    return f"is the proxy at {target.admin} running? see its log; `tulle up` restarts it"


def _row_targets(data: WindowData, rows: list[dict[str, Any]]) -> list[ScrapeTarget | None]:
    by_row = {(t.service, t.instance, t.admin): t for t in data.targets}
    return [by_row.get((row["service"], row["instance"], row["admin"])) for row in rows]


def _status_reason(status: int) -> str:
    return {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        411: "Length Required",
        413: "Payload Too Large",
        415: "Unsupported Media Type",
        422: "Unprocessable Entity",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Unknown")


def _head(status: int, content_type: str, length: int | None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_status_reason(status)}\r\ncontent-type: {content_type}\r\n"
        "cache-control: no-store\r\nconnection: close\r\n"
    )
    if status == 401:
        head += 'www-authenticate: Bearer realm="tulle"\r\n'
    if length is not None:
        head += f"content-length: {length}\r\n"
    return (head + "\r\n").encode()


class MetricsApi:
    """Request handlers; each returns (status, JSON document)."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context

    async def _window(self, query: dict[str, str]) -> WindowData:
        return await read_window(self.context, query)

    def _envelope(self, data: WindowData, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "window_s": round(data.seconds, 3),
            "source": self.context.source_name,
            "generated_at": round(time.time(), 3),
            "rows": rows,
        }

    def _health(self, target: ScrapeTarget) -> tuple[bool, str] | None:
        """Whether the last scrape of `target` worked, and why not; None: not scraped here."""
        store = getattr(self.context.source, "store", None)
        health = store.health.get(target) if isinstance(store, WindowStore) else None
        if health is None:
            return None
        if health.last_ok is None and not health.last_error:
            return False, "not scraped yet"
        return not health.last_error, health.last_error

    def _answering(self, data: WindowData, kind: str, rows: list[dict[str, Any]]) -> None:
        """Mark rows with their proxies' scrape health: a proxy that does not answer shows."""
        if kind == "instance":
            for row, target in zip(rows, _row_targets(data, rows), strict=True):
                health = self._health(target) if target is not None else None
                if health is not None:
                    row["answering"], row["scrape_error"] = health
            return
        answering: dict[tuple[str, str], int] = {}
        for target in data.targets:
            health = self._health(target)
            if health is None:
                continue
            group = (
                (target.namespace, target.workload) if kind == "workload" else ("", target.service)
            )
            answering[group] = answering.get(group, 0) + int(health[0])
        for row in rows:
            group = (
                (row["namespace"], row["workload"]) if kind == "workload" else ("", row["service"])
            )
            if group in answering:
                row["answering"] = answering[group]

    async def stat(self, query: dict[str, str]) -> dict[str, Any]:
        data = await self._window(query)
        kind = query.get("kind", "service")
        service = query.get("service") or None
        if kind == "service":
            rows = aggregate.stat_services(data, service)
        elif kind == "instance":
            rows = aggregate.stat_instances(data, service)
        elif kind == "workload":
            rows = aggregate.stat_workloads(data, query.get("workload") or None)
        else:
            raise ApiError(400, f"kind must be service, instance or workload, got {kind!r}")
        namespace = query.get("namespace", "").strip()
        if namespace:
            rows = [row for row in rows if _in_namespace(row, namespace, "service")]
        self._answering(data, kind, rows)
        document = self._envelope(data, rows)
        document["not_answering"] = self._not_answering(data, query, kind)
        return document

    def _not_answering(
        self, data: WindowData, query: dict[str, str], kind: str
    ) -> list[dict[str, str]]:
        """The proxies in the scope of a stat query whose last scrape failed."""
        namespace = query.get("namespace", "").strip()
        service = query.get("service", "")
        workload = query.get("workload", "")
        found = []
        for target in data.targets:
            if namespace and target.namespace != namespace:
                continue
            if kind == "workload" and (
                not target.workload
                or (workload and workload not in (target.workload, target.workload.split("/")[0]))
            ):
                continue
            if kind != "workload" and service and target.service != service:
                continue
            health = self._health(target)
            if health is not None and not health[0]:
                found.append({**target.to_json(), "error": health[1]})
        return found

    async def routes(self, query: dict[str, str]) -> dict[str, Any]:
        service = query.get("service", "")
        if not service:
            raise ApiError(400, "routes needs ?service=NAME")
        data = await self._window(query)
        manifest = self.context.manifest()
        spec = manifest.services.get(service) if manifest is not None else None
        configured = {r.name: r for r in spec.profile.routes} if spec is not None else {}
        rows = aggregate.routes(data, service, configured)
        for row in rows:
            row.update(route_config.describe(configured.get(row["route"])))
        document = self._envelope(data, rows)
        # The inbound side's `policy.rateLimits` protecting the service, with
        # what each decided in the window (its own proxies' counters).
        limits: list[dict[str, Any]] = []
        if manifest is not None:
            pods = [
                f"{t.namespace}/{t.instance}"
                for t in self.context.targets()
                if t.service == service and t.namespace
            ]
            limits = route_config.inbound_limits(manifest.authorization, service, pods or None)
        counts = aggregate.inbound_limit_counts(data, service)
        for limit in limits:
            decided = [c for (name, _), c in counts.items() if name == limit["name"]]
            limit["allowed"] = sum(c["allowed"] for c in decided)
            limit["limited"] = sum(c["limited"] for c in decided)
        document["inbound_limits"] = limits
        return document

    async def edges(self, query: dict[str, str]) -> dict[str, Any]:
        data = await self._window(query)
        rows = aggregate.edges(data)
        namespace = query.get("namespace", "").strip()
        if namespace:
            rows = [
                row
                for row in rows
                if _in_namespace(row, namespace, "src") or _in_namespace(row, namespace, "dst")
            ]
        return self._envelope(data, rows)

    async def timeseries(self, query: dict[str, str]) -> dict[str, Any]:
        service = query.get("service", "")
        if not service:
            raise ApiError(400, "timeseries needs ?service=NAME")
        seconds = query_seconds(query, "window", MAX_WINDOW_S, MAX_WINDOW_S)
        step = query_seconds(query, "step", 10.0, MAX_WINDOW_S)
        if step < 1:
            raise ApiError(400, "step must be at least 1s")
        try:
            slices = await self.context.source.steps(seconds, step)
        except PrometheusError as exc:
            raise ApiError(502, str(exc)) from None
        return {
            "service": service,
            "window_s": seconds,
            "step_s": step,
            "source": self.context.source_name,
            "points": aggregate.timeseries(slices, service),
        }

    async def services(self, query: dict[str, str]) -> dict[str, Any]:
        manifest = self.context.manifest()
        by_name: dict[str, dict[str, Any]] = {}
        if manifest is not None:
            for name, spec in manifest.services.items():
                by_name[name] = {
                    "name": name,
                    "protocol": spec.protocol,
                    "port": spec.port,
                    "identity": spec.identity or "",
                    "endpoints": [
                        {"address": f"{e.address[0]}:{e.address[1]}", "weight": e.weight}
                        for e in spec.endpoints
                    ],
                    "routes": [route.name for route in spec.profile.routes],
                    "backends": [
                        {"name": b.service, "weight": b.weight} for b in spec.profile.backends
                    ],
                    "instances": [],
                }
        for target in self.context.targets():
            entry = by_name.setdefault(
                target.service,
                {
                    "name": target.service,
                    "protocol": "",
                    "port": None,
                    "identity": "",
                    "endpoints": [],
                    "routes": [],
                    "backends": [],
                    "instances": [],
                },
            )
            entry["instances"].append({"instance": target.instance, "admin": target.admin})
        return {"services": [by_name[name] for name in sorted(by_name)]}

    async def targets(self, query: dict[str, str]) -> dict[str, Any]:
        store = getattr(self.context.source, "store", None)
        rows: list[dict[str, Any]] = []
        for target in self.context.targets():
            row: dict[str, Any] = target.to_json()
            health = store.health.get(target) if isinstance(store, WindowStore) else None
            if health is not None:
                row.update(
                    last_ok=health.last_ok,
                    last_error=health.last_error,
                    scrapes_ok=health.scrapes_ok,
                    scrapes_failed=health.scrapes_failed,
                )
            rows.append(row)
        return {"targets": rows, "error": self.context.target_error()}

    async def _probe(self, target: ScrapeTarget) -> tuple[bool, str, bool, str, float | None]:
        """(ready, why not, metrics ok, why not, certificate expiry) of one proxy."""
        try:
            status, _ = await request(target.admin, "/ready", timeout=CHECK_TIMEOUT_S)
            ready, ready_why = status == 200, f"/ready answered {status}"
        except FetchError as exc:
            ready, ready_why = False, str(exc)
        expiry: float | None = None
        try:
            status, body = await request(target.admin, "/metrics", timeout=CHECK_TIMEOUT_S)
            if status != 200:
                raise FetchError(f"/metrics answered {status}")
            for sample in parse(body.decode(errors="replace")):
                if sample.name == "identity_cert_expiration_timestamp_seconds":
                    expiry = sample.value
            metrics_ok, metrics_why = True, ""
        except (FetchError, ParseError) as exc:
            metrics_ok, metrics_why = False, str(exc)
        return ready, ready_why, metrics_ok, metrics_why, expiry

    async def check(self, query: dict[str, str]) -> dict[str, Any]:
        report = CheckReport()
        control = report.category("control plane")
        control.add("HTTP API answers", True, f"metrics from {self.context.source_name}")
        control.add(
            "destination API serving", self.context.ready(), "", "see the control plane's log"
        )
        path = self.context.manifest_path
        if path is not None:
            try:
                await asyncio.to_thread(load_local_manifest, path)
                control.add("manifest valid", True, str(path))
            except ManifestError as exc:
                control.add(
                    "manifest valid",
                    False,
                    str(exc),
                    f"fix {path}; proxies keep the last good state meanwhile "
                    "(`tulle manifest validate` lists every problem)",
                )
        if isinstance(self.context.source, PrometheusSource):
            try:
                await self.context.source.targets()
                control.add("Prometheus answers", True, self.context.source.url)
            except PrometheusError as exc:
                control.add("Prometheus answers", False, str(exc), "check --prometheus-url")
        proxies = report.category("proxies")
        targets = self.context.targets()
        target_error = self.context.target_error()
        proxies.add(
            "scrape targets known",
            bool(targets) and not target_error,
            target_error or f"{len(targets)} proxies",
            "run the mesh with `tulle up`, or pass `tulle control --scrape-targets`",
            warn=not target_error,
        )
        given_up = self.context.given_up()
        if given_up:
            processes = report.category("processes of tulle up")
        for process in given_up:
            processes.add(
                f"{process.name} running",
                False,
                f"{process.state}: {process.error}",
                f"`tulle up` stopped restarting it; its log: {process.log}; "
                f"its command: {process.command}; fix it in the manifest, then restart `tulle up`",
            )
        probes = await asyncio.gather(*(self._probe(target) for target in targets))
        now = time.time()
        for target, (ready, ready_why, metrics_ok, metrics_why, expiry) in zip(
            targets, probes, strict=True
        ):
            label = f"{target.service}/{target.instance}"
            proxies.add(
                f"{label} ready",
                ready,
                "" if ready else ready_why,
                _not_ready_hint(target),
            )
            proxies.add(
                f"{label} metrics scrapeable",
                metrics_ok,
                metrics_why,
                f"GET http://{target.admin}/metrics must answer Prometheus text",
            )
            if expiry is not None:
                left = expiry - now
                proxies.add(
                    f"{label} certificate not near expiry",
                    left > CERT_EXPIRY_WARN_S,
                    f"expires in {left / 3600:.1f} h",
                    "the proxy renews at 70% of the leaf's life: "
                    "is the identity service reachable?",
                )
        data_plane = report.category("data plane")
        try:
            data = await self.context.source.window(DEFAULT_WINDOW_S)
            rows = aggregate.stat_services(data)
        except PrometheusError as exc:
            data_plane.add("metrics available", False, str(exc), "check --prometheus-url")
            rows = []
        total = sum(row["requests"] for row in rows)
        data_plane.add(
            "traffic flowing",
            total > 0,
            f"{total} requests in the last {DEFAULT_WINDOW_S:g}s",
            "no requests seen: send some traffic through the mesh",
            warn=True,
        )
        for row in rows:
            rate = row["success_rate"]
            if rate is not None:
                data_plane.add(
                    f"{row['service']} success rate",
                    rate >= 0.95,
                    f"{rate:.1%}",
                    f"`tulle routes {row['service']}` and `tulle tap {row['service']}` "
                    "show which calls fail",
                    warn=True,
                )
        return report.to_json()

    async def apply(self, query: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        path = self.context.manifest_path
        if path is None:
            raise ApiError(503, "this control plane has no manifest file to change")
        result = await asyncio.to_thread(
            apply_manifest,
            body,
            path,
            mode=query.get("mode", "merge"),
            source=query.get("source", "<apply>"),
        )
        return (200 if result.ok else 422), result.to_json()

    async def top(self, query: dict[str, str]) -> dict[str, Any]:
        duration = query_seconds(query, "duration", DEFAULT_TOP_DURATION_S, 60.0)
        targets = select_targets(self.context.targets(), query.get("service", ""))
        events: list[dict[str, Any]] = []
        errors: list[str] = []
        relayed = {**query, "duration": f"{duration:g}"}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration + 2.0):
                async for event in relay(targets, relayed, token=self.context.proxy_admin_token):
                    if event.get("kind") == "error":
                        errors.append(f"{event['instance']}: {event['error']}")
                    else:
                        events.append(event)
        return {
            "duration_s": duration,
            "events": len(events),
            "errors": errors,
            "rows": summarize_top(events),
        }


Handler = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]


class ApiServer:
    """Listens on the control plane's HTTP port and dispatches to `MetricsApi`."""

    def __init__(self, context: ApiContext) -> None:
        self.api = MetricsApi(context)
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Handler] = {
            "/api/stat": self.api.stat,
            "/api/routes": self.api.routes,
            "/api/edges": self.api.edges,
            "/api/timeseries": self.api.timeseries,
            "/api/services": self.api.services,
            "/api/targets": self.api.targets,
            "/api/check": self.api.check,
            "/api/top": self.api.top,
            "/api/overview": functools.partial(dashboard.overview, self.api.context),
            "/api/authz": functools.partial(authz_report.api_authz, self.api.context),
        }

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        return bound_address(self._server)

    async def close(self) -> None:
        await close_server(self._server)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except CLIENT_GONE:
            pass
        except Exception:
            log.exception("API request failed")
            with contextlib.suppress(Exception):
                body = b'{"error": "internal error, see the control plane log"}\n'
                writer.write(_head(500, "application/json", len(body)) + body)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _json(self, writer: asyncio.StreamWriter, status: int, document: object) -> None:
        body = json.dumps(document, indent=1).encode() + b"\n"
        writer.write(_head(status, "application/json", len(body)) + body)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = parse_head(await read_head(reader, _READ_TIMEOUT_S))
        if head is None:
            self._json(writer, 400, {"error": "bad request line"})
            return
        method, target, headers = head.method, head.target, dict(head.headers)
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query))
        try:
            self._check_host(headers)
            if path in GUARDED_PATHS:
                self._check_credential(path, headers)
            if path == "/api/apply":
                if method != "POST":
                    raise ApiError(405, "use POST /api/apply with the YAML as the body")
                body = await self._read_body(reader, headers)
                status, document = await self.api.apply(query, body)
                self._json(writer, status, document)
            elif method not in ("GET", "HEAD"):
                raise ApiError(405, f"{method} is not allowed on {path}")
            elif path == "/api/tap":
                await self._tap(reader, writer, query)
            elif (page := dashboard.serve_asset(path, query, headers)) is not None:
                writer.write(page.to_bytes(include_body=method != "HEAD"))
            elif path in ("/", "/api"):
                self._json(
                    writer, 200, {"endpoints": sorted([*self._routes, "/api/tap", "/api/apply"])}
                )
            elif path in self._routes:
                self._json(writer, 200, await self._routes[path](query))
            else:
                raise ApiError(404, f"no such endpoint {path}; GET /api lists them")
        except ApiError as exc:
            self._json(writer, exc.status, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            self._json(writer, 400, {"error": f"bad request: {exc}"})
        await writer.drain()

    def _check_host(self, headers: dict[str, str]) -> None:
        """DNS rebinding: a page that made a browser resolve its own name to us
        still sends that name as Host; only addresses and known names get in."""
        host = headers.get("host")
        if not host_allowed(host, self.api.context.allowed_hosts):
            raise ApiError(
                403,
                f"Host {host!r} is not this API's: use its IP address or localhost, or start "
                "`tulle control` with --api-allowed-hosts NAME (DNS-rebinding protection)",
            )

    def _check_credential(self, path: str, headers: dict[str, str]) -> None:
        """Writes and tap: same-origin for browsers, and the API's bearer token."""
        if not origin_allowed(headers.get("origin"), headers.get("host")):
            raise ApiError(
                403,
                f"Origin {headers.get('origin')!r} is not this API's own: cross-site "
                f"requests to {path} are refused",
            )
        expected = self.api.context.api_token
        if not expected:
            raise ApiError(403, f"{path} is disabled: this control plane has no API token")
        if not token_matches(bearer(headers.get("authorization")), expected):
            raise ApiError(
                401,
                f"{path} needs the API token: `Authorization: Bearer TOKEN`, the token being "
                "in the control plane's --api-token-file (`tulle up`: .tulle/api-token; "
                "the CLI reads it, or takes --token / TULLE_API_TOKEN)",
            )

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if not _json_or_yaml(content_type):
            # text/plain and form types are what a cross-site form can send
            # without asking the browser's permission (CORS "simple requests").
            raise ApiError(
                415,
                f"the body must be YAML or JSON (Content-Type application/yaml or "
                f"application/json), got {content_type or 'none'!r}",
            )
        if "transfer-encoding" in headers:
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        text = headers.get("content-length", "0").strip() or "0"
        if not text.isdigit():
            raise ApiError(400, f"bad Content-Length {text!r}")
        length = int(text)
        if length > MAX_REQUEST_BODY:
            raise ApiError(413, f"the body is larger than {MAX_REQUEST_BODY} bytes")
        return await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT_S)

    async def _tap(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, query: dict[str, str]
    ) -> None:
        targets = select_targets(self.api.context.targets(), query.get("service", ""))
        if not targets:
            known = sorted({t.service for t in self.api.context.targets()})
            raise ApiError(404, f"no proxies of {query.get('service')!r} to tap (known: {known})")
        writer.write(_head(200, "application/x-ndjson", None))
        await writer.drain()
        # The client leaving is seen as EOF on the request side.
        gone = asyncio.create_task(reader.read(1))
        stream = relay(targets, query, token=self.api.context.proxy_admin_token)
        try:
            while True:
                next_event = asyncio.ensure_future(anext(stream))
                done, _ = await asyncio.wait(
                    {next_event, gone}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_event not in done:
                    next_event.cancel()
                    with contextlib.suppress(BaseException):
                        await next_event
                    return
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                writer.write(json.dumps(event).encode() + b"\n")
                await writer.drain()
        finally:
            gone.cancel()
            await stream.aclose()
