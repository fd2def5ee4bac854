"""Session affinity through real processes: a control plane, `tulle proxy`, named backends.

`books` has four endpoints and `affinity: {header: x-user}`: 1,000 requests
from 50 users each land on their user's endpoint every time; when one
endpoint leaves the manifest, only the users it served move. gRPC calls
with the key in metadata stick to one of three servers the same way.
"""

from __future__ import annotations

import http.client
import sys
from collections import defaultdict
from pathlib import Path

import grpc
import pytest
from meshkit import named_backend, start_control, wait_until, write_manifest
from support.mesh import Proxy, start_proxy
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

USERS = [f"user-{i}" for i in range(50)]


def _manifest(books: list[str], echo: list[str]) -> str:
    return f"""\
services:
  - name: books
    endpoints: [{", ".join(books)}]
    affinity: {{header: x-user}}
  - name: echo
    protocol: grpc
    endpoints: [{", ".join(echo)}]
    affinity: {{header: x-user, loadFactor: 2}}
"""


def served_by(proxy: Proxy, users: list[str], rounds: int) -> dict[str, set[str]]:
    """Which backends answered each user, over `rounds` requests per user."""
    seen: dict[str, set[str]] = defaultdict(set)
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=15)
    for _ in range(rounds):
        for user in users:
            conn.request("GET", "http://books/", headers={"x-user": user})
            response = conn.getresponse()
            body = response.read().decode().strip()
            assert response.status == 200, body
            seen[user].add(body)
    conn.close()
    return seen


def test_users_stick_to_their_endpoint_and_only_a_leavers_users_move(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    backends = [named_backend(processes, f"books-{i}") for i in range(4)]
    echo = [start_grpc_server(processes, f"echo-{i}") for i in range(3)]
    path = tmp_path / "mesh.yaml"
    path.write_text(_manifest([b.addr for b in backends], [s.addr for s in echo]))
    control = start_control(processes, path)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr])

    before = served_by(proxy, USERS, rounds=20)  # 1,000 requests
    assert all(len(names) == 1 for names in before.values()), before
    home = {user: next(iter(names)) for user, names in before.items()}
    # The keys spread over the endpoints (50 users on 4 endpoints).
    assert len(set(home.values())) == 4
    metrics = proxy.metrics()
    assert metrics.total("affinity_pick_total", dst_service="books", result="hashed") == 1000

    leaver = backends[-1]
    write_manifest(path, _manifest([b.addr for b in backends[:-1]], [s.addr for s in echo]))
    wait_until(
        lambda: all(
            leaver.name not in names
            for names in served_by(proxy, [u for u in USERS if home[u] == leaver.name], 1).values()
        ),
        30,
        "the leaver's users to move",
    )
    after = served_by(proxy, USERS, rounds=4)
    assert all(len(names) == 1 for names in after.values()), after
    moved = {user for user in USERS if next(iter(after[user])) != home[user]}
    # Exactly the users the leaver served moved; everyone else kept their endpoint.
    assert moved == {user for user in USERS if home[user] == leaver.name}
    assert moved


def test_grpc_calls_stick_by_metadata(processes: ProcessGroup, tmp_path: Path) -> None:
    backends = [named_backend(processes, "books-0")]
    echo = [start_grpc_server(processes, f"echo-{i}") for i in range(3)]
    path = tmp_path / "mesh.yaml"
    path.write_text(_manifest([b.addr for b in backends], [s.addr for s in echo]))
    control = start_control(processes, path)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr])
    channel = grpc.insecure_channel(
        f"{proxy.outbound[0]}:{proxy.outbound[1]}", options=[("grpc.default_authority", "echo")]
    )
    servers: dict[str, set[str]] = defaultdict(set)
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(10):
            for user in USERS[:12]:
                reply = stub.Unary(
                    echo_pb2.EchoRequest(payload=b"x"), timeout=10, metadata=(("x-user", user),)
                )
                servers[user].add(reply.server)
    assert all(len(s) == 1 for s in servers.values()), servers
    assert len({next(iter(s)) for s in servers.values()}) >= 2
