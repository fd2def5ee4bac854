"""Launchers for the demo backend and `tulle proxy`, and a /metrics reader.

The proxy's flag names live here as constants, so a renamed flag is one edit.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from support.ports import LOOPBACK, free_ports
from support.process import ManagedProcess, ProcessGroup, http_status

# Flags for the timeouts the tests shorten (seconds, as the proxy's --help says).
HEADER_READ_TIMEOUT_FLAG = "--header-timeout"
UPSTREAM_TIMEOUT_FLAG = "--response-timeout"

_LISTENING = re.compile(r"listening (\S+) ([\d.]+):(\d+)")
# `tulle control`'s ready line: its gRPC and admin ports.
PORT_ATTEMPTS = 3
ADDRESS_IN_USE = "Address already in use"
CONTROL_READY = re.compile(r"tulle control ready grpc=[\d.]+:(\d+) admin=[\d.]+:(\d+)")


@dataclass
class Backend:
    process: ManagedProcess
    host: str
    port: int
    mode: str

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def stats(self) -> dict[str, int]:
        """The HTTP backend's counters (connections accepted, requests served)."""
        with urllib.request.urlopen(f"http://{self.addr}/stats", timeout=5) as response:
            document: dict[str, int] = json.loads(response.read())
            return document


def start_backend(group: ProcessGroup, mode: str = "http") -> Backend:
    """A demo backend on a kernel-chosen port; returns once it listens."""
    process = group.tulle(
        f"backend-{mode}", ["demo", "backend", "--addr", f"{LOOPBACK}:0", "--mode", mode]
    )
    match = process.wait_for_match(_LISTENING, "listening line")
    return Backend(process, match.group(2), int(match.group(3)), mode)


@dataclass
class Proxy:
    process: ManagedProcess
    inbound_port: int
    outbound_port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def outbound(self) -> tuple[str, int]:
        return (LOOPBACK, self.outbound_port)

    @property
    def inbound(self) -> tuple[str, int]:
        return (LOOPBACK, self.inbound_port)

    @property
    def admin(self) -> tuple[str, int]:
        return (LOOPBACK, self.admin_port)

    @property
    def outbound_url(self) -> str:
        return f"http://{LOOPBACK}:{self.outbound_port}"

    @property
    def inbound_url(self) -> str:
        return f"http://{LOOPBACK}:{self.inbound_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def metrics(self) -> Metrics:
        return Metrics(self.metrics_text())


def proxy_args(
    inbound_port: int,
    outbound_port: int,
    admin_port: int,
    app_addr: str | None = None,
    static_dst: Mapping[str, Sequence[str]] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = [
        "proxy",
        "--inbound-addr",
        f"{LOOPBACK}:{inbound_port}",
        "--outbound-addr",
        f"{LOOPBACK}:{outbound_port}",
        "--admin-addr",
        f"{LOOPBACK}:{admin_port}",
    ]
    if app_addr is not None:
        args += ["--app-addr", app_addr]
    for name, endpoints in (static_dst or {}).items():
        args += ["--static-dst", f"{name}={','.join(endpoints)}"]
    return args + list(extra)


def start_proxy(
    group: ProcessGroup,
    app_addr: str | None = None,
    static_dst: Mapping[str, Sequence[str]] | None = None,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "proxy",
) -> Proxy:
    """`tulle proxy` on fresh ports; returns once `GET /ready` answers 200.

    A port found free can be taken before the proxy binds it (by another
    test's process, or as the ephemeral port of some outgoing connection):
    the proxy then exits saying so, and is started again on other ports."""
    for attempt in range(PORT_ATTEMPTS):
        inbound_port, outbound_port, admin_port = free_ports(3)
        args = proxy_args(inbound_port, outbound_port, admin_port, app_addr, static_dst, extra)
        process = group.tulle(name, args, env)
        try:
            return wait_ready(Proxy(process, inbound_port, outbound_port, admin_port))
        except RuntimeError:
            lost_a_port = not process.alive() and ADDRESS_IN_USE in process.output()
            if not lost_a_port or attempt + 1 == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def wait_ready(proxy: Proxy) -> Proxy:
    proxy.process.wait_for(
        lambda: http_status(LOOPBACK, proxy.admin_port, "/ready") == 200, "GET /ready = 200"
    )
    return proxy


class Metrics:
    """A parsed /metrics page (prometheus_client's parser: it must parse)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}

    def matching(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (dict(sample.labels), sample.value)
            for sample in self.samples
            if sample.name == name
            and all(sample.labels.get(key) == value for key, value in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        return sum(value for _, value in self.matching(name, **labels))
