"""`tulle install` accepted by a real API server, and `tulle check --kubernetes` against it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from kube_cluster import Cluster, KubeletStandIn, kubectl_path
from kube_launcher import start_kube_control
from support.process import ProcessGroup

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


def tulle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tulle", *args], capture_output=True, text=True, timeout=60
    )


def kubectl(cluster: Cluster, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(cluster.root)},
    )


def test_install_is_accepted_and_check_passes_then_fails_with_a_hint(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup
) -> None:
    ns = f"tulle-{uuid.uuid4().hex[:6]}"
    printed = tulle("install", "--namespace", ns, "--pdb-api", "policy/v1beta1")
    assert printed.returncode == 0, printed.stderr
    # Server-side dry run needs the namespace to exist for the namespaced objects.
    cluster.namespace(ns)
    dry = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=printed.stdout)
    assert dry.returncode == 0, dry.stderr
    assert "deployment.apps/tulle-control created (server dry run)" in dry.stdout
    applied = kubectl(cluster, "apply", "-f", "-", stdin=printed.stdout)
    assert applied.returncode == 0, applied.stderr
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/tulle-proxy-injector" in (
        applied.stdout
    )
    try:
        check_installed(cluster, kubelet, processes, ns)
    finally:
        # Out of the way once checked: it would send every later test's pods to a
        # Service nothing serves here (the API server dialling a ClusterIP off
        # this machine). Until then only pods of `ns` are made, which its label
        # keeps away from it. test_kube_inject.py points its own at loopback.
        cluster.delete(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
            "tulle-proxy-injector"
        )


def check_installed(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup, ns: str
) -> None:
    """Each check's verdict, with the control plane's replica up and then down."""
    # No kubelet runs the Deployment's pods: a real replica stands for one, and
    # the kubelet stand-in reports the pod that would run it.
    replica = start_kube_control(processes, cluster, name="control-installed")
    kubelet.run_pod(
        ns,
        "tulle-control-0",
        "127.0.0.1",
        labels={"app.kubernetes.io/name": "tulle-control"},
        meshed=False,
        ports=[
            {"name": "grpc", "containerPort": replica.grpc_port},
            {"name": "admin", "containerPort": replica.admin_port},
        ],
    )

    def check() -> subprocess.CompletedProcess[str]:
        return tulle(
            "check",
            "--kubernetes",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            ns,
            "--json",
        )

    passed = cluster.wait_for(lambda: (r := check()).returncode == 0 and r, "a passing check")
    assert '"ok": true' in passed.stdout

    replica.process.stop()
    failed = check()
    assert failed.returncode == 1
    assert "control plane answers /ready" in failed.stdout
    assert "kubectl -n " + ns + " logs deploy/tulle-control" in failed.stdout

    removed = kubectl(
        cluster,
        "delete",
        "--dry-run=server",
        "-f",
        "-",
        stdin=tulle("uninstall", "--namespace", ns, "--pdb-api", "policy/v1beta1").stdout,
    )
    assert removed.returncode == 0, removed.stderr
