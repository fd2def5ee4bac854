"""`tulle up`: the ingress reaches services by name only, and no proxy of the
mesh forwards to itself, to another proxy's admin or to the control plane.

A caller from outside writes `Host: 127.0.0.1:PORT`, an absolute-form URI, a
`CONNECT` or an HTTP/2 `:authority` naming an app's own port, a sidecar's
admin (`POST /shutdown`, `/tap`) or the control plane; each is refused at
once, and nothing it aimed at is harmed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from support.rawhttp import RawHttpConnection
from support.tools import require_binary
from up_harness import UpRun, http_get, port_of, up_running

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: hello
    protocol: http/1.1
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
      replicas: 2
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UpRun, dict[str, Any]]]:
    tmp_path = tmp_path_factory.mktemp("up-destinations")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(MANIFEST)
    with up_running(manifest) as run:
        yield run, run.wait_ready()


def raw_request(port: int, data: bytes) -> tuple[int, str]:
    """Send `data`, read one response head: its status and `tulle-proxy-error`."""
    with RawHttpConnection("127.0.0.1", port, timeout=10) as connection:
        connection.send(data)
        head = connection.read_head()
    return head.status, head.proxy_error or ""


def h2_status(port: int, authority: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            require_binary("curl"),
            "--silent",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %header{tulle-proxy-error}",
            "-H",
            f"Host: {authority}",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    code, _, error = result.stdout.partition(" ")
    return int(code), error


def targets(state: dict[str, Any]) -> dict[str, str]:
    """Raw addresses a caller from outside must not reach through the ingress."""
    first = state["instances"][0]
    control = state["control"]
    out = {
        "app": first["app"],
        "sidecar-admin": first["admin"],
        "sidecar-inbound": first["inbound"],
        "control-admin": control["admin"],
        "control-grpc": control["grpc"],
    }
    if control.get("http"):
        out["control-http"] = control["http"].removeprefix("http://").rstrip("/")
    return out


def test_ingress_refuses_raw_addresses_in_every_form(mesh: tuple[UpRun, dict[str, Any]]) -> None:
    _, state = mesh
    ingress = port_of(state["ingress"]["addr"])
    for what, address in targets(state).items():
        for form in (
            f"POST /shutdown HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n",
            f"GET http://{address}/tap HTTP/1.1\r\nHost: {address}\r\n\r\n",
            f"CONNECT {address} HTTP/1.1\r\nHost: {address}\r\n\r\n",
        ):
            status = raw_request(ingress, form.encode())
            assert status == (403, "destination-forbidden"), (what, form, status)
        assert h2_status(ingress, address) == (403, "destination-forbidden"), what
    # By name, as documented.
    assert http_get(ingress, "/", {"Host": "hello"}) == (200, b"Hello, Tulle\n")
    # Every sidecar is still up: none was shut down through the ingress.
    for instance in state["instances"]:
        assert http_get(port_of(instance["admin"]), "/ready")[0] == 200


def test_ingress_addressed_to_itself_is_refused_and_survives(
    mesh: tuple[UpRun, dict[str, Any]],
) -> None:
    _, state = mesh
    ingress_addr = state["ingress"]["addr"]
    ingress = port_of(ingress_addr)
    request = f"GET / HTTP/1.1\r\nHost: {ingress_addr}\r\n\r\n".encode()
    assert raw_request(ingress, request) == (508, "loop-detected")
    assert h2_status(ingress, ingress_addr) == (508, "loop-detected")
    assert http_get(port_of(state["ingress"]["admin"]), "/live")[0] == 200
    assert http_get(ingress, "/", {"Host": "hello"})[0] == 200
    pid = next(p["pid"] for p in state["processes"] if p["name"] == "ingress")
    assert len(os.listdir(f"/proc/{pid}/fd")) < 200


def test_sidecar_outbound_never_reaches_another_proxys_admin(
    mesh: tuple[UpRun, dict[str, Any]],
) -> None:
    _, state = mesh
    first, second = state["instances"][:2]
    outbound = port_of(first["outbound"])
    shutdown = f"POST /shutdown HTTP/1.1\r\nHost: {second['admin']}\r\nContent-Length: 0\r\n\r\n"
    assert raw_request(outbound, shutdown.encode()) == (403, "destination-forbidden")
    ingress_admin = state["ingress"]["admin"]
    tap = f"GET /tap HTTP/1.1\r\nHost: {ingress_admin}\r\n\r\n"
    assert raw_request(outbound, tap.encode()) == (403, "destination-forbidden")
    own = f"GET /metrics HTTP/1.1\r\nHost: {first['admin']}\r\n\r\n"
    assert raw_request(outbound, own.encode()) == (508, "loop-detected")
    assert http_get(port_of(second["admin"]), "/ready")[0] == 200
    # Any other raw address is forwarded as it is: the sidecar's outbound is not a firewall.
    status, _ = raw_request(outbound, f"GET / HTTP/1.1\r\nHost: {second['app']}\r\n\r\n".encode())
    assert status == 200
