"""Kubernetes source at scale: 1,000 Services x 10 endpoints on a real API server.

Starts the test fixture's etcd + kube-apiserver (scripts/k8s_fixture.sh must
have built them), creates `--services` Services without selectors, each with
one EndpointSlice of `--endpoints` addresses (managed by "bench", as any
controller may do), starts `tulle control --source kubernetes`, and opens one
Destination.Get stream per Service (`--per-channel` streams per HTTP/2
connection, as a proxy watching that many services would).

Then `--changes` times: replace one endpoint of one Service's slice (a
different Service each time) and time from the API write to the moment every
stream watching that Service holds the new endpoint. Reports p50/p99/max of
that delay, the time to the first full snapshot, and the control plane's RSS.

    python bench/kube_scale.py                       # 1,000 x 10, 100 changes
    python bench/kube_scale.py --services 100 --changes 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(REPO / "tests" / "integration" / "kubernetes"),
    str(REPO / "tests" / "integration"),
]

from kube_cluster import Cluster, start_cluster  # noqa: E402
from support.mesh import CONTROL_READY  # noqa: E402
from support.process import ProcessGroup  # noqa: E402


def ip(service: int, endpoint: int) -> str:
    return f"10.{(service >> 8) & 255}.{service & 255}.{endpoint + 1}"


def make_objects(cluster: Cluster, ns: str, services: int, endpoints: int) -> None:
    for i in range(services):
        cluster.create(
            f"/api/v1/namespaces/{ns}/services",
            {"metadata": {"name": f"svc-{i}"}, "spec": {"ports": [{"name": "http", "port": 8080}]}},
        )
        cluster.create(
            f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices",
            slice_body(i, [ip(i, e) for e in range(endpoints)]),
        )


def slice_body(i: int, addresses: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-bench",
            "labels": {
                "kubernetes.io/service-name": f"svc-{i}",
                "endpointslice.kubernetes.io/managed-by": "bench",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


async def measure(
    cluster: Cluster, ns: str, port: int, services: int, endpoints: int, changes: int, per: int
) -> dict[str, object]:
    import grpc

    from tulle.api.proto import destination_pb2 as pb
    from tulle.api.proto import destination_pb2_grpc as pb_grpc

    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for _ in range((services + per - 1) // per)
    ]
    held: list[set[str]] = [set() for _ in range(services)]
    changed: list[asyncio.Event] = [asyncio.Event() for _ in range(services)]
    wanted: dict[int, str] = {}
    complete: set[int] = set()
    all_ready = asyncio.Event()

    async def follow(i: int) -> None:
        stub = pb_grpc.DestinationStub(channels[i // per])
        path = f"svc-{i}.{ns}.svc.cluster.local:8080"
        async for update in stub.Get(pb.GetDestination(path=path)):
            kind = update.WhichOneof("update")
            if kind == "add":
                held[i].update(a.addr.host for a in update.add.addrs)
                if i not in complete and len(held[i]) >= endpoints:
                    complete.add(i)
                    if len(complete) == services:
                        all_ready.set()
            elif kind == "remove":
                held[i].difference_update(a.host for a in update.remove.addrs)
            if i in wanted and wanted[i] in held[i]:
                changed[i].set()

    started = time.monotonic()
    tasks = [asyncio.create_task(follow(i)) for i in range(services)]
    await asyncio.wait_for(all_ready.wait(), 300)
    snapshot_s = time.monotonic() - started

    delays = []
    for c in range(changes):
        i = (c * 7919) % services
        new = f"10.255.{c // 250}.{c % 250 + 1}"
        addresses = [new] + [ip(i, e) for e in range(1, endpoints)]
        current = await asyncio.to_thread(
            cluster.get,
            f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices/svc-{i}-bench",
        )
        body = slice_body(i, addresses)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]  # type: ignore[index]
        wanted[i] = new
        changed[i].clear()
        t0 = time.monotonic()
        await asyncio.to_thread(
            cluster.request,
            "PUT",
            f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices/svc-{i}-bench",
            body,
        )
        await asyncio.wait_for(changed[i].wait(), 30)
        delays.append(time.monotonic() - t0)
        del wanted[i]
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()
    delays.sort()
    return {
        "snapshot_s": round(snapshot_s, 2),
        "changes": len(delays),
        "p50_ms": round(statistics.median(delays) * 1e3, 1),
        "p99_ms": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1e3, 1),
        "max_ms": round(delays[-1] * 1e3, 1),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--per-channel", type=int, default=10)
    args = parser.parse_args()
    group = ProcessGroup()
    try:
        root = Path(tempfile.mkdtemp(prefix="tulle-kube-bench-"))
        print("starting the API server", file=sys.stderr)
        cluster = start_cluster(group, root, controllers=False)
        ns = cluster.namespace("bench")
        t0 = time.monotonic()
        make_objects(cluster, ns, args.services, args.endpoints)
        print(f"created {args.services} services in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        control = group.tulle(
            "control",
            [
                "control",
                "--source",
                "kubernetes",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--http-addr",
                "off",
                "--log-level",
                "warning",
            ],
        )
        ready = control.wait_for_match(CONTROL_READY, "the ready line", 120)
        port = int(ready.group(1))
        rss_idle = rss_mib(control.pid)
        result = asyncio.run(
            measure(
                cluster, ns, port, args.services, args.endpoints, args.changes, args.per_channel
            )
        )
        result.update(
            services=args.services,
            endpoints_per_service=args.endpoints,
            streams=args.services,
            control_rss_mib_before_streams=round(rss_idle, 1),
            control_rss_mib_after=round(rss_mib(control.pid), 1),
        )
        print(json.dumps(result, indent=2))
    finally:
        group.close()


if __name__ == "__main__":
    main()
