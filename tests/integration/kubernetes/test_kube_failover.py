"""Control-plane replicas on Kubernetes: restart (fail static, then resume) and failover."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
from kube_cluster import Cluster, KubeletStandIn
from kube_launcher import start_kube_control
from support.mesh import Backend, Proxy, start_proxy
from support.ports import free_port
from support.process import ProcessGroup
from test_kube_traffic import request, service, start_backend_at, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


class Load:
    """Requests in a loop from a thread; every status kept."""

    def __init__(self, proxy: Proxy, authority: str) -> None:
        self.proxy = proxy
        self.authority = authority
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = request(self.proxy, self.authority, "/")
                self.statuses.append(status)
            except OSError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def reaches(proxy: Proxy, authority: str, backend: Backend, timeout: float = 20) -> float:
    """Seconds until traffic through `proxy` reaches `backend` (discovery caught up)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = backend.stats()["requests"]
        for _ in range(10):
            request(proxy, authority, "/")
        if backend.stats()["requests"] > before + 1:
            return time.monotonic() - started
    raise TimeoutError(f"traffic never reached {backend.addr} within {timeout} s")


def test_control_plane_restart_proxies_fail_static_then_resume(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup
) -> None:
    ns = cluster.namespace(f"restart-{uuid.uuid4().hex[:6]}")
    port = free_port()
    first = start_backend_at(processes, "127.0.0.2", port, "web-0")
    service(cluster, ns, "web", port)
    kubelet.run_pod(ns, "web-0", "127.0.0.2", labels={"app": "web"}, meshed=False)
    grpc_port = free_port()
    replica = start_kube_control(processes, cluster, grpc_port=grpc_port, name="control-a")
    client = start_proxy(processes, extra=["--control-addr", replica.grpc_target])
    web = f"web.{ns}.svc.cluster.local:8080"
    wait_status(client, web, "/", 200)

    load = Load(client, web)
    try:
        replica.process.signal(signal.SIGTERM)
        replica.process.wait_exit(10)
        # Fail static: with no control plane, the last endpoints keep serving.
        served = len(load.statuses)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(load.statuses) < served + 50:
            time.sleep(0.05)
        # A change while the control plane is down...
        second = start_backend_at(processes, "127.0.0.3", port, "web-1")
        kubelet.run_pod(ns, "web-1", "127.0.0.3", labels={"app": "web"}, meshed=False)
        start_kube_control(processes, cluster, grpc_port=grpc_port, name="control-b")
        # ...reaches the proxy once it is back.
        reaches(client, web, second)
    finally:
        load.stop()
    assert load.errors == []
    assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
    assert first.process.alive()


def test_three_replicas_one_killed_proxies_move_on_with_no_failed_request(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup
) -> None:
    ns = cluster.namespace(f"ha-{uuid.uuid4().hex[:6]}")
    port = free_port()
    start_backend_at(processes, "127.0.0.2", port, "web-0")
    service(cluster, ns, "web", port)
    kubelet.run_pod(ns, "web-0", "127.0.0.2", labels={"app": "web"}, meshed=False)
    replicas = [start_kube_control(processes, cluster, name=f"control-{i}") for i in range(3)]
    targets = ",".join(r.grpc_target for r in replicas)
    clients = [
        start_proxy(processes, extra=["--control-addr", targets], name=f"proxy-{i}")
        for i in range(3)
    ]
    web = f"web.{ns}.svc.cluster.local:8080"
    for client in clients:
        wait_status(client, web, "/", 200)
    loads = [Load(client, web) for client in clients]
    try:
        # Kill replicas one by one until one is left: whichever replica a proxy
        # followed, it had to move, and a change made afterwards still reaches it.
        for i, victim in enumerate(replicas[:2]):
            victim.process.signal(signal.SIGKILL)
            victim.process.wait_exit(10)
            ip = f"127.0.0.{3 + i}"
            backend = start_backend_at(processes, ip, port, f"web-{i + 1}")
            kubelet.run_pod(ns, f"web-{i + 1}", ip, labels={"app": "web"}, meshed=False)
            for client in clients:
                reaches(client, web, backend)
    finally:
        for load in loads:
            load.stop()
    for load in loads:
        assert load.errors == []
        assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
