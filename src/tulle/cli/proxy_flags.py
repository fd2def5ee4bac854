"""`tulle proxy`'s flags without typer: the fast start of the sidecar.

A pod's app waits for its proxy, so `tulle proxy` must not spend its first
half second importing typer, click and rich to read twenty flags, nor
exec a second interpreter to shed them. `run_fast` reads the command line and
the TULLE_PROXY_* environment with `FLAGS` (the same names, variables,
defaults and ranges as the typer command in `tulle.cli.proxy`) and runs the
proxy in this process.

It accepts only what it is sure of: plain values of the known flags. Anything
else (`--help`, an unknown flag, a value typer might read differently, a
value out of range, a flag that fails validation) makes it return, and the
typer command parses the same command line and prints its usual message.
So the messages and `--help` stay typer's, and a flag added to the typer
command but not here still works (the slow way); the unit tests compare
`FLAGS` with the typer command's parameters.

`build_config` turns the values into a `ProxyConfig` for both paths.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tulle.core.discovery import Address
    from tulle.proxy.config import ProxyConfig

Kind = Literal["str", "int", "float", "list"]


@dataclass(frozen=True, slots=True)
class Flag:
    """One option of `tulle proxy`, as typer declares it."""

    name: str  # the typer parameter name; the flag is --name-with-dashes
    envvar: str
    kind: Kind
    default: str | int | float | tuple[str, ...]
    min: int | None = None
    max: int | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag("inbound_addr", "TULLE_PROXY_INBOUND_ADDR", "str", "0.0.0.0:4143"),
    Flag("outbound_addr", "TULLE_PROXY_OUTBOUND_ADDR", "str", "127.0.0.1:4140"),
    Flag("admin_addr", "TULLE_PROXY_ADMIN_ADDR", "str", "127.0.0.1:4191"),
    Flag("app_addr", "TULLE_PROXY_APP_ADDR", "str", "127.0.0.1:8080"),
    Flag("static_dst", "TULLE_PROXY_STATIC_DST", "list", ()),
    Flag("control_addr", "TULLE_PROXY_CONTROL_ADDR", "str", ""),
    Flag("trust_anchors", "TULLE_PROXY_TRUST_ANCHORS", "str", ""),
    Flag("control_name", "TULLE_PROXY_CONTROL_NAME", "str", "tulle-control.tulle.svc"),
    Flag("workers", "TULLE_PROXY_WORKERS", "int", 1, min=1, max=64),
    Flag("detect_timeout", "TULLE_PROXY_DETECT_TIMEOUT", "float", 0.3),
    Flag("header_timeout", "TULLE_PROXY_HEADER_TIMEOUT", "float", 10.0),
    Flag("idle_timeout", "TULLE_PROXY_IDLE_TIMEOUT", "float", 120.0),
    Flag("connect_timeout", "TULLE_PROXY_CONNECT_TIMEOUT", "float", 2.0),
    Flag("response_timeout", "TULLE_PROXY_RESPONSE_TIMEOUT", "float", 0.0),
    Flag("shutdown_grace", "TULLE_PROXY_SHUTDOWN_GRACE", "float", 30.0),
    Flag("max_head_bytes", "TULLE_PROXY_MAX_HEAD_BYTES", "int", 65536),
    Flag("identity", "TULLE_PROXY_IDENTITY", "str", ""),
    Flag("identity_token", "TULLE_PROXY_IDENTITY_TOKEN", "str", ""),
    Flag("identity_token_file", "TULLE_PROXY_IDENTITY_TOKEN_FILE", "str", ""),
    Flag("identity_addr", "TULLE_PROXY_IDENTITY_ADDR", "str", ""),
    Flag("identity_issuer_dir", "TULLE_PROXY_IDENTITY_ISSUER_DIR", "str", ""),
    Flag("identity_leaf_ttl", "TULLE_PROXY_IDENTITY_LEAF_TTL", "float", 86400.0),
    Flag("identity_wait", "TULLE_PROXY_IDENTITY_WAIT", "float", 10.0),
    Flag("workload", "TULLE_PROXY_WORKLOAD", "str", ""),
    Flag("deny_dst", "TULLE_PROXY_DENY_DST", "str", ""),
    Flag("outbound_raw_addresses", "TULLE_PROXY_OUTBOUND_RAW_ADDRESSES", "str", "forward"),
    Flag("admin_token_file", "TULLE_PROXY_ADMIN_TOKEN_FILE", "str", ""),
    Flag("tap_networks", "TULLE_PROXY_TAP_NETWORKS", "str", "127.0.0.0/8,::1/128"),
    Flag("log_level", "TULLE_PROXY_LOG_LEVEL", "str", "info"),
    Flag("access_log", "TULLE_PROXY_ACCESS_LOG", "str", ""),
    Flag("access_log_fields", "TULLE_PROXY_ACCESS_LOG_FIELDS", "str", ""),
    Flag("access_log_sample", "TULLE_PROXY_ACCESS_LOG_SAMPLE", "float", 1.0),
    Flag("access_log_scope", "TULLE_PROXY_ACCESS_LOG_SCOPE", "str", "all"),
    Flag("otlp_endpoint", "TULLE_PROXY_OTLP_ENDPOINT", "str", ""),
    Flag("trace_sample_rate", "TULLE_PROXY_TRACE_SAMPLE_RATE", "float", 1.0),
)
_BY_OPTION = {flag.option: flag for flag in FLAGS}
# Only the plainest spellings: whatever else typer may accept, it also parses.
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?([eE][0-9]+)?|\.[0-9]+")

Values = dict[str, "str | int | float | list[str]"]


class FlagError(Exception):
    """A flag's value is unusable; `flag` says which (typer shows it as the hint)."""

    def __init__(self, message: str, flag: str) -> None:
        super().__init__(message)
        self.flag = flag


