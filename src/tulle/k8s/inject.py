"""Sidecar injection: the one function that turns a pod into a meshed pod (pure).

`inject_pod` takes a pod-shaped object (a Pod, or the `template` of a
Deployment, StatefulSet, DaemonSet, Job or CronJob: `metadata` and `spec`)
and returns a new one with:

- the init container `tulle-init`, which runs `tulle init` (the packet
  rules of docs/transparent.md) with only `NET_ADMIN` and `NET_RAW`, every
  other capability dropped;
- the proxy container `tulle-proxy`, running as uid 2102 (the uid
  `tulle init` excludes from capture), with its identity token (a projected
  ServiceAccount token for Tulle's audience, checked by the control plane
  with a TokenReview), ports, probes on the admin port and resources;
- as a **native sidecar** (an init container with `restartPolicy: Always`,
  right after `tulle-init`, with a startup probe on `/ready`) when the
  cluster has them (Kubernetes 1.29+), so the kubelet starts the app only
  once the proxy is ready, and a Job's pod finishes when its app does;
- otherwise as the **first regular container** with a `postStart` hook
  (`tulle proxy-await`) that returns once the proxy answers `/ready`: the
  kubelet starts a pod's containers in order and waits for each one's
  postStart hook, so the app starts after its proxy is ready (Linkerd's
  `proxy-await`);
- the annotations `tulle.io/meshed: "true"` (the control plane then gives the
  pod's endpoints their identity), `tulle.io/proxy-admin-port` (where
  `tulle stat` finds the proxy's metrics) and `tulle.io/proxy-version`.

Both the admission webhook (`tulle.control.webhook`) and `tulle inject`
(offline, on YAML) call it: they differ only in where the decision's inputs
come from. The exact spec is written out in docs/transparent.md.

Nothing here touches a network or a clock: the inputs are the pod, the
namespace's annotations and an `InjectConfig`; the unit tests cover it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tulle import __version__
from tulle.net.capture import (
    ADMIN_PORT,
    INBOUND_PORT,
    IPV4,
    OUTBOUND_PORT,
    PROXY_UID,
    CaptureError,
    CaptureSettings,
    build,
)

Obj = dict[str, Any]

# -- annotations (docs/transparent.md, "Annotations") -----------------------------------
INJECT = "tulle.io/inject"  # enabled | disabled, on the namespace or the pod
MESHED = "tulle.io/meshed"  # set by injection: the control plane gives the pod its identity
PROXY_VERSION = "tulle.io/proxy-version"  # set by injection
ADMIN_PORT_ANNOTATION = "tulle.io/proxy-admin-port"  # read, and always written
SKIP_INBOUND_PORTS = "tulle.io/skip-inbound-ports"
SKIP_OUTBOUND_PORTS = "tulle.io/skip-outbound-ports"
SKIP_SUBNETS = "tulle.io/skip-subnets"
PROXY_CPU_REQUEST = "tulle.io/proxy-cpu-request"
PROXY_CPU_LIMIT = "tulle.io/proxy-cpu-limit"
PROXY_MEMORY_REQUEST = "tulle.io/proxy-memory-request"
PROXY_MEMORY_LIMIT = "tulle.io/proxy-memory-limit"
NATIVE_SIDECAR = "tulle.io/native-sidecar"  # "true" | "false": override the cluster's default
ENABLED = "enabled"
DISABLED = "disabled"
# kubectl logs/exec pick this container by default, not the proxy put first.
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# -- names in the pod -------------------------------------------------------------------
INIT_CONTAINER = "tulle-init"
PROXY_CONTAINER = "tulle-proxy"
TOKEN_VOLUME = "tulle-identity-token"
TOKEN_DIR = "/var/run/tulle/identity-token"
TOKEN_FILE = "token"
XTABLES_VOLUME = "tulle-init-xtables-lock"
INBOUND_PORT_NAME = "tulle-inbound"
ADMIN_PORT_NAME = "tulle-admin"
# Never injected: the Kubernetes system namespaces (a mesh must not stand
# between the cluster and its own machinery).
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# The first version whose API server keeps an init container's
# `restartPolicy: Always` by default (SidecarContainers: alpha and off in 1.28,
# beta and on in 1.29).
NATIVE_SIDECAR_MIN_VERSION = (1, 29)

_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")


class InjectError(ValueError):
    """A pod that asks for injection but cannot get it (a clear message)."""


@dataclass(frozen=True, slots=True)
class ProxyResources:
    cpu_request: str = "100m"
    cpu_limit: str = ""
    memory_request: str = "64Mi"
    memory_limit: str = "256Mi"


@dataclass(frozen=True, slots=True)
class InjectConfig:
    """Where the injected proxy finds the control plane, and its defaults."""

    image: str
    # The control plane's gRPC API (Destination, Identity, Policy) as a proxy dials it.
    control_addr: str = "tulle-control.tulle.svc.cluster.local:8086"
    # The DNS name the control plane's TLS certificate must carry.
    control_name: str = "tulle-control.tulle.svc"
    control_namespace: str = "tulle"
    # The trust bundle (PEM) that verifies the control plane, given inline:
    # a pod cannot mount the control plane's ConfigMap from another namespace.
    trust_anchors_pem: str = ""
    trust_domain: str = "cluster.local"
    token_audience: str = "identity.tulle.io"
    token_expiration_s: int = 3600
    native_sidecar: bool = False
    proxy_uid: int = PROXY_UID
    inbound_port: int = INBOUND_PORT
    outbound_port: int = OUTBOUND_PORT
    admin_port: int = ADMIN_PORT
    resources: ProxyResources = ProxyResources()
    # How long the postStart hook (non-native mode) waits for the proxy.
    await_timeout_s: int = 120


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Injected:
    """What `inject_pod` did: the pod (a new object) and why."""

    pod: Obj
    decision: Decision


def native_sidecar_supported(major: str, minor: str) -> bool:
    """From the API server's /version (`minor` may read "29+" on some providers)."""
    digits = re.match(r"[0-9]+", minor)
    if not major.isdigit() or digits is None:
        return False
    return (int(major), int(digits.group(0))) >= NATIVE_SIDECAR_MIN_VERSION


