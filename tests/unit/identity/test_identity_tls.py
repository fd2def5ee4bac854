"""TLS context building (both key-loading paths) and peer identity parsing, without sockets."""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.identity.ca import generate_key, issue_leaf
from tulle.identity.csr import CsrIdentityMismatch, MalformedCsr, check_csr
from tulle.identity.spiffe import parse_spiffe_id
from tulle.identity.store import IssuerMaterial
from tulle.identity.tls import (
    PeerIdentityMismatch,
    WorkloadCertificate,
    build_client_context,
    build_server_context,
    peer_identity,
    verify_peer_identity,
)

WEB = "spiffe://cluster.local/ns/default/sa/web"


def _certificate(material: IssuerMaterial) -> WorkloadCertificate:
    key = generate_key()
    now = time.time()
    leaf = issue_leaf(parse_spiffe_id(WEB), key.public_key(), material.issuer, now=now)
    return WorkloadCertificate(WEB, key, leaf, (material.issuer.certificate,), material.bundle, now)


@pytest.mark.parametrize("use_memfd", [True, False])
def test_contexts_load_in_memory_key(
    material: IssuerMaterial, use_memfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not use_memfd:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    created: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path: str = real_mkdtemp(*args, **kwargs)
        created.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    certificate = _certificate(material)
    server = build_server_context(certificate, ["tulle.h2"])
    client = build_client_context(certificate, ["tulle.h2"])
    assert server.verify_mode == client.verify_mode == ssl.CERT_REQUIRED
    assert server.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not client.check_hostname
    assert len(server.get_ca_certs()) == 1
    # The fallback leaves nothing behind; the memfd path never touches a directory.
    assert (created == []) if use_memfd else all(not os.path.exists(p) for p in created)
    assert use_memfd or created


class FakePeer:
    def __init__(self, certificate: dict[str, Any] | None) -> None:
        self.certificate = certificate

    def getpeercert(self) -> dict[str, Any] | None:
        return self.certificate


def test_peer_identity_parsing() -> None:
    assert peer_identity(FakePeer(None)) is None  # type: ignore[arg-type]
    one = FakePeer({"subjectAltName": (("DNS", "x"), ("URI", WEB))})
    assert peer_identity(one) == WEB  # type: ignore[arg-type]
    two = FakePeer({"subjectAltName": (("URI", WEB), ("URI", WEB + "2"))})
    assert peer_identity(two) is None  # type: ignore[arg-type]
    with pytest.raises(PeerIdentityMismatch, match=r"presented identity \(none\)"):
        verify_peer_identity(two, WEB)  # type: ignore[arg-type]
    assert verify_peer_identity(one, WEB) == WEB  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_csr_checker_refuses_arbitrary_bytes_cleanly(data: bytes) -> None:
    with pytest.raises((MalformedCsr, CsrIdentityMismatch)):
        check_csr(data, WEB)
