"""What `tulle install` prints: every object the control plane needs in a cluster (pure).

The objects, in the order `kubectl apply` needs them:

- the CRDs: Tulle's (`tulle.io` ServiceProfile; `policy.tulle.io` Server,
  MeshTLSAuthentication, NetworkAuthentication, AuthorizationPolicy) and,
  unless the cluster already has them, Gateway API's HTTPRoute and GRPCRoute;
- the namespace, the control plane's ServiceAccount and least-privilege RBAC:
  read-only (get/list/watch) on exactly the kinds it watches, and `create` on
  TokenReviews; nothing else, not even Secrets (the issuer reaches the
  control plane as a mounted volume, so the API never hands it out);
- the identity material: the issuer's key and certificate (and the join-token
  secret) in a Secret, the trust bundle in a ConfigMap, projected together
  into the directory `--identity-dir` reads. Replicas share them; replacing
  them rotates the issuer without a restart (the kubelet swaps the files
  atomically and the store notices);
- the Deployment (3 replicas, spread over nodes, readiness and liveness
  probes on the admin port, non-root, read-only root filesystem), its
  PodDisruptionBudget (at most one replica down by choice), and Services: one
  ClusterIP Service and one headless Service that gives proxies the address
  of every replica, so that they can fail over between them. The gRPC API
  is TLS with each replica's own leaf (DNS names `tulle-control.<ns>.svc`
  and its cluster-domain form); proxies verify it with the trust bundle of
  the ConfigMap (`--trust-anchors`, `--control-name`);
- the MutatingWebhookConfiguration of the sidecar injector, which the
  control plane serves on its `webhook` port (HTTPS with the same leaf,
  verified with the trust bundle as `caBundle`). Its failure policy is
  `Ignore` unless asked otherwise (docs/kubernetes.md, "Injection", says
  why), and its selectors keep it away from the control plane's namespace,
  the Kubernetes system namespaces, and pods labelled `tulle.io/inject:
  disabled`.

CRD schemas keep unknown fields: the control plane validates every object
itself and reports what it ignores, as Linkerd's policy controller does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulle import __version__
from tulle.control.kubernetes.client import Resource
from tulle.control.kubernetes.source import (
    AUTHORIZATION_POLICIES,
    DISCOVERY_GROUP,
    GRPC_ROUTES,
    HTTP_ROUTES,
    MESH_TLS_AUTHENTICATIONS,
    NETWORK_AUTHENTICATIONS,
    SERVERS,
    SERVICE_PROFILES,
    watched_kinds,
)

Obj = dict[str, Any]

GATEWAY_APPROVAL = "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
IDENTITY_MOUNT = "/var/run/tulle/identity"
GRPC_PORT = 8086
HTTP_PORT = 8084
ADMIN_PORT = 9990
WEBHOOK_PORT = 8443
WEBHOOK_NAME = "tulle-proxy-injector"
WEBHOOK_PATH = "/inject"
WEBHOOK_TIMEOUT_S = 10
# A namespace labelled so is never sent to the webhook (the control plane's own is).
WEBHOOK_NAMESPACE_LABEL = "tulle.io/admission-webhooks"
FAILURE_POLICIES = ("Ignore", "Fail")
ISSUER_SECRET = "tulle-identity-issuer"
TRUST_CONFIGMAP = "tulle-identity-trust-roots"
CONTROL = "tulle-control"
RUN_AS = 65532
DEFAULT_IMAGE = f"ghcr.io/tulle-mesh/tulle:{__version__}"


@dataclass(frozen=True, slots=True)
class InstallOptions:
    namespace: str = "tulle"
    image: str = DEFAULT_IMAGE
    replicas: int = 3
    trust_domain: str = "cluster.local"
    cluster_domain: str = "cluster.local"
    token_audience: str = "identity.tulle.io"
    # policy/v1 (Kubernetes 1.21+) or policy/v1beta1 (1.20 and older).
    pdb_api: str = "policy/v1"
    gateway_api_crds: bool = True
    # The injection webhook: what the API server does when it cannot reach it
    # ("Ignore": the pod is created without a proxy; "Fail": it is refused).
    webhook_failure_policy: str = "Ignore"
    # "auto" (from the API server's version), "true" or "false".
    native_sidecar: str = "auto"


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """The issuer directory's serving files (`tulle identity init`), as bytes."""

    identity_json: bytes
    bundle_pem: bytes
    issuer_crt: bytes
    issuer_key: bytes
    token_secret: bytes


