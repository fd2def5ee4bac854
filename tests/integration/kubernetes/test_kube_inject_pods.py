"""Injected pods, run: the API server mutates them, a kubelet stand-in runs what it wrote.

Two pods are created through the real API server in a namespace annotated
`tulle.io/inject: enabled`: `books-0` (an HTTP app behind the Service
`books`) and `web-0` (a client). The webhook injects both. Nothing here runs
a kubelet, so `PodRunner` plays its part, and is named as such: for each
mutated pod, in a fresh network namespace (a veth pair joins the two,
10.231.0.0/24), it runs the init container's command as written (`tulle
init ...`, as root), then the proxy container's command as written (`tulle
proxy`, as uid 2102, with the environment the kubelet would give it:
downward-API fields, `$(VAR)` expansion, the projected token written where
the volume is mounted), then the postStart hook (`tulle proxy-await`), and
only then the app. It reports each pod Running with its IP, so the
EndpointSlice controller makes the Service's slice.

Then web's app calls the Service's ClusterIP, knowing nothing of the mesh:
the call is captured, routed by its original destination to books' pod
(which the control plane learned from the API), over mTLS with both pods'
ServiceAccount identities, and books' app sees web's verified identity.

Where the stand-in stands in for more than the kubelet, it says so: the
cluster DNS (`tulle-control.tulle.svc...` is the control plane on the test's
loopback, reached through a relay listening in each pod's namespace), and a
route to the Service CIDR (kube-proxy's part; with capture, the proxy
handles the ClusterIP before any kube-proxy rule would).

Not covered, because it is the kubelet's own behaviour and 1.20 has none:
native sidecars (an init container with `restartPolicy: Always` started
before the app and stopped after it, so that a Job's pod finishes). Their
spec is checked by the unit tests (tests/unit/k8s/test_inject.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import NODE_NAME, Cluster, KubeletStandIn
from kube_injector import Injector, wait_until_called
from support.mesh import Metrics
from support.netns import Pair, as_uid, in_netns, netns_pair, require_netns, run, run_in
from support.ports import LOOPBACK
from support.process import ProcessGroup, http_status

from tulle.k8s.inject import PROXY_CONTAINER, TOKEN_DIR

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

CONTROL_PORT_IN_POD = 8086
APP_PORT = 8080
IO_TIMEOUT_S = 20.0
RELAY_ACCEPT_TIMEOUT_S = 0.5


class ControlRelay:
    """The cluster's network, for the control plane only: a listener on
    127.0.0.1:8086 inside a pod's namespace, relayed to the control plane on
    the test's loopback (the pods cannot reach it otherwise)."""

    def __init__(self, ns: str, target_port: int) -> None:
        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, CONTROL_PORT_IN_POD))
            sock.listen(16)
            sock.settimeout(RELAY_ACCEPT_TIMEOUT_S)
            return sock

        # Made in the pod's namespace; accepted and relayed from this one's threads.
        self.listener = run_in(ns, listen)
        self.target_port = target_port
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{ns}").start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                inner, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                outer = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                inner.close()
                continue
            outer.settimeout(None)
            inner.settimeout(None)
            self.sockets += [inner, outer]
            for source, sink in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def container_env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """The environment a kubelet gives a container: values, downward-API fields,
    and `$(VAR)` references to variables defined before."""
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "spec.serviceAccountName": pod["spec"]["serviceAccountName"],
    }
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            continue
        value = entry.get("value", "")
        env[entry["name"]] = re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value
        )
    return env


def tulle_argv(container: dict[str, Any]) -> list[str]:
    """The image's entrypoint is `tulle`: the container's args, run with this interpreter."""
    return [sys.executable, "-m", "tulle", *container["args"]]


class PodRunner:
    """The kubelet stand-in: runs a mutated pod's containers in network namespace `ns`."""

    def __init__(
        self,
        cluster: Cluster,
        processes: ProcessGroup,
        pod: dict[str, Any],
        ns: str,
        ip: str,
        root: Path,
    ) -> None:
        self.cluster = cluster
        self.processes = processes
        self.pod = pod
        self.ns = ns
        self.ip = ip
        self.root = root
        self.name = pod["metadata"]["name"]

    def run_init_containers(self) -> list[str]:
        """Each init container in order, to completion (tulle-init: the packet rules)."""
        outputs = []
        for container in self.pod["spec"]["initContainers"]:
            done = run(self.ns, tulle_argv(container))
            assert done.returncode == 0, f"{container['name']}: {done.stderr}"
            outputs.append(done.stdout)
        return outputs

    def start_proxy(self, token: str) -> dict[str, Any]:
        (proxy,) = [c for c in self.pod["spec"]["containers"] if c["name"] == PROXY_CONTAINER]
        env = container_env(proxy, self.pod)
        # The projected token volume, mounted at a directory of the test's.
        mount = self.root / f"{self.name}-token"
        mount.mkdir()
        (mount / "token").write_text(token)
        env["TULLE_PROXY_IDENTITY_TOKEN_FILE"] = env["TULLE_PROXY_IDENTITY_TOKEN_FILE"].replace(
            TOKEN_DIR, str(mount)
        )
        # The cluster DNS: the control plane's Service name is the relay in the pod.
        control_host, _, control_port = env["TULLE_PROXY_CONTROL_ADDR"].rpartition(":")
        assert control_host.startswith("tulle-control.tulle.svc")
        env["TULLE_PROXY_CONTROL_ADDR"] = f"{LOOPBACK}:{control_port}"
        uid = proxy["securityContext"]["runAsUser"]
        self.processes.start(
            f"{self.name}-proxy", in_netns(self.ns, as_uid(uid, tulle_argv(proxy))), env=env
        )
        return proxy

    def post_start(self, proxy: dict[str, Any]) -> None:
        """The proxy's postStart hook: the kubelet starts the app only once it returns."""
        command = proxy["lifecycle"]["postStart"]["exec"]["command"]
        assert command[0] == "tulle"
        done = subprocess.run(
            in_netns(self.ns, [sys.executable, "-m", "tulle", *command[1:]]),
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def report_running(self) -> None:
        pod = self.cluster.get(f"/api/v1/namespaces/{self.pod['metadata']['namespace']}"
                               f"/pods/{self.name}")  # fmt: skip
        KubeletStandIn(self.cluster).report_running(pod["metadata"]["namespace"], pod, self.ip)


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_netns()
    with netns_pair("kinj") as made:
        yield made


def bound_token(cluster: Cluster, ns: str, account: str, audience: str) -> str:
    """What the kubelet writes into the projected volume (TokenRequest)."""
    answer = cluster.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
        {"spec": {"audiences": [audience], "expirationSeconds": 600}},
    )
    token: str = answer["status"]["token"]
    return token


