"""Starting `tulle control` replicas for tests, and reading their admin endpoints."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.mesh import CONTROL_READY
from support.ports import LOOPBACK
from support.process import ManagedProcess, ProcessGroup


@dataclass
class Replica:
    process: ManagedProcess
    grpc_port: int
    admin_port: int

    @property
    def grpc_address(self) -> tuple[str, int]:
        return LOOPBACK, self.grpc_port

    def admin_get(self, path: str) -> tuple[int, str]:
        url = f"http://{LOOPBACK}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the replica's /metrics; 0 when absent."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        _, text = self.admin_get("/metrics")
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == series:
                return float(value)
        return 0.0


def start_control(
    group: ProcessGroup,
    manifest: Path,
    *,
    grpc_port: int = 0,
    name: str = "control",
    extra: tuple[str, ...] = (),
) -> Replica:
    """Start a replica (port 0: the replica picks one and prints it) and wait until ready."""
    process = group.tulle(
        name,
        [
            "control",
            "--manifest",
            str(manifest),
            "--grpc-addr",
            f"{LOOPBACK}:{grpc_port}",
            "--admin-addr",
            f"{LOOPBACK}:0",
            "--poll-interval",
            "0.1",
            *extra,
        ],
    )
    ready = process.wait_for_match(CONTROL_READY, "the ready line")
    replica = Replica(process, int(ready.group(1)), int(ready.group(2)))
    process.wait_for(lambda: replica.admin_get("/ready")[0] == 200, "/ready")
    return replica


def mesh(*ports: int, name: str = "web", extra: str = "") -> str:
    """A manifest with one service on the given local ports, and a route."""
    endpoints = ", ".join(f"{LOOPBACK}:{port}" for port in ports)
    return (
        "services:\n"
        f"  - name: {name}\n"
        "    port: 8080\n"
        f"    endpoints: [{endpoints}]\n"
        "    routes:\n"
        "      - name: get-items\n"
        "        matches: [{path: {value: /items}, method: GET}]\n"
        "        timeout: 500ms\n"
        "        retryable: true\n"
        f"{extra}"
    )


def write_manifest(path: Path, text: str) -> None:
    """Replace the file atomically, as editors and config tools do."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
