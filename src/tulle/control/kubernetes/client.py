"""A small asynchronous Kubernetes API client over httpx: config, requests, list and watch.

Why not the official `kubernetes` package: it is synchronous (a watch would
take a thread each), generates a model class per API type (tens of MB
resident, slow imports), and still hands back dicts for custom resources,
which are most of what Tulle reads. `kubernetes_asyncio` fixes the first point
only. Tulle needs five verbs (get, list, watch, create, delete) on plain JSON,
so it speaks the REST API directly with httpx, already a dependency of the
metrics API, and keeps objects as dicts that `translate` reads defensively
(every field from the API server is treated as untrusted input).

`KubeConfig.load()` follows kubectl's order: an explicit kubeconfig, then
$KUBECONFIG, then the in-cluster service account (`/var/run/secrets/...`),
then ~/.kube/config. The in-cluster token is re-read when it may have been
rotated (projected tokens are refreshed by the kubelet).
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S = 60.0
# The server ends each watch after this long; the client then resumes it from
# the last resourceVersion it saw (no relist unless the version is too old).
WATCH_TIMEOUT_S = 290
REQUEST_TIMEOUT_S = 10.0

Obj = dict[str, Any]


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Gone(KubeError):
    """The resourceVersion a watch resumed from is too old (HTTP 410): list again."""


@dataclass(slots=True)
class KubeConfig:
    server: str
    ca_file: str | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    namespace: str = "default"
    _token_read_at: float = field(default=0.0, repr=False)

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeConfig:
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        if path:
            return cls.from_kubeconfig(Path(path), context)
        if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
            return cls.in_cluster()
        default = Path.home() / ".kube" / "config"
        if default.exists():
            return cls.from_kubeconfig(default, context)
        raise KubeError(
            "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod"
        )

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
        return cls(
            server=f"https://{host}:{port}",
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            token_file=str(SERVICE_ACCOUNT_DIR / "token"),
            namespace=namespace,
        )

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> KubeConfig:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise KubeError(f"cannot read kubeconfig {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise KubeError(f"kubeconfig {path} is not a mapping")
        base = path.parent

        def named(section: str, name: str) -> Mapping[str, Any]:
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") == name:
                    value = item.get(section.rstrip("s")) or {}
                    return value if isinstance(value, dict) else {}
            raise KubeError(f"kubeconfig {path}: no {section.rstrip('s')} named {name!r}")

        context_name = context or doc.get("current-context")
        if not context_name:
            raise KubeError(f"kubeconfig {path}: no current-context")
        ctx = named("contexts", str(context_name))
        cluster = named("clusters", str(ctx.get("cluster", "")))
        user = named("users", str(ctx.get("user", ""))) if ctx.get("user") else {}

        def file_of(entry: Mapping[str, Any], key: str) -> str | None:
            data = entry.get(f"{key}-data")
            if data:
                return _private_file(base64.b64decode(data))
            value = entry.get(key)
            if value:
                p = Path(str(value))
                return str(p if p.is_absolute() else base / p)
            return None

        server = str(cluster.get("server", ""))
        if not server:
            raise KubeError(f"kubeconfig {path}: the cluster has no server")
        return cls(
            server=server.rstrip("/"),
            ca_file=file_of(cluster, "certificate-authority"),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
            cert_file=file_of(user, "client-certificate"),
            key_file=file_of(user, "client-key"),
            token=str(user["token"]) if user.get("token") else None,
            token_file=file_of(user, "tokenFile"),
            namespace=str(ctx.get("namespace") or "default"),
        )

    def bearer(self) -> str | None:
        if self.token_file and (
            self.token is None or time.monotonic() - self._token_read_at > TOKEN_REREAD_S
        ):
            self.token = Path(self.token_file).read_text().strip()
            self._token_read_at = time.monotonic()
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


_private_dir: str | None = None


def _private_file(data: bytes) -> str:
    """Inline kubeconfig credentials as files (ssl wants paths), readable by us only."""
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="tulle-kube-")
    fd, name = tempfile.mkstemp(dir=_private_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


class KubeClient:
    """The verbs Tulle uses, on JSON objects. One per process; `aclose()` when done."""

    def __init__(self, config: KubeConfig) -> None:
        # httpx logs every request at INFO: a TokenReview per Certify would
        # flood the control plane's log. Failures are reported by the callers.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context(),
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
            headers={"Accept": "application/json", "User-Agent": "tulle-control"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        token = self.config.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        try:
            response = await self._http.request(
                method, path, json=body, params=params, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise KubeError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        return _decode(method, path, response.status_code, response.content)

    async def server_version(self) -> tuple[Obj, float | None]:
        """`GET /version` and the server's clock (its Date header, Unix seconds)."""
        try:
            response = await self._http.get("/version", headers=self._headers())
        except httpx.HTTPError as exc:
            raise KubeError(f"GET /version: {type(exc).__name__}: {exc}") from None
        body = _decode("GET", "/version", response.status_code, response.content)
        date = response.headers.get("date")
        try:
            server_time = email.utils.parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            server_time = None
        return body, server_time

    async def get(self, path: str) -> Obj:
        return await self.request("GET", path)

    async def create(self, path: str, body: Obj, *, dry_run: bool = False) -> Obj:
        return await self.request(
            "POST", path, body=body, params={"dryRun": "All"} if dry_run else None
        )

    async def list(self, resource: Resource, namespace: str | None = None) -> Obj:
        return await self.get(resource.path(namespace))

    async def watch(self, resource: Resource, resource_version: str) -> AsyncIterator[Obj]:
        """Yield watch events from `resource_version` until the server ends the watch.

        Raises Gone when the version is too old; other failures raise KubeError.
        """
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=WATCH_TIMEOUT_S + 30)
        path = resource.path()
        try:
            async with self._http.stream(
                "GET", path, params=params, headers=self._headers(), timeout=timeout
            ) as response:
                if response.status_code != 200:
                    _decode("WATCH", path, response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise KubeError(f"WATCH {path}: a line that is not JSON") from None
                    if not isinstance(event, dict):
                        raise KubeError(f"WATCH {path}: an event that is not an object")
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        code = int(status.get("code") or 0) if isinstance(status, dict) else 0
                        message = status.get("message", "") if isinstance(status, dict) else ""
                        if code == 410:
                            raise Gone(f"WATCH {path}: {message}", 410, "Expired")
                        raise KubeError(f"WATCH {path}: {code} {message}", code)
                    yield event
        except httpx.HTTPError as exc:
            raise KubeError(f"WATCH {path}: {type(exc).__name__}: {exc}") from None


def _decode(method: str, path: str, status: int, content: bytes) -> Obj:
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status >= 400:
        message = str(body.get("message") or content[:200].decode("utf-8", "replace"))
        cls = Gone if status == 410 else KubeError
        raise cls(f"{method} {path}: {status} {message}", status, str(body.get("reason", "")))
    return body
