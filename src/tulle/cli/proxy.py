"""`tulle proxy`: run the sidecar proxy (typer's side: --help, messages, rare flags).

`tulle proxy` usually never reaches this module: `tulle.cli.proxy_flags` reads
the flags and starts the proxy without typer. This command is the reference
for what the flags are, except their names, variables, defaults and ranges,
which come from `proxy_flags.FLAGS`: a flag is added there and here (a unit
test compares them), else it works but takes the slow path.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from tulle.cli.app import app
from tulle.cli.proxy_flags import FLAGS, FlagError, build_config
from tulle.proxy.config import config_to_json
from tulle.proxy.heap import MMAP_THRESHOLD_BYTES
from tulle.proxy.runner import CONFIG_ENV

_FLAGS = {flag.name: flag for flag in FLAGS}


def _option(name: str, help: str) -> Any:
    """The typer option of `FLAGS[name]`: its spelling, variable, default and range."""
    flag = _FLAGS[name]
    default = list(flag.default) if isinstance(flag.default, tuple) else flag.default
    return typer.Option(
        default, flag.option, envvar=flag.envvar, min=flag.min, max=flag.max, help=help
    )


@app.command(
    "proxy",
    help=(
        "Run the sidecar proxy beside one workload instance: outbound for the app's "
        "calls, inbound for calls to the app, admin for metrics and health."
    ),
)
def proxy(
    inbound_addr: str = _option("inbound_addr", "Where calls to the app arrive."),
    outbound_addr: str = _option(
        "outbound_addr", "Where the app's calls arrive (http_proxy, CONNECT, or Host-routed)."
    ),
    admin_addr: str = _option(
        "admin_addr",
        "Admin listener: /metrics, /ready, /live, /config; POST /shutdown and /tap "
        "with --admin-token-file.",
    ),
    app_addr: str = _option("app_addr", "The local app that inbound traffic goes to."),
    static_dst: list[str] = _option(
        "static_dst", "A service's endpoints, NAME=HOST:PORT[,HOST:PORT...]; repeatable."
    ),
    control_addr: str = _option(
        "control_addr",
        "Control-plane gRPC addresses HOST:PORT[,HOST:PORT...]; overrides --static-dst.",
    ),
    trust_anchors: str = _option(
        "trust_anchors",
        "PEM file of the mesh's trust anchors (or the PEM text itself): dial the control "
        "plane (and the Identity service) over TLS and verify its certificate with them. "
        "Without it the "
        "control plane is dialled in plaintext (loopback meshes without mTLS only).",
    ),
    control_name: str = _option(
        "control_name",
        "With --trust-anchors: the DNS name the control plane's certificate must carry.",
    ),
    workers: int = _option("workers", "Processes sharing the listeners."),
    detect_timeout: float = _option(
        "detect_timeout",
        "Seconds to wait for a client's first bytes before forwarding it as opaque TCP.",
    ),
    header_timeout: float = _option(
        "header_timeout", "Seconds a client may take to send a request head (then 408)."
    ),
    idle_timeout: float = _option("idle_timeout", "Seconds before idle keep-alive closes."),
    connect_timeout: float = _option("connect_timeout", "Seconds to connect upstream (then 504)."),
    response_timeout: float = _option(
        "response_timeout",
        "Default seconds for an upstream response when no route sets one (0: none).",
    ),
    shutdown_grace: float = _option(
        "shutdown_grace", "Seconds in-flight requests get to finish on SIGTERM or POST /shutdown."
    ),
    max_head_bytes: int = _option("max_head_bytes", "Largest request head (then 431)."),
    identity: str = _option(
        "identity", "This workload's SPIFFE ID; turns on mTLS between proxies."
    ),
    identity_token: str = _option(
        "identity_token", "Join token proving the identity (from `tulle identity token`)."
    ),
    identity_token_file: str = _option(
        "identity_token_file", "Read the join token from this file instead."
    ),
    identity_addr: str = _option(
        "identity_addr", "Identity service HOST:PORT[,...]; defaults to --control-addr."
    ),
    identity_issuer_dir: str = _option(
        "identity_issuer_dir",
        "Sign our own leaf with this issuer directory (tests, one machine) instead of "
        "asking the control plane.",
    ),
    identity_leaf_ttl: float = _option(
        "identity_leaf_ttl", "Leaf lifetime in seconds with --identity-issuer-dir."
    ),
    identity_wait: float = _option(
        "identity_wait",
        "Seconds a connection accepted before the first certificate waits for it, "
        "then goes on without it (503 identity-not-ready for meshed calls).",
    ),
    workload: str = _option(
        "workload",
        "The workload (service) this proxy fronts: with --control-addr, its inbound "
        "authorization policy is enforced (denied until known: fail closed).",
    ),
    deny_dst: str = _option(
        "deny_dst",
        "Addresses HOST:PORT[,HOST:PORT...] the outbound never forwards to "
        "(403 destination-forbidden), e.g. other proxies' admin listeners.",
    ),
    outbound_raw_addresses: str = _option(
        "outbound_raw_addresses",
        "What the outbound does with a raw IP:PORT destination (Host, absolute-form, "
        "CONNECT, :authority, original destination): 'forward' it, or 'refuse' it "
        "(403 destination-forbidden; an ingress that reaches services by name only). "
        "The proxy's own listeners are always refused (508 loop-detected).",
    ),
    admin_token_file: str = _option(
        "admin_token_file",
        "A file (mode 0600) with the bearer token that POST /shutdown and /tap on the "
        "admin listener need; without it they are disabled.",
    ),
    tap_networks: str = _option(
        "tap_networks",
        "Networks CIDR[,CIDR...] whose clients may ask the admin for /tap (with the "
        "admin token too): loopback by default.",
    ),
    log_level: str = _option("log_level", "debug, info, warning or error."),
    access_log: str = _option(
        "access_log",
        "Write one JSON line per request here ('-': standard output); empty: off "
        "(docs/observability.md).",
    ),
    access_log_fields: str = _option(
        "access_log_fields", "Comma-separated fields of each line; empty: every field."
    ),
    access_log_sample: float = _option(
        "access_log_sample", "The share of requests logged, 0 to 1."
    ),
    access_log_scope: str = _option(
        "access_log_scope",
        "'all' requests, or only those of 'routes' whose manifest says accessLog: true.",
    ),
    otlp_endpoint: str = _option(
        "otlp_endpoint",
        "OTLP/HTTP collector base URL (http://HOST:4318): export a span per proxied "
        "request there; empty: tracing off (traceparent still passes through).",
    ),
    trace_sample_rate: float = _option(
        "trace_sample_rate",
        "Share (0-1) of traces this proxy starts that are sampled; a caller's "
        "traceparent/B3 decision is always followed.",
    ),
) -> None:
    arguments = locals()  # the parameters, named as in FLAGS
    try:
        config = build_config({flag.name: arguments[flag.name] for flag in FLAGS})
    except FlagError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.flag) from None
    # Replace this process (same pid) with the lean proxy image; see runner.py.
    env = dict(os.environ)
    env[CONFIG_ENV] = config_to_json(config)
    # See heap.raise_mmap_threshold: glibc reads this variable at start.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tulle.proxy.runner"], env)
