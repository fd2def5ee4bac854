"""The per-request override's header through real processes: never forwarded
(HTTP/1), and an override over gRPC to a backend nobody had resolved yet.

`books` and `echo` split all traffic to v1 and list v2 at weight 0, trusting
the `tester` identity to pick a backend with `tulle-backend`. The first
override of `echo` names a backend whose discovery starts only once the
split is known: the stream waits for both answers, as HTTP/1 requests do.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest
from meshkit import header_echo, start_control, write_manifest
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

TESTER = "spiffe://tulle.test/ns/default/sa/tester"


def named_echo(group: ProcessGroup, name: str) -> str:
    """Answers `<name> <tulle-backend value or ->`: the test sees what was forwarded."""
    return header_echo(group, name, "tulle-backend", prefix=f"{name} ")


def test_override_header_is_not_forwarded_and_grpc_waits_for_the_backend(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    issuer = tmp_path / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", "tulle.test"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    v1, v2 = named_echo(processes, "books-v1"), named_echo(processes, "books-v2")
    g1, g2 = (start_grpc_server(processes, f"echo-v{i}") for i in (1, 2))
    manifest = tmp_path / "mesh.yaml"
    write_manifest(
        manifest,
        "services:\n"
        "  - name: books\n"
        "    backends: [{name: books-v1, weight: 100}, {name: books-v2, weight: 0}]\n"
        f"    requestOverride: {{identities: ['{TESTER}']}}\n"
        f"  - {{name: books-v1, endpoints: [{v1}]}}\n"
        f"  - {{name: books-v2, endpoints: [{v2}]}}\n"
        "  - name: echo\n"
        "    protocol: grpc\n"
        "    backends: [{name: echo-v1, weight: 1}, {name: echo-v2, weight: 0}]\n"
        f"    requestOverride: {{identities: ['{TESTER}']}}\n"
        f"  - {{name: echo-v1, protocol: grpc, endpoints: [{g1.addr}]}}\n"
        f"  - {{name: echo-v2, protocol: grpc, endpoints: [{g2.addr}]}}\n",
    )
    control = start_control(processes, manifest)
    tester = start_proxy(
        processes,
        extra=["--control-addr", control.grpc_addr, "--identity", TESTER,
               "--identity-issuer-dir", str(issuer)],
        name="tester-proxy",
    )  # fmt: skip

    # gRPC first: `echo` and its weight-0 backend are both unknown to the proxy.
    ports = {str(g1.port): "echo-v1", str(g2.port): "echo-v2"}
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{tester.outbound_port}", options=[("grpc.default_authority", "echo")]
    )
    stub = echo_pb2_grpc.EchoStub(channel)
    served = Counter(
        ports[stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10,
                         metadata=[("tulle-backend", "echo-v2")]).server]
        for _ in range(10)
    )  # fmt: skip
    channel.close()
    assert served == Counter({"echo-v2": 10})

    def get(proxy: Proxy, headers: dict[str, str]) -> str:
        connection = http.client.HTTPConnection(*proxy.outbound, timeout=10)
        try:
            connection.request("GET", "/", headers={"Host": "books", **headers})
            response = connection.getresponse()
            assert response.status == 200
            return response.read().decode()
        finally:
            connection.close()

    # The backend named by the header answers, and never sees the header.
    assert Counter(get(tester, {"tulle-backend": "books-v2"}) for _ in range(10)) == Counter(
        {"books-v2 -": 10}
    )
    # A refused name goes the usual way, and is not forwarded either.
    assert get(tester, {"tulle-backend": "elsewhere"}) == "books-v1 -"
