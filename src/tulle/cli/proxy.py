"""`tulle proxy`: run the sidecar proxy (typer's side: --help, messages, rare flags).

`tulle proxy` usually never reaches this module: `tulle.cli.proxy_flags` reads
the flags and starts the proxy without typer. This command is the reference
for what the flags are; a flag added here must be added to `proxy_flags.FLAGS`
too (a unit test compares them), else it works but takes the slow path.
"""

from __future__ import annotations

import os
import sys

import typer

from tulle.cli.main import app
from tulle.cli.proxy_flags import FlagError, build_config
from tulle.proxy.config import config_to_json
from tulle.proxy.runner import CONFIG_ENV, MMAP_THRESHOLD_BYTES


@app.command(
    "proxy",
    help=(
        "Run the sidecar proxy beside one workload instance: outbound for the app's "
        "calls, inbound for calls to the app, admin for metrics and health."
    ),
)
def proxy(
    inbound_addr: str = typer.Option(
        "0.0.0.0:4143", envvar="TULLE_PROXY_INBOUND_ADDR", help="Where calls to the app arrive."
    ),
    outbound_addr: str = typer.Option(
        "127.0.0.1:4140",
        envvar="TULLE_PROXY_OUTBOUND_ADDR",
        help="Where the app's calls arrive (http_proxy, CONNECT, or Host-routed).",
    ),
    admin_addr: str = typer.Option(
        "127.0.0.1:4191",
        envvar="TULLE_PROXY_ADMIN_ADDR",
        help="Admin listener: /metrics, /ready, /live, /config; POST /shutdown and /tap "
        "with --admin-token-file.",
    ),
    app_addr: str = typer.Option(
        "127.0.0.1:8080",
        envvar="TULLE_PROXY_APP_ADDR",
        help="The local app that inbound traffic goes to.",
    ),
    static_dst: list[str] = typer.Option(
        [],
        "--static-dst",
        envvar="TULLE_PROXY_STATIC_DST",
        help="A service's endpoints, NAME=HOST:PORT[,HOST:PORT...]; repeatable.",
    ),
    control_addr: str = typer.Option(
        "",
        envvar="TULLE_PROXY_CONTROL_ADDR",
        help="Control-plane gRPC addresses HOST:PORT[,HOST:PORT...]; overrides --static-dst.",
    ),
    trust_anchors: str = typer.Option(
        "",
        envvar="TULLE_PROXY_TRUST_ANCHORS",
        help="PEM file of the mesh's trust anchors: dial the control plane (and the "
        "Identity service) over TLS and verify its certificate with them. Without it the "
        "control plane is dialled in plaintext (loopback meshes without mTLS only).",
    ),
    control_name: str = typer.Option(
        "tulle-control.tulle.svc",
        envvar="TULLE_PROXY_CONTROL_NAME",
        help="With --trust-anchors: the DNS name the control plane's certificate must carry.",
    ),
    workers: int = typer.Option(
        1, min=1, max=64, envvar="TULLE_PROXY_WORKERS", help="Processes sharing the listeners."
    ),
    detect_timeout: float = typer.Option(
        0.3,
        envvar="TULLE_PROXY_DETECT_TIMEOUT",
        help="Seconds to wait for a client's first bytes before forwarding it as opaque TCP.",
    ),
    header_timeout: float = typer.Option(
        10.0,
        envvar="TULLE_PROXY_HEADER_TIMEOUT",
        help="Seconds a client may take to send a request head (then 408).",
    ),
    idle_timeout: float = typer.Option(
        120.0, envvar="TULLE_PROXY_IDLE_TIMEOUT", help="Seconds before idle keep-alive closes."
    ),
    connect_timeout: float = typer.Option(
        2.0, envvar="TULLE_PROXY_CONNECT_TIMEOUT", help="Seconds to connect upstream (then 504)."
    ),
    response_timeout: float = typer.Option(
        0.0,
        envvar="TULLE_PROXY_RESPONSE_TIMEOUT",
        help="Default seconds for an upstream response when no route sets one (0: none).",
    ),
    shutdown_grace: float = typer.Option(
        30.0,
        envvar="TULLE_PROXY_SHUTDOWN_GRACE",
        help="Seconds in-flight requests get to finish on SIGTERM or POST /shutdown.",
    ),
    max_head_bytes: int = typer.Option(
        65536, envvar="TULLE_PROXY_MAX_HEAD_BYTES", help="Largest request head (then 431)."
    ),
    identity: str = typer.Option(
        "",
        envvar="TULLE_PROXY_IDENTITY",
        help="This workload's SPIFFE ID; turns on mTLS between proxies.",
    ),
    identity_token: str = typer.Option(
        "",
        envvar="TULLE_PROXY_IDENTITY_TOKEN",
        help="Join token proving the identity (from `tulle identity token`).",
    ),
    identity_token_file: str = typer.Option(
        "",
        envvar="TULLE_PROXY_IDENTITY_TOKEN_FILE",
        help="Read the join token from this file instead.",
    ),
    identity_addr: str = typer.Option(
        "",
        envvar="TULLE_PROXY_IDENTITY_ADDR",
        help="Identity service HOST:PORT[,...]; defaults to --control-addr.",
    ),
    identity_issuer_dir: str = typer.Option(
        "",
        envvar="TULLE_PROXY_IDENTITY_ISSUER_DIR",
        help="Sign our own leaf with this issuer directory (tests, one machine) instead of "
        "asking the control plane.",
    ),
    identity_leaf_ttl: float = typer.Option(
        86400.0,
        envvar="TULLE_PROXY_IDENTITY_LEAF_TTL",
        help="Leaf lifetime in seconds with --identity-issuer-dir.",
    ),
    workload: str = typer.Option(
        "",
        envvar="TULLE_PROXY_WORKLOAD",
        help="The workload (service) this proxy fronts: with --control-addr, its inbound "
        "authorization policy is enforced (denied until known: fail closed).",
    ),
    deny_dst: str = typer.Option(
        "",
        envvar="TULLE_PROXY_DENY_DST",
        help="Addresses HOST:PORT[,HOST:PORT...] the outbound never forwards to "
        "(403 destination-forbidden), e.g. other proxies' admin listeners.",
    ),
    outbound_raw_addresses: str = typer.Option(
        "forward",
        envvar="TULLE_PROXY_OUTBOUND_RAW_ADDRESSES",
        help="What the outbound does with a raw IP:PORT destination (Host, absolute-form, "
        "CONNECT, :authority, original destination): 'forward' it, or 'refuse' it "
        "(403 destination-forbidden; an ingress that reaches services by name only). "
        "The proxy's own listeners are always refused (508 loop-detected).",
    ),
    admin_token_file: str = typer.Option(
        "",
        envvar="TULLE_PROXY_ADMIN_TOKEN_FILE",
        help="A file (mode 0600) with the bearer token that POST /shutdown and /tap on the "
        "admin listener need; without it they are disabled.",
    ),
    log_level: str = typer.Option(
        "info", envvar="TULLE_PROXY_LOG_LEVEL", help="debug, info, warning or error."
    ),
) -> None:
    try:
        config = build_config(
            {
                "inbound_addr": inbound_addr,
                "outbound_addr": outbound_addr,
                "admin_addr": admin_addr,
                "app_addr": app_addr,
                "static_dst": list(static_dst),
                "control_addr": control_addr,
                "trust_anchors": trust_anchors,
                "control_name": control_name,
                "workers": workers,
                "detect_timeout": detect_timeout,
                "header_timeout": header_timeout,
                "idle_timeout": idle_timeout,
                "connect_timeout": connect_timeout,
                "response_timeout": response_timeout,
                "shutdown_grace": shutdown_grace,
                "max_head_bytes": max_head_bytes,
                "identity": identity,
                "identity_token": identity_token,
                "identity_token_file": identity_token_file,
                "identity_addr": identity_addr,
                "identity_issuer_dir": identity_issuer_dir,
                "identity_leaf_ttl": identity_leaf_ttl,
                "workload": workload,
                "deny_dst": deny_dst,
                "outbound_raw_addresses": outbound_raw_addresses,
                "admin_token_file": admin_token_file,
                "log_level": log_level,
            }
        )
    except FlagError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.flag) from None
    # Replace this process (same pid) with the lean proxy image; see runner.py.
    env = dict(os.environ)
    env[CONFIG_ENV] = config_to_json(config)
    # See runner.raise_mmap_threshold: glibc reads this variable at start.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tulle.proxy.runner"], env)
