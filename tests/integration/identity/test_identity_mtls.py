"""mTLS 1.3 between CertManager contexts on 127.0.0.1, and every way it must refuse."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from mtls_support import (
    API,
    WEB,
    exchange,
    forged_by_impostor_issuer,
    forged_self_signed,
    tls_echo_server,
    workload,
)

from tulle.identity.client import CertManager, PeerIdentityMismatch
from tulle.identity.store import IssuerDirectory, IssuerMaterial
from tulle.identity.tls import build_client_context, build_server_context

pytestmark = pytest.mark.integration

ALPN = ("tulle.h2", "tulle.http1", "tulle.opaque")


@pytest.fixture(scope="module")
def material() -> IssuerMaterial:
    return IssuerMaterial.generate("cluster.local", now=time.time())


async def _managers(material: IssuerMaterial) -> tuple[CertManager, CertManager]:
    web = CertManager.from_local_issuer(WEB, material, leaf_ttl_s=600, alpn_protocols=ALPN)
    api = CertManager.from_local_issuer(API, material, leaf_ttl_s=600, alpn_protocols=ALPN)
    for manager in (web, api):
        await manager.start()
        await manager.wait_ready(5)
    return web, api


def test_mutual_tls_13_with_identities(material: IssuerMaterial) -> None:
    async def scenario() -> None:
        web, api = await _managers(material)
        try:
            async with tls_echo_server(api.server_context()) as server:
                echo, server_id = await exchange(server.port, web.client_context(), API)
                assert echo == b"ping\n"
                assert server_id == API
                assert server.peers == [WEB]
                assert server.alpn == ["tulle.h2"]
            context = web.client_context()
            assert context.minimum_version == ssl.TLSVersion.TLSv1_3
            assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
        finally:
            await web.close()
            await api.close()

    asyncio.run(scenario())


def test_client_without_certificate_is_refused(material: IssuerMaterial) -> None:
    async def scenario() -> None:
        api = workload(API, material, now=time.time())
        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anonymous.check_hostname = False
        anonymous.load_verify_locations(cadata=material.bundle.pem().decode())
        async with tls_echo_server(build_server_context(api)) as server:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await exchange(server.port, anonymous)
            assert server.peers == []

    asyncio.run(scenario())


@pytest.mark.parametrize("forgery", [forged_self_signed, forged_by_impostor_issuer])
def test_forged_certificates_are_refused(material: IssuerMaterial, forgery: object) -> None:
    async def scenario() -> None:
        now = time.time()
        genuine = workload(API, material, now=now)
        forged = forgery(WEB, material, now=now)  # type: ignore[operator]
        # A forged client is refused by a genuine server...
        async with tls_echo_server(build_server_context(genuine)) as server:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await exchange(server.port, build_client_context(forged))
            assert server.peers == []
        # ...and a forged server by a genuine client, during the handshake.
        async with tls_echo_server(build_server_context(forged)) as server:
            with pytest.raises(ssl.SSLCertVerificationError):
                await exchange(server.port, build_client_context(genuine))

    asyncio.run(scenario())


def test_expired_leaf_is_refused(material: IssuerMaterial) -> None:
    async def scenario() -> None:
        now = time.time()
        expired = workload(API, material, now=now - 3600, ttl_s=60)
        genuine = workload(WEB, material, now=now)
        async with tls_echo_server(build_server_context(expired)) as server:
            with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
                await exchange(server.port, build_client_context(genuine))
        async with tls_echo_server(build_server_context(genuine)) as server:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await exchange(server.port, build_client_context(expired))
            assert server.peers == []

    asyncio.run(scenario())


def test_leaf_from_another_anchor_is_refused(material: IssuerMaterial) -> None:
    async def scenario() -> None:
        now = time.time()
        stranger = workload(API, IssuerMaterial.generate("cluster.local", now=now), now=now)
        genuine = workload(WEB, material, now=now)
        async with tls_echo_server(build_server_context(stranger)) as server:
            with pytest.raises(ssl.SSLCertVerificationError, match="issuer"):
                await exchange(server.port, build_client_context(genuine))

    asyncio.run(scenario())


def test_wrong_server_identity_is_refused(material: IssuerMaterial) -> None:
    async def scenario() -> None:
        now = time.time()
        server_cert = workload(API, material, now=now)
        client_cert = workload(WEB, material, now=now)
        async with tls_echo_server(build_server_context(server_cert)) as server:
            with pytest.raises(PeerIdentityMismatch, match=f"presented identity {API}, expected"):
                await exchange(server.port, build_client_context(client_cert), expected_server=WEB)
            # The same server passes when it is the one expected.
            echo, _ = await exchange(server.port, build_client_context(client_cert), API)
            assert echo == b"ping\n"

    asyncio.run(scenario())


def test_listener_follows_anchor_rotation(tmp_path: Path) -> None:
    """A listener built once keeps accepting across a full anchor rotation."""

    async def wait_for(condition: object, what: str) -> None:
        for _ in range(100):  # at most 10 s
            if condition():  # type: ignore[operator]
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    async def scenario() -> None:
        directory = IssuerDirectory(tmp_path)
        directory.init("cluster.local", now=time.time())
        api = CertManager.from_local_issuer(API, tmp_path, leaf_ttl_s=600)
        await api.start()
        await api.wait_ready(5)
        listener_context = api.server_context()  # captured once, like a real listener
        async with tls_echo_server(listener_context) as server:
            # Steps 1 and 2: the new anchor is trusted, new leaves chain to it.
            directory.rotate_anchor(now=time.time())
            await wait_for(lambda: api.bundle_updates >= 1, "the two-anchor bundle")
            directory.rotate_issuer(now=time.time())
            await asyncio.sleep(0.3)  # the local source re-reads the directory every 0.2 s
            web = CertManager.from_local_issuer(WEB, tmp_path, leaf_ttl_s=600)
            try:
                await web.renew()
                new_leaf_issuer = web.current.intermediates[0] if web.current else None
                assert new_leaf_issuer == directory.load_issuer().certificate
                echo, _ = await exchange(server.port, web.client_context(), API)
                assert echo == b"ping\n"
                # Step 3: the old anchor goes; api's leaf chained to it, so api renews.
                directory.finish_rotation(now=time.time(), force=True)
                await wait_for(lambda: api.renewals >= 2, "renewal after the anchor left")
                await web.renew()
                echo, _ = await exchange(server.port, web.client_context(), API)
                assert echo == b"ping\n"
                assert api.server_context() is not listener_context
            finally:
                await web.close()
        await api.close()

    asyncio.run(scenario())