def decide(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_annotations: Mapping[str, str],
    config: InjectConfig,
    explicit: bool = False,
) -> Decision:
    """Whether to inject: the pod's annotation, else the namespace's.

    `explicit` (the `tulle inject` command) means the user asked for this pod:
    only the pod's own `disabled` stops it.
    """
    metadata = _mapping(pod.get("metadata"), "metadata")
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    spec = _mapping(pod.get("spec"), "spec")
    if _already_injected(spec):
        return Decision(False, "already injected")
    pod_says = annotations.get(INJECT)
    if pod_says == DISABLED:
        return Decision(False, f"pod annotated {INJECT}: {DISABLED}")
    if spec.get("hostNetwork") is True:
        # tulle init would rewrite the node's own packet rules.
        return Decision(False, "hostNetwork pod")
    if namespace in SYSTEM_NAMESPACES or (namespace and namespace == config.control_namespace):
        return Decision(False, f"namespace {namespace} is never injected")
    if explicit:
        return Decision(True, "asked for")
    if pod_says == ENABLED:
        return Decision(True, f"pod annotated {INJECT}: {ENABLED}")
    if pod_says is not None:
        return Decision(False, f"pod annotation {INJECT}: {pod_says!r} is not {ENABLED!r}")
    if namespace_annotations.get(INJECT) == ENABLED:
        return Decision(True, f"namespace annotated {INJECT}: {ENABLED}")
    return Decision(False, f"neither the pod nor its namespace is annotated {INJECT}: {ENABLED}")


def inject_pod(
    pod: Mapping[str, Any],
    config: InjectConfig,
    *,
    namespace: str = "",
    namespace_annotations: Mapping[str, str] | None = None,
    explicit: bool = False,
) -> Injected:
    """The pod with Tulle's init container and proxy, or unchanged with the reason.

    Raises InjectError for a pod that should be injected but whose spec or
    `tulle.io/` annotations cannot be used.
    """
    decision = decide(
        pod,
        namespace=namespace,
        namespace_annotations=namespace_annotations or {},
        config=config,
        explicit=explicit,
    )
    if not decision.inject:
        return Injected(copy.deepcopy(dict(pod)), decision)
    result: Obj = copy.deepcopy(dict(pod))
    metadata: Obj = result.setdefault("metadata", {})
    annotations: Obj = dict(metadata.get("annotations") or {})
    spec: Obj = result.setdefault("spec", {})
    containers = _containers(spec, "containers")
    init_containers = _containers(spec, "initContainers")
    if not containers:
        raise InjectError("spec.containers: a pod needs at least one container")
    settings = _settings(config, annotations)
    # The projected token needs a named account. The ServiceAccount admission
    # plugin names "default" before webhooks run; where it is off (or for a
    # template, offline) say so here, as it would.
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
    native = _flag(annotations, NATIVE_SIDECAR, config.native_sidecar)
    proxy = _proxy_container(settings, _app_port(containers), native=native)
    init = _init_container(settings)
    if native:
        spec["initContainers"] = [init, proxy, *init_containers]
    else:
        spec["initContainers"] = [init, *init_containers]
        spec["containers"] = [proxy, *containers]
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        raise InjectError("spec.volumes: expected a list")
    spec["volumes"] = [*volumes, *_volumes(settings)]
    annotations[MESHED] = "true"
    name = containers[0].get("name")
    if isinstance(name, str) and name:
        annotations.setdefault(DEFAULT_CONTAINER, name)
    annotations[ADMIN_PORT_ANNOTATION] = str(settings.config.admin_port)
    annotations[PROXY_VERSION] = __version__
    metadata["annotations"] = annotations
    return Injected(result, decision)


