"""`tulle control` (run a control-plane replica) and `tulle manifest validate`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from tulle.cli.app import app
from tulle.control.destination.translator import DEFAULT_QUEUE_CAPACITY
from tulle.control.kubernetes.client import KubeError
from tulle.control.manifest import ManifestError
from tulle.control.manifest_source import DEFAULT_POLL_INTERVAL_S
from tulle.control.server import DEFAULT_TLS_NAMES, ControlConfig, run
from tulle.core.credentials import CredentialError, ensure_token_file, read_token_file
from tulle.core.discovery import Address, parse_address
from tulle.identity.store import IdentityStoreError
from tulle.local.manifest import load_local_manifest
from tulle.local.state import API_TOKEN_FILE, DEFAULT_STATE_DIR
from tulle.viz.scraper import DEFAULT_SCRAPE_INTERVAL_S
from tulle.viz.service import VizService

DEFAULT_HTTP_ADDR = "127.0.0.1:8084"

manifest_app = typer.Typer(
    name="manifest",
    help="Work with the local manifest (mesh.yaml).",
    no_args_is_help=True,
)
app.add_typer(manifest_app, name="manifest")


def default_api_token_file(manifest: str) -> Path:
    """`.tulle/api-token` beside the manifest: where the CLI, run there, finds it."""
    return Path(manifest).resolve().parent / DEFAULT_STATE_DIR / API_TOKEN_FILE


def _address(text: str, option: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@app.command("control")
def control(
    manifest: str = typer.Option(
        "mesh.yaml",
        "--manifest",
        "-m",
        envvar="TULLE_CONTROL_MANIFEST",
        help="The manifest to serve; watched for changes while running.",
    ),
    grpc_addr: str = typer.Option(
        "127.0.0.1:8086",
        "--grpc-addr",
        envvar="TULLE_CONTROL_GRPC_ADDR",
        help="HOST:PORT of the gRPC API that proxies call (port 0: pick a free port).",
    ),
    admin_addr: str = typer.Option(
        "127.0.0.1:9990",
        "--admin-addr",
        envvar="TULLE_CONTROL_ADMIN_ADDR",
        help="HOST:PORT of the admin listener: /metrics, /ready, /live.",
    ),
    poll_interval: float = typer.Option(
        DEFAULT_POLL_INTERVAL_S,
        "--poll-interval",
        envvar="TULLE_CONTROL_POLL_INTERVAL",
        min=0.01,
        max=60.0,
        help="Seconds between looks at the manifest file.",
    ),
    queue_capacity: int = typer.Option(
        DEFAULT_QUEUE_CAPACITY,
        "--queue-capacity",
        envvar="TULLE_CONTROL_QUEUE_CAPACITY",
        min=1,
        help="Messages buffered per stream; a stream whose client falls further behind "
        "is ended and the client resubscribes.",
    ),
    http_addr: str = typer.Option(
        DEFAULT_HTTP_ADDR,
        "--http-addr",
        envvar="TULLE_CONTROL_HTTP_ADDR",
        help="HOST:PORT of the HTTP metrics API (/api/...) that the CLI and dashboard use; "
        "'off' disables it. When only the default is taken (another replica), the "
        "replica runs without it.",
    ),
    scrape_targets: str = typer.Option(
        "",
        "--scrape-targets",
        envvar="TULLE_CONTROL_SCRAPE_TARGETS",
        help="Proxies to scrape: a file (JSON or SERVICE=INSTANCE=HOST:PORT lines, re-read "
        "on change) or inline SERVICE=INSTANCE=HOST:PORT[,...].",
    ),
    prometheus_url: str = typer.Option(
        "",
        "--prometheus-url",
        envvar="TULLE_CONTROL_PROMETHEUS_URL",
        help="Query this Prometheus (http://HOST:PORT) for metrics instead of scraping.",
    ),
    scrape_interval: float = typer.Option(
        DEFAULT_SCRAPE_INTERVAL_S,
        "--scrape-interval",
        envvar="TULLE_CONTROL_SCRAPE_INTERVAL",
        min=0.1,
        max=60.0,
        help="Seconds between scrapes of the proxies' /metrics by the metrics API.",
    ),
    identity_dir: str = typer.Option(
        "",
        "--identity-dir",
        envvar="TULLE_CONTROL_IDENTITY_DIR",
        help="Issuer directory (`tulle identity init`): serve Identity.Certify to proxies.",
    ),
    identity_leaf_ttl: float = typer.Option(
        86400.0,
        "--identity-leaf-ttl",
        envvar="TULLE_CONTROL_IDENTITY_LEAF_TTL",
        min=5.0,
        help="Lifetime in seconds of the workload certificates issued.",
    ),
    source: str = typer.Option(
        "manifest",
        "--source",
        envvar="TULLE_CONTROL_SOURCE",
        help="Where the mesh is described: 'manifest' (--manifest) or 'kubernetes' "
        "(watch the API server: --kubeconfig, $KUBECONFIG, or the pod's service account).",
    ),
    kubeconfig: str = typer.Option(
        "",
        "--kubeconfig",
        envvar="TULLE_CONTROL_KUBECONFIG",
        help="With --source kubernetes: the kubeconfig to use (default: in-cluster).",
    ),
    cluster_domain: str = typer.Option(
        "cluster.local",
        "--cluster-domain",
        envvar="TULLE_CONTROL_CLUSTER_DOMAIN",
        help="With --source kubernetes: the cluster's DNS domain (svc.NS.svc.DOMAIN).",
    ),
    trust_domain: str = typer.Option(
        "cluster.local",
        "--trust-domain",
        envvar="TULLE_CONTROL_TRUST_DOMAIN",
        help="With --source kubernetes: the SPIFFE trust domain of pod identities.",
    ),
    token_audience: str = typer.Option(
        "identity.tulle.io",
        "--token-audience",
        envvar="TULLE_CONTROL_TOKEN_AUDIENCE",
        help="With --source kubernetes and --identity-dir: Identity.Certify accepts "
        "ServiceAccount tokens of this audience (checked with a TokenReview).",
    ),
    api_token_file: str = typer.Option(
        "",
        "--api-token-file",
        envvar="TULLE_CONTROL_API_TOKEN_FILE",
        help="The bearer token that writes (POST /api/apply) and tap on the HTTP API need; "
        "created (mode 0600) when absent. Default: .tulle/api-token beside the manifest; "
        "none with --source kubernetes (tap and writes are then refused).",
    ),
    api_allowed_hosts: str = typer.Option(
        "",
        "--api-allowed-hosts",
        envvar="TULLE_CONTROL_API_ALLOWED_HOSTS",
        help="Host names (comma-separated) the HTTP API answers to besides IP addresses and "
        "localhost (DNS-rebinding protection).",
    ),
    proxy_admin_token_file: str = typer.Option(
        "",
        "--proxy-admin-token-file",
        envvar="TULLE_CONTROL_PROXY_ADMIN_TOKEN_FILE",
        help="The proxies' admin token (their --admin-token-file), which tap needs.",
    ),
    traces_url: str = typer.Option(
        "",
        "--traces-url",
        envvar="TULLE_CONTROL_TRACES_URL",
        help="An http(s) URL of the mesh's traces (a trace receiver's, e.g. the one "
        "`tulle up --trace-receiver` starts) that the dashboard links to.",
    ),
    grpc_plaintext: bool = typer.Option(
        False,
        "--grpc-plaintext",
        envvar="TULLE_CONTROL_GRPC_PLAINTEXT",
        help="Serve the gRPC API without TLS even with --identity-dir (loopback only). "
        "With --identity-dir it is otherwise TLS with the replica's own certificate.",
    ),
    grpc_tls_name: list[str] = typer.Option(
        [],
        "--grpc-tls-name",
        envvar="TULLE_CONTROL_GRPC_TLS_NAME",
        help="DNS name in the gRPC API's certificate, which proxies check (repeatable; "
        "default tulle-control.tulle.svc and localhost).",
    ),
    webhook_addr: str = typer.Option(
        "off",
        "--webhook-addr",
        envvar="TULLE_CONTROL_WEBHOOK_ADDR",
        help="HOST:PORT of the sidecar injection webhook (HTTPS, POST /inject), or 'off'. "
        "Needs --source kubernetes and --identity-dir.",
    ),
    proxy_image: str = typer.Option(
        "",
        "--proxy-image",
        envvar="TULLE_CONTROL_PROXY_IMAGE",
        help="With --webhook-addr: the image of the injected tulle-init and tulle-proxy.",
    ),
    control_namespace: str = typer.Option(
        "tulle",
        "--control-namespace",
        envvar="TULLE_CONTROL_NAMESPACE",
        help="The control plane's namespace: injected proxies dial tulle-control.<ns>.svc, "
        "and pods in it are never injected.",
    ),
    native_sidecar: str = typer.Option(
        "auto",
        "--native-sidecar",
        envvar="TULLE_CONTROL_NATIVE_SIDECAR",
        help="Inject the proxy as a native sidecar (init container, restartPolicy Always): "
        "'auto' (when the API server is 1.29+), 'true' or 'false'.",
    ),
    log_level: str = typer.Option(
        "info",
        "--log-level",
        envvar="TULLE_CONTROL_LOG_LEVEL",
        help="debug, info, warning or error.",
    ),
) -> None:
    """Run a control-plane replica serving the Destination API from a manifest."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if traces_url and not traces_url.startswith(("http://", "https://")):
        raise typer.BadParameter("expected an http:// or https:// URL", param_hint="--traces-url")
    api_token = proxy_admin_token = ""
    try:
        if http_addr != "off" and (api_token_file or source != "kubernetes"):
            token_path = (
                Path(api_token_file) if api_token_file else default_api_token_file(manifest)
            )
            api_token = ensure_token_file(token_path)
            logging.getLogger("tulle.control").info(
                "HTTP API writes and tap need the token in %s", token_path.resolve()
            )
        elif http_addr != "off":
            # In a pod there is no manifest to sit beside (and the root file
            # system is read-only): tap stays off unless a token is mounted.
            logging.getLogger("tulle.control").info(
                "HTTP API tap is off: no --api-token-file (docs/kubernetes.md)"
            )
        if proxy_admin_token_file:
            proxy_admin_token = read_token_file(Path(proxy_admin_token_file))
    except CredentialError as exc:
        typer.echo(f"tulle control: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    config = ControlConfig(
        manifest=Path(manifest),
        grpc_addr=_address(grpc_addr, "--grpc-addr"),
        admin_addr=_address(admin_addr, "--admin-addr"),
        poll_interval_s=poll_interval,
        queue_capacity=queue_capacity,
        http_addr=None if http_addr == "off" else _address(http_addr, "--http-addr"),
        scrape_targets=scrape_targets,
        prometheus_url=prometheus_url,
        http_optional=http_addr == DEFAULT_HTTP_ADDR,
        scrape_interval_s=scrape_interval,
        identity_dir=Path(identity_dir) if identity_dir else None,
        identity_leaf_ttl_s=identity_leaf_ttl,
        source=source,
        kubeconfig=kubeconfig or None,
        cluster_domain=cluster_domain,
        trust_domain=trust_domain,
        token_audience=token_audience,
        api_token=api_token,
        api_allowed_hosts=tuple(h.strip() for h in api_allowed_hosts.split(",") if h.strip()),
        proxy_admin_token=proxy_admin_token,
        traces_url=traces_url,
        grpc_plaintext=grpc_plaintext,
        grpc_tls_names=tuple(grpc_tls_name) or DEFAULT_TLS_NAMES,
        webhook_addr=None if webhook_addr == "off" else _address(webhook_addr, "--webhook-addr"),
        proxy_image=proxy_image,
        control_namespace=control_namespace,
        native_sidecar=native_sidecar,
    )
    if native_sidecar not in ("auto", "true", "false"):
        raise typer.BadParameter("expected auto, true or false", param_hint="--native-sidecar")
    if config.webhook_addr is not None and not proxy_image:
        raise typer.BadParameter("the webhook needs the proxy's image", param_hint="--proxy-image")
    if source not in ("manifest", "kubernetes"):
        raise typer.BadParameter("expected 'manifest' or 'kubernetes'", param_hint="--source")
    try:
        run(config, VizService.for_control_plane)
    except ManifestError as exc:
        typer.echo(f"tulle control: cannot start, the manifest is unusable:\n{exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError, IdentityStoreError, KubeError) as exc:
        # ValueError: unusable --scrape-targets or --prometheus-url;
        # IdentityStoreError: an unusable --identity-dir.
        typer.echo(f"tulle control: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


@manifest_app.command("validate")
def validate(
    file: str = typer.Argument(..., help="The manifest file to check (mesh.yaml)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing when it is valid."),
) -> None:
    """Check a manifest; prints every problem with its line and exits 1 if any."""
    try:
        # The whole document: what the control plane serves and what `tulle up` runs.
        manifest = load_local_manifest(file).mesh
    except ManifestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if not quiet:
        typer.echo(f"{file}: valid, {len(manifest.services)} services")
