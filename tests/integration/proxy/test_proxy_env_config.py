"""Every listener and destination can be set from `TULLE_PROXY_*` environment
variables instead of flags."""

from __future__ import annotations

import pytest
from support.mesh import Backend, Proxy, wait_ready
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup
from support.rawhttp import exchange, request_bytes

pytestmark = pytest.mark.integration


def test_configuration_from_environment(processes: ProcessGroup, http_backend: Backend) -> None:
    inbound_port, outbound_port, admin_port = free_ports(3)
    process = processes.tulle(
        "proxy-env",
        ["proxy"],
        env={
            "TULLE_PROXY_INBOUND_ADDR": f"{LOOPBACK}:{inbound_port}",
            "TULLE_PROXY_OUTBOUND_ADDR": f"{LOOPBACK}:{outbound_port}",
            "TULLE_PROXY_ADMIN_ADDR": f"{LOOPBACK}:{admin_port}",
            "TULLE_PROXY_APP_ADDR": http_backend.addr,
            "TULLE_PROXY_STATIC_DST": f"books={http_backend.addr}",
            "TULLE_PROXY_WORKERS": "1",
        },
    )
    proxy = wait_ready(Proxy(process, inbound_port, outbound_port, admin_port))
    outbound = exchange(*proxy.outbound, request_bytes("GET", "/status/201", "books"))
    assert outbound.status == 201
    inbound = exchange(*proxy.inbound, request_bytes("GET", "/status/202", "app"))
    assert inbound.status == 202


def test_flags_override_environment(processes: ProcessGroup, http_backend: Backend) -> None:
    inbound_port, outbound_port, admin_port, unused_port = free_ports(4)
    process = processes.tulle(
        "proxy-env-override",
        [
            "proxy",
            "--inbound-addr",
            f"{LOOPBACK}:{inbound_port}",
            "--outbound-addr",
            f"{LOOPBACK}:{outbound_port}",
            "--admin-addr",
            f"{LOOPBACK}:{admin_port}",
        ],
        env={
            "TULLE_PROXY_ADMIN_ADDR": f"{LOOPBACK}:{unused_port}",
            "TULLE_PROXY_APP_ADDR": http_backend.addr,
        },
    )
    proxy = wait_ready(Proxy(process, inbound_port, outbound_port, admin_port))
    assert exchange(*proxy.inbound, request_bytes("GET", "/", "app")).status == 200
