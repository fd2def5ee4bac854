"""TLS contexts are built when first used, not at every certificate install (issue 18).

A proxy is ready once it can serve: at install it builds its mesh server
context only; a client context per ALPN on the first connection that needs
it; `CertManager`'s own contexts (which the proxy does not use) not at all.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

import tulle.identity.client as client_module
import tulle.identity.tls as tls_module
from tulle.identity.client import CertManager, LocalCertificateSource
from tulle.identity.store import IssuerMaterial
from tulle.net.mtls import ALPN_H2, ALPN_HTTP1, MeshTls

WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    real_server, real_client = tls_module.build_server_context, tls_module.build_client_context

    def server(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append("server")
        return real_server(*args, **kwargs)

    def client(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append("client")
        return real_client(*args, **kwargs)

    for module in (tls_module, client_module):
        monkeypatch.setattr(module, "build_server_context", server)
        monkeypatch.setattr(module, "build_client_context", client)
    return made


def test_contexts_are_built_on_first_use(material: IssuerMaterial, builds: list[str]) -> None:
    async def scenario() -> None:
        certs = CertManager(WEB, LocalCertificateSource.for_issuer(material), watch_bundle=False)
        mesh = MeshTls(certs)
        await certs.renew()
        assert builds == ["server"] and mesh.ready
        first = mesh.client_context(ALPN_H2)
        assert first is not None and mesh.client_context(ALPN_H2) is first
        assert builds == ["server", "client"]
        assert mesh.client_context("not-a-mesh-protocol") is None
        assert mesh.client_context(ALPN_HTTP1) is not None
        # CertManager's own: on first use, then kept until the next install.
        own = certs.server_context()
        assert certs.server_context() is own
        assert builds == ["server", "client", "client", "server"]
        # A renewal replaces every context; the new ones are built when needed.
        await certs.renew()
        assert builds[-1] == "server" and len(builds) == 5
        assert mesh.client_context(ALPN_H2) is not first
        assert certs.server_context() is not own

    asyncio.run(scenario())