def make_pod(
    cluster: Cluster, ns: str, name: str, account: str, labels: dict[str, str]
) -> dict[str, Any]:
    body = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": NODE_NAME,
            "serviceAccountName": account,
            "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": APP_PORT}]}],
        },
    }
    return cluster.create(f"/api/v1/namespaces/{ns}/pods", body)


def test_injected_pods_run_by_a_kubelet_stand_in_are_meshed_with_mtls(
    cluster: Cluster, injector: Injector, processes: ProcessGroup, pair: Pair, tmp_path: Path
) -> None:
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    cluster.apply(
        "/api/v1/namespaces",
        {"metadata": {"name": ns, "annotations": {"tulle.io/inject": "enabled"}}},
    )
    for account in ("web", "books"):
        cluster.apply(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": account}})
    service = cluster.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "metadata": {"name": "books"},
            "spec": {"selector": {"app": "books"}, "ports": [{"name": "http", "port": APP_PORT}]},
        },
    )
    cluster_ip = service["spec"]["clusterIP"]
    injector.configure("Fail")  # a pod that is not injected must not start here
    wait_until_called(cluster, ns)

    books_pod = make_pod(cluster, ns, "books-0", "books", {"app": "books"})
    web_pod = make_pod(cluster, ns, "web-0", "web", {"app": "web"})
    for pod in (books_pod, web_pod):
        assert [c["name"] for c in pod["spec"]["containers"]] == [PROXY_CONTAINER, "app"], pod

    relays = [ControlRelay(n, injector.replica.grpc_port) for n in (pair.a, pair.b)]
    try:
        books = PodRunner(cluster, processes, books_pod, pair.b, pair.b_ip, tmp_path)
        web = PodRunner(cluster, processes, web_pod, pair.a, pair.a_ip, tmp_path)
        audience = "identity.tulle.io"
        for runner, account in ((books, "books"), (web, "web")):
            (rules,) = runner.run_init_containers()
            assert "REDIRECT --to-ports 4143" in rules
            proxy = runner.start_proxy(bound_token(cluster, ns, account, audience))
            runner.post_start(proxy)  # returns once the proxy has its certificate
            if runner is books:
                processes.start(
                    "books-app",
                    in_netns(pair.b, [sys.executable, "-m", "tulle", "demo", "backend",
                                      "--addr", f"0.0.0.0:{APP_PORT}", "--mode", "http"]),
                )  # fmt: skip
            runner.report_running()
        # kube-proxy's part: the Service CIDR is routed out of web's namespace.
        subprocess.run(
            ["ip", "-n", pair.a, "route", "add", "10.96.0.0/16", "dev", "veth0"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

        def call() -> tuple[int, dict[str, str]]:
            import http.client

            conn = http.client.HTTPConnection(cluster_ip, APP_PORT, timeout=5)
            try:
                conn.request("GET", "/headers")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    return response.status, {}
                headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
                return response.status, headers
            finally:
                conn.close()

        # books' endpoint reaches the control plane through the EndpointSlice controller.
        slices = f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices"

        def endpoint_ready() -> bool:
            items = cluster.get(f"{slices}?labelSelector=kubernetes.io/service-name=books")
            return any(
                e.get("addresses") == [pair.b_ip] and e.get("conditions", {}).get("ready")
                for item in items.get("items", [])
                for e in item.get("endpoints") or []
            )

        cluster.wait_for(endpoint_ready, "books' endpoint in its EndpointSlice", timeout=60)

        def answered() -> tuple[int, dict[str, str]] | None:
            try:
                result = run_in(pair.a, call)
            except OSError:
                return None
            return result if result[0] == 200 else None

        _, headers = cluster.wait_for(
            answered, "web's call to the books Service answered", timeout=60
        )
        assert headers["tulle-client-id"] == f"spiffe://cluster.local/ns/{ns}/sa/web"

        def scrape(ns_name: str) -> Metrics:
            def text() -> str:
                import urllib.request

                with urllib.request.urlopen(f"http://{LOOPBACK}:4191/metrics", timeout=5) as r:
                    return str(r.read().decode())

            return Metrics(run_in(ns_name, text))

        out = scrape(pair.a)
        books_id = f"spiffe://cluster.local/ns/{ns}/sa/books"
        assert out.total("request_total", direction="outbound", tls="true", server_id=books_id) >= 1
        assert run_in(pair.b, lambda: http_status(LOOPBACK, 4191, "/ready")) == 200
    finally:
        for relay in relays:
            relay.close()
