"""`tulle proxy`: run the sidecar proxy."""

from __future__ import annotations

import os
import sys

import typer

from tulle.cli.main import app
from tulle.core.discovery import Address, Endpoint, parse_address, parse_static_dst
from tulle.proxy.config import Limits, ProxyConfig, Timeouts, config_to_json
from tulle.proxy.destinations import RAW_MODES
from tulle.proxy.runner import CONFIG_ENV


def _addr(value: str, flag: str) -> Address:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


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
        help="Admin listener: /metrics, /ready, /live, POST /shutdown, /config.",
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
    log_level: str = typer.Option(
        "info", envvar="TULLE_PROXY_LOG_LEVEL", help="debug, info, warning or error."
    ),
) -> None:
    services: dict[str, list[Endpoint]] = {}
    for spec in static_dst:
        for one in spec.split(";"):
            if not one.strip():
                continue
            try:
                name, endpoints = parse_static_dst(one)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--static-dst") from None
            services[name] = endpoints
    controls: tuple[Address, ...] = ()
    if control_addr:
        controls = tuple(_addr(a, "--control-addr") for a in control_addr.split(",") if a.strip())
    token = identity_token
    if identity_token_file:
        try:
            with open(identity_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise typer.BadParameter(str(exc), param_hint="--identity-token-file") from None
    if identity and not (token or identity_issuer_dir):
        raise typer.BadParameter(
            "an identity needs --identity-token(-file) or --identity-issuer-dir",
            param_hint="--identity",
        )
    if identity and token and not (controls or identity_addr):
        raise typer.BadParameter(
            "an identity token needs --control-addr or --identity-addr to send the CSR to",
            param_hint="--identity",
        )
    if outbound_raw_addresses not in RAW_MODES:
        raise typer.BadParameter(
            f"expected one of {', '.join(RAW_MODES)}", param_hint="--outbound-raw-addresses"
        )
    denied = tuple(_addr(a, "--deny-dst") for a in deny_dst.split(",") if a.strip())
    identity_addrs = tuple(
        _addr(a, "--identity-addr") for a in identity_addr.split(",") if a.strip()
    )
    config = ProxyConfig(
        inbound_addr=_addr(inbound_addr, "--inbound-addr"),
        outbound_addr=_addr(outbound_addr, "--outbound-addr"),
        admin_addr=_addr(admin_addr, "--admin-addr"),
        app_addr=_addr(app_addr, "--app-addr"),
        static_dst=services,
        control_addrs=controls,
        workers=workers,
        timeouts=Timeouts(
            detect_s=detect_timeout,
            header_read_s=header_timeout,
            idle_s=idle_timeout,
            connect_s=connect_timeout,
            response_s=response_timeout,
            shutdown_grace_s=shutdown_grace,
        ),
        limits=Limits(max_head_bytes=max_head_bytes),
        identity=identity,
        identity_token=token,
        identity_addrs=identity_addrs,
        identity_issuer_dir=identity_issuer_dir,
        identity_leaf_ttl_s=identity_leaf_ttl,
        workload=workload,
        deny_dst=denied,
        outbound_raw_addresses=outbound_raw_addresses,
        log_level=log_level,
    )
    # Replace this process (same pid) with the lean proxy image; see runner.py.
    env = dict(os.environ)
    env[CONFIG_ENV] = config_to_json(config)
    # uvloop's TLS layer reads into a fresh 256 KiB buffer on every read; above
    # glibc's default 128 KiB mmap threshold each one is an mmap/munmap pair
    # (8 % of a mesh-TLS proxy's CPU in a profile). A higher threshold keeps
    # them in the heap: +14-35 % requests/s over mTLS, no change in plaintext.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 20))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tulle.proxy.runner"], env)
