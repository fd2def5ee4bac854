"""`tulle install` objects: what the cluster gets, checked without a cluster."""

from __future__ import annotations

import base64

from tulle.control.kubernetes.install import (
    IdentityFiles,
    InstallOptions,
    install_objects,
    uninstall_objects,
)
from tulle.control.kubernetes.tokens import looks_like_jwt

FILES = IdentityFiles(b'{"trust_domain": "td"}', b"BUNDLE", b"CRT", b"KEY", b"SECRET")


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_rbac_is_read_only_except_token_reviews_and_never_secrets() -> None:
    objects = install_objects(InstallOptions(), FILES)
    (role,) = by_kind(objects, "ClusterRole")
    assert not by_kind(objects, "Role")
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["resources"] and "*" not in rule["verbs"]
        if rule["resources"] == ["tokenreviews"]:
            assert rule["verbs"] == ["create"]
        elif rule["resources"] == ["namespaces"]:
            assert rule["verbs"] == ["get"]  # the webhook reads the namespace's annotation
        else:
            assert rule["verbs"] == ["get", "list", "watch"]


def test_deployment_pdb_probes_and_identity_volume() -> None:
    objects = install_objects(InstallOptions(namespace="mesh", pdb_api="policy/v1beta1"), FILES)
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == "mesh"
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["securityContext"]["runAsNonRoot"] is True
    args = container["args"]
    assert args[args.index("--identity-dir") + 1] == container["volumeMounts"][0]["mountPath"]
    # The gRPC API is TLS (it has the issuer) and its certificate names the Service.
    assert "--grpc-plaintext" not in args
    names = [args[i + 1] for i, arg in enumerate(args) if arg == "--grpc-tls-name"]
    assert names[0] == "tulle-control.mesh.svc"
    sources = pod["volumes"][0]["projected"]["sources"]
    (secret,) = by_kind(objects, "Secret")
    (config_map,) = by_kind(objects, "ConfigMap")
    assert {"secret": {"name": secret["metadata"]["name"]}} in sources
    assert {"configMap": {"name": config_map["metadata"]["name"]}} in sources
    # The files the issuer directory reads, under their names.
    assert base64.b64decode(secret["data"]["issuer.key"]) == b"KEY"
    assert set(secret["data"]) | set(config_map["data"]) == {
        "issuer.crt",
        "issuer.key",
        "token.secret",
        "bundle.pem",
        "identity.json",
    }
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1beta1" and pdb["spec"]["maxUnavailable"] == 1


def test_crds_first_namespace_before_namespaced_objects_and_uninstall_reverses() -> None:
    objects = install_objects(InstallOptions(), FILES)
    kinds = [o["kind"] for o in objects]
    namespace_at = kinds.index("Namespace")
    assert all(k == "CustomResourceDefinition" for k in kinds[:namespace_at])
    gateway = [o for o in objects if o["metadata"]["name"].endswith("gateway.networking.k8s.io")]
    assert {o["spec"]["names"]["kind"] for o in gateway} == {"HTTPRoute", "GRPCRoute"}
    for crd in gateway:
        assert crd["metadata"]["annotations"]["api-approved.kubernetes.io"]
    without = install_objects(InstallOptions(gateway_api_crds=False), FILES)
    assert len(without) == len(objects) - 2
    removal = uninstall_objects(InstallOptions())
    assert [o["kind"] for o in removal] == kinds[::-1]
    assert all(set(o) == {"apiVersion", "kind", "metadata"} for o in removal)


def test_only_jwt_shaped_tokens_go_to_a_token_review() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"x"}').rstrip(b"=").decode()
    assert looks_like_jwt(f"{header}.eyJzdWIiOiJ4In0.c2ln")
    assert not looks_like_jwt("v1.abc.def")  # a join token's shape
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt(f"{header}..sig")
    assert not looks_like_jwt("x" * 20000)


def test_join_tokens_are_not_taken_for_kubernetes_tokens() -> None:
    from tulle.identity.tokens import make_token, new_secret

    token = make_token(new_secret(), "spiffe://td/ns/a/sa/b", now=0.0, ttl_s=60)
    assert not looks_like_jwt(token)


def test_webhook_configuration_selects_pods_and_keeps_out_of_the_control_plane() -> None:
    objects = install_objects(InstallOptions(namespace="mesh"), FILES)
    (config,) = by_kind(objects, "MutatingWebhookConfiguration")
    assert objects[-1] is config  # after the Deployment and Service it calls
    (webhook,) = config["webhooks"]
    assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == b"BUNDLE"
    assert webhook["clientConfig"]["service"] == {
        "name": "tulle-control",
        "namespace": "mesh",
        "path": "/inject",
        "port": 443,
    }
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert 1 <= webhook["timeoutSeconds"] <= 30
    assert webhook["rules"][0]["resources"] == ["pods"]
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    expressions = webhook["namespaceSelector"]["matchExpressions"]
    assert {"key": "tulle.io/admission-webhooks", "operator": "NotIn", "values": ["disabled"]} in (
        expressions
    )
    (names,) = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name"]
    assert {"mesh", "kube-system"} <= set(names["values"])
    (namespace,) = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["tulle.io/admission-webhooks"] == "disabled"
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--webhook-addr") + 1] == "0.0.0.0:8443"
    services = by_kind(objects, "Service")
    (service,) = [s for s in services if s["metadata"]["name"] == "tulle-control"]
    assert {"name": "webhook", "port": 443, "targetPort": "webhook"} in service["spec"]["ports"]
    failing = install_objects(InstallOptions(webhook_failure_policy="Fail"), FILES)
    assert by_kind(failing, "MutatingWebhookConfiguration")[0]["webhooks"][0]["failurePolicy"] == (
        "Fail"
    )
