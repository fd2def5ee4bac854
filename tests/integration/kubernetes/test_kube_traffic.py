"""Real proxies following a control plane that reads a real API server: routes, splits, policy.

Pod addresses are loopback addresses (127.0.0.x); the apps (demo backends)
and the server-side proxies listen on them, standing in for the pods' own
processes.
"""

from __future__ import annotations

import http.client
import time
import uuid
from pathlib import Path

import pytest
from kube_cluster import Cluster, KubeletStandIn
from kube_launcher import TRUST_DOMAIN, start_kube_control
from support.mesh import Backend, Proxy, start_proxy
from support.ports import free_port
from support.process import ProcessGroup
from test_kube_identity import AUDIENCE, service_account_token

from tulle.identity.store import BUNDLE_FILE, IssuerDirectory

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


def start_backend_at(processes: ProcessGroup, host: str, port: int, name: str) -> Backend:
    process = processes.tulle(name, ["demo", "backend", "--addr", f"{host}:{port}"])
    process.wait_for(lambda: f"{host}:{port}" in process.output(), "listening line")
    return Backend(process, host, port, "http")


def request(
    proxy: Proxy, authority: str, path: str, method: str = "GET"
) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    try:
        connection.request(method, path, headers={"Host": authority})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def service(cluster: Cluster, ns: str, name: str, target: int, selector: str | None = None) -> None:
    cluster.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": selector or name},
                "ports": [{"name": "http", "port": 8080, "targetPort": target}],
            },
        },
    )


def wait_status(proxy: Proxy, authority: str, path: str, wanted: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status, _ = request(proxy, authority, path)
        if status == wanted:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{authority}{path}: still {status}, not {wanted}, after {timeout} s")


def test_http_route_split_timeout_and_retry_act_on_real_traffic(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup
) -> None:
    ns = cluster.namespace(f"route-{uuid.uuid4().hex[:6]}")
    port = free_port()
    v1 = start_backend_at(processes, "127.0.0.2", port, "web-v1")
    v2 = start_backend_at(processes, "127.0.0.3", port, "web-v2")
    service(cluster, ns, "web", port)
    service(cluster, ns, "web-v1", port)
    service(cluster, ns, "web-v2", port)
    kubelet.run_pod(ns, "web-v1-0", "127.0.0.2", labels={"app": "web-v1"}, meshed=False)
    kubelet.run_pod(ns, "web-v2-0", "127.0.0.3", labels={"app": "web-v2"}, meshed=False)
    cluster.create(
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 8080}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/delay"}}],
                        "timeouts": {"request": "200ms"},
                    },
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/status"}}],
                        "retry": {"codes": [503]},
                    },
                    {
                        "backendRefs": [
                            {"name": "web-v1", "port": 8080, "weight": 90},
                            {"name": "web-v2", "port": 8080, "weight": 10},
                        ]
                    },
                ],
            },
        },
    )
    replica = start_kube_control(processes, cluster)
    # A Kubernetes workload name tells the control plane the proxy's namespace.
    client = start_proxy(
        processes,
        extra=["--control-addr", replica.grpc_target, "--workload", f"{ns}/client-0"],
    )
    web = f"web.{ns}.svc.cluster.local:8080"
    wait_status(client, web, "/", 200)
    # Short names resolve in the proxy's namespace.
    wait_status(client, "web:8080", "/", 200)
    # Both backends must be known before counting (discovery is per backend service).
    deadline = time.monotonic() + 20
    seen_v2 = False
    while not seen_v2 and time.monotonic() < deadline:
        before = v2.stats()["requests"]
        request(client, web, "/")
        seen_v2 = v2.stats()["requests"] > before + 1  # +1: this stats call itself
    assert seen_v2, "web-v2 never received traffic"

    before = (v1.stats()["requests"], v2.stats()["requests"])
    total = 300
    for _ in range(total):
        status, _ = request(client, web, "/")
        assert status == 200
    to_v1 = v1.stats()["requests"] - before[0] - 1
    to_v2 = v2.stats()["requests"] - before[1] - 1
    assert to_v1 + to_v2 == total
    share = to_v2 / total
    assert 0.03 <= share <= 0.2, f"web-v2 got {to_v2} of {total} (expected about 10%)"

    # The route's 200 ms timeout: a 1 s response becomes a 504 from the proxy.
    started = time.monotonic()
    status, headers = request(client, web, "/delay/1000")
    assert status == 504 and headers.get("tulle-proxy-error") == "response-timeout"
    assert time.monotonic() - started < 0.9

    # Retries on 503: a POST (never retried by default) reaches a backend more than once.
    before_total = v1.stats()["requests"] + v2.stats()["requests"]
    status, _ = request(client, web, "/status/503", method="POST")
    assert status == 503
    attempts = v1.stats()["requests"] + v2.stats()["requests"] - before_total - 2
    assert attempts >= 2, f"the POST reached the backends {attempts} time(s): no retry"


