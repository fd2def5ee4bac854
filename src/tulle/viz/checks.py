"""`check` as data: categories of named checks, each with a hint, rendered alike everywhere.

The control plane runs the mesh checks (`GET /api/check`); the CLI runs the
pre-flight checks (`tulle check --pre`), which need no running mesh. Both
produce the same `CheckReport`, and one renderer shows it.
"""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
WARN = "warn"
FAIL = "fail"
# Ports of a local mesh (DESIGN.md): control gRPC, HTTP, admin; proxy in/out/admin.
DEFAULT_MESH_PORTS = (8084, 8086, 9990, 4140, 4143, 4191)
CERT_EXPIRY_WARN_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str = ""
    hint: str = ""


@dataclass(slots=True)
class Category:
    name: str
    checks: list[Check] = field(default_factory=list)

    def add(
        self, name: str, ok: bool, detail: str = "", hint: str = "", *, warn: bool = False
    ) -> None:
        status = OK if ok else (WARN if warn else FAIL)
        self.checks.append(Check(name, status, detail, "" if ok else hint))


@dataclass(slots=True)
class CheckReport:
    categories: list[Category] = field(default_factory=list)

    def category(self, name: str) -> Category:
        category = Category(name)
        self.categories.append(category)
        return category

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for cat in self.categories for c in cat.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "categories": [asdict(category) for category in self.categories]}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CheckReport:
        report = cls()
        for category in document.get("categories", []):
            target = report.category(str(category.get("name", "")))
            for check in category.get("checks", []):
                target.checks.append(
                    Check(
                        str(check.get("name", "")),
                        str(check.get("status", FAIL)),
                        str(check.get("detail", "")),
                        str(check.get("hint", "")),
                    )
                )
        return report


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
