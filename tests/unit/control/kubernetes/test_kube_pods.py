"""Meshed pods as scrape targets, `tulle stat` by workload and namespace, Service names."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tulle.cli.observe import stat_query
from tulle.codec.promtext import Sample
from tulle.control.kubernetes.pods import (
    DEFAULT_PROXY_ADMIN_PORT,
    DestinationNames,
    PodTargets,
    proxy_targets,
    workload_of,
)
from tulle.control.kubernetes.translate import ClusterState
from tulle.core.scrape import ScrapeTarget
from tulle.viz import aggregate
from tulle.viz.api import MetricsApi
from tulle.viz.api_context import ApiContext, StoreSource
from tulle.viz.window import WindowStore


def pod(
    ns: str,
    name: str,
    ip: str | None,
    labels: dict[str, str],
    *,
    meshed: bool = True,
    annotations: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    phase: str = "Running",
) -> tuple[tuple[str, str], dict[str, Any]]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "labels": labels,
        "annotations": {**({"tulle.io/meshed": "true"} if meshed else {}), **(annotations or {})},
    }
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
    return (ns, name), {"metadata": meta, "status": status}


def svc(ns: str, name: str, selector: dict[str, str], ip: str = "") -> Any:
    return (ns, name), {"metadata": {"name": name}, "spec": {"selector": selector, "clusterIP": ip}}


def test_meshed_running_pods_with_an_ip_are_targets_named_by_service_and_workload() -> None:
    state = ClusterState(
        services=dict([svc("shop", "web", {"app": "web"}), svc("shop", "all", {})]),
        pods=dict(
            [
                pod(
                    "shop",
                    "web-5d8f-abcde",
                    "10.0.0.1",
                    {"app": "web", "pod-template-hash": "5d8f"},
                    owner=("ReplicaSet", "web-5d8f"),
                    annotations={"tulle.io/proxy-admin-port": "4999"},
                ),
                pod("shop", "db-0", "10.0.0.2", {"app": "db"}, owner=("StatefulSet", "db")),
                pod("shop", "loose", "fd00::3", {}),
                pod("shop", "plain", "10.0.0.4", {"app": "web"}, meshed=False),
                pod("shop", "pending", None, {"app": "web"}),
                pod("shop", "done", "10.0.0.5", {"app": "web"}, phase="Succeeded"),
                pod(
                    "shop",
                    "bad-port",
                    "10.0.0.6",
                    {},
                    annotations={"tulle.io/proxy-admin-port": "x"},
                ),
            ]
        ),
    )
    targets = {t.instance: t for t in proxy_targets(state)}
    assert set(targets) == {"web-5d8f-abcde", "db-0", "loose"}
    web = targets["web-5d8f-abcde"]
    assert (web.service, web.admin, web.namespace, web.workload) == (
        "shop/web",
        "10.0.0.1:4999",
        "shop",
        "deploy/web",
    )
    # No Service selects them: named after their workload; the default admin port.
    assert targets["db-0"].service == "shop/db"
    assert targets["db-0"].admin == f"10.0.0.2:{DEFAULT_PROXY_ADMIN_PORT}"
    assert (targets["loose"].service, targets["loose"].workload) == ("shop/loose", "pod/loose")
    assert targets["loose"].admin == f"[fd00::3]:{DEFAULT_PROXY_ADMIN_PORT}"


def test_a_replica_set_not_named_after_a_template_hash_stays_a_replica_set() -> None:
    meta = {"ownerReferences": [{"kind": "ReplicaSet", "name": "hand-made"}], "labels": {}}
    assert workload_of("p", meta) == "rs/hand-made"
    assert workload_of("p", {"ownerReferences": [{"kind": "Node", "name": "n"}]}) == "pod/p"


def test_destination_names_follow_services_in_the_callers_namespace() -> None:
    names = DestinationNames("cluster.local")
    names.update(
        dict([svc("shop", "web", {"app": "web"}, "10.96.0.10"), svc("db", "pg", {"a": "b"})])
    )
    assert names.name("shop", "web") == "shop/web"
    assert names.name("shop", "web:8080") == "shop/web"
    assert names.name("other", "web.shop:8080") == "shop/web"
    assert names.name("other", "web.shop.svc.cluster.local:8080") == "shop/web"
    assert names.name("other", "pg.db.svc") == "db/pg"
    assert names.name("other", "10.96.0.10:8080") == "shop/web"
    # Not a Service of the cluster: kept as the proxy wrote it.
    assert names.name("other", "web") == "web"
    assert names.name("shop", "example.com:443") == "example.com:443"
    assert names.name("shop", "10.1.2.3:80") == "10.1.2.3:80"
    # A Service deleted: its name is no longer rewritten.
    names.update({})
    assert names.name("shop", "web") == "web"


def test_relabel_renames_dst_service_of_pod_targets_only() -> None:
    names = DestinationNames()
    names.update(dict([svc("shop", "web", {"app": "web"})]))
    sample = Sample("response_total", (("direction", "outbound"), ("dst_service", "web")), 3.0)
    pod_target = ScrapeTarget("shop/client", "client-0", "10.0.0.1:4191", "shop", "pod/client-0")
    local = ScrapeTarget("client", "client-0", "127.0.0.1:4191")
    assert names.relabel(pod_target, [sample])[0].label("dst_service") == "shop/web"
    assert names.relabel(local, [sample]) == [sample]


def _counts(direction: str, dst: str, n: float) -> list[Sample]:
    labels = (("classification", "success"), ("direction", direction), ("dst_service", dst))
    return [Sample("response_total", labels, n)]


def test_stat_by_workload_and_namespace_with_a_proxy_that_does_not_answer() -> None:
    web0 = ScrapeTarget("shop/web", "web-0", "10.0.0.1:4191", "shop", "deploy/web")
    web1 = ScrapeTarget("shop/web", "web-1", "10.0.0.2:4191", "shop", "deploy/web")
    api0 = ScrapeTarget("blue/api", "api-0", "10.0.1.1:4191", "blue", "deploy/api")
    store = WindowStore()
    now = time.time()
    for target in (web0, api0):
        store.ingest(target, now - 2, _counts("inbound", "", 0))
        store.ingest(target, now - 1, _counts("inbound", "", 5))
    store.failed(web1, now - 1, "connection refused")
    data = store.window(60, now)
    rows = aggregate.stat_workloads(data, "deploy")
    assert [(r["namespace"], r["workload"], r["instances"], r["requests"]) for r in rows] == [
        ("blue", "deploy/api", 1, 5),
        ("shop", "deploy/web", 2, 5),
    ]
    assert aggregate.stat_workloads(data, "sts") == []

    api = MetricsApi(
        ApiContext(
            targets=lambda: [web0, web1, api0],
            source=StoreSource(store),
            ready=lambda: True,
            manifest=lambda: None,
        )
    )
    document = asyncio.run(api.stat({"kind": "workload", "namespace": "shop"}))
    assert [(r["workload"], r["answering"]) for r in document["rows"]] == [("deploy/web", 1)]
    assert [(p["instance"], p["error"]) for p in document["not_answering"]] == [
        ("web-1", "connection refused")
    ]
    services = asyncio.run(api.stat({"kind": "service", "namespace": "blue"}))
    assert [(r["service"], r["answering"]) for r in services["rows"]] == [("blue/api", 1)]
    assert services["not_answering"] == []
    instances = asyncio.run(api.stat({"kind": "instance", "service": "shop/web"}))
    assert [(r["instance"], r["answering"]) for r in instances["rows"]] == [
        ("web-0", True),
        ("web-1", False),
    ]


@pytest.mark.parametrize(
    ("args", "query"),
    [
        (("", "service", ""), {"kind": "service", "service": "", "namespace": ""}),
        (
            ("web", "service", "shop"),
            {"kind": "service", "service": "shop/web", "namespace": "shop"},
        ),
        (
            ("svc/web", "instance", "shop"),
            {"kind": "instance", "service": "shop/web", "namespace": "shop"},
        ),
        (("svc", "service", "shop"), {"kind": "service", "service": "", "namespace": "shop"}),
        (("books", "service", ""), {"kind": "service", "service": "books", "namespace": ""}),
        (
            ("deploy/web", "service", "shop"),
            {"kind": "workload", "workload": "deploy/web", "namespace": "shop"},
        ),
        (
            ("deployments", "service", ""),
            {"kind": "workload", "workload": "deploy", "namespace": ""},
        ),
        (("sts/db", "workload", ""), {"kind": "workload", "workload": "sts/db", "namespace": ""}),
    ],
)
def test_stat_resources(args: tuple[str, str, str], query: dict[str, str]) -> None:
    assert stat_query(*args) == query


def test_the_first_service_by_name_whose_whole_selector_matches_names_the_pod() -> None:
    labels = {"app": "web", "tier": "front"}
    state = ClusterState(
        services=dict(
            [
                svc("shop", "web", {"app": "web"}),
                svc("shop", "front", {"tier": "front", "app": "web"}),
                svc("shop", "back", {"tier": "back", "app": "web"}),
                svc("other", "aaa", {"app": "web"}),
            ]
        ),
        pods=dict([pod("shop", "web-0", "10.0.0.1", labels)]),
    )
    assert [t.service for t in proxy_targets(state)] == ["shop/front"]


def test_pod_targets_follow_pod_and_service_changes() -> None:
    def versioned(item: Any, version: str) -> Any:
        key, obj = item
        obj["metadata"]["resourceVersion"] = version
        return key, obj

    services = dict([versioned(svc("shop", "web", {"app": "web"}), "1")])
    pods = dict([versioned(pod("shop", "web-0", "10.0.0.1", {"app": "web"}), "1")])
    targets = PodTargets()
    assert [t.service for t in targets.current(ClusterState(services=services, pods=pods))] == [
        "shop/web"
    ]
    # The pod moved (a new resourceVersion): its new address is used.
    pods = dict([versioned(pod("shop", "web-0", "10.0.0.9", {"app": "web"}), "2")])
    found = targets.current(ClusterState(services=services, pods=pods))
    assert [t.admin for t in found] == [f"10.0.0.9:{DEFAULT_PROXY_ADMIN_PORT}"]
    # The Service went away: the pod is named after itself again.
    assert [t.service for t in targets.current(ClusterState(services={}, pods=pods))] == [
        "shop/web-0"
    ]
    assert targets.current(ClusterState(services={}, pods={})) == []