def test_server_and_authorization_policy_deny_a_caller_by_identity(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup, tmp_path: Path
) -> None:
    ns = cluster.namespace(f"authz-{uuid.uuid4().hex[:6]}")
    issuer = tmp_path / "issuer"
    IssuerDirectory(issuer).init(TRUST_DOMAIN, now=time.time())
    replica = start_kube_control(processes, cluster, extra=("--identity-dir", str(issuer)))
    app_port, inbound_port = free_port(), free_port()
    app = start_backend_at(processes, "127.0.0.1", app_port, "web-app")
    service(cluster, ns, "web", inbound_port)
    kubelet.run_pod(ns, "web-0", "127.0.0.5", labels={"app": "web"}, service_account="web")
    policy = "/apis/policy.tulle.io/v1alpha1/namespaces/" + ns
    cluster.create(
        f"{policy}/servers",
        {
            "apiVersion": "policy.tulle.io/v1alpha1",
            "kind": "Server",
            "metadata": {"name": "web-http"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "port": app_port,
                "proxyProtocol": "HTTP/1",
            },
        },
    )
    cluster.create(
        f"{policy}/meshtlsauthentications",
        {
            "apiVersion": "policy.tulle.io/v1alpha1",
            "kind": "MeshTLSAuthentication",
            "metadata": {"name": "frontend"},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "frontend"}]},
        },
    )
    cluster.create(
        f"{policy}/authorizationpolicies",
        {
            "apiVersion": "policy.tulle.io/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "web-from-frontend"},
            "spec": {
                "targetRef": {"group": "policy.tulle.io", "kind": "Server", "name": "web-http"},
                "requiredAuthenticationRefs": [
                    {
                        "group": "policy.tulle.io",
                        "kind": "MeshTLSAuthentication",
                        "name": "frontend",
                    }
                ],
            },
        },
    )

    def meshed_proxy(account: str, *extra: str, inbound: str | None = None) -> Proxy:
        token_file = tmp_path / f"{account}.token"
        token_file.write_text(service_account_token(cluster, ns, account, AUDIENCE))
        args = [
            "--control-addr",
            replica.grpc_target,
            "--identity",
            f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{account}",
            "--identity-token-file",
            str(token_file),
            "--trust-anchors",
            str(issuer / BUNDLE_FILE),
            *extra,
        ]
        if inbound is None:
            return start_proxy(processes, extra=args, name=f"proxy-{account}")
        return start_inbound_proxy(processes, inbound, args, account)

    server = meshed_proxy(
        "web",
        "--workload",
        f"{ns}/web-0",
        "--app-addr",
        f"127.0.0.1:{app_port}",
        inbound=f"127.0.0.5:{inbound_port}",
    )
    frontend = meshed_proxy("frontend")
    other = meshed_proxy("other")
    web = f"web.{ns}.svc.cluster.local:8080"
    wait_status(frontend, web, "/", 200)
    status, headers = request(other, web, "/")
    assert status == 403, (status, headers)
    assert headers.get("tulle-proxy-error") == "unauthorized"
    assert server.process.alive() and app.process.alive()


def start_inbound_proxy(processes: ProcessGroup, inbound: str, args: list[str], name: str) -> Proxy:
    from support.mesh import wait_ready
    from support.ports import free_ports

    outbound, admin = free_ports(2)
    port = inbound.rpartition(":")[2]
    process = processes.tulle(
        f"proxy-{name}",
        [
            "proxy",
            "--inbound-addr",
            inbound,
            "--outbound-addr",
            f"127.0.0.1:{outbound}",
            "--admin-addr",
            f"127.0.0.1:{admin}",
            *args,
        ],
    )
    proxy = Proxy(process, int(port), outbound, admin)
    return wait_ready(proxy)
