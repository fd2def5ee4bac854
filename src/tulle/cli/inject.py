"""`tulle inject` (the webhook's injection, offline, on YAML) and `tulle proxy-await`.

`kubectl get deploy web -o yaml | tulle inject - | kubectl apply -f -`: every
pod template in the input (multi-document YAML, Lists) goes through the
same `tulle.k8s.inject.inject_pod` as the admission webhook; what was done
to each object is said on stderr. docs/transparent.md has the exact spec.

`tulle proxy-await` is the injected proxy container's postStart hook where
the cluster has no native sidecars: it returns once the proxy's admin says
`/ready`, and the kubelet, which starts a pod's containers in order and
waits for each postStart hook, starts the app only then.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import typer
import yaml

from tulle.cli.app import app
from tulle.k8s.documents import Outcome, inject_document
from tulle.k8s.inject import InjectConfig, InjectError

AWAIT_POLL_S = 0.2


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors: each object reads on its own."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # The trust bundle reads as a PEM block, not as an escaped one-liner.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_PlainDumper.add_representer(str, _text)


def _trust_anchors(identity_dir: Path | None, trust_anchors: Path | None) -> str:
    if trust_anchors is not None:
        path = trust_anchors
    elif identity_dir is not None:
        from tulle.identity.store import BUNDLE_FILE, IssuerDirectory

        path = IssuerDirectory(identity_dir).file(BUNDLE_FILE)
    else:
        raise typer.BadParameter(
            "the proxy needs the trust anchors that verify the control plane: give "
            "--identity-dir DIR (from `tulle identity init`) or --trust-anchors bundle.pem "
            "(kubectl -n tulle get configmap tulle-identity-trust-roots "
            "-o jsonpath='{.data.bundle\\.pem}')",
            param_hint="--trust-anchors",
        )
    from tulle.api.control_tls import TrustAnchorsError, load_trust_anchors

    try:
        return load_trust_anchors(path).decode()
    except TrustAnchorsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trust-anchors") from None


@app.command("inject")
def inject(
    file: str = typer.Argument(..., help="YAML to inject ('-' for stdin)."),
    image: str | None = typer.Option(
        None, "--image", help="The Tulle image of tulle-init and tulle-proxy."
    ),
    identity_dir: Path | None = typer.Option(
        None, "--identity-dir", help="The issuer directory: its trust bundle goes to the proxy."
    ),
    trust_anchors: Path | None = typer.Option(
        None, "--trust-anchors", help="The trust bundle (PEM) instead of --identity-dir."
    ),
    control_namespace: str = typer.Option(
        "tulle", "--control-namespace", help="Where the control plane runs."
    ),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain"),
    trust_domain: str = typer.Option("cluster.local", "--trust-domain"),
    token_audience: str = typer.Option("identity.tulle.io", "--token-audience"),
    native_sidecar: bool = typer.Option(
        False,
        "--native-sidecar/--no-native-sidecar",
        help="The proxy as a native sidecar (Kubernetes 1.29+); default: a container "
        "started first, which works on every version.",
    ),
) -> None:
    """Add Tulle's proxy to every pod template of FILE (- for stdin), printed as YAML."""
    from tulle.control.kubernetes.install import DEFAULT_IMAGE

    config = InjectConfig(
        image=image or DEFAULT_IMAGE,
        control_addr=f"tulle-control.{control_namespace}.svc.{cluster_domain}:8086",
        control_name=f"tulle-control.{control_namespace}.svc",
        control_namespace=control_namespace,
        trust_anchors_pem=_trust_anchors(identity_dir, trust_anchors),
        trust_domain=trust_domain,
        token_audience=token_audience,
        native_sidecar=native_sidecar,
    )
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        typer.echo(f"tulle inject: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        typer.echo(f"tulle inject: {file} is not YAML: {exc}", err=True)
        raise typer.Exit(1) from None
    outcomes: list[Outcome] = []
    try:
        injected = [inject_document(d, config, outcomes) for d in documents]
    except InjectError as exc:
        typer.echo(f"tulle inject: {exc}", err=True)
        raise typer.Exit(1) from None
    out = yaml.dump_all(injected, Dumper=_PlainDumper, sort_keys=False, explicit_start=True)
    typer.echo(out, nl=False)
    for outcome in outcomes:
        verb = "injected" if outcome.injected else f"skipped ({outcome.reason})"
        typer.echo(f"{outcome.what} {verb}", err=True)
    if not outcomes:
        typer.echo("tulle inject: no pod template found in the input", err=True)


def ready_status(admin_port: int) -> int | None:
    """The proxy's `/ready` status code, None when nothing answers."""
    url = f"http://127.0.0.1:{admin_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return None


@app.command("proxy-await")
def proxy_await(
    admin_port: int = typer.Option(4191, "--admin-port", help="The proxy's admin port."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.0, help="Seconds to wait at most."),
) -> None:
    """Wait until the local proxy is ready (the injected postStart hook); exit 1 on timeout."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    while True:
        last = ready_status(admin_port)
        if last == 200:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(AWAIT_POLL_S)
    seen = "no answer" if last is None else f"HTTP {last}"
    typer.echo(
        f"tulle proxy-await: the proxy on 127.0.0.1:{admin_port} is not ready after "
        f"{timeout:g}s ({seen})",
        err=True,
    )
    raise typer.Exit(1)
