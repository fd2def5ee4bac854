"""Destination over a real kube-apiserver: Services, Pods, EndpointSlices -> Get streams."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import pytest
from kube_cluster import Cluster, KubeletStandIn
from kube_launcher import TRUST_DOMAIN, start_kube_control
from kube_streams import EndpointSet
from support.ports import free_port
from support.process import ProcessGroup
from support.streams import Reader

from tulle.api.proto import destination_pb2 as pb
from tulle.api.proto import destination_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


def make_service(cluster: Cluster, ns: str, name: str, target_port: int, **extra: object) -> dict:
    body = {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 8080, "targetPort": target_port}],
            **extra,
        },
    }
    return cluster.create(f"/api/v1/namespaces/{ns}/services", body)


def test_service_endpoints_identities_and_pod_deletion(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup
) -> None:
    ns = cluster.namespace(f"dest-{uuid.uuid4().hex[:6]}")
    port = free_port()
    service = make_service(cluster, ns, "web", port)
    cluster_ip = service["spec"]["clusterIP"]
    kubelet.run_pod(ns, "web-0", "127.0.0.2", labels={"app": "web"}, service_account="web")
    kubelet.run_pod(ns, "web-1", "127.0.0.3", labels={"app": "web"}, service_account="web")
    replica = start_kube_control(processes, cluster)
    identity = f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/web"
    both = {("127.0.0.2", port): identity, ("127.0.0.3", port): identity}

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(replica.grpc_target) as channel:
            stub = pb_grpc.DestinationStub(channel)
            by_name = EndpointSet(
                Reader(stub.Get(pb.GetDestination(path=f"web.{ns}.svc.cluster.local:8080")))
            )
            short = EndpointSet(
                Reader(
                    stub.Get(
                        pb.GetDestination(path="web:8080", context_token=json.dumps({"ns": ns}))
                    )
                )
            )
            by_ip = EndpointSet(Reader(stub.Get(pb.GetDestination(path=f"{cluster_ip}:8080"))))
            for stream in (by_name, short, by_ip):
                await stream.until(lambda e: e == both, "both endpoints with identities", 20)

            # A pod deleted (graceful: it turns terminating, then not ready).
            started = time.monotonic()
            cluster.delete(f"/api/v1/namespaces/{ns}/pods/web-0")
            await by_name.until(lambda e: ("127.0.0.2", port) not in e, "web-0 removed", timeout=5)
            took = time.monotonic() - started
            assert took < 1.0, f"the deleted pod left the stream after {took:.2f} s"
            assert by_name.endpoints == {("127.0.0.3", port): identity}

            profiles = Reader(stub.GetProfile(pb.GetDestination(path=f"{cluster_ip}:8080")))
            profile = await profiles.next(5)
            assert profile.fully_qualified_name == f"web.{ns}.svc.cluster.local"
            for reader in (by_name.reader, short.reader, by_ip.reader, profiles):
                reader.cancel()

    asyncio.run(scenario())


def test_unknown_names_and_other_ports_name_no_service(
    cluster: Cluster, processes: ProcessGroup
) -> None:
    ns = cluster.namespace(f"none-{uuid.uuid4().hex[:6]}")
    make_service(cluster, ns, "api", free_port())
    replica = start_kube_control(processes, cluster)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(replica.grpc_target) as channel:
            stub = pb_grpc.DestinationStub(channel)
            for path in (f"api.{ns}.svc.cluster.local:9999", f"nope.{ns}.svc.cluster.local:8080"):
                reader = Reader(stub.Get(pb.GetDestination(path=path)))
                first = await reader.next(5)
                assert first.WhichOneof("update") == "no_endpoints"
                assert not first.no_endpoints.exists, path
                reader.cancel()
            reader = Reader(stub.Get(pb.GetDestination(path=f"api.{ns}.svc.cluster.local:8080")))
            first = await reader.next(5)
            assert first.WhichOneof("update") == "no_endpoints"
            assert first.no_endpoints.exists
            reader.cancel()

    asyncio.run(scenario())