def parse(args: Sequence[str], environ: Mapping[str, str]) -> Values | None:
    """The flags' values from `args` and `environ`; None when typer should parse them."""
    given: dict[str, list[str]] = {}
    index = 0
    while index < len(args):
        token = args[index]
        option, equals, value = token.partition("=")
        flag = _BY_OPTION.get(option)
        if flag is None:
            return None  # --help, an unknown flag, an argument: typer's to explain
        if not equals:
            index += 1
            if index == len(args):
                return None
            value = args[index]
            if value.startswith("-"):
                return None  # typer takes it as the value; let it say so, if it must
        given.setdefault(flag.name, []).append(value)
        index += 1
    values: Values = {}
    for flag in FLAGS:
        texts = given.get(flag.name)
        if texts is None:
            from_env = environ.get(flag.envvar)
            if from_env:  # click ignores a variable set to ""
                texts = from_env.split() if flag.kind == "list" else [from_env]
        if texts is None:
            default = flag.default
            values[flag.name] = list(default) if isinstance(default, tuple) else default
            continue
        converted = _convert(flag, texts)
        if converted is None:
            return None
        values[flag.name] = converted
    return values


def _convert(flag: Flag, texts: list[str]) -> str | int | float | list[str] | None:
    if flag.kind == "list":
        return list(texts)
    text = texts[-1]  # a repeated single-valued flag: the last one counts, as in click
    if flag.kind == "str":
        return text
    if flag.kind == "int":
        if not _INT.fullmatch(text):
            return None
        number = int(text)
        if (flag.min is not None and number < flag.min) or (
            flag.max is not None and number > flag.max
        ):
            return None
        return number
    if not _FLOAT.fullmatch(text):
        return None
    return float(text)


def _addr(value: str, flag: str) -> Address:
    from tulle.core.discovery import parse_address

    try:
        return parse_address(value)
    except ValueError as exc:
        raise FlagError(str(exc), flag) from None


def _addrs(value: str, flag: str) -> tuple[Address, ...]:
    """A comma-separated list of HOST:PORT (empty entries skipped)."""
    return tuple(_addr(a, flag) for a in value.split(",") if a.strip())