# -- the parts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    """The config with the pod's annotations applied."""

    config: InjectConfig
    capture: CaptureSettings
    resources: ProxyResources


def _settings(config: InjectConfig, annotations: Mapping[str, Any]) -> _Settings:
    admin_port = config.admin_port
    if ADMIN_PORT_ANNOTATION in annotations:
        admin_port = _port(annotations[ADMIN_PORT_ANNOTATION], ADMIN_PORT_ANNOTATION)
    config = _replace_admin_port(config, admin_port)
    capture = CaptureSettings(
        proxy_uid=config.proxy_uid,
        inbound_port=config.inbound_port,
        outbound_port=config.outbound_port,
        admin_port=admin_port,
        inbound_ports_to_ignore=_list(annotations, SKIP_INBOUND_PORTS),
        outbound_ports_to_ignore=_list(annotations, SKIP_OUTBOUND_PORTS),
        subnets_to_ignore=_list(annotations, SKIP_SUBNETS),
    )
    try:
        build(capture, IPV4)  # the same checks `tulle init` will make, now, with a clear message
    except CaptureError as exc:
        raise InjectError(f"tulle.io/ annotations: {exc}") from None
    defaults = config.resources
    resources = ProxyResources(
        cpu_request=_quantity(annotations, PROXY_CPU_REQUEST, defaults.cpu_request),
        cpu_limit=_quantity(annotations, PROXY_CPU_LIMIT, defaults.cpu_limit),
        memory_request=_quantity(annotations, PROXY_MEMORY_REQUEST, defaults.memory_request),
        memory_limit=_quantity(annotations, PROXY_MEMORY_LIMIT, defaults.memory_limit),
    )
    return _Settings(config, capture, resources)


def _replace_admin_port(config: InjectConfig, admin_port: int) -> InjectConfig:
    from dataclasses import replace

    return replace(config, admin_port=admin_port)


def _init_container(settings: _Settings) -> Obj:
    capture = settings.capture
    args = [
        "init",
        "--proxy-uid",
        str(capture.proxy_uid),
        "--inbound-port",
        str(capture.inbound_port),
        "--outbound-port",
        str(capture.outbound_port),
        "--admin-port",
        str(capture.admin_port),
    ]
    for flag, values in (
        ("--inbound-ports-to-ignore", capture.inbound_ports_to_ignore),
        ("--outbound-ports-to-ignore", capture.outbound_ports_to_ignore),
        ("--subnets-to-ignore", capture.subnets_to_ignore),
    ):
        if values:
            args += [flag, ",".join(values)]
    return {
        "name": INIT_CONTAINER,
        "image": settings.config.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "securityContext": {
            # iptables needs root in the pod's user namespace, and exactly these
            # two capabilities; nothing else is granted.
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "64Mi"},
        },
        # iptables takes /run/xtables.lock: writable on a read-only root filesystem.
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    }


