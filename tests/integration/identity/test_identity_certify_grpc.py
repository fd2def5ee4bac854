"""Identity.Certify and WatchTrustBundle over a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from mtls_support import API, LOOPBACK, WEB
from support.ports import refused_port

from tulle.api.proto import identity_pb2, identity_pb2_grpc
from tulle.control.identity_service import IdentityService, add_identity_servicer
from tulle.identity.ca import generate_key, uri_sans, verify_chain
from tulle.identity.client import CertManager
from tulle.identity.csr import build_csr
from tulle.identity.store import IdentityStoreError, IssuerDirectory
from tulle.identity.tokens import make_token

pytestmark = pytest.mark.integration

CALL_TIMEOUT_S = 5.0


@asynccontextmanager
async def control_plane(
    directory: Path, leaf_ttl_s: float = 60.0
) -> AsyncIterator[tuple[str, IdentityService]]:
    server = grpc.aio.server()
    service = add_identity_servicer(server, directory, leaf_ttl_s=leaf_ttl_s, check_interval_s=0.2)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    try:
        yield f"{LOOPBACK}:{port}", service
    finally:
        await service.close()
        await server.stop(grace=None)


def _token(directory: IssuerDirectory, identity: str) -> str:
    return make_token(directory.token_secret(), identity, now=time.time(), ttl_s=600)


async def _certify_status(
    stub: identity_pb2_grpc.IdentityAsyncStub, request: identity_pb2.CertifyRequest
) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.Certify(request, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_certify_statuses(tmp_path: Path) -> None:
    directory = IssuerDirectory(tmp_path)
    directory.init("cluster.local", now=time.time())

    async def scenario() -> None:
        async with control_plane(tmp_path) as (address, service):
            channel = grpc.aio.insecure_channel(address)
            stub = identity_pb2_grpc.IdentityStub(channel)
            try:
                key = generate_key()
                good = identity_pb2.CertifyRequest(
                    identity=WEB,
                    token=_token(directory, WEB),
                    certificate_signing_request=build_csr(WEB, key),
                )
                response = await stub.Certify(good, timeout=CALL_TIMEOUT_S)
                leaf = x509.load_der_x509_certificate(response.leaf_certificate)
                chain = [
                    x509.load_der_x509_certificate(d) for d in response.intermediate_certificates
                ]
                anchors = [
                    x509.load_der_x509_certificate(d) for d in response.trust_bundle.trust_anchors
                ]
                verify_chain(leaf, chain, anchors, now=time.time())
                assert uri_sans(leaf) == [WEB] and leaf.public_key() == key.public_key()
                assert response.valid_until.seconds == int(leaf.not_valid_after_utc.timestamp())
                assert response.trust_bundle.trust_domain == "cluster.local"

                cases = [
                    (
                        identity_pb2.CertifyRequest(
                            identity=WEB,
                            token=_token(directory, API),
                            certificate_signing_request=build_csr(WEB, key),
                        ),
                        grpc.StatusCode.UNAUTHENTICATED,
                        "join token is for",
                    ),
                    (
                        identity_pb2.CertifyRequest(
                            identity=WEB,
                            token="tulle-jt1.forged.mac",
                            certificate_signing_request=build_csr(WEB, key),
                        ),
                        grpc.StatusCode.UNAUTHENTICATED,
                        "signature does not match",
                    ),
                    (
                        identity_pb2.CertifyRequest(
                            identity=WEB,
                            token=_token(directory, WEB),
                            certificate_signing_request=build_csr(API, key),
                        ),
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"must name exactly {WEB}",
                    ),
                    (
                        identity_pb2.CertifyRequest(
                            identity=WEB,
                            token=_token(directory, WEB),
                            certificate_signing_request=b"\x30\x03garbage",
                        ),
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "not valid DER",
                    ),
                ]
                for request, code, message in cases:
                    status, details = await _certify_status(stub, request)
                    assert status == code, details
                    assert message in details
                counts = service.counters.counts
                assert counts["ok"] == 1 and counts["unauthenticated"] == 2
                assert counts["permission_denied"] == 1 and counts["invalid_argument"] == 1
                assert 'identity_certify_total{result="unauthenticated"} 2' in (
                    service.render_prometheus()
                )
            finally:
                await channel.close(None)

    asyncio.run(scenario())


def test_rotations_reach_clients_without_restart(tmp_path: Path) -> None:
    directory = IssuerDirectory(tmp_path)
    directory.init("cluster.local", now=time.time())

    async def scenario() -> None:
        async with control_plane(tmp_path) as (address, _service):
            # The first replica is down: the manager must move on to the next one.
            replicas = [f"{LOOPBACK}:{refused_port()}", address]
            manager = CertManager.from_control_plane(WEB, replicas, _token(directory, WEB))
            await manager.start()
            try:
                await manager.wait_ready(10)
                first_issuer = manager.current.intermediates[0] if manager.current else None
                assert first_issuer == directory.load_issuer().certificate

                directory.rotate_anchor(now=time.time())
                for _ in range(100):  # the watch delivers within ~0.2 s; allow 10 s
                    if manager.current and len(manager.current.bundle.anchors) == 2:
                        break
                    await asyncio.sleep(0.1)
                assert manager.current and len(manager.current.bundle.anchors) == 2
                assert manager.bundle_updates == 1

                directory.rotate_issuer(now=time.time())
                await asyncio.sleep(0.3)
                renewed = await manager.renew()
                assert renewed.intermediates[0] == directory.load_issuer().certificate
                assert renewed.intermediates[0] != first_issuer
            finally:
                await manager.close()

    asyncio.run(scenario())


def test_registration_needs_an_issuer_directory(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = grpc.aio.server()
        try:
            with pytest.raises(IdentityStoreError, match=r"cannot start.*is missing"):
                add_identity_servicer(server, tmp_path / "absent")
        finally:
            await server.stop(grace=None)

    asyncio.run(scenario())