def _crd(
    resource: Resource,
    kind: str,
    short: tuple[str, ...] = (),
    annotations: dict[str, str] | None = None,
) -> Obj:
    group, plural = resource.group, resource.plural
    schema = {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    }
    metadata: Obj = {"name": f"{plural}.{group}", "labels": {"app.kubernetes.io/part-of": "tulle"}}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                **({"shortNames": list(short)} if short else {}),
            },
            "versions": [
                {
                    "name": resource.version,
                    "served": True,
                    "storage": True,
                    "schema": schema,
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def crds(options: InstallOptions) -> list[Obj]:
    result = [
        _crd(SERVICE_PROFILES, "ServiceProfile", ("sp",)),
        _crd(SERVERS, "Server", ("srv",)),
        _crd(MESH_TLS_AUTHENTICATIONS, "MeshTLSAuthentication"),
        _crd(NETWORK_AUTHENTICATIONS, "NetworkAuthentication"),
        _crd(AUTHORIZATION_POLICIES, "AuthorizationPolicy"),
    ]
    if options.gateway_api_crds:
        approval = {"api-approved.kubernetes.io": GATEWAY_APPROVAL}
        for resource, kind in ((HTTP_ROUTES, "HTTPRoute"), (GRPC_ROUTES, "GRPCRoute")):
            result.append(_crd(resource, kind, annotations=approval))
    return result


def _labels(component: str = "control") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": CONTROL,
        "app.kubernetes.io/part-of": "tulle",
        "app.kubernetes.io/component": component,
    }


def rbac(options: InstallOptions) -> list[Obj]:
    # Read-only on exactly what the source watches (either EndpointSlice version).
    plurals: dict[str, list[str]] = {}
    for resource in watched_kinds(Resource(DISCOVERY_GROUP, "v1", "endpointslices")).values():
        plurals.setdefault(resource.group, []).append(resource.plural)
    read = ["get", "list", "watch"]
    rules: list[Obj] = [
        {"apiGroups": [group], "resources": resources, "verbs": read}
        for group, resources in plurals.items()
    ]
    # The webhook reads a pod's namespace for its tulle.io/inject annotation.
    rules.append({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]})
    rules.append(
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        }
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": CONTROL, "namespace": options.namespace, "labels": _labels()},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CONTROL, "labels": _labels()},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CONTROL, "labels": _labels()},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CONTROL,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": CONTROL, "namespace": options.namespace}
            ],
        },
    ]


def identity_objects(options: InstallOptions, files: IdentityFiles) -> list[Obj]:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": ISSUER_SECRET,
                "namespace": options.namespace,
                "labels": _labels("identity"),
            },
            "data": {
                "issuer.crt": b64(files.issuer_crt),
                "issuer.key": b64(files.issuer_key),
                "token.secret": b64(files.token_secret),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": TRUST_CONFIGMAP,
                "namespace": options.namespace,
                "labels": _labels("identity"),
            },
            "data": {
                "bundle.pem": files.bundle_pem.decode(),
                "identity.json": files.identity_json.decode(),
            },
        },
    ]


