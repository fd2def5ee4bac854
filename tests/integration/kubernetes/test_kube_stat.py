"""`tulle stat/routes/edges/authz` against a control plane that finds the proxies in Pods.

No kubelet runs here: `KubeletStandIn` sets each Pod's status, with a
loopback address as its IP, and the pods' "proxies" are real `tulle proxy`
processes listening on those addresses (admin port from the Pod's
`tulle.io/proxy-admin-port` annotation). The control plane is only given the
kubeconfig: it must find the proxies from the Pods alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import Cluster, KubeletStandIn
from kube_launcher import TRUST_DOMAIN, start_kube_control
from support.mesh import Proxy
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup, http_status
from test_kube_identity import AUDIENCE, service_account_token
from test_kube_traffic import request, service, start_backend_at, wait_status

from tulle.identity.store import BUNDLE_FILE, IssuerDirectory

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

WEB_IP = "127.0.0.31"
DOWN_IP = "127.0.0.32"  # web-1: its Pod exists, its proxy does not answer
CLIENT_IP = "127.0.0.33"
TEMPLATE_HASH = "5d8f7c9b4"
ADMIN_PORT = "tulle.io/proxy-admin-port"


def start_pod_proxy(
    processes: ProcessGroup,
    name: str,
    ip: str,
    admin_port: int,
    args: list[str],
    inbound: str | None = None,
) -> Proxy:
    """A pod's proxy: admin (and inbound) on the pod's address, outbound on loopback."""
    inbound_port, outbound_port = free_ports(2)
    inbound = inbound or f"{LOOPBACK}:{inbound_port}"
    process = processes.tulle(
        f"proxy-{name}",
        [
            "proxy",
            "--inbound-addr",
            inbound,
            "--outbound-addr",
            f"{LOOPBACK}:{outbound_port}",
            "--admin-addr",
            f"{ip}:{admin_port}",
            *args,
        ],
    )
    process.wait_for(lambda: http_status(ip, admin_port, "/ready") == 200, f"{name} /ready")
    return Proxy(process, int(inbound.rpartition(":")[2]), outbound_port, admin_port)


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def test_stat_routes_edges_and_authz_read_the_proxies_of_meshed_pods(
    cluster: Cluster, kubelet: KubeletStandIn, processes: ProcessGroup, tmp_path: Path
) -> None:
    ns = cluster.namespace(f"stat-{uuid.uuid4().hex[:6]}")
    issuer = tmp_path / "issuer"
    IssuerDirectory(issuer).init(TRUST_DOMAIN, now=time.time())
    replica = start_kube_control(
        processes,
        cluster,
        name="control-stat",
        http=True,
        extra=("--identity-dir", str(issuer), "--scrape-interval", "0.5"),
    )
    api = f"http://{LOOPBACK}:{replica.http_port}"
    app_port, inbound_port, web_admin, down_admin, client_admin = free_ports(5)
    start_backend_at(processes, "127.0.0.1", app_port, "stat-web-app")
    service(cluster, ns, "web", inbound_port)
    service(cluster, ns, "client", 8080)
    # web-0 and web-1 belong to Deployment web (through its ReplicaSet, as
    # the Deployment controller names them); client-0 is a bare pod.
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": f"web-{TEMPLATE_HASH}",
        "uid": str(uuid.uuid4()),
        "controller": True,
    }
    web_labels = {"app": "web", "pod-template-hash": TEMPLATE_HASH}
    kubelet.run_pod(
        ns,
        "web-0",
        WEB_IP,
        labels=web_labels,
        service_account="web",
        annotations={ADMIN_PORT: str(web_admin)},
        owners=[owner],
    )
    kubelet.run_pod(
        ns,
        "web-1",
        DOWN_IP,
        labels=web_labels,
        service_account="web",
        annotations={ADMIN_PORT: str(down_admin)},
        owners=[owner],
        ready=False,
    )
    kubelet.run_pod(
        ns,
        "client-0",
        CLIENT_IP,
        labels={"app": "client"},
        service_account="client",
        annotations={ADMIN_PORT: str(client_admin)},
    )
    policy = f"/apis/policy.tulle.io/v1alpha1/namespaces/{ns}"
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
            "metadata": {"name": "client"},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "client"}]},
        },
    )
    cluster.create(
        f"{policy}/authorizationpolicies",
        {
            "apiVersion": "policy.tulle.io/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "web-from-client"},
            "spec": {
                "targetRef": {"group": "policy.tulle.io", "kind": "Server", "name": "web-http"},
                "requiredAuthenticationRefs": [
                    {"group": "policy.tulle.io", "kind": "MeshTLSAuthentication", "name": "client"}
                ],
            },
        },
    )
    cluster.create(
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web-echo"},
            "spec": {
                "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 8080}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/echo"}}]}],
            },
        },
    )

    def identity_args(account: str) -> list[str]:
        token_file = tmp_path / f"{account}.token"
        token_file.write_text(service_account_token(cluster, ns, account, AUDIENCE))
        return [
            "--control-addr",
            replica.grpc_target,
            "--identity",
            f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{account}",
            "--identity-token-file",
            str(token_file),
            "--trust-anchors",
            str(issuer / BUNDLE_FILE),
        ]

    start_pod_proxy(
        processes,
        "web-0",
        WEB_IP,
        web_admin,
        [*identity_args("web"), "--workload", f"{ns}/web-0", "--app-addr", f"127.0.0.1:{app_port}"],
        inbound=f"{WEB_IP}:{inbound_port}",
    )
    client = start_pod_proxy(
        processes,
        "client-0",
        CLIENT_IP,
        client_admin,
        [*identity_args("client"), "--workload", f"{ns}/client-0"],
    )
    # A caller outside the cluster's pods (not scraped), whose identity the policy refuses.
    other_admin = free_ports(1)[0]
    other = start_pod_proxy(processes, "other", LOOPBACK, other_admin, identity_args("other"))
    web = f"web.{ns}.svc.cluster.local:8080"
    wait_status(client, web, "/echo", 200)
    wait_status(other, web, "/", 403)

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{api}{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def cli(*args: str, as_json: bool = True, code: int = 0) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "tulle", *args, "--control", api]
            + (["--json"] if as_json else []),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
        return json.loads(result.stdout) if as_json else result.stdout

    # The control plane found the three pods' proxies from the Pods alone, and
    # has scraped both live ones twice since the warm-up (so the figures below
    # start from a baseline that already holds it); web-1 does not answer.
    def scrapes() -> dict[str, dict[str, Any]]:
        return {
            t["instance"]: t for t in get("/api/targets")["targets"] if t.get("namespace") == ns
        }

    found = eventually(lambda: (s := scrapes()) and len(s) == 3 and s, "three pod targets")
    assert found["web-0"]["admin"] == f"{WEB_IP}:{web_admin}"
    assert found["web-0"]["service"] == f"{ns}/web"
    assert found["web-0"]["workload"] == "deploy/web"
    assert found["client-0"]["workload"] == "pod/client-0"
    start = {name: t.get("scrapes_ok", 0) for name, t in found.items()}
    eventually(
        lambda: all(
            scrapes()[name].get("scrapes_ok", 0) >= start[name] + 2
            for name in ("web-0", "client-0")
        ),
        "two more scrapes of web-0 and client-0",
    )
    assert scrapes()["web-1"]["scrapes_failed"] >= 1
    window = ["--window", "10m"]

    def web_row(document: dict[str, Any], key: str, value: str) -> dict[str, Any]:
        rows = [row for row in document["rows"] if row[key] == value]
        assert len(rows) == 1, document
        return rows[0]

    def routes_now() -> dict[str, int]:
        document = cli("routes", "web", "-n", ns, *window)
        return {row["route"]: row["requests"] for row in document["rows"]}

    def edge_now() -> int:
        rows = [
            row
            for row in cli("edges", "-n", ns, *window)["rows"]
            if (row["src"], row["dst"]) == (f"{ns}/client", f"{ns}/web")
        ]
        return int(rows[0]["requests"]) if rows else 0

    def decisions() -> tuple[float, float]:
        document = cli("authz", "web", "-n", ns)
        allowed = next(p for p in document["policies"] if p["name"] == f"{ns}/web-from-client")
        denied = sum(o["deny"] for o in document["other_decisions"])
        return allowed["allow"], denied

    before_service = web_row(cli("stat", "-n", ns, *window), "service", f"{ns}/web")["requests"]
    before_routes = routes_now()
    before_edge = edge_now()
    before_allow, before_deny = decisions()

    echoes, others, denied = 23, 11, 7
    for index in range(echoes):
        assert request(client, web, f"/echo?n={index}")[0] == 200
    for _ in range(others):
        assert request(client, web, "/")[0] == 200
    for _ in range(denied):
        assert request(other, web, "/")[0] == 403

    # `tulle stat` by service: web's own inbound figures, 1 of its 2 proxies answering.
    sent = echoes + others
    stat = eventually(
        lambda: (
            (d := cli("stat", "-n", ns, *window))
            and web_row(d, "service", f"{ns}/web")["requests"] >= before_service + sent + denied
            and d
        ),
        "web's requests in tulle stat",
    )
    row = web_row(stat, "service", f"{ns}/web")
    assert row["requests"] == before_service + sent + denied
    assert (row["instances"], row["answering"]) == (2, 1)
    assert [p["instance"] for p in stat["not_answering"]] == ["web-1"]
    assert stat["not_answering"][0]["admin"] == f"{DOWN_IP}:{down_admin}"

    # By workload: the Deployment's pods, and only this namespace's.
    deploy = cli("stat", "deploy/web", "-n", ns, *window)
    assert [(r["namespace"], r["workload"]) for r in deploy["rows"]] == [(ns, "deploy/web")]
    assert deploy["rows"][0]["requests"] == row["requests"]
    assert (deploy["rows"][0]["instances"], deploy["rows"][0]["answering"]) == (2, 1)
    instances = cli("stat", "svc/web", "-n", ns, "--kind", "instance", *window)
    health = {r["instance"]: r["answering"] for r in instances["rows"]}
    assert health == {"web-0": True, "web-1": False}
    elsewhere = cli("stat", "-n", f"{ns}-none", *window)
    assert elsewhere["rows"] == [] and elsewhere["not_answering"] == []
    table = cli("stat", "deploy/web", "-n", ns, as_json=False)
    assert "deploy/web" in table and "1/2" in table
    assert f"not answering: {ns}/web-1 ({DOWN_IP}:{down_admin})" in table

    # `tulle routes`: the callers' view, per HTTPRoute rule.
    route_counts = eventually(
        lambda: (r := routes_now()) and sum(r.values()) >= sum(before_routes.values()) + sent and r,
        "the client's requests in tulle routes",
    )
    gained = {name: n - before_routes.get(name, 0) for name, n in route_counts.items()}
    # The proxy names the route of requests no rule matches `default`.
    assert gained.pop("default") == others
    assert gained == {"web-echo.0": echoes}

    # `tulle edges`: client -> web, named by Service, over mTLS with both identities.
    eventually(lambda: edge_now() - before_edge >= sent, "the edge's requests")
    assert edge_now() - before_edge == sent
    edge = next(r for r in cli("edges", "-n", ns, *window)["rows"] if r["src"] == f"{ns}/client")
    assert edge["dst"] == f"{ns}/web" and edge["secured"]
    assert edge["server_id"] == f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/web"
    assert edge["client_id"] == f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/client"

    # `tulle authz`: the policy that selects web's pods, with the decisions made.
    allow, deny = decisions()
    assert (allow - before_allow, deny - before_deny) == (sent, denied)
    document = cli("authz", "web", "-n", ns)
    assert [s["name"] for s in document["servers"]] == [f"{ns}/web-http"]
    assert document["unreachable"] == ["web-1"]
    text = cli("authz", "svc/web", "-n", ns, as_json=False)
    assert f"{ns}/web-from-client" in text and "web-1: its proxy does not answer" in text

    # `tulle check` of that control plane: there is no manifest file to check
    # when the cluster is the source, and the pod whose proxy is down fails.
    report = cli("check", code=1)
    checks = {c["name"]: c for cat in report["categories"] for c in cat["checks"]}
    assert "manifest valid" not in checks
    assert checks["destination API serving"]["status"] == "ok"
    assert checks[f"{ns}/web/web-0 ready"]["status"] == "ok"
    assert checks[f"{ns}/web/web-1 ready"]["status"] == "fail"
    assert f"kubectl -n {ns} logs web-1 -c tulle-proxy" in checks[f"{ns}/web/web-1 ready"]["hint"]
    # Started as `tulle install` starts it (no --api-token-file, no manifest
    # to put one beside): tap is refused rather than guarded by a stray file.
    try:
        urllib.request.urlopen(f"{api}/api/tap?service={ns}/web", timeout=10)
        raise AssertionError("tap answered without a token")
    except urllib.error.HTTPError as refused:
        assert refused.code == 403
        assert "no API token" in json.loads(refused.read())["error"]
