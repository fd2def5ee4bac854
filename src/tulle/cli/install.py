"""`tulle install` / `tulle uninstall`: the control plane's Kubernetes objects, printed as YAML.

Nothing here talks to a cluster: pipe the output to `kubectl apply -f -`
(or `kubectl delete -f -`). See docs/kubernetes.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
import yaml

from tulle.cli.app import app
from tulle.control.kubernetes.install import (
    DEFAULT_IMAGE,
    IdentityFiles,
    InstallOptions,
    install_objects,
    uninstall_objects,
)
from tulle.identity.store import (
    BUNDLE_FILE,
    CONFIG_FILE,
    ISSUER_CERT,
    ISSUER_KEY,
    TOKEN_SECRET,
    IdentityStoreError,
    IssuerDirectory,
)

NAMESPACE_OPTION = typer.Option("tulle", "--namespace", help="The control plane's namespace.")
GATEWAY_OPTION = typer.Option(
    True,
    "--gateway-api-crds/--no-gateway-api-crds",
    help="Include Gateway API's HTTPRoute and GRPCRoute CRDs (leave them out when the "
    "cluster already has Gateway API installed).",
)
PDB_OPTION = typer.Option(
    "policy/v1",
    "--pdb-api",
    help="PodDisruptionBudget API: policy/v1 (Kubernetes 1.21+) or policy/v1beta1 (1.20).",
)


def _identity_files(directory: Path | None, trust_domain: str) -> IdentityFiles:
    if directory is None:
        # A fresh anchor and issuer; the anchor's key is then lost, so rotating
        # the anchor later means a new one (docs/kubernetes.md: bring your own).
        directory = Path(tempfile.mkdtemp(prefix="tulle-install-"))
        IssuerDirectory(directory).init(trust_domain, now=time.time())
    store = IssuerDirectory(directory)
    try:
        material = store.load_material()
    except IdentityStoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="--identity-dir") from None
    if material.trust_domain != trust_domain:
        raise typer.BadParameter(
            f"{directory} issues for trust domain {material.trust_domain!r}, not {trust_domain!r}",
            param_hint="--trust-domain",
        )
    return IdentityFiles(
        identity_json=store.file(CONFIG_FILE).read_bytes(),
        bundle_pem=store.file(BUNDLE_FILE).read_bytes(),
        issuer_crt=store.file(ISSUER_CERT).read_bytes(),
        issuer_key=store.file(ISSUER_KEY).read_bytes(),
        token_secret=store.file(TOKEN_SECRET).read_bytes(),
    )


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors: each object reads on its own."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump(objects: list[dict[str, object]]) -> None:
    text = yaml.dump_all(objects, Dumper=_PlainDumper, sort_keys=False, explicit_start=True)
    typer.echo(text, nl=False)


@app.command("install")
def install(
    namespace: str = NAMESPACE_OPTION,
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="The Tulle container image."),
    replicas: int = typer.Option(3, "--replicas", min=1, help="Control-plane replicas."),
    identity_dir: Path | None = typer.Option(
        None,
        "--identity-dir",
        help="An issuer directory from `tulle identity init` (recommended: keep its anchor "
        "key for rotations). Without it a new anchor and issuer are made.",
    ),
    trust_domain: str = typer.Option("cluster.local", "--trust-domain"),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain"),
    token_audience: str = typer.Option("identity.tulle.io", "--token-audience"),
    pdb_api: str = PDB_OPTION,
    gateway_api_crds: bool = GATEWAY_OPTION,
    webhook_failure_policy: str = typer.Option(
        "Ignore",
        "--webhook-failure-policy",
        help="When the injection webhook cannot be reached: Ignore (the pod starts "
        "without a proxy) or Fail (the pod is refused). docs/kubernetes.md says why Ignore.",
    ),
    native_sidecar: str = typer.Option(
        "auto",
        "--native-sidecar",
        help="Inject the proxy as a native sidecar: auto (Kubernetes 1.29+), true or false.",
    ),
) -> None:
    """Print the control plane's Kubernetes objects: `tulle install | kubectl apply -f -`."""
    _check_pdb_api(pdb_api)
    options = InstallOptions(
        namespace=namespace,
        image=image,
        replicas=replicas,
        trust_domain=trust_domain,
        cluster_domain=cluster_domain,
        token_audience=token_audience,
        pdb_api=pdb_api,
        gateway_api_crds=gateway_api_crds,
        webhook_failure_policy=webhook_failure_policy,
        native_sidecar=native_sidecar,
    )
    if webhook_failure_policy not in ("Ignore", "Fail"):
        raise typer.BadParameter("expected Ignore or Fail", param_hint="--webhook-failure-policy")
    if native_sidecar not in ("auto", "true", "false"):
        raise typer.BadParameter("expected auto, true or false", param_hint="--native-sidecar")
    _dump(install_objects(options, _identity_files(identity_dir, trust_domain)))


@app.command("uninstall")
def uninstall(
    namespace: str = NAMESPACE_OPTION,
    pdb_api: str = PDB_OPTION,
    gateway_api_crds: bool = GATEWAY_OPTION,
) -> None:
    """Print what removes Tulle: `tulle uninstall | kubectl delete -f -`."""
    _check_pdb_api(pdb_api)
    options = InstallOptions(
        namespace=namespace, pdb_api=pdb_api, gateway_api_crds=gateway_api_crds
    )
    _dump(uninstall_objects(options))


def _check_pdb_api(pdb_api: str) -> None:
    if pdb_api not in ("policy/v1", "policy/v1beta1"):
        raise typer.BadParameter("expected policy/v1 or policy/v1beta1", param_hint="--pdb-api")
