"""Starting `tulle control --source kubernetes` replicas against the test cluster."""

from __future__ import annotations

import re
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
    # The metrics API (`tulle stat` & co.), when started with `http=True`.
    http_port: int | None = None

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
    http: bool = False,
) -> KubeReplica:
    """A replica; with `http`, its metrics API on a free loopback port (no API token, as
    `tulle install` runs it: tap and writes refused)."""
    api = ["--http-addr", f"{LOOPBACK}:0" if http else "off"]
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
            *api,
            "--trust-domain",
            TRUST_DOMAIN,
            *extra,
        ],
    )
    ready = process.wait_for_match(CONTROL_READY, "the ready line", timeout=30)
    # The ready line is printed whole: its http= part is there once it matched.
    http_port = re.search(r"tulle control ready .* http=[\d.]+:(\d+)", process.output())
    replica = KubeReplica(
        process,
        int(ready.group(1)),
        int(ready.group(2)),
        int(http_port.group(1)) if http and http_port else None,
    )
    process.wait_for(lambda: http_status(LOOPBACK, replica.admin_port, "/ready") == 200, "/ready")
    return replica
