"""The pre-flight checks (`tulle check --pre`): what needs no running mesh.

They produce a `tulle.core.checks.CheckReport`, like the control plane's mesh
checks (`GET /api/check`), and one renderer shows both.
"""

from __future__ import annotations

import shutil
import socket
import sys

from tulle.core.checks import CheckReport

# Ports of a local mesh (DESIGN.md): control gRPC, HTTP, admin; proxy in/out/admin.
DEFAULT_MESH_PORTS = (8084, 8086, 9990, 4140, 4143, 4191)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def preflight(ports: tuple[int, ...] = DEFAULT_MESH_PORTS) -> CheckReport:
    """Checks that need no running mesh: interpreter, ports, optional tools."""
    report = CheckReport()
    env = report.category("environment")
    version = ".".join(str(part) for part in sys.version_info[:3])
    env.add(
        "python is 3.11 or newer",
        sys.version_info >= (3, 11),
        f"python {version}",
        "install Python 3.11+ and reinstall tulle with it",
    )
    for module in ("uvloop", "httptools", "h2", "grpc", "yaml", "cryptography"):
        try:
            __import__(module)
            found = True
        except ImportError:
            found = False
        env.add(f"module {module} importable", found, "", f"pip install tulle again ({module})")
    ports_category = report.category("ports")
    for port in ports:
        ports_category.add(
            f"port {port} free on 127.0.0.1",
            port_free(port),
            "",
            f"another process listens on {port}: stop it, or give tulle other ports",
        )
    tools = report.category("tools")
    for tool, why in (
        ("curl", "handy to send test traffic"),
        ("prometheus", "--prometheus-url mode"),
    ):
        path = shutil.which(tool)
        tools.add(f"{tool} on PATH", path is not None, path or "", f"optional: {why}", warn=True)
    return report
