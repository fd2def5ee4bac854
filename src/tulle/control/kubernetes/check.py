"""`tulle check --kubernetes`: the cluster side of the mesh, as a `CheckReport` with hints.

Categories, in the order a broken install fails them (Linkerd's `check`):

- kubernetes API: reachable with the kubeconfig, a version Tulle supports
  (1.20+), and a clock close to ours (certificates are time-bound: skew
  beyond `MAX_SKEW_S` makes fresh leaves look not yet valid);
- CRDs: each of Tulle's CustomResourceDefinitions is established;
- control plane: the namespace and Deployment exist, the control-plane
  Service has ready endpoints (so readiness probes pass), and each ready
  replica answers `/ready` on its admin port when this machine can reach it;
- certificates: the trust bundle and issuer the replicas mount parse, the
  issuer chains to the bundle and is not expired or about to be.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
from cryptography import x509

from tulle.control.kubernetes.client import KubeClient, KubeError
from tulle.control.kubernetes.install import (
    ADMIN_PORT,
    CONTROL,
    ISSUER_SECRET,
    TRUST_CONFIGMAP,
    InstallOptions,
    crds,
)
from tulle.control.kubernetes.source import endpoint_slice_resource
from tulle.core.checks import CERT_EXPIRY_WARN_S, CheckReport
from tulle.core.discovery import format_address

MAX_SKEW_S = 5.0
MIN_MINOR = 20
PROBE_TIMEOUT_S = 2.0


async def _probe_ready(host: str, port: int) -> bool | None:
    """True/False: /ready answered; None: this machine cannot reach the address."""
    url = f"http://{format_address((host, port))}/ready"
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.ConnectError:
        return False
    except httpx.HTTPError:
        return None
    return response.status_code == 200


def _ready_endpoints(slices: dict[str, Any]) -> list[tuple[str, int]]:
    result = []
    for item in slices.get("items") or []:
        admin = next(
            (p.get("port") for p in item.get("ports") or [] if p.get("name") == "admin"),
            ADMIN_PORT,
        )
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                result.append((str(address), int(admin)))
    return sorted(result)


async def kubernetes_checks(
    client: KubeClient, namespace: str = "tulle", *, now: float | None = None
) -> CheckReport:
    report = CheckReport()
    api = report.category("kubernetes API")
    try:
        version, server_time = await client.server_version()
    except KubeError as exc:
        api.add(
            "can reach the API server",
            False,
            str(exc),
            "check the kubeconfig (--kubeconfig, $KUBECONFIG) and that the cluster is up: "
            "kubectl version",
        )
        return report
    api.add("can reach the API server", True, client.config.server)
    minor = "".join(c for c in str(version.get("minor", "")) if c.isdigit())
    supported = version.get("major") == "1" and minor.isdigit() and int(minor) >= MIN_MINOR
    api.add(
        "is running a supported version",
        supported,
        str(version.get("gitVersion", "?")),
        f"Tulle needs Kubernetes 1.{MIN_MINOR} or newer",
    )
    local = time.time() if now is None else now
    if server_time is not None:
        skew = abs(server_time - local)
        api.add(
            "clock skew is small",
            skew <= MAX_SKEW_S,
            f"{skew:.1f} s",
            f"the API server's clock and this machine's differ by more than {MAX_SKEW_S:.0f} s; "
            "sync them (NTP): certificates are time-bound",
            warn=skew <= 60,
        )

    crd_category = report.category("CRDs")
    for crd in crds(InstallOptions()):
        name = crd["metadata"]["name"]
        try:
            found = await client.get(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
        except KubeError as exc:
            crd_category.add(
                name,
                False,
                str(exc) if exc.status != 404 else "missing",
                "install them: tulle install | kubectl apply -f -",
            )
            continue
        conditions = (found.get("status") or {}).get("conditions") or []
        established = any(
            c.get("type") == "Established" and c.get("status") == "True" for c in conditions
        )
        crd_category.add(
            name,
            established,
            "" if established else "not established",
            "kubectl describe crd " + name,
        )

    control = report.category("control plane")
    try:
        await client.get(f"/api/v1/namespaces/{namespace}")
        control.add("namespace exists", True, namespace)
        deployment = await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{CONTROL}")
        wanted = int((deployment.get("spec") or {}).get("replicas") or 0)
        control.add("Deployment exists", True, f"{wanted} replicas wanted")
        slice_resource = await endpoint_slice_resource(client)
        slices = await client.request(
            "GET",
            slice_resource.path(namespace),
            params={"labelSelector": f"kubernetes.io/service-name={CONTROL}"},
        )
    except KubeError as exc:
        control.add(
            "control plane installed",
            False,
            str(exc),
            f"install it: tulle install | kubectl apply -f - (namespace {namespace})",
        )
        return report
    ready = _ready_endpoints(slices)
    control.add(
        "control plane pods are ready",
        bool(ready),
        f"{len(ready)} ready",
        f"kubectl -n {namespace} get pods; kubectl -n {namespace} logs deploy/{CONTROL}",
    )
    if ready:
        probes = await asyncio.gather(*(_probe_ready(h, p) for h, p in ready))
        answering = sum(1 for p in probes if p)
        unreachable = sum(1 for p in probes if p is None)
        if unreachable == len(probes):
            control.add(
                "control plane answers /ready",
                False,
                "pod addresses are not reachable from here",
                "run the check in the cluster",
                warn=True,
            )
        else:
            control.add(
                "control plane answers /ready",
                answering > 0,
                f"{answering} of {len(probes)} replicas",
                f"the replicas do not answer: kubectl -n {namespace} logs deploy/{CONTROL}",
            )

    certs = report.category("certificates")
    try:
        bundle_map = await client.get(
            f"/api/v1/namespaces/{namespace}/configmaps/{TRUST_CONFIGMAP}"
        )
        secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/{ISSUER_SECRET}")
        anchors = x509.load_pem_x509_certificates(
            str((bundle_map.get("data") or {}).get("bundle.pem", "")).encode()
        )
        issuer = x509.load_pem_x509_certificate(
            base64.b64decode((secret.get("data") or {}).get("issuer.crt", ""))
        )
    except (KubeError, ValueError) as exc:
        certs.add(
            "trust bundle and issuer are readable",
            False,
            str(exc),
            f"re-create them: tulle install --identity-dir DIR (Secret {ISSUER_SECRET}, "
            f"ConfigMap {TRUST_CONFIGMAP})",
        )
        return report
    certs.add("trust bundle and issuer are readable", True, f"{len(anchors)} anchor(s)")
    chained = any(issuer.issuer == a.subject for a in anchors)
    certs.add(
        "issuer is signed by a trust anchor",
        chained,
        "",
        "the issuer does not chain to the bundle: rotate with `tulle identity rotate`",
    )
    remaining = issuer.not_valid_after_utc.timestamp() - local
    certs.add(
        "issuer certificate is valid",
        remaining > CERT_EXPIRY_WARN_S,
        f"expires in {remaining / 3600:.0f} h",
        "rotate the issuer: tulle identity rotate issuer, then re-apply tulle install",
        warn=remaining > 0,
    )
    return report
