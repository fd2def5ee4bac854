"""Sidecar injection (`tulle.k8s.inject`): the decision and the exact spec, without a cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tulle.k8s.inject import (
    ADMIN_PORT_ANNOTATION,
    INIT_CONTAINER,
    MESHED,
    PROXY_CONTAINER,
    TOKEN_VOLUME,
    InjectConfig,
    InjectError,
    inject_pod,
    native_sidecar_supported,
)

CONFIG = InjectConfig(image="tulle:test", trust_anchors_pem="-----BEGIN CERTIFICATE-----\nX\n")


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{"name": "web", "image": "app", "ports": [{"containerPort": 8080}]}],
            **spec,
        },
    }


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_pod_annotation_or_namespace_annotation_decides() -> None:
    enabled = {"tulle.io/inject": "enabled"}
    assert inject_pod(pod(enabled), CONFIG, namespace="shop").decision.inject
    by_namespace = inject_pod(pod(), CONFIG, namespace="shop", namespace_annotations=enabled)
    assert by_namespace.decision.inject
    assert not inject_pod(pod(), CONFIG, namespace="shop").decision.inject
    opted_out = inject_pod(
        pod({"tulle.io/inject": "disabled"}),
        CONFIG,
        namespace="shop",
        namespace_annotations=enabled,
    )
    assert not opted_out.decision.inject
    assert "disabled" in opted_out.decision.reason
    # Never: the system namespaces, the control plane's own, host-network pods.
    for namespace in ("kube-system", "tulle"):
        assert not inject_pod(pod(enabled), CONFIG, namespace=namespace).decision.inject
    assert not inject_pod(pod(enabled, hostNetwork=True), CONFIG, namespace="a").decision.inject
    # `tulle inject` asks explicitly; only the pod's own opt-out stops it.
    assert inject_pod(pod(), CONFIG, namespace="shop", explicit=True).decision.inject
    assert not inject_pod(
        pod({"tulle.io/inject": "disabled"}), CONFIG, explicit=True
    ).decision.inject


def test_not_injected_pod_is_returned_unchanged_and_input_never_mutated() -> None:
    original = pod({"tulle.io/inject": "enabled"})
    before = copy.deepcopy(original)
    skipped = inject_pod(pod(), CONFIG, namespace="shop")
    assert skipped.pod == pod()
    result = inject_pod(original, CONFIG, namespace="shop")
    assert original == before
    assert result.pod != before


def test_container_mode_puts_the_proxy_first_with_an_await_hook() -> None:
    result = inject_pod(pod({"tulle.io/inject": "enabled"}), CONFIG, namespace="shop").pod
    spec = result["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [INIT_CONTAINER]
    assert [c["name"] for c in spec["containers"]] == [PROXY_CONTAINER, "web"]
    proxy = spec["containers"][0]
    assert "restartPolicy" not in proxy
    hook = proxy["lifecycle"]["postStart"]["exec"]["command"]
    assert hook[:4] == ["tulle", "proxy-await", "--admin-port", "4191"]
    annotations = result["metadata"]["annotations"]
    assert annotations[MESHED] == "true"
    assert annotations[ADMIN_PORT_ANNOTATION] == "4191"
    assert annotations["kubectl.kubernetes.io/default-container"] == "web"


def test_native_mode_makes_the_proxy_an_init_container_that_always_restarts() -> None:
    config = InjectConfig(image="tulle:test", native_sidecar=True)
    spec = inject_pod(
        pod({"tulle.io/inject": "enabled"}, initContainers=[{"name": "migrate", "image": "m"}]),
        config,
        namespace="shop",
    ).pod["spec"]
    names = [c["name"] for c in spec["initContainers"]]
    # Rules first, then the proxy (ready before the app's own init containers run).
    assert names == [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    proxy = spec["initContainers"][1]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert "lifecycle" not in proxy
    assert [c["name"] for c in spec["containers"]] == ["web"]
    # The annotation overrides the cluster's default, both ways.
    off = {"tulle.io/inject": "enabled", "tulle.io/native-sidecar": "false"}
    spec = inject_pod(pod(off), config, namespace="shop").pod["spec"]
    assert spec["containers"][0]["name"] == PROXY_CONTAINER


def test_native_sidecar_from_the_api_server_version() -> None:
    assert native_sidecar_supported("1", "29")
    assert native_sidecar_supported("1", "30+")
    assert not native_sidecar_supported("1", "28")
    assert not native_sidecar_supported("1", "20")
    assert not native_sidecar_supported("", "")


def test_security_contexts_identity_and_probes() -> None:
    spec = inject_pod(pod({"tulle.io/inject": "enabled"}), CONFIG, namespace="shop").pod["spec"]
    init = spec["initContainers"][0]
    assert init["securityContext"]["capabilities"] == {
        "add": ["NET_ADMIN", "NET_RAW"],
        "drop": ["ALL"],
    }
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["args"][:2] == ["init", "--proxy-uid"]
    proxy = spec["containers"][0]
    security = proxy["securityContext"]
    # The uid tulle init excludes from capture.
    assert security["runAsUser"] == 2102 and init["args"][2] == "2102"
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"]
    values = env(proxy)
    assert values["TULLE_PROXY_IDENTITY"] == (
        "spiffe://cluster.local/ns/$(_TULLE_POD_NAMESPACE)/sa/$(_TULLE_POD_SA)"
    )
    assert values["TULLE_PROXY_IDENTITY_TOKEN_FILE"] == "/var/run/tulle/identity-token/token"
    assert values["TULLE_PROXY_TRUST_ANCHORS"].startswith("-----BEGIN CERTIFICATE-----")
    assert values["TULLE_PROXY_APP_ADDR"] == "127.0.0.1:8080"
    assert values["TULLE_PROXY_ADMIN_ADDR"] == "0.0.0.0:4191"
    # Environment references must come after what they refer to.
    names = [e["name"] for e in proxy["env"]]
    assert names.index("_TULLE_POD_SA") < names.index("TULLE_PROXY_IDENTITY")
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/live", "port": 4191}
    (token,) = [v for v in spec["volumes"] if v["name"] == TOKEN_VOLUME]
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "identity.tulle.io"
    assert proxy["volumeMounts"][0]["name"] == TOKEN_VOLUME


def test_annotations_set_skips_resources_and_admin_port() -> None:
    annotations = {
        "tulle.io/inject": "enabled",
        "tulle.io/skip-inbound-ports": "22, 9000-9100",
        "tulle.io/skip-outbound-ports": "443",
        "tulle.io/skip-subnets": "10.96.0.0/12",
        "tulle.io/proxy-cpu-request": "250m",
        "tulle.io/proxy-memory-limit": "1Gi",
        ADMIN_PORT_ANNOTATION: "4999",
    }
    spec = inject_pod(pod(annotations), CONFIG, namespace="shop").pod["spec"]
    args = spec["initContainers"][0]["args"]
    assert args[args.index("--inbound-ports-to-ignore") + 1] == "22,9000-9100"
    assert args[args.index("--outbound-ports-to-ignore") + 1] == "443"
    assert args[args.index("--subnets-to-ignore") + 1] == "10.96.0.0/12"
    assert args[args.index("--admin-port") + 1] == "4999"
    proxy = spec["containers"][0]
    assert proxy["resources"]["requests"]["cpu"] == "250m"
    assert proxy["resources"]["limits"]["memory"] == "1Gi"
    assert proxy["readinessProbe"]["httpGet"]["port"] == 4999
    assert env(proxy)["TULLE_PROXY_ADMIN_ADDR"] == "0.0.0.0:4999"


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("tulle.io/skip-inbound-ports", "http", "port"),
        ("tulle.io/skip-subnets", "10.0.0.0/33", "10.0.0.0/33"),
        ("tulle.io/proxy-cpu-request", "lots", "quantity"),
        (ADMIN_PORT_ANNOTATION, "70000", "not a port"),
        ("tulle.io/native-sidecar", "yes", "true"),
    ],
)
def test_unusable_annotations_are_refused_with_a_reason(key: str, value: str, says: str) -> None:
    with pytest.raises(InjectError, match=says):
        inject_pod(pod({"tulle.io/inject": "enabled", key: value}), CONFIG, namespace="shop")


@pytest.mark.parametrize(
    "bad",
    [
        {"metadata": [], "spec": {}},
        {"metadata": {"annotations": {"tulle.io/inject": "enabled"}}, "spec": {"containers": 3}},
        {"metadata": {"annotations": {"tulle.io/inject": "enabled"}}},
        {"metadata": {"annotations": {"tulle.io/inject": "enabled"}}, "spec": "x"},
    ],
)
def test_malformed_pods_raise_inject_error_only(bad: dict[str, Any]) -> None:
    with pytest.raises(InjectError):
        inject_pod(bad, CONFIG, namespace="shop")


def test_injecting_twice_changes_nothing() -> None:
    once = inject_pod(pod({"tulle.io/inject": "enabled"}), CONFIG, namespace="shop").pod
    twice = inject_pod(once, CONFIG, namespace="shop")
    assert not twice.decision.inject and twice.decision.reason == "already injected"
    assert twice.pod == once


def test_odd_shapes_the_api_server_would_refuse_do_not_raise_anything_else() -> None:
    odd = pod({"tulle.io/inject": "enabled"})
    odd["spec"]["containers"][0]["ports"] = 7
    result = inject_pod(odd, CONFIG, namespace="shop")
    assert env(result.pod["spec"]["containers"][0])["TULLE_PROXY_APP_ADDR"] == "127.0.0.1:8080"