def build_config(values: Mapping[str, object]) -> ProxyConfig:
    """The proxy's configuration from the flags' values; FlagError names a bad one."""
    import ipaddress

    from tulle.core.discovery import Endpoint, parse_static_dst
    from tulle.proxy.config import Limits, ProxyConfig, Timeouts, TracingConfig
    from tulle.proxy.destinations import RAW_MODES

    def text(name: str) -> str:
        value = values[name]
        assert isinstance(value, str)
        return value

    def number(name: str) -> float:
        value = values[name]
        assert isinstance(value, int | float)
        return value

    services: dict[str, list[Endpoint]] = {}
    static_dst = values["static_dst"]
    assert isinstance(static_dst, list)
    for spec in static_dst:
        for one in str(spec).split(";"):
            if not one.strip():
                continue
            try:
                name, endpoints = parse_static_dst(one)
            except ValueError as exc:
                raise FlagError(str(exc), "--static-dst") from None
            services[name] = endpoints
    controls = _addrs(text("control_addr"), "--control-addr")
    trust_anchors = text("trust_anchors")
    if trust_anchors:
        from tulle.api.control_tls import TrustAnchorsError, load_trust_anchors

        try:
            load_trust_anchors(trust_anchors)
        except TrustAnchorsError as exc:
            raise FlagError(str(exc), "--trust-anchors") from None
    identity = text("identity")
    identity_issuer_dir = text("identity_issuer_dir")
    identity_addr = text("identity_addr")
    token = text("identity_token")
    if text("identity_token_file"):
        try:
            with open(text("identity_token_file"), encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise FlagError(str(exc), "--identity-token-file") from None
    if identity and not (token or identity_issuer_dir):
        raise FlagError(
            "an identity needs --identity-token(-file) or --identity-issuer-dir", "--identity"
        )
    if identity and token and not (controls or identity_addr):
        raise FlagError(
            "an identity token needs --control-addr or --identity-addr to send the CSR to",
            "--identity",
        )
    outbound_raw_addresses = text("outbound_raw_addresses")
    if outbound_raw_addresses not in RAW_MODES:
        raise FlagError(f"expected one of {', '.join(RAW_MODES)}", "--outbound-raw-addresses")
    denied = _addrs(text("deny_dst"), "--deny-dst")
    identity_addrs = _addrs(identity_addr, "--identity-addr")
    admin_token = ""
    if text("admin_token_file"):
        from pathlib import Path

        from tulle.core.credentials import CredentialError, read_token_file

        try:
            admin_token = read_token_file(Path(text("admin_token_file")))
        except CredentialError as exc:
            raise FlagError(str(exc), "--admin-token-file") from None
    from tulle.core.accesslog import parse_fields

    try:
        access_log_fields = parse_fields(text("access_log_fields"))
    except ValueError as exc:
        raise FlagError(str(exc), "--access-log-fields") from None
    if text("access_log_scope") not in ("all", "routes"):
        raise FlagError("expected all or routes", "--access-log-scope")
    if not 0.0 <= number("access_log_sample") <= 1.0:
        raise FlagError("expected a share between 0 and 1", "--access-log-sample")
    tap_networks = []
    for cidr in (c.strip() for c in text("tap_networks").split(",")):
        if not cidr:
            continue
        try:
            tap_networks.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError as exc:
            raise FlagError(str(exc), "--tap-networks") from None
    otlp_endpoint = text("otlp_endpoint")
    if otlp_endpoint and not otlp_endpoint.startswith(("http://", "https://")):
        raise FlagError("expected http(s)://HOST:PORT of an OTLP/HTTP collector", "--otlp-endpoint")
    sample_rate = number("trace_sample_rate")
    if not 0.0 <= sample_rate <= 1.0:
        raise FlagError("expected a share within 0 and 1", "--trace-sample-rate")
    return ProxyConfig(
        inbound_addr=_addr(text("inbound_addr"), "--inbound-addr"),
        outbound_addr=_addr(text("outbound_addr"), "--outbound-addr"),
        admin_addr=_addr(text("admin_addr"), "--admin-addr"),
        app_addr=_addr(text("app_addr"), "--app-addr"),
        static_dst=services,
        control_addrs=controls,
        control_trust_anchors=trust_anchors,
        control_name=text("control_name"),
        workers=int(number("workers")),
        timeouts=Timeouts(
            detect_s=number("detect_timeout"),
            header_read_s=number("header_timeout"),
            idle_s=number("idle_timeout"),
            connect_s=number("connect_timeout"),
            response_s=number("response_timeout"),
            shutdown_grace_s=number("shutdown_grace"),
            identity_wait_s=number("identity_wait"),
        ),
        limits=Limits(max_head_bytes=int(number("max_head_bytes"))),
        identity=identity,
        identity_token=token,
        identity_token_file=text("identity_token_file"),
        identity_addrs=identity_addrs,
        identity_issuer_dir=identity_issuer_dir,
        identity_leaf_ttl_s=number("identity_leaf_ttl"),
        workload=text("workload"),
        deny_dst=denied,
        outbound_raw_addresses=outbound_raw_addresses,
        admin_token=admin_token,
        tap_networks=tuple(tap_networks),
        log_level=text("log_level"),
        access_log=text("access_log"),
        access_log_fields=access_log_fields,
        access_log_sample=number("access_log_sample"),
        access_log_scope=text("access_log_scope"),
        tracing=TracingConfig(
            endpoint=otlp_endpoint.rstrip("/"),
            sample_rate=sample_rate,
            service_name=text("workload") or "tulle-proxy",
        ),
    )


def run_fast(args: Sequence[str]) -> None:
    """Run the proxy from `args` and exit; returns when typer must parse them."""
    values = parse(args, os.environ)
    if values is None:
        return
    try:
        config = build_config(values)
    except FlagError:
        return  # typer parses again and shows this error its usual way
    from tulle.proxy.runner import serve

    sys.stdout.flush()
    sys.exit(serve(config))
