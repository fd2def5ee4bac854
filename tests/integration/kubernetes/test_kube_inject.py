"""The injection webhook against a real kube-apiserver (1.20.2).

The MutatingWebhookConfiguration is `tulle install`'s, with `clientConfig.url`
pointing at the control plane's loopback HTTPS webhook instead of the
Service (nothing here runs pods or a Service proxy). The API server calls it
for real: it verifies the webhook's certificate against the `caBundle` (the
trust bundle), sends AdmissionReview v1 and applies the JSONPatch.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid

import pytest
from kube_cluster import ApiError, Cluster
from kube_injector import (
    IMAGE,
    Injector,
    annotated_namespace,
    create_pod,
    injected,
    wait_until_called,
)
from support.ports import LOOPBACK
from support.process import http_status

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]


def test_api_server_injects_through_the_webhook_and_opt_outs_hold(
    cluster: Cluster, injector: Injector
) -> None:
    ns = annotated_namespace(cluster, "inject")
    plain = cluster.namespace(f"plain-{uuid.uuid4().hex[:6]}")
    injector.configure("Ignore")
    wait_until_called(cluster, ns)

    pod = create_pod(cluster, ns, "web")
    spec = pod["spec"]
    # 1.20 has no native sidecars: the proxy is the first container, awaited.
    assert [c["name"] for c in spec["initContainers"]] == ["tulle-init"]
    assert [c["name"] for c in spec["containers"]] == ["tulle-proxy", "app"]
    proxy = spec["containers"][0]
    assert proxy["image"] == IMAGE
    assert proxy["securityContext"]["runAsUser"] == 2102
    assert proxy["lifecycle"]["postStart"]["exec"]["command"][:2] == ["tulle", "proxy-await"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    token = volumes["tulle-identity-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "identity.tulle.io"
    init = spec["initContainers"][0]
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["tulle.io/meshed"] == "true"
    assert annotations["tulle.io/proxy-admin-port"] == "4191"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["TULLE_PROXY_TRUST_ANCHORS"] == injector.bundle.decode()

    # Opted out by annotation, by label (never sent), or in a plain namespace: untouched.
    out = create_pod(cluster, ns, "out", {"tulle.io/inject": "disabled"})
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    assert "initContainers" not in out["spec"]
    labelled = cluster.create(
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {"name": "labelled", "labels": {"tulle.io/inject": "disabled"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        },
    )
    assert not injected(labelled)
    assert not injected(create_pod(cluster, plain, "web"))
    # ... but a pod can ask for itself in a plain namespace.
    assert injected(create_pod(cluster, plain, "asks", {"tulle.io/inject": "enabled"}))

    # A pod whose own annotations cannot be used is refused, with the reason.
    with pytest.raises(ApiError) as refused:
        create_pod(cluster, ns, "bad", {"tulle.io/skip-inbound-ports": "http"})
    assert "tulle injection" in str(refused.value) and "port" in str(refused.value)


def webhook_request(port: int, bundle: bytes, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    context = ssl.create_default_context(cadata=bundle.decode())
    with (
        socket.create_connection((LOOPBACK, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(head + body)
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read()


def test_hostile_requests_get_clear_errors_and_the_control_plane_stays_up(
    cluster: Cluster, injector: Injector
) -> None:
    port, bundle = injector.port, injector.bundle
    status, text = webhook_request(
        port,
        bundle,
        b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
    )
    assert status == 413 and b"over" in text
    junk = b"{not json"
    status, text = webhook_request(
        port,
        bundle,
        b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(junk),
        junk,
    )
    assert status == 400 and b"not JSON" in text
    wrong = json.dumps({"kind": "Pod", "apiVersion": "v1"}).encode()
    status, text = webhook_request(
        port,
        bundle,
        b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(wrong),
        wrong,
    )
    assert status == 400 and b"not an AdmissionReview" in text
    status, _ = webhook_request(port, bundle, b"POST /inject HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411
    status, _ = webhook_request(port, bundle, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    status, _ = webhook_request(port, bundle, b"POST /inject HTTP/1.1\r\n" + b"X: y\r\n" * 4000)
    assert status == 431
    # Plain bytes on the TLS port, and a client that vanishes mid-body.
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        try:
            answer = raw.recv(1024)  # a TLS alert at most, then the close
            assert not answer.startswith(b"HTTP/")
        except ConnectionResetError:
            pass
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        context = ssl.create_default_context(cadata=bundle.decode())
        with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            tls.sendall(b"POST /inject HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    assert injector.replica.process.alive()
    assert http_status(LOOPBACK, injector.replica.admin_port, "/ready") == 200
    # And it still answers a real review.
    ns = annotated_namespace(cluster, "hostile")
    injector.configure("Ignore")
    wait_until_called(cluster, ns)


def test_failure_policy_when_the_control_plane_is_down(
    cluster: Cluster, injector: Injector
) -> None:
    ns = annotated_namespace(cluster, "down")
    injector.configure("Ignore")
    wait_until_called(cluster, ns)
    injector.replica.process.stop()
    # Ignore (the default): the pod is created, without a proxy.
    pod = create_pod(cluster, ns, "while-down")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]

    # Fail: the pod is refused, and the message names the webhook.
    injector.configure("Fail")

    def refused() -> str | None:
        name = f"refused-{uuid.uuid4().hex[:6]}"
        try:
            create_pod(cluster, ns, name)
        except ApiError as exc:
            return str(exc)
        cluster.delete(f"/api/v1/namespaces/{ns}/pods/{name}", grace_s=0)
        return None

    message = cluster.wait_for(refused, "a refusal under failurePolicy Fail", timeout=30)
    assert "inject.tulle.io" in message
