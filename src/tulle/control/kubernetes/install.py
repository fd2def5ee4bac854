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
  the ConfigMap (`--trust-anchors`, `--control-name`).

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
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
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


def install_objects(options: InstallOptions, files: IdentityFiles) -> list[Obj]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": options.namespace, "labels": {"app.kubernetes.io/part-of": "tulle"}},
    }
    return [
        *crds(options),
        namespace,
        *rbac(options),
        *identity_objects(options, files),
        *control_plane(options),
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
