"""Identity.Certify with ServiceAccount tokens, checked by a real API server's TokenReview."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from kube_cluster import Cluster
from kube_launcher import TRUST_DOMAIN, start_kube_control
from support.process import ProcessGroup

from tulle.api.control_tls import ControlTls, open_channel
from tulle.api.proto import identity_pb2, identity_pb2_grpc
from tulle.identity.ca import generate_key, uri_sans
from tulle.identity.csr import build_csr
from tulle.identity.store import BUNDLE_FILE, IssuerDirectory
from tulle.identity.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

AUDIENCE = "identity.tulle.io"


def service_account_token(cluster: Cluster, ns: str, account: str, audience: str) -> str:
    """What the kubelet projects into a pod: a bound token for one audience (TokenRequest)."""
    cluster.apply(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": account}})
    answer = cluster.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
        {"spec": {"audiences": [audience], "expirationSeconds": 600}},
    )
    token: str = answer["status"]["token"]
    return token


def test_service_account_token_gets_its_spiffe_id_and_nothing_else(
    cluster: Cluster, processes: ProcessGroup, tmp_path: Path
) -> None:
    ns = cluster.namespace(f"id-{uuid.uuid4().hex[:6]}")
    issuer = IssuerDirectory(tmp_path / "issuer")
    issuer.init(TRUST_DOMAIN, now=time.time())
    replica = start_kube_control(
        processes, cluster, extra=("--identity-dir", str(tmp_path / "issuer"))
    )
    web = f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/web"
    api = f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/api"
    good = service_account_token(cluster, ns, "web", AUDIENCE)
    other_audience = service_account_token(cluster, ns, "web", "https://kubernetes.default.svc")

    async def certify(identity: str, token: str) -> tuple[grpc.StatusCode, bytes]:
        # The replica serves TLS with its own leaf: verified with the trust bundle.
        tls = ControlTls(issuer.file(BUNDLE_FILE).read_bytes())
        async with open_channel(replica.grpc_target, (), tls) as channel:
            stub = identity_pb2_grpc.IdentityStub(channel)
            request = identity_pb2.CertifyRequest(
                identity=identity,
                token=token,
                certificate_signing_request=build_csr(identity, generate_key()),
            )
            try:
                response = await stub.Certify(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code(), (error.details() or "").encode()
            return grpc.StatusCode.OK, response.leaf_certificate

    async def scenario() -> None:
        status, leaf = await certify(web, good)
        assert status == grpc.StatusCode.OK, leaf
        assert uri_sans(x509.load_der_x509_certificate(leaf)) == [web]
        # A token for another audience (the API server's) is refused.
        status, detail = await certify(web, other_audience)
        assert status == grpc.StatusCode.UNAUTHENTICATED, detail
        # A valid token cannot ask for another account's identity.
        status, detail = await certify(api, good)
        assert status == grpc.StatusCode.PERMISSION_DENIED, detail
        # A forged token (right shape, wrong signature) is refused.
        header, payload, _ = good.split(".")
        status, detail = await certify(web, f"{header}.{payload}.AAAA")
        assert status == grpc.StatusCode.UNAUTHENTICATED, detail
        # Join tokens keep working beside them (hosts outside the cluster).
        join = make_token(issuer.token_secret(), api, now=time.time(), ttl_s=60)
        status, leaf = await certify(api, join)
        assert status == grpc.StatusCode.OK, leaf

    asyncio.run(scenario())
