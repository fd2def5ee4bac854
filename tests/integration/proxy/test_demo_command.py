"""`tulle demo`: backend + proxy started together, callable with the printed
command, both cleaned up on SIGTERM; a busy port is a clear error."""

from __future__ import annotations

import signal
import socket

import pytest
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup, accepts_connections
from support.tools import curl

pytestmark = pytest.mark.integration


def test_demo_runs_backend_and_proxy_and_cleans_up(processes: ProcessGroup) -> None:
    backend_port, outbound_port, inbound_port, admin_port = free_ports(4)
    demo = processes.tulle(
        "demo",
        [
            "demo",
            "--backend-port",
            str(backend_port),
            "--outbound-port",
            str(outbound_port),
            "--inbound-port",
            str(inbound_port),
            "--admin-port",
            str(admin_port),
        ],
    )
    demo.wait_for(lambda: "Ctrl-C" in demo.output(), "the demo summary", timeout=20)
    output = demo.output()
    assert f"curl -x http://{LOOPBACK}:{outbound_port} http://demo/" in output
    assert f"{LOOPBACK}:{admin_port}/metrics" in output
    through_mesh = curl("-x", f"http://{LOOPBACK}:{outbound_port}", "http://demo/")
    assert through_mesh.returncode == 0, through_mesh.stderr
    assert through_mesh.stdout == "Hello, Tulle\n"
    inbound = curl(f"http://{LOOPBACK}:{inbound_port}/")
    assert inbound.stdout == "Hello, Tulle\n"
    demo.signal(signal.SIGTERM)
    assert demo.wait_exit(15) == 0, demo.describe()
    for port in (backend_port, outbound_port, inbound_port, admin_port):
        assert not accepts_connections(LOOPBACK, port), f"port {port} still served after exit"


def test_demo_reports_a_busy_port_clearly(processes: ProcessGroup) -> None:
    backend_port, outbound_port, inbound_port, admin_port = free_ports(4)
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, outbound_port))
        squatter.listen()
        demo = processes.tulle(
            "demo-busy",
            [
                "demo",
                "--backend-port",
                str(backend_port),
                "--outbound-port",
                str(outbound_port),
                "--inbound-port",
                str(inbound_port),
                "--admin-port",
                str(admin_port),
            ],
        )
        assert demo.wait_exit(15) == 1
    output = demo.output()
    assert f"port {outbound_port}" in output
    assert "--outbound-port" in output
    assert "Traceback" not in output
