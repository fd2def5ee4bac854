"""Kubernetes objects -> the control plane's model, on recorded API objects (no server).

The EndpointSlice `v1` path is covered here: the test API server (1.20) only
serves `v1beta1`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tulle.control.destination.authority import lookup
from tulle.control.destination.watcher import state_for
from tulle.control.kubernetes.translate import (
    ClusterState,
    Settings,
    caller_namespace,
    expand_authority,
    translate,
)

RECORDED = json.loads((Path(__file__).parent / "recorded_v1.json").read_text())
FQDN = "web.shop.svc.cluster.local"


def store(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


def recorded_state(**extra: list[dict[str, Any]]) -> ClusterState:
    return ClusterState(
        services=store(copy.deepcopy(RECORDED["services"])),
        endpoint_slices=store(copy.deepcopy(RECORDED["endpointSlices"])),
        pods=store(copy.deepcopy(RECORDED["pods"])),
        **{k: store(v) for k, v in extra.items()},
    )


def test_ready_endpoints_with_identities_of_meshed_pods_only() -> None:
    manifest = translate(recorded_state(), Settings(trust_domain="example.org")).manifest
    spec = lookup(manifest, f"{FQDN}:80")
    assert spec is not None
    assert spec.name == FQDN
    by_address = {ep.address: ep for ep in spec.endpoints}
    # The terminating endpoint is left out while others are ready.
    assert set(by_address) == {("10.244.1.5", 8080), ("10.244.3.4", 8080)}
    assert by_address[("10.244.1.5", 8080)].identity == "spiffe://example.org/ns/shop/sa/web"
    assert by_address[("10.244.1.5", 8080)].labels == {
        "namespace": "shop",
        "pod": "web-5d8f9-abcde",
    }
    # Not meshed: no identity, so a client connects in plain text.
    assert by_address[("10.244.3.4", 8080)].identity is None


def test_each_port_is_its_own_destination_under_every_name() -> None:
    manifest = translate(recorded_state()).manifest
    http_by_name = lookup(manifest, FQDN)  # no port: 80
    assert http_by_name is not None and http_by_name.port == 80
    for key in (f"{FQDN}:80", "10.96.12.7:80", "10.96.12.7", f"{FQDN.upper()}.:80"):
        assert lookup(manifest, key) is http_by_name, key
    grpc = lookup(manifest, "10.96.12.7:9090")
    assert grpc is not None and grpc.port == 9090
    assert grpc.protocol == "h2"
    assert [ep.address for ep in grpc.endpoints] == [("10.244.1.5", 9091), ("10.244.3.4", 9091)]
    assert grpc.endpoints[0].protocol_hint == "h2"
    assert lookup(manifest, f"{FQDN}:9999") is None


def test_terminating_but_serving_endpoints_are_used_when_nothing_is_ready() -> None:
    state = recorded_state()
    for endpoint in state.endpoint_slices[("shop", "web-x7k2p")]["endpoints"]:
        if endpoint["conditions"]["ready"]:
            endpoint["conditions"] = {"ready": False, "serving": False, "terminating": False}
    spec = lookup(translate(state).manifest, f"{FQDN}:80")
    assert spec is not None
    assert [ep.address for ep in spec.endpoints] == [("10.244.2.9", 8080)]


def test_missing_ready_condition_means_ready() -> None:
    state = recorded_state()
    for endpoint in state.endpoint_slices[("shop", "web-x7k2p")]["endpoints"]:
        endpoint["conditions"] = {}
    spec = lookup(translate(state).manifest, f"{FQDN}:80")
    assert spec is not None and len(spec.endpoints) == 3


def test_short_names_expand_in_the_callers_namespace() -> None:
    ns = caller_namespace(json.dumps({"ns": "shop"}))
    assert ns == "shop"
    assert expand_authority("web:80", ns, "cluster.local") == f"{FQDN}:80"
    assert expand_authority("web", ns, "cluster.local") == FQDN
    assert expand_authority("web.shop:9090", None, "cluster.local") == f"{FQDN}:9090"
    assert expand_authority("web.shop.svc", None, "cluster.local") == FQDN
    assert expand_authority("web:80", None, "cluster.local") == "web:80"
    assert expand_authority("10.96.12.7:80", ns, "cluster.local") == "10.96.12.7:80"
    assert expand_authority(f"{FQDN}:80", ns, "cluster.local") == f"{FQDN}:80"
    assert caller_namespace("proxy-1") is None
    assert caller_namespace('{"ns": "../etc"}') is None


def test_http_route_with_a_service_parent_gives_routes_timeouts_retries_and_a_split() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web-split", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [
                {
                    "matches": [
                        {"path": {"type": "PathPrefix", "value": "/items"}, "method": "GET"}
                    ],
                    "timeouts": {"request": "300ms"},
                    "retry": {"codes": [503], "attempts": 2},
                },
                {
                    "backendRefs": [
                        {"name": "web-v1", "port": 80, "weight": 90},
                        {"name": "web-v2", "port": 80, "weight": 10},
                    ]
                },
            ],
        },
    }
    profile_crd = {
        "apiVersion": "tulle.io/v1alpha1",
        "kind": "ServiceProfile",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "retryBudget": {"retryRatio": 0.5, "minRetriesPerSecond": 3, "ttl": "5s"},
            "timeout": "2s",
        },
    }
    manifest = translate(
        recorded_state(http_routes=[route], service_profiles=[profile_crd])
    ).manifest
    profile = state_for(manifest, f"{FQDN}:80").profile
    items = profile.routes[0]
    assert items.name == "web-split.0"
    assert items.matches[0].path_prefix == "/items" and items.matches[0].method == "GET"
    assert items.timeout_s == 0.3
    assert items.retryable is True and items.retry_statuses == (503,)
    assert [(b.service, b.weight) for b in profile.backends] == [
        ("web-v1.shop.svc.cluster.local:80", 90),
        ("web-v2.shop.svc.cluster.local:80", 10),
    ]
    assert profile.retry_budget.ratio == 0.5
    assert profile.retry_budget.min_retries_per_second == 3
    assert profile.retry_budget.ttl_s == 5
    assert profile.timeout_s == 2
    # The other port has no route.
    assert state_for(manifest, f"{FQDN}:9090").profile.routes == ()


def test_a_broken_object_is_reported_and_the_others_still_apply() -> None:
    bad_route = {
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": "web"}],
            "rules": [{"timeouts": {"request": "soon"}}],
        },
    }
    state = recorded_state(http_routes=[bad_route])
    state.services[("shop", "broken")] = {
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"ports": [{"port": "eighty"}]},
    }
    translation = translate(state)
    assert any("timeouts.request" in p for p in translation.problems)
    assert any("shop/broken" in p for p in translation.problems)
    assert lookup(translation.manifest, "broken.shop.svc.cluster.local:80") is None


def test_server_and_authorization_policy_compile_per_pod() -> None:
    server = {
        "metadata": {"name": "web-http", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "port": 8080,
            "proxyProtocol": "HTTP/1",
        },
    }
    grpc_server = {
        "metadata": {"name": "web-grpc", "namespace": "shop"},
        "spec": {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]
            },
            "port": "grpc",
            "proxyProtocol": "gRPC",
            "accessPolicy": "all-authenticated",
        },
    }
    authn = {
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "frontend"}]},
    }
    policy = {
        "metadata": {"name": "web-from-frontend", "namespace": "shop"},
        "spec": {
            "targetRef": {"group": "policy.tulle.io", "kind": "Server", "name": "web-http"},
            "requiredAuthenticationRefs": [
                {"group": "policy.tulle.io", "kind": "MeshTLSAuthentication", "name": "frontend"}
            ],
        },
    }
    state = recorded_state(
        servers=[server, grpc_server],
        mesh_tls_authentications=[authn],
        authorization_policies=[policy],
    )
    spec = translate(state, Settings(trust_domain="td")).manifest.authorization
    compiled = spec.compile("shop/web-5d8f9-abcde", 8080)
    assert compiled.server == "shop/web-http"
    assert compiled.default_mode == "deny"
    assert compiled.authorize_http(
        "spiffe://td/ns/shop/sa/frontend", "10.0.0.1", b"GET", b"/", lambda _: None
    ).allowed
    assert not compiled.authorize_http(
        "spiffe://td/ns/shop/sa/other", "10.0.0.1", b"GET", b"/", lambda _: None
    ).allowed
    # The named port resolves through the pod's container ports (only one pod has it).
    grpc = spec.compile("shop/web-5d8f9-abcde", 9091)
    assert grpc.server == "shop/web-grpc" and grpc.protocol == "grpc"
    assert spec.compile("shop/legacy-0", 9091).server == ""


def test_a_proxy_context_token_names_its_namespace() -> None:
    from tulle.api.destination_client import context_token

    assert caller_namespace(context_token("shop/web-0")) == "shop"
    assert caller_namespace(context_token("web")) is None
    assert context_token("") == ""


def test_a_name_without_a_port_names_port_80_else_the_first_port() -> None:
    state = recorded_state()
    state.services[("shop", "api")] = {
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "clusterIP": "10.96.0.9",
            "ports": [{"name": "a", "port": 8080}, {"name": "b", "port": 9090}],
        },
    }
    manifest = translate(state).manifest
    bare = lookup(manifest, "api.shop.svc.cluster.local")
    assert bare is not None and bare.port == 8080
    nine = lookup(manifest, "api.shop.svc.cluster.local:9090")
    assert nine is not None and nine.port == 9090
    web = lookup(manifest, FQDN)
    assert web is not None and web.port == 80


def test_the_cache_gives_what_a_fresh_translation_gives_after_changes() -> None:
    from tulle.control.kubernetes.translate import TranslationCache

    state = recorded_state()
    for i, pod in enumerate(state.pods.values()):
        pod["metadata"]["resourceVersion"] = str(1300 + i)
    cache = TranslationCache()
    first = translate(state, cache=cache).manifest
    assert ("shop", "web") in cache.services  # every version known: cached
    assert first.services == translate(state).manifest.services
    # A pod turns unmeshed and a slice loses an endpoint: new resourceVersions.
    pod = copy.deepcopy(state.pods[("shop", "web-5d8f9-abcde")])
    pod["metadata"]["annotations"] = {}
    pod["metadata"]["resourceVersion"] = "2001"
    state.pods[("shop", "web-5d8f9-abcde")] = pod
    slice_ = copy.deepcopy(state.endpoint_slices[("shop", "web-x7k2p")])
    del slice_["endpoints"][2]
    slice_["metadata"]["resourceVersion"] = "2002"
    state.endpoint_slices[("shop", "web-x7k2p")] = slice_
    second = translate(state, cache=cache).manifest
    assert second.services == translate(state).manifest.services
    spec = lookup(second, f"{FQDN}:80")
    assert spec is not None
    assert [(ep.address, ep.identity) for ep in spec.endpoints] == [(("10.244.1.5", 8080), None)]
