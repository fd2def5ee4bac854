"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries are built once by `scripts/k8s_fixture.sh` (v1.20.2, cached under
/var/cache/tulle-test/k8s/bin, or $TULLE_K8S_CACHE/bin); `.ci/run` and the
README's test command run it first. When they are missing the tests FAIL with
a message naming the script: a mesh that claims Kubernetes support must not
pass by skipping its Kubernetes tests.

There is no kubelet: nothing runs pods. Tests create Pods through the API and
set their status (IP, Ready) themselves; `KubeletStandIn` is the name of the
code that plays that part, and the Node object it registers.

Certificates are made with `cryptography` (EC P-256): a CA, the API server's
serving certificate (127.0.0.1), an admin client certificate
(O=system:masters) used by the tests, the controller manager and the control
plane under test, and the service-account signing key.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.ports import LOOPBACK, free_ports
from support.process import ManagedProcess, ProcessGroup

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("TULLE_K8S_CACHE", "/var/cache/tulle-test/k8s"))
BIN = CACHE / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.96.0.0/16"
API_READY_TIMEOUT_S = 90.0
NODE_NAME = "kubelet-stand-in"


def kubectl_path() -> str:
    """The fixture's kubectl (TULLE_K8S_KUBECTL=1 builds it), else the one on PATH."""
    if os.access(BIN / "kubectl", os.X_OK):
        return str(BIN / "kubectl")
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError(
            "no kubectl: install one, or build the fixture's with "
            f"TULLE_K8S_KUBECTL=1 bash {REPO}/scripts/k8s_fixture.sh"
        )
    return found


def missing_binaries(binaries: tuple[str, ...] = BINARIES) -> list[str]:
    return [b for b in binaries if not os.access(BIN / b, os.X_OK)]


def require_binaries(binaries: tuple[str, ...] = BINARIES) -> None:
    missing = missing_binaries(binaries)
    if missing:
        raise RuntimeError(
            f"the Kubernetes test fixture is not built: missing {', '.join(missing)} in {BIN}.\n"
            f"Build it once (15 minutes on two idle cores): bash {REPO}/scripts/k8s_fixture.sh"
        )


# -- certificates ------------------------------------------------------------------------


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            critical=False,
        )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def make(cls, root: Path) -> Pki:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("tulle-test-kubernetes-ca")
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert(_name("kube-apiserver"), server_key, ca_name, ca_key, server=True)
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _cert(_name("admin", "system:masters"), admin_key, ca_name, ca_key)
        sa_key = ec.generate_private_key(ec.SECP256R1())
        pki = cls(
            ca=root / "ca.crt",
            server_cert=root / "server.crt",
            server_key=root / "server.key",
            admin_cert=root / "admin.crt",
            admin_key=root / "admin.key",
            sa_key=root / "sa.key",
            sa_pub=root / "sa.pub",
        )
        pki.ca.write_bytes(_pem(ca))
        pki.server_cert.write_bytes(_pem(server))
        _write_key(pki.server_key, server_key)
        pki.admin_cert.write_bytes(_pem(admin))
        _write_key(pki.admin_key, admin_key)
        _write_key(pki.sa_key, sa_key)
        pki.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pki


# -- the cluster ------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


