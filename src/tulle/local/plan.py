"""Resolving a manifest into the processes and ports of a local mesh.

`build_plan` turns a validated manifest into a `MeshPlan`: one control plane,
one app plus one sidecar per instance, and an ingress proxy, every one with
its argv, environment and allocated ports. It also produces the *generated*
manifest the control plane serves: the user's file with each service's
`instances` replaced by endpoints at its instances' sidecar inbound addresses,
so that a call goes app -> its sidecar (outbound) -> the peer's sidecar
(inbound) -> the peer app.

Nothing here starts a process; the supervisor does. The one place where a
sidecar's command line is built is `proxy_argv`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tulle.core.credentials import ensure_token_file
from tulle.local import isolation
from tulle.local.isolation import Network
from tulle.local.manifest import LocalManifest
from tulle.local.ports import LOOPBACK, allocate_ports, port_is_free
from tulle.local.state import GENERATED_MANIFEST, INGRESS_MANIFEST, STATE_FILE, StateDir

Role = Literal["control", "ingress", "app", "sidecar"]

DEFAULT_INGRESS_PORT = 4140


@dataclass(frozen=True, slots=True)
class PreferredPorts:
    """The control plane's documented default ports (DESIGN.md), taken when free so
    that a client's defaults (`tulle check` on 8084, `tulle proxy --control-addr`
    on 8086) find the mesh; a port in use falls back to an allocated one."""

    grpc: int | None = 8086
    admin: int | None = 9990
    http: int | None = 8084


NO_PREFERRED_PORTS = PreferredPorts(None, None, None)
# Seconds a sidecar gets to finish in-flight requests on SIGTERM: short, since
# `tulle up` is for development and Ctrl-C should feel immediate.
SIDECAR_SHUTDOWN_GRACE_S = 3.0
# Environment variables of the user's shell that would send traffic elsewhere.
_PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "grpc_proxy", "all_proxy")
_PROXY_ENV_ALL = (*_PROXY_ENV, "ALL_PROXY", "no_proxy", "NO_PROXY")
NO_PROXY = "127.0.0.1,localhost"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process the supervisor runs (and restarts)."""

    name: str  # "control", "ingress", "web-0", "web-0.proxy"
    role: Role
    argv: tuple[str, ...]
    env: Mapping[str, str]  # the whole environment of the child
    service: str | None = None
    replica: int | None = None
    # Readiness: GET /ready on this port answers 200 (control, proxies) or, for
    # apps, this port accepts connections.
    ready_port: int | None = None
    ready_http: bool = False
    # Where `ready_port` is reached from the supervisor, and (for an isolated
    # app, reachable only on its namespace's loopback) the namespace to ask from.
    ready_host: str = LOOPBACK
    netns: str | None = None


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One instance of a service: its app and its sidecar."""

    service: str
    replica: int
    protocol: str
    app_port: int
    inbound_port: int
    outbound_port: int
    admin_port: int
    # From `instances.identity` / `instances.serviceAccount`: what the sidecar's
    # mTLS identity will be once `proxy_argv` passes identity flags.
    identity: str | None = None
    service_account: str | None = None
    # Where the host reaches its app, inbound and admin: 127.0.0.1, or with
    # --isolated its namespace's address (`netns`).
    host: str = LOOPBACK
    netns: str | None = None

    @property
    def endpoint(self) -> str:
        """The address peers call it at: its sidecar's inbound, or, isolated, its
        app's port, which the namespace's capture rules hand to the inbound."""
        if self.netns is not None:
            return f"{self.host}:{self.app_port}"
        return f"{LOOPBACK}:{self.inbound_port}"

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def sidecar_name(self) -> str:
        return f"{self.name}.proxy"


@dataclass(frozen=True, slots=True)
class MeshPlan:
    manifest_path: str
    control_grpc_port: int
    control_admin_port: int
    control_http_port: int | None
    ingress_port: int
    ingress_inbound_port: int
    ingress_admin_port: int
    instances: tuple[InstancePlan, ...]
    processes: tuple[ProcessSpec, ...]
    # File name in the state dir -> text: the manifests the control planes serve.
    generated_files: Mapping[str, str]
    # Every service of the manifest, with its protocol, in manifest order.
    services: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The services the ingress lets callers from outside reach.
    exposed: tuple[str, ...] = field(default_factory=tuple)
    # With --isolated: the bridge's host address, where the control plane's
    # gRPC API listens so that sidecars in namespaces reach it.
    control_host: str = LOOPBACK
    network: Network | None = None

    @property
    def control_grpc_addr(self) -> str:
        return f"{self.control_host}:{self.control_grpc_port}"

    @property
    def control_http_url(self) -> str | None:
        if self.control_http_port is None:
            return None
        return f"http://{LOOPBACK}:{self.control_http_port}/"


def tulle_argv() -> list[str]:
    """How to start Tulle itself: works without the console script on PATH."""
    return [sys.executable, "-m", "tulle"]


def proxy_argv(
    *,
    inbound_port: int,
    outbound_port: int,
    admin_port: int,
    app_port: int,
    control_grpc_port: int,
    instance: InstancePlan | None,
    identity: str | None = None,
    identity_grpc_port: int | None = None,
    protected: tuple[str, ...] = (),
    admin_token_file: Path | None = None,
    control_host: str = LOOPBACK,
    identity_host: str | None = None,
) -> tuple[str, ...]:
    """The command line of a sidecar (or, with `instance=None`, of the ingress).

    The single place where `tulle up` builds proxy arguments: options that
    every proxy of a local mesh needs (identity, mTLS, the addresses no
    outbound may forward to) are added here. `protected`: the mesh's admin
    and control-plane addresses (`--deny-dst`). The ingress reaches services by
    name only (`--outbound-raw-addresses refuse`): a caller from outside must
    not reach an app's own port, a sidecar's admin or the control plane by
    writing `Host: 127.0.0.1:PORT`.

    An isolated sidecar (`instance.netns`) has the namespace's ports to itself:
    its inbound listens on every address (`tulle init`'s REDIRECT on
    PREROUTING rewrites to the receiving interface's address), its admin too
    (the host scrapes it at the namespace's address), its outbound on
    loopback, where the capture rules send the app's connections.
    """
    isolated = instance is not None and instance.netns is not None
    listen = "0.0.0.0" if isolated else LOOPBACK
    control_addr = f"{control_host}:{control_grpc_port}"
    argv = [
        *tulle_argv(),
        "proxy",
        "--inbound-addr",
        f"{listen}:{inbound_port}",
        "--outbound-addr",
        f"{LOOPBACK}:{outbound_port}",
        "--admin-addr",
        f"{listen}:{admin_port}",
        "--app-addr",
        f"{LOOPBACK}:{app_port}",
        "--control-addr",
        control_addr,
        "--shutdown-grace",
        f"{SIDECAR_SHUTDOWN_GRACE_S:g}",
    ]
    if instance is not None:
        # Selects the workload's inbound authorization policy.
        argv += ["--workload", instance.service]
    else:
        argv += ["--outbound-raw-addresses", "refuse"]
    if protected:
        argv += ["--deny-dst", ",".join(protected)]
    if admin_token_file is not None:
        # POST /shutdown and /tap: the mesh's admin token, which the control
        # plane's tap relay sends too (the apps never see it).
        argv += ["--admin-token-file", str(admin_token_file)]
    if identity:
        # mTLS: the proxy makes its key, sends a CSR with the join token found
        # in TULLE_PROXY_IDENTITY_TOKEN (the environment: not visible in `ps`).
        argv += ["--identity", identity]
        if identity_grpc_port is not None:
            identity_addr = f"{identity_host or control_host}:{identity_grpc_port}"
            if identity_addr != control_addr:
                argv += ["--identity-addr", identity_addr]
    if isolated:
        assert instance is not None and instance.netns is not None
        # The control plane's tap relay connects from the host's bridge address.
        argv += ["--tap-networks", f"127.0.0.0/8,::1/128,{control_host}/32"]
        return (*isolation.proxy_prefix(instance.netns), *argv)
    return tuple(argv)


TRUST_DOMAIN = "tulle.local"
INGRESS_IDENTITY = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/tulle-ingress"
IDENTITY_DIR = "identity"
# Join tokens are used for every renewal, so they last as long as a local mesh may.
TOKEN_TTL_S = 30 * 24 * 3600.0


def workload_identity(service: str, explicit: str | None, service_account: str | None) -> str:
    """The SPIFFE ID of a service's sidecars: as given, else from its service account."""
    if explicit:
        return explicit
    return f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{service_account or service}"


class MeshIdentity:
    """The local mesh's CA (in the state dir) and the join tokens it signs."""

    def __init__(self, state_dir: Path) -> None:
        from tulle.identity.store import IssuerDirectory

        self.directory = (state_dir / IDENTITY_DIR).resolve()
        self._issuer = IssuerDirectory(self.directory)
        self._issuer.ensure(TRUST_DOMAIN, now=time.time())

    @property
    def anchors(self) -> Path:
        """The trust bundle: proxies verify the control plane's TLS certificate with it."""
        from tulle.identity.store import BUNDLE_FILE

        return self.directory / BUNDLE_FILE

    def proxy_env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env["TULLE_PROXY_TRUST_ANCHORS"] = str(self.anchors)
        return env

    def token_env(self, base: Mapping[str, str], identity: str) -> dict[str, str]:
        from tulle.identity.tokens import make_token

        token = make_token(
            self._issuer.token_secret(), identity, now=time.time(), ttl_s=TOKEN_TTL_S
        )
        env = self.proxy_env(base)
        env["TULLE_PROXY_IDENTITY_TOKEN"] = token
        return env


def app_argv(command: tuple[str, ...], port: int, replica: int) -> tuple[str, ...]:
    """Fill `{port}`/`{replica}`; run `tulle` and `python` with this interpreter."""
    filled = [
        part.replace("{port}", str(port)).replace("{replica}", str(replica)) for part in command
    ]
    if filled and filled[0] == "tulle":
        filled = [*tulle_argv(), *filled[1:]]
    elif filled and filled[0] in ("python", "python3"):
        filled = [sys.executable, *filled[1:]]
    return tuple(filled)


def base_environment() -> dict[str, str]:
    """The supervisor's environment without proxy settings, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_ENV_ALL}
    env["PYTHONUNBUFFERED"] = "1"
    env["no_proxy"] = env["NO_PROXY"] = NO_PROXY
    return env


def app_environment(
    base: Mapping[str, str], instance: InstancePlan, extra: Mapping[str, str]
) -> dict[str, str]:
    if instance.netns is not None:
        return isolated_app_environment(base, instance, extra)
    proxy_url = f"http://{LOOPBACK}:{instance.outbound_port}"
    env = dict(base)
    env.update(extra)
    env.update(
        {
            "PORT": str(instance.app_port),
            "TULLE_SERVICE": instance.service,
            "TULLE_INSTANCE": instance.name,
            "TULLE_REPLICA": str(instance.replica),
            "TULLE_OUTBOUND": f"{LOOPBACK}:{instance.outbound_port}",
            "TULLE_PROXY_ADMIN": f"{LOOPBACK}:{instance.admin_port}",
            # Every common HTTP client sends `http://<service>/...` through these.
            "http_proxy": proxy_url,
            "HTTP_PROXY": proxy_url,
            # The app's own health checks and local calls stay direct; gRPC
            # clients dial TULLE_OUTBOUND itself (HTTP/2 routed by :authority),
            # which no_proxy keeps grpcio from wrapping in CONNECT.
            "no_proxy": NO_PROXY,
            "NO_PROXY": NO_PROXY,
        }
    )
    return env


def isolated_app_environment(
    base: Mapping[str, str], instance: InstancePlan, extra: Mapping[str, str]
) -> dict[str, str]:
    """An isolated app's environment: nothing about the mesh, no proxy setting
    (not even `no_proxy`): its calls are captured by the namespace's rules."""
    env = {k: v for k, v in base.items() if k not in _PROXY_ENV_ALL}
    env.update(extra)
    env.update(
        {
            "PORT": str(instance.app_port),
            "TULLE_SERVICE": instance.service,
            "TULLE_INSTANCE": instance.name,
            "TULLE_REPLICA": str(instance.replica),
        }
    )
    return env


def generated_document(
    raw: Any, instances: tuple[InstancePlan, ...], virtual: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The user's manifest with `instances` replaced by sidecar-inbound endpoints.

    `virtual` (--isolated: service -> its virtual address): each service is
    also served under its address as a name, a copy of it, so that discovery
    answers a captured connection's original destination `ADDRESS:PORT`
    (docs/transparent.md, routing by the original destination) as it answers
    the service's name.
    """
    by_service: dict[str, list[InstancePlan]] = {}
    for instance in instances:
        by_service.setdefault(instance.service, []).append(instance)
    document = dict(raw) if isinstance(raw, dict) else {"services": []}
    services = []
    for service in document.get("services") or []:
        entry = dict(service)
        spec = entry.pop("instances", None)
        planned = by_service.get(str(entry.get("name")), [])
        if spec is not None:
            endpoints = list(entry.get("endpoints") or [])
            for instance in planned:
                endpoint: dict[str, Any] = {
                    "address": instance.endpoint,
                    "labels": {"instance": instance.name},
                }
                if instance.identity:
                    endpoint["identity"] = instance.identity
                endpoints.append(endpoint)
            entry["endpoints"] = endpoints
        services.append(entry)
    for entry in list(services):
        address = (virtual or {}).get(str(entry.get("name")))
        if address is not None:
            services.append({**entry, "name": address})
    document["services"] = services
    return document


def exposed_document(document: Mapping[str, Any], exposed: tuple[str, ...]) -> dict[str, Any]:
    """Only the exposed services and the services they split traffic to."""
    by_name = {str(s.get("name")): s for s in document.get("services") or []}
    keep: list[str] = []
    pending = list(exposed)
    while pending:
        name = pending.pop(0)
        if name in keep or name not in by_name:
            continue
        keep.append(name)
        pending += [str(b.get("name")) for b in by_name[name].get("backends") or []]
    return {"services": [s for n, s in by_name.items() if n in keep]}


def render_document(document: Mapping[str, Any], source: str, what: str) -> str:
    header = f"# Generated by `tulle up` from {source}: do not edit, it is rewritten.\n# {what}\n"
    return header + yaml.safe_dump(dict(document), sort_keys=False)


def _control(
    name: str,
    manifest: Path,
    grpc_port: int,
    admin_port: int,
    env: Mapping[str, str],
    extra: tuple[str, ...] = (),
    grpc_host: str = LOOPBACK,
) -> ProcessSpec:
    argv = [
        *tulle_argv(),
        "control",
        "--manifest",
        str(manifest),
        "--grpc-addr",
        f"{grpc_host}:{grpc_port}",
        "--admin-addr",
        f"{LOOPBACK}:{admin_port}",
    ]
    argv += extra
    return ProcessSpec(
        name=name, role="control", argv=tuple(argv), env=env, ready_port=admin_port, ready_http=True
    )


def build_plan(
    manifest: LocalManifest,
    raw: Any,
    *,
    manifest_path: str,
    state_dir: Path,
    ingress_port: int | None,
    mtls: bool = True,
    preferred: PreferredPorts = NO_PREFERRED_PORTS,
    network: Network | None = None,
) -> MeshPlan:
    """Allocate ports and describe every process of the mesh.

    `ingress_port`: None takes the manifest's `ingress.port`, else the default;
    0 picks a free port. `preferred`: the control plane's ports, where free.
    `network` (--isolated, from `isolation.plan_network` over
    `instance_names`): each instance runs in its namespace, on the default
    ports, and the control plane's gRPC API listens on the bridge.
    """
    if ingress_port is None:
        configured = manifest.ingress.port if manifest.ingress is not None else None
        ingress_port = configured if configured is not None else DEFAULT_INGRESS_PORT
    exposed = manifest.ingress.services if manifest.ingress is not None else None
    instance_specs = [
        (spec, manifest.instances[spec.name], replica)
        for spec in manifest.mesh.services.values()
        if spec.name in manifest.instances
        for replica in range(manifest.instances[spec.name].replicas)
    ]
    fixed = 6 + (1 if ingress_port == 0 else 0)
    fixed += 2 if exposed is not None else 0
    per_instance = 0 if network is not None else 4
    ports = iter(allocate_ports(fixed + per_instance * len(instance_specs)))
    control_host = network.host_address if network is not None else LOOPBACK
    control_grpc = _prefer(preferred.grpc, next(ports))
    control_admin = _prefer(preferred.admin, next(ports))
    # The ingress has no app; its inbound side forwards to a port nobody
    # listens on, so a stray call there fails fast instead of looping.
    ingress_inbound, ingress_admin, ingress_void = next(ports), next(ports), next(ports)
    control_http = _prefer(preferred.http, next(ports))
    ingress = ingress_port if ingress_port != 0 else next(ports)
    instances: list[InstancePlan] = []
    for spec, run, replica in instance_specs:
        identity = workload_identity(spec.name, run.identity, run.service_account) if mtls else None
        service_account = run.service_account
        if network is not None:
            ns = network.namespace(f"{spec.name}-{replica}")
            instance = InstancePlan(
                service=spec.name,
                replica=replica,
                protocol=spec.protocol,
                app_port=isolation.APP_PORT,
                inbound_port=isolation.PROXY_INBOUND_PORT,
                outbound_port=isolation.PROXY_OUTBOUND_PORT,
                admin_port=isolation.PROXY_ADMIN_PORT,
                identity=identity,
                service_account=service_account,
                host=ns.address,
                netns=ns.name,
            )
        else:
            instance = InstancePlan(
                service=spec.name,
                replica=replica,
                protocol=spec.protocol,
                app_port=next(ports),
                inbound_port=next(ports),
                outbound_port=next(ports),
                admin_port=next(ports),
                identity=identity,
                service_account=service_account,
            )
        instances.append(instance)
    mesh_identity = MeshIdentity(state_dir) if mtls else None
    # The credentials of the mesh's HTTP surfaces (docs/local.md): made once,
    # kept across runs so a CLI or a dashboard tab holding them keeps working.
    state = StateDir(state_dir)
    ensure_token_file(state.api_token_file)
    ensure_token_file(state.admin_token_file)
    admin_token_file = state.admin_token_file.resolve()

    base = base_environment()
    # Marks every process of this mesh (tests and `tulle down` checks find them by it).
    base["TULLE_MESH_STATE_DIR"] = str(state_dir.resolve())
    document = generated_document(
        raw, tuple(instances), network.virtual if network is not None else None
    )
    files = {
        GENERATED_MANIFEST: render_document(
            document, manifest_path, "Each service's `instances` became endpoints at its sidecars."
        )
    }
    control_extra = [
        "--http-addr",
        f"{LOOPBACK}:{control_http}",
        "--api-token-file",
        str(state.api_token_file.resolve()),
        "--proxy-admin-token-file",
        str(admin_token_file),
    ]
    if mesh_identity is not None:
        control_extra += ["--identity-dir", str(mesh_identity.directory)]
    # state.json lists every proxy's admin address, and is rewritten when
    # anything changes; the control plane re-reads it.
    control_extra += ["--scrape-targets", str((state_dir / STATE_FILE).resolve())]
    # What no proxy of this mesh forwards to: every proxy's admin (shutdown,
    # tap) and the control planes' ports. Ports are fixed for the mesh's life
    # (a restarted process gets the same ones), so a list on the command line
    # stays true; the ingress-control ports are added below when it exists.
    protected = [f"{control_host}:{control_grpc}", f"{LOOPBACK}:{control_admin}"]
    protected.append(f"{LOOPBACK}:{ingress_admin}")
    protected += [f"{instance.host}:{instance.admin_port}" for instance in instances]
    protected.append(f"{LOOPBACK}:{control_http}")
    processes: list[ProcessSpec] = [
        _control(
            "control",
            state_dir / GENERATED_MANIFEST,
            control_grpc,
            control_admin,
            base,
            tuple(control_extra),
            grpc_host=control_host,
        )
    ]
    ingress_control_grpc = control_grpc
    if exposed is not None:
        # A proxy asks its control plane about any name, so the ingress gets
        # one of its own that knows only the exposed services: everything
        # else is "no such service" to callers from outside.
        ingress_control_grpc, ingress_control_admin = next(ports), next(ports)
        protected += [f"{LOOPBACK}:{ingress_control_grpc}", f"{LOOPBACK}:{ingress_control_admin}"]
        files[INGRESS_MANIFEST] = render_document(
            exposed_document(document, exposed),
            manifest_path,
            "What the ingress may reach: the services under `ingress.services`.",
        )
        processes.append(
            _control(
                "ingress-control",
                state_dir / INGRESS_MANIFEST,
                ingress_control_grpc,
                ingress_control_admin,
                base,
                # Not the dashboard: it must not take the HTTP API's default port.
                ("--http-addr", "off")
                # With mTLS its gRPC API is TLS too: the ingress's one set of
                # trust anchors verifies both control planes.
                + (
                    ("--identity-dir", str(mesh_identity.directory))
                    if mesh_identity is not None
                    else ()
                ),
            )
        )
    for instance in instances:
        run = manifest.instances[instance.service]
        processes.append(
            ProcessSpec(
                name=instance.sidecar_name,
                role="sidecar",
                argv=proxy_argv(
                    inbound_port=instance.inbound_port,
                    outbound_port=instance.outbound_port,
                    admin_port=instance.admin_port,
                    app_port=instance.app_port,
                    control_grpc_port=control_grpc,
                    instance=instance,
                    identity=instance.identity,
                    protected=tuple(protected),
                    admin_token_file=admin_token_file,
                    control_host=control_host,
                ),
                env=base
                if mesh_identity is None
                else mesh_identity.token_env(base, instance.identity)
                if instance.identity
                else mesh_identity.proxy_env(base),
                service=instance.service,
                replica=instance.replica,
                ready_port=instance.admin_port,
                ready_http=True,
                ready_host=instance.host,
            )
        )
        command = app_argv(run.command, instance.app_port, instance.replica)
        if instance.netns is not None:
            command = (*isolation.app_prefix(instance.netns), *command)
        processes.append(
            ProcessSpec(
                name=instance.name,
                role="app",
                argv=command,
                env=app_environment(base, instance, run.env),
                service=instance.service,
                replica=instance.replica,
                ready_port=instance.app_port,
                netns=instance.netns,
            )
        )
    processes.append(
        ProcessSpec(
            name="ingress",
            role="ingress",
            argv=proxy_argv(
                inbound_port=ingress_inbound,
                outbound_port=ingress,
                admin_port=ingress_admin,
                app_port=ingress_void,
                control_grpc_port=ingress_control_grpc,
                instance=None,
                identity=INGRESS_IDENTITY if mesh_identity is not None else None,
                identity_grpc_port=control_grpc,
                protected=tuple(protected),
                admin_token_file=admin_token_file,
                control_host=control_host if exposed is None else LOOPBACK,
                identity_host=control_host,
            ),
            env=mesh_identity.token_env(base, INGRESS_IDENTITY)
            if mesh_identity is not None
            else base,
            ready_port=ingress_admin,
            ready_http=True,
        )
    )
    all_services = tuple(manifest.mesh.services)
    return MeshPlan(
        manifest_path=manifest_path,
        control_grpc_port=control_grpc,
        control_admin_port=control_admin,
        control_http_port=control_http,
        ingress_port=ingress,
        ingress_inbound_port=ingress_inbound,
        ingress_admin_port=ingress_admin,
        instances=tuple(instances),
        processes=tuple(processes),
        generated_files=files,
        services=tuple((s.name, s.protocol) for s in manifest.mesh.services.values()),
        exposed=exposed if exposed is not None else all_services,
        control_host=control_host,
        network=network,
    )


def instance_names(manifest: LocalManifest) -> list[str]:
    """Every instance's name (`web-0`, ...), in the order `build_plan` plans them."""
    return [
        f"{spec.name}-{replica}"
        for spec in manifest.mesh.services.values()
        if spec.name in manifest.instances
        for replica in range(manifest.instances[spec.name].replicas)
    ]


def _prefer(port: int | None, allocated: int) -> int:
    return port if port and port_is_free(port) else allocated


def resolve_manifest_path(path: str | None) -> Path:
    """The user's manifest, or the built-in demo's when none is given."""
    if path:
        return Path(path)
    return Path(__file__).with_name("demo.yaml")
