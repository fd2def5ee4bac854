"""The proxy's settings, as typed frozen dataclasses built once from flags/env."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tulle.core.discovery import Address, Endpoint


@dataclass(frozen=True, slots=True)
class Timeouts:
    # Bound on the first bytes of a connection before it is treated as opaque.
    detect_s: float = 0.3
    # A client that has begun a request head must finish it within this (408).
    header_read_s: float = 10.0
    # Keep-alive connections with no request in flight close after this.
    idle_s: float = 120.0
    connect_s: float = 2.0
    # Upstream response head deadline when no route sets one; 0 disables (504).
    response_s: float = 0.0
    # How long a draining proxy waits for in-flight requests.
    shutdown_grace_s: float = 30.0
    # First answer from discovery for a never-seen service name.
    discovery_s: float = 5.0
    # Connections accepted before the first certificate wait this long for it.
    identity_wait_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    # Request bodies up to this size are kept so that a request can be retried.
    max_replay_bytes: int = 64 * 1024
    # Idle pooled upstream connections kept per endpoint.
    max_idle_per_endpoint: int = 256
    # Requests waiting or in flight per logical service before a 503.
    max_pending_per_service: int = 10_000
    # Pipelined requests queued behind the one in flight before reading pauses.
    max_pipelined: int = 16
    # Proxy hops a request may already have crossed (`tulle-hops`, added by
    # every hop) before it is refused as a loop (508 loop-detected).
    max_hops: int = 16


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Where spans go and which new traces are sampled."""

    # OTLP/HTTP collector base URL (`http://127.0.0.1:4318`); empty: tracing off.
    endpoint: str = ""
    # Share of traces this proxy starts that are sampled; a caller's decision wins.
    sample_rate: float = 1.0
    # The `service.name` resource attribute; empty: the workload, else "tulle-proxy".
    service_name: str = ""
    # Finished spans held for export; beyond it spans are dropped (counted).
    max_queue: int = 2048
    max_batch: int = 512
    interval_s: float = 1.0
    # Deadline of one export POST (connect + send + answer).
    export_timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    inbound_addr: Address = ("0.0.0.0", 4143)
    outbound_addr: Address = ("127.0.0.1", 4140)
    admin_addr: Address = ("127.0.0.1", 4191)
    app_addr: Address | None = None
    static_dst: dict[str, list[Endpoint]] = field(default_factory=dict)
    control_addrs: tuple[Address, ...] = ()
    # PEM file of the trust anchors that verify the control plane's certificate
    # (tulle.api.control_tls); empty: plaintext to the control plane.
    control_trust_anchors: str = ""
    control_name: str = "tulle-control.tulle.svc"
    workers: int = 1
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    # Identity, for mTLS; empty when the proxy runs without it.
    identity: str = ""
    identity_token: str = ""
    # Where identity_token was read from: re-read for every Certify, since the
    # kubelet replaces a projected ServiceAccount token long before a leaf's
    # renewal (an hour against 17 h), and the first token has expired by then.
    identity_token_file: str = ""
    # Where to send CSRs; defaults to the control-plane addresses.
    identity_addrs: tuple[Address, ...] = ()
    # Sign locally with an issuer directory instead (tests, single machine).
    identity_issuer_dir: str = ""
    identity_leaf_ttl_s: float = 24 * 3600.0
    # The workload this proxy fronts (its service name): selects the inbound
    # authorization policy served by the control plane.
    workload: str = ""
    # Addresses the outbound never forwards to (403 destination-forbidden):
    # `tulle up` lists every proxy's admin and the control plane's ports.
    deny_dst: tuple[Address, ...] = ()
    # A raw `IP:PORT` authority that names no service: "forward" it as it is,
    # or "refuse" it (the `tulle up` ingress reaches services by name only).
    outbound_raw_addresses: str = "forward"
    # The bearer token of the admin's POST /shutdown and /tap; empty: disabled.
    admin_token: str = ""
    # Networks (CIDRs) whose clients may ask for /tap, token still required:
    # loopback, and with `tulle up --isolated` the host's bridge address.
    tap_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    log_level: str = "info"
    # Access log (tulle.proxy.accesslog): "" off, "-" standard output, else a file.
    access_log: str = ""
    access_log_fields: tuple[str, ...] = ()  # empty: every field
    access_log_sample: float = 1.0
    access_log_scope: str = "all"  # or "routes": only routes with accessLog: true
    # Distributed tracing (tulle.proxy.tracing); off unless an endpoint is set.
    tracing: TracingConfig = TracingConfig()


def config_to_json(config: ProxyConfig) -> str:
    data = asdict(config)
    data["static_dst"] = {
        name: [
            {
                "address": list(ep.address),
                "weight": ep.weight,
                "identity": ep.identity,
                "protocol_hint": ep.protocol_hint,
                "labels": dict(ep.labels),
            }
            for ep in eps
        ]
        for name, eps in config.static_dst.items()
    }
    return json.dumps(data)


def config_from_json(text: str) -> ProxyConfig:
    data: dict[str, Any] = json.loads(text)

    def addr(value: Any) -> Address:
        return (str(value[0]), int(value[1]))

    return ProxyConfig(
        inbound_addr=addr(data["inbound_addr"]),
        outbound_addr=addr(data["outbound_addr"]),
        admin_addr=addr(data["admin_addr"]),
        app_addr=addr(data["app_addr"]) if data["app_addr"] else None,
        static_dst={
            name: [
                Endpoint(
                    addr(ep["address"]),
                    weight=ep["weight"],
                    identity=ep["identity"],
                    protocol_hint=ep["protocol_hint"],
                    labels=ep["labels"],
                )
                for ep in eps
            ]
            for name, eps in data["static_dst"].items()
        },
        control_addrs=tuple(addr(a) for a in data["control_addrs"]),
        control_trust_anchors=data.get("control_trust_anchors", ""),
        control_name=data.get("control_name", "tulle-control.tulle.svc"),
        workers=data["workers"],
        timeouts=Timeouts(**data["timeouts"]),
        limits=Limits(**data["limits"]),
        identity=data["identity"],
        identity_token=data["identity_token"],
        identity_token_file=data.get("identity_token_file", ""),
        identity_addrs=tuple(addr(a) for a in data["identity_addrs"]),
        identity_issuer_dir=data["identity_issuer_dir"],
        identity_leaf_ttl_s=data["identity_leaf_ttl_s"],
        workload=data.get("workload", ""),
        deny_dst=tuple(addr(a) for a in data.get("deny_dst", ())),
        outbound_raw_addresses=data.get("outbound_raw_addresses", "forward"),
        admin_token=data.get("admin_token", ""),
        log_level=data["log_level"],
        access_log=data.get("access_log", ""),
        access_log_fields=tuple(data.get("access_log_fields", ())),
        access_log_sample=data.get("access_log_sample", 1.0),
        access_log_scope=data.get("access_log_scope", "all"),
        tracing=TracingConfig(**data.get("tracing", {})),
    )
