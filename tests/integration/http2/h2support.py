"""Launchers for HTTP/2 and gRPC tests: gRPC and h2 backends, and two proxy hops.

The hops are `h2proxy_harness.py` processes (the HTTP/2 stream proxy behind a
detecting listener, routes from flags). Hop A routes every authority to hop B;
hop B routes to the backends: `echo` to three gRPC servers, `web` to the h2
backend, `empty` to no endpoints, `down` to a port where nothing listens,
`flaky` to such a port and a gRPC server (round-robin).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from support.ports import LOOPBACK, refused_port
from support.process import ManagedProcess, ProcessGroup

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "h2proxy_harness.py"
H2_BACKEND = HERE / "h2_backend.py"
# Prepended, not replacing: the harness must import the tulle under test (a
# worktree's src on PYTHONPATH), not whichever copy is installed.
_LISTENING = re.compile(r"^LISTENING (\d+)$", re.MULTILINE)
_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}


def listening_port(process: ManagedProcess, timeout: float = 15.0) -> int:
    """Wait for the `LISTENING <port>` line a test server prints once bound."""
    return int(process.wait_for_match(_LISTENING, "LISTENING line", timeout).group(1))


@dataclass(eq=False)
class Server:
    process: ManagedProcess
    port: int

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"


def start_grpc_server(group: ProcessGroup, name: str, *extra: str) -> Server:
    """`extra`: more arguments (`--log-calls`, `--delay-ms N`: grpc_service.server)."""
    process = group.start(
        name, [sys.executable, "-m", "grpc_service.server", "--port", "0", *extra], env=_ENV
    )
    return Server(process, listening_port(process))


def start_h2_backend(group: ProcessGroup, name: str = "h2-backend") -> Server:
    process = group.start(name, [sys.executable, str(H2_BACKEND), "--port", "0"], env=_ENV)
    return Server(process, listening_port(process))


def start_harness(
    group: ProcessGroup, routes: dict[str, list[str]], name: str, *extra: str
) -> Server:
    argv = [sys.executable, str(HARNESS), "--port", "0"]
    for authority, addresses in routes.items():
        argv += ["--route", f"{authority}={','.join(addresses)}"]
    process = group.start(name, [*argv, *extra], env=_ENV)
    return Server(process, listening_port(process))


@dataclass
class Mesh:
    grpc_servers: list[Server]
    web: Server
    hop_b: Server
    hop_a: Server


AUTHORITIES = ("echo", "web", "empty", "down", "flaky")


def start_mesh(group: ProcessGroup) -> Mesh:
    grpc_servers = [start_grpc_server(group, f"grpc-{i}") for i in range(3)]
    web = start_h2_backend(group)
    hop_b = start_harness(
        group,
        {
            "echo": [s.addr for s in grpc_servers],
            "web": [web.addr],
            "empty": [],
            "down": [f"{LOOPBACK}:{refused_port()}"],
            "flaky": [f"{LOOPBACK}:{refused_port()}", grpc_servers[0].addr],
        },
        "hop-b",
    )
    hop_a = start_harness(group, {name: [hop_b.addr] for name in AUTHORITIES}, "hop-a")
    return Mesh(grpc_servers, web, hop_b, hop_a)
