"""Starting `tulle control --source kubernetes` replicas against the test cluster."""

from __future__ import annotations

from dataclasses import dataclass

from kube_cluster import Cluster
from support.mesh import CONTROL_READY
from support.ports import LOOPBACK
from support.process import ManagedProcess, ProcessGroup, http_status

TRUST_DOMAIN = "cluster.local"


@dataclass
class KubeReplica:
    process: ManagedProcess
    grpc_port: int
    admin_port: int

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"


def start_kube_control(
    group: ProcessGroup,
    cluster: Cluster,
    *,
    name: str = "control",
    grpc_port: int = 0,
    extra: tuple[str, ...] = (),
) -> KubeReplica:
    process = group.tulle(
        name,
        [
            "control",
            "--source",
            "kubernetes",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--grpc-addr",
            f"{LOOPBACK}:{grpc_port}",
            "--admin-addr",
            f"{LOOPBACK}:0",
            "--http-addr",
            "off",
            "--trust-domain",
            TRUST_DOMAIN,
            *extra,
        ],
    )
    ready = process.wait_for_match(CONTROL_READY, "the ready line", timeout=30)
    replica = KubeReplica(process, int(ready.group(1)), int(ready.group(2)))
    process.wait_for(lambda: http_status(LOOPBACK, replica.admin_port, "/ready") == 200, "/ready")
    return replica
