"""The Identity service's Prometheus rendering (no server needed)."""

from __future__ import annotations

import time

from tulle.control.identity_service import CertifyCounters, IdentityService
from tulle.identity.authority import Certifier
from tulle.identity.store import IssuerMaterial


def test_counters_render() -> None:
    counters = CertifyCounters()
    counters.record("ok")
    counters.record("ok")
    counters.record("unauthenticated")
    text = counters.render_prometheus()
    assert "# TYPE identity_certify_total counter" in text
    assert 'identity_certify_total{result="ok"} 2' in text
    assert 'identity_certify_total{result="unauthenticated"} 1' in text
    assert 'identity_certify_total{result="permission_denied"} 0' in text


def test_service_render_includes_issuer() -> None:
    material = IssuerMaterial.generate("cluster.local", now=time.time())
    service = IdentityService(Certifier(lambda: material))
    text = service.render_prometheus()
    expiry = int(material.issuer.certificate.not_valid_after_utc.timestamp())
    assert f"identity_issuer_expiration_timestamp_seconds {expiry}" in text
    assert "identity_trust_anchors 1" in text
    assert "identity_trust_bundle_watchers 0" in text
