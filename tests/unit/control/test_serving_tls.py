"""The control plane's serving certificate: names, chain, and when it is renewed."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography import x509

from tulle.control.serving_tls import ServingCertificate
from tulle.identity.ca import uri_sans, verify_chain
from tulle.identity.store import IssuerDirectory, IssuerStore

NAMES = ("tulle-control.tulle.svc", "localhost")


def _serving(tmp_path: Path, clock: list[float]) -> tuple[IssuerDirectory, ServingCertificate]:
    directory = IssuerDirectory(tmp_path / "issuer")
    directory.ensure("cluster.local", now=clock[0])
    store = IssuerStore(directory, check_interval_s=0.0)
    return directory, ServingCertificate(store, NAMES, ttl_s=100.0, clock=lambda: clock[0])


def test_the_leaf_names_the_control_plane_and_chains_to_the_anchor(tmp_path: Path) -> None:
    clock = [time.time()]
    directory, serving = _serving(tmp_path, clock)
    serving.credentials()
    material = directory.load_material()
    leaf = serving.last_leaf
    assert leaf is not None
    assert uri_sans(leaf) == ["spiffe://cluster.local/ns/tulle/sa/tulle-control"]
    dns = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert dns.get_values_for_type(x509.DNSName) == list(NAMES)
    verify_chain(leaf, [material.issuer.certificate], list(material.bundle.anchors), now=clock[0])


def test_renewed_at_70_percent_and_when_the_issuer_rotates(tmp_path: Path) -> None:
    clock = [time.time()]
    directory, serving = _serving(tmp_path, clock)
    serving.credentials()
    assert serving.fetch() is None and not serving.check()
    clock[0] += 71.0
    assert serving.check()
    assert serving.fetch() is not None and serving.fetch() is None  # handed over once
    assert not serving.check()
    directory.rotate_issuer(now=clock[0])
    assert serving.check()
    assert serving.last_leaf is not None
    assert serving.last_leaf.issuer == directory.load_issuer().certificate.subject