def control_plane(options: InstallOptions) -> list[Obj]:
    ns = options.namespace
    selector = {"app.kubernetes.io/name": CONTROL}
    probe = {
        "httpGet": {"path": "/ready", "port": "admin"},
        "periodSeconds": 5,
        "failureThreshold": 2,
    }
    container = {
        "name": "control",
        "image": options.image,
        "args": [
            "control",
            "--source",
            "kubernetes",
            "--grpc-addr",
            f"0.0.0.0:{GRPC_PORT}",
            "--admin-addr",
            f"0.0.0.0:{ADMIN_PORT}",
            "--http-addr",
            f"0.0.0.0:{HTTP_PORT}",
            "--identity-dir",
            IDENTITY_MOUNT,
            "--trust-domain",
            options.trust_domain,
            "--cluster-domain",
            options.cluster_domain,
            "--token-audience",
            options.token_audience,
            # The gRPC API's TLS certificate names the Service; proxies check
            # the first name (their --control-name) whichever replica they dial.
            "--grpc-tls-name",
            f"{CONTROL}.{options.namespace}.svc",
            "--grpc-tls-name",
            f"{CONTROL}.{options.namespace}.svc.{options.cluster_domain}",
            "--grpc-tls-name",
            "localhost",
            "--webhook-addr",
            f"0.0.0.0:{WEBHOOK_PORT}",
            "--proxy-image",
            options.image,
            "--control-namespace",
            options.namespace,
            "--native-sidecar",
            options.native_sidecar,
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "admin", "containerPort": ADMIN_PORT},
        ],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": "admin"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "identity", "mountPath": IDENTITY_MOUNT, "readOnly": True}],
    }
    pod = {
        "metadata": {"labels": {**_labels(), **selector}},
        "spec": {
            "serviceAccountName": CONTROL,
            "securityContext": {"fsGroup": RUN_AS},
            "containers": [container],
            "volumes": [
                {
                    "name": "identity",
                    "projected": {
                        "defaultMode": 0o440,
                        "sources": [
                            {"secret": {"name": ISSUER_SECRET}},
                            {"configMap": {"name": TRUST_CONFIGMAP}},
                        ],
                    },
                }
            ],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": selector},
                            },
                        }
                    ]
                }
            },
            "terminationGracePeriodSeconds": 30,
        },
    }
    ports = [
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
        {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
        {"name": "admin", "port": ADMIN_PORT, "targetPort": "admin"},
        {"name": "webhook", "port": 443, "targetPort": "webhook"},
    ]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": CONTROL, "namespace": ns, "labels": _labels()},
            "spec": {
                "replicas": options.replicas,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1},
                },
                "template": pod,
            },
        },
        {
            "apiVersion": options.pdb_api,
            "kind": "PodDisruptionBudget",
            "metadata": {"name": CONTROL, "namespace": ns, "labels": _labels()},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": CONTROL, "namespace": ns, "labels": _labels()},
            "spec": {"selector": selector, "ports": ports},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{CONTROL}-headless", "namespace": ns, "labels": _labels()},
            "spec": {"clusterIP": "None", "selector": selector, "ports": ports[:1]},
        },
    ]


def webhook_configuration(
    options: InstallOptions, ca_bundle_pem: bytes, client_config: Obj | None = None
) -> Obj:
    """The MutatingWebhookConfiguration; `client_config` replaces the Service reference
    (the tests point it at a loopback `url`)."""
    import base64

    if options.webhook_failure_policy not in FAILURE_POLICIES:
        raise ValueError(f"failure policy: expected one of {', '.join(FAILURE_POLICIES)}")
    never = [options.namespace, "kube-system", "kube-public", "kube-node-lease"]
    config = client_config or {
        "service": {
            "name": CONTROL,
            "namespace": options.namespace,
            "path": WEBHOOK_PATH,
            "port": 443,
        }
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_NAME, "labels": _labels("injector")},
        "webhooks": [
            {
                "name": "inject.tulle.io",
                "clientConfig": {
                    **config,
                    "caBundle": base64.b64encode(ca_bundle_pem).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": options.webhook_failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": WEBHOOK_TIMEOUT_S,
                "reinvocationPolicy": "Never",
                # kubernetes.io/metadata.name is set from Kubernetes 1.21 on; on
                # older servers the label keeps the control plane's namespace
                # out, and the webhook itself never injects the system ones.
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": WEBHOOK_NAMESPACE_LABEL,
                            "operator": "NotIn",
                            "values": ["disabled"],
                        },
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": never,
                        },
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": "tulle.io/inject", "operator": "NotIn", "values": ["disabled"]}
                    ]
                },
            }
        ],
    }


def install_objects(options: InstallOptions, files: IdentityFiles) -> list[Obj]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": options.namespace,
            "labels": {"app.kubernetes.io/part-of": "tulle", WEBHOOK_NAMESPACE_LABEL: "disabled"},
        },
    }
    return [
        *crds(options),
        namespace,
        *rbac(options),
        *identity_objects(options, files),
        *control_plane(options),
        webhook_configuration(options, files.bundle_pem),
    ]


def uninstall_objects(options: InstallOptions) -> list[Obj]:
    """What `kubectl delete -f -` needs: each object's kind and name, dependents first.

    The CRDs go last, which deletes every Tulle resource in the cluster; the
    Gateway API CRDs are left alone unless Tulle installed them.
    """
    dummy = IdentityFiles(b"", b"", b"", b"", b"")
    objects = install_objects(options, dummy)
    keep = ("apiVersion", "kind")
    result = []
    for obj in reversed(objects):
        metadata = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace")}
        result.append({**{k: obj[k] for k in keep}, "metadata": metadata})
    return result
