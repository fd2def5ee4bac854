"""A proxy re-reads `--identity-token-file` for every Certify.

In a pod the kubelet replaces the projected ServiceAccount token (an hour)
long before the leaf's renewal: a proxy that kept the token it read at start
would renew with an expired one, be refused, and lose its identity when the
leaf expires. Here the same happens in seconds: the first token expires
before the first renewal, a fresh one is written to the file meanwhile, and
the renewal must succeed with it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.mesh import CONTROL_READY, Proxy, proxy_args, wait_ready
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup

from tulle.identity.store import BUNDLE_FILE, IssuerDirectory
from tulle.identity.tokens import make_token

pytestmark = pytest.mark.integration

WEB = "spiffe://cluster.local/ns/default/sa/web"
LEAF_TTL_S = 16.0  # renewed at 70 %: about 11 s after the first leaf
FIRST_TOKEN_TTL_S = 6.0


def test_the_renewal_uses_the_token_file_as_it_is_now(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    issuer = IssuerDirectory(tmp_path / "issuer")
    issuer.init("cluster.local", now=time.time())
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("services: []\n")
    control = processes.tulle(
        "control",
        ["control", "--manifest", str(manifest), "--grpc-addr", f"{LOOPBACK}:0",
         "--admin-addr", f"{LOOPBACK}:0", "--http-addr", "off",
         "--identity-dir", str(issuer.path), "--identity-leaf-ttl", str(LEAF_TTL_S)],
    )  # fmt: skip
    grpc_port = int(control.wait_for_match(CONTROL_READY, "the ready line").group(1))
    token_file = tmp_path / "token"
    token_file.write_text(
        make_token(issuer.token_secret(), WEB, now=time.time(), ttl_s=FIRST_TOKEN_TTL_S)
    )
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(
        inbound,
        outbound,
        admin,
        extra=[
            "--identity", WEB,
            "--identity-token-file", str(token_file),
            "--identity-addr", f"{LOOPBACK}:{grpc_port}",
            "--trust-anchors", str(issuer.file(BUNDLE_FILE)),
        ],
    )  # fmt: skip
    proxy = wait_ready(Proxy(processes.tulle("web-proxy", args), inbound, outbound, admin))
    first_expiry = proxy.metrics().total("identity_cert_expiration_timestamp_seconds")
    # What the kubelet does: a fresh token in the same file, before the first expires.
    fresh = make_token(issuer.token_secret(), WEB, now=time.time(), ttl_s=600)
    replacement = tmp_path / "token.new"
    replacement.write_text(fresh)
    replacement.replace(token_file)

    def renewed() -> bool:
        metrics = proxy.metrics()
        return metrics.total("identity_cert_expiration_timestamp_seconds") > first_expiry

    proxy.process.wait_for(renewed, "a renewed leaf", timeout=60)
    metrics = proxy.metrics()
    assert metrics.total("identity_cert_refresh_total", result="failure") == 0, proxy.metrics_text()
    # The renewal came after the first token had expired: only the file's new one could do it.
    assert time.time() > first_expiry - LEAF_TTL_S + FIRST_TOKEN_TTL_S
