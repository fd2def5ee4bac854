"""The control plane's gRPC API over TLS: real `tulle control` and `tulle proxy` processes.

A relay in this process sits between the proxies and the control plane and
keeps the first byte of every connection, so the test sees what is on the wire.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from control_launcher import start_control
from support.mesh import Proxy, proxy_args, start_backend, wait_ready
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup, http_status

from tulle.identity.store import BUNDLE_FILE, IssuerDirectory, IssuerMaterial
from tulle.identity.tokens import make_token

pytestmark = pytest.mark.integration

TRUST_DOMAIN = "cluster.local"
WEB = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"
TLS_HANDSHAKE = 0x16


class Relay:
    """Forwards TCP to `target`; records each connection's first byte from the client."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.first_bytes: list[int] = []
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        with client, socket.create_connection(self.target, timeout=5) as upstream:
            upstream.settimeout(None)
            first = client.recv(65536)
            if not first:
                return
            self.first_bytes.append(first[0])
            upstream.sendall(first)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join(timeout=5)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _issuer(path: Path) -> IssuerDirectory:
    directory = IssuerDirectory(path)
    directory.ensure(TRUST_DOMAIN, now=time.time())
    return directory


def _start_proxy(
    processes: ProcessGroup, relay: Relay, anchors: Path, token: str, name: str
) -> Proxy:
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(
        inbound,
        outbound,
        admin,
        extra=[
            "--control-addr",
            f"{LOOPBACK}:{relay.port}",
            "--trust-anchors",
            str(anchors),
            "--identity",
            WEB,
            "--identity-token",
            token,
        ],
    )
    return Proxy(processes.tulle(name, args), inbound, outbound, admin)


def _get(proxy: Proxy, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{proxy.outbound_url}/", headers={"Host": host})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def test_proxy_talks_tls_to_the_control_plane(processes: ProcessGroup, tmp_path: Path) -> None:
    issuer = _issuer(tmp_path / "issuer")
    backend = start_backend(processes)
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"services:\n  - name: web\n    port: 80\n    endpoints: [{backend.addr}]\n"
    )
    replica = start_control(processes, manifest, extra=("--identity-dir", str(issuer.path)))
    assert "served over TLS as spiffe://cluster.local/ns/tulle/sa/tulle-control" in (
        replica.process.output()
    )
    relay = Relay(replica.grpc_address)
    try:
        token = make_token(issuer.token_secret(), WEB, now=time.time(), ttl_s=600)
        proxy = wait_ready(
            _start_proxy(processes, relay, issuer.file(BUNDLE_FILE), token, "proxy-tls")
        )
        # A certificate (ready) and endpoints (the call reaches the backend).
        status, _ = _get(proxy, "web")
        assert status == 200
        assert relay.first_bytes, "no connection went through the relay"
        assert set(relay.first_bytes) == {TLS_HANDSHAKE}, relay.first_bytes
    finally:
        relay.close()


def test_a_foreign_anchor_is_refused(processes: ProcessGroup, tmp_path: Path) -> None:
    issuer = _issuer(tmp_path / "issuer")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("services:\n  - name: web\n    port: 80\n    endpoints: []\n")
    replica = start_control(processes, manifest, extra=("--identity-dir", str(issuer.path)))
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(IssuerMaterial.generate(TRUST_DOMAIN, now=time.time()).bundle.pem())
    relay = Relay(replica.grpc_address)
    try:
        token = make_token(issuer.token_secret(), WEB, now=time.time(), ttl_s=600)
        proxy = _start_proxy(processes, relay, foreign, token, "proxy-foreign")
        proxy.process.wait_for(
            lambda: "CERTIFICATE_VERIFY_FAILED" in proxy.process.output(),
            "the proxy logging why the control plane is refused",
        )
        assert http_status(LOOPBACK, proxy.admin_port, "/ready") == 503
        assert replica.metric("identity_certify_total", result="ok") == 0
    finally:
        relay.close()
