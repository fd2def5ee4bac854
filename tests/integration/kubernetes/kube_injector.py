"""A control plane serving the injection webhook, and the real API server configured to call it."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

from kube_cluster import Cluster
from kube_launcher import TRUST_DOMAIN, KubeReplica, start_kube_control
from support.ports import LOOPBACK
from support.process import ProcessGroup

from tulle.control.kubernetes.install import InstallOptions, webhook_configuration
from tulle.identity.store import BUNDLE_FILE, IssuerDirectory

WEBHOOK_READY = re.compile(r"webhook=[\d.]+:(\d+)")
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
IMAGE = "tulle:test"


class Injector:
    """A control plane with its webhook, and the API server configured to call it."""

    def __init__(self, cluster: Cluster, processes: ProcessGroup, root: Path) -> None:
        self.cluster = cluster
        self.issuer = IssuerDirectory(root / "issuer")
        self.issuer.init(TRUST_DOMAIN, now=time.time())
        self.bundle = self.issuer.file(BUNDLE_FILE).read_bytes()
        self.replica: KubeReplica = start_kube_control(
            processes,
            cluster,
            extra=(
                "--identity-dir",
                str(root / "issuer"),
                # The API server dials the webhook at 127.0.0.1; proxies check the Service's name.
                "--grpc-tls-name",
                "127.0.0.1",
                "--grpc-tls-name",
                "tulle-control.tulle.svc",
                "--webhook-addr",
                f"{LOOPBACK}:0",
                "--proxy-image",
                IMAGE,
            ),
        )
        match = WEBHOOK_READY.search(self.replica.process.output())
        assert match, self.replica.process.output()
        self.port = int(match.group(1))
        self.name = f"tulle-injector-{uuid.uuid4().hex[:6]}"

    def configure(self, failure_policy: str) -> None:
        options = InstallOptions(webhook_failure_policy=failure_policy)
        url = {"url": f"https://{LOOPBACK}:{self.port}/inject"}
        body = webhook_configuration(options, self.bundle, url)
        body["metadata"]["name"] = self.name
        self.cluster.apply(CONFIGURATIONS, body)

    def remove(self) -> None:
        self.cluster.delete(f"{CONFIGURATIONS}/{self.name}")


def create_pod(
    cluster: Cluster, ns: str, name: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    body = {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}]
        },
    }
    return cluster.create(f"/api/v1/namespaces/{ns}/pods", body)


def injected(pod: dict[str, Any]) -> bool:
    return any(c["name"] == "tulle-proxy" for c in pod["spec"]["containers"])


def annotated_namespace(cluster: Cluster, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        "/api/v1/namespaces",
        {"metadata": {"name": ns, "annotations": {"tulle.io/inject": "enabled"}}},
    )
    return ns


def wait_until_called(cluster: Cluster, ns: str) -> None:
    """The API server picks a new configuration up within a second or so: probe."""
    count = [0]

    def mutated() -> bool:
        count[0] += 1
        pod = create_pod(cluster, ns, f"probe-{count[0]}")
        cluster.delete(f"/api/v1/namespaces/{ns}/pods/probe-{count[0]}", grace_s=0)
        return injected(pod)

    cluster.wait_for(mutated, "the API server calling the webhook", timeout=30)