def _proxy_container(settings: _Settings, app_port: int, *, native: bool) -> Obj:
    config = settings.config
    admin = config.admin_port

    def probe(path: str, period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": path, "port": admin},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 2,
        }

    identity = f"spiffe://{config.trust_domain}/ns/$(_TULLE_POD_NAMESPACE)/sa/$(_TULLE_POD_SA)"
    env: list[Obj] = [
        _field_env("_TULLE_POD_NAME", "metadata.name"),
        _field_env("_TULLE_POD_NAMESPACE", "metadata.namespace"),
        _field_env("_TULLE_POD_SA", "spec.serviceAccountName"),
        {"name": "TULLE_PROXY_INBOUND_ADDR", "value": f"0.0.0.0:{config.inbound_port}"},
        {"name": "TULLE_PROXY_OUTBOUND_ADDR", "value": f"127.0.0.1:{config.outbound_port}"},
        # All interfaces: the kubelet probes it and Prometheus scrapes it.
        {"name": "TULLE_PROXY_ADMIN_ADDR", "value": f"0.0.0.0:{admin}"},
        {"name": "TULLE_PROXY_APP_ADDR", "value": f"127.0.0.1:{app_port}"},
        {"name": "TULLE_PROXY_CONTROL_ADDR", "value": config.control_addr},
        {"name": "TULLE_PROXY_CONTROL_NAME", "value": config.control_name},
        {"name": "TULLE_PROXY_IDENTITY", "value": identity},
        {"name": "TULLE_PROXY_IDENTITY_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"},
        {"name": "TULLE_PROXY_WORKLOAD", "value": "$(_TULLE_POD_NAMESPACE)/$(_TULLE_POD_NAME)"},
    ]
    if config.trust_anchors_pem:
        env.append({"name": "TULLE_PROXY_TRUST_ANCHORS", "value": config.trust_anchors_pem})
    resources = settings.resources
    requests = {"cpu": resources.cpu_request, "memory": resources.memory_request}
    limits = {"cpu": resources.cpu_limit, "memory": resources.memory_limit}
    container: Obj = {
        "name": PROXY_CONTAINER,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["proxy"],
        "env": env,
        "ports": [
            {"name": INBOUND_PORT_NAME, "containerPort": config.inbound_port},
            {"name": ADMIN_PORT_NAME, "containerPort": admin},
        ],
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/live", 10, 3),
        "resources": {
            "requests": {k: v for k, v in requests.items() if v},
            **({"limits": {k: v for k, v in limits.items() if v}} if any(limits.values()) else {}),
        },
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
        # The kubelet starts the next container once this passes: two minutes
        # for the first certificate.
        container["startupProbe"] = {**probe("/ready", 1, 120), "timeoutSeconds": 1}
    else:
        container["lifecycle"] = {
            "postStart": {
                "exec": {
                    "command": [
                        "tulle",
                        "proxy-await",
                        "--admin-port",
                        str(admin),
                        "--timeout",
                        str(config.await_timeout_s),
                    ]
                }
            }
        }
    return container


def _volumes(settings: _Settings) -> list[Obj]:
    config = settings.config
    return [
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": TOKEN_FILE,
                            "audience": config.token_audience,
                            "expirationSeconds": config.token_expiration_s,
                        }
                    }
                ]
            },
        },
        {"name": XTABLES_VOLUME, "emptyDir": {}},
    ]


def _field_env(name: str, field: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}


# -- reading the pod --------------------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InjectError(f"{where}: expected an object")
    return value


def _containers(spec: Mapping[str, Any], key: str) -> list[Obj]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise InjectError(f"spec.{key}: expected a list of containers")
    return value


def _already_injected(spec: Mapping[str, Any]) -> bool:
    for key in ("containers", "initContainers"):
        value = spec.get(key)
        if isinstance(value, list) and any(
            isinstance(c, Mapping) and c.get("name") == PROXY_CONTAINER for c in value
        ):
            return True
    return False


def _app_port(containers: list[Obj]) -> int:
    """The first TCP port the app declares (only a default: captured inbound
    goes to the port the caller called)."""
    for container in containers:
        ports = container.get("ports")
        if not isinstance(ports, list):
            continue  # the API server's validation speaks for malformed ports
        for port in ports:
            if not isinstance(port, Mapping):
                continue
            number = port.get("containerPort")
            if isinstance(number, int) and port.get("protocol", "TCP") == "TCP":
                return number
    return 8080


def _text(annotations: Mapping[str, Any], key: str) -> str | None:
    value = annotations.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InjectError(f"annotation {key}: expected a string")
    return value.strip()


def _list(annotations: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _text(annotations, key)
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _port(value: object, key: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InjectError(f"annotation {key}: {value!r} is not a port")
    return int(text)


def _quantity(annotations: Mapping[str, Any], key: str, default: str) -> str:
    value = _text(annotations, key)
    if value is None:
        return default
    if not _QUANTITY.fullmatch(value):
        raise InjectError(f"annotation {key}: {value!r} is not a quantity (100m, 0.5, 64Mi)")
    return value


def _flag(annotations: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _text(annotations, key)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise InjectError(f'annotation {key}: expected "true" or "false", not {value!r}')
    return value == "true"