@dataclass
class Cluster:
    root: Path
    pki: Pki
    url: str
    kubeconfig: Path
    etcd: ManagedProcess
    apiserver: ManagedProcess
    controller_manager: ManagedProcess

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", content_type)
        request.add_header("Accept", "application/json")
        context = self._context()
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
            context = ssl.create_default_context(cafile=str(self.pki.ca))
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(text) if text else {}

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body)

    def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or replace what is there (server-side apply is beta in 1.20: avoid it)."""
        name = body["metadata"]["name"]
        try:
            return self.create(path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        current = self.get(f"{path}/{name}")
        body = dict(body)
        body["metadata"] = dict(
            body["metadata"], resourceVersion=current["metadata"]["resourceVersion"]
        )
        return self.request("PUT", f"{path}/{name}", body)

    def delete(self, path: str, *, grace_s: int | None = None) -> None:
        body = {"gracePeriodSeconds": grace_s} if grace_s is not None else None
        try:
            self.request("DELETE", path, body)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def wait_for(self, check: Any, what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"no {what} within {timeout} s (last: {last!r})")

    def namespace(self, name: str) -> str:
        self.apply("/api/v1/namespaces", {"metadata": {"name": name}})
        return name


def write_kubeconfig(path: Path, url: str, pki: Pki) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(pki.ca)}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config))


def start_cluster(group: ProcessGroup, root: Path, *, controllers: bool = True) -> Cluster:
    """etcd, kube-apiserver and (with `controllers`) the EndpointSlice controller."""
    require_binaries(BINARIES if controllers else BINARIES[:2])
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki.make(root)
    etcd_client, etcd_peer, api_port = free_ports(3)
    etcd = group.start(
        "etcd",
        [
            str(BIN / "etcd"),
            "--name=test",
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls=http://{LOOPBACK}:{etcd_client}",
            f"--advertise-client-urls=http://{LOOPBACK}:{etcd_client}",
            f"--listen-peer-urls=http://{LOOPBACK}:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://{LOOPBACK}:{etcd_peer}",
            f"--initial-cluster=test=http://{LOOPBACK}:{etcd_peer}",
            "--logger=zap",
            "--log-level=warn",
        ],
    )
    url = f"https://{LOOPBACK}:{api_port}"
    apiserver = group.start(
        "kube-apiserver",
        [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://{LOOPBACK}:{etcd_client}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={api_port}",
            "--insecure-port=0",
            f"--cert-dir={root / 'apiserver'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--api-audiences=https://kubernetes.default.svc",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ],
    )
    kubeconfig = root / "kubeconfig"
    write_kubeconfig(kubeconfig, url, pki)
    cluster = Cluster(root, pki, url, kubeconfig, etcd, apiserver, apiserver)

    def healthy() -> bool:
        try:
            request = urllib.request.Request(url + "/readyz")
            with urllib.request.urlopen(request, context=cluster._context(), timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    apiserver.wait_for(healthy, "/readyz", timeout=API_READY_TIMEOUT_S)
    KubeletStandIn(cluster).register_node()
    install_crds(cluster)
    if not controllers:
        return cluster
    cluster.controller_manager = group.start(
        "kube-controller-manager",
        [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--controllers=endpointslice",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            "--concurrent-service-endpoint-syncs=5",
            "--endpointslice-updates-batch-period=0s",
            "--v=1",
        ],
    )
    return cluster


def install_crds(cluster: Cluster) -> None:
    """Tulle's CRDs (and Gateway API's routes), as `tulle install` prints them."""
    from tulle.control.kubernetes.install import InstallOptions, crds

    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in crds(InstallOptions()):
        cluster.apply(path, crd)
    for crd in crds(InstallOptions()):
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = cluster.get(f"{path}/{name}").get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        cluster.wait_for(established, f"CRD {name} established")


class KubeletStandIn:
    """Plays the kubelet's part, which nothing here runs: a Node, and pod status.

    The EndpointSlice controller reads the Node of every pod; a Pod's IP and
    readiness are what a kubelet would report once its containers run.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def register_node(self) -> None:
        self.cluster.apply("/api/v1/nodes", {"metadata": {"name": NODE_NAME}})

    def run_pod(
        self,
        namespace: str,
        name: str,
        ip: str,
        *,
        labels: dict[str, str],
        service_account: str = "default",
        meshed: bool = True,
        ports: list[dict[str, Any]] | None = None,
        annotations: dict[str, str] | None = None,
        owners: list[dict[str, Any]] | None = None,
        ready: bool = True,
    ) -> None:
        metadata: dict[str, Any] = {
            "name": name,
            "labels": labels,
            "annotations": {
                **({"tulle.io/meshed": "true"} if meshed else {}),
                **(annotations or {}),
            },
        }
        if owners:
            metadata["ownerReferences"] = owners
        body = {
            "metadata": metadata,
            "spec": {
                "nodeName": NODE_NAME,
                "serviceAccountName": service_account,
                "containers": [{"name": "app", "image": "none", "ports": ports or []}],
            },
        }
        pod = self.cluster.create(f"/api/v1/namespaces/{namespace}/pods", body)
        self.report_running(namespace, pod, ip, ready=ready)

    def report_running(
        self, namespace: str, pod: dict[str, Any], ip: str, *, ready: bool = True
    ) -> None:
        """What a kubelet reports once a pod's containers run: its IP, Running, Ready."""
        name = pod["metadata"]["name"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Ready", "status": str(ready), "lastTransitionTime": now},
                {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now},
            ],
        }
        self.cluster.request("PUT", f"/api/v1/namespaces/{namespace}/pods/{name}/status", pod)
