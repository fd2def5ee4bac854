"""`tulle identity`: make, inspect and rotate the mesh's trust anchor and issuer; join tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import typer
from cryptography import x509
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tulle.cli.app import app
from tulle.core.duration import DurationError
from tulle.identity.ca import (
    DEFAULT_ANCHOR_TTL_S,
    DEFAULT_ISSUER_TTL_S,
    DEFAULT_LEAF_TTL_S,
    fingerprint_sha256,
    is_issued_by,
)
from tulle.identity.duration import format_duration, parse_lifetime
from tulle.identity.spiffe import InvalidSpiffeId, resolve_identity
from tulle.identity.store import IdentityStoreError, IssuerDirectory
from tulle.identity.tokens import make_token

WARN_YELLOW_S = 30 * 86_400.0
WARN_RED_S = 7 * 86_400.0

identity_app = typer.Typer(
    name="identity",
    help="The mesh's certificate authority: trust anchor, issuer, join tokens, rotation.",
    no_args_is_help=True,
)
rotate_app = typer.Typer(
    name="rotate",
    help=(
        "Rotate with no outage. Issuer: `rotate issuer`. Anchor: `rotate anchor`, wait for "
        "proxies to get the bundle, `rotate issuer`, wait one leaf lifetime, `rotate finish`."
    ),
    no_args_is_help=True,
)
app.add_typer(identity_app, name="identity")
identity_app.add_typer(rotate_app, name="rotate")

# emoji=False: fingerprints such as ":CD:" would otherwise render as emoji.
err = Console(stderr=True, highlight=False, emoji=False)
out = Console(highlight=False, emoji=False)

T = TypeVar("T")

DIR_OPTION = typer.Option(
    Path(".tulle/identity"),
    "--dir",
    "-d",
    envvar="TULLE_IDENTITY_DIR",
    help="The issuer directory (anchor, issuer, bundle, token secret).",
)


def _guard(action: Callable[[], T]) -> T:
    """Run `action`; turn the errors users can cause into a message and exit code 1."""
    try:
        return action()
    except (IdentityStoreError, InvalidSpiffeId, ValueError) as error:
        err.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from None
    except OSError as error:
        err.print(f"[bold red]error:[/] {error.strerror}: {error.filename}")
        raise typer.Exit(1) from None


def _duration(text: str, option: str) -> float:
    try:
        return parse_lifetime(text, option)
    except DurationError as error:
        raise typer.BadParameter(error.reason, param_hint=option) from None


@identity_app.command("init")
def init(
    directory: Path = DIR_OPTION,
    trust_domain: str = typer.Option(
        "cluster.local", "--trust-domain", "-t", help="The trust domain of every SPIFFE ID."
    ),
    anchor_ttl: str = typer.Option(
        format_duration(DEFAULT_ANCHOR_TTL_S).replace(" ", ""),
        "--anchor-ttl",
        help="Lifetime of the trust anchor (e.g. 10y).",
    ),
    issuer_ttl: str = typer.Option(
        format_duration(DEFAULT_ISSUER_TTL_S).replace(" ", ""),
        "--issuer-ttl",
        help="Lifetime of the issuer (e.g. 1y); rotate it well before that.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing anchor (breaks trust with its workloads)."
    ),
) -> None:
    """Make a new trust anchor and issuer in DIR (keys 0600, directory 0700)."""
    anchor_s = _duration(anchor_ttl, "--anchor-ttl")
    issuer_s = _duration(issuer_ttl, "--issuer-ttl")
    store = IssuerDirectory(directory)
    _guard(
        lambda: store.init(
            trust_domain, now=time.time(), anchor_ttl_s=anchor_s, issuer_ttl_s=issuer_s, force=force
        )
    )
    out.print(
        f"[green]created[/] trust anchor and issuer for [bold]{trust_domain}[/] in {directory}"
    )
    _warn_permissions(store)
    _show(store)


@identity_app.command("show")
def show(directory: Path = DIR_OPTION) -> None:
    """Print the anchors, issuer, fingerprints and expiry; warn before anything expires."""
    store = IssuerDirectory(directory)
    _warn_permissions(store)
    _show(store)


@identity_app.command("token")
def token(
    identity: str = typer.Argument(
        ..., help="A SPIFFE ID, or NAMESPACE/SERVICE-ACCOUNT within the trust domain."
    ),
    directory: Path = DIR_OPTION,
    ttl: str = typer.Option("24h", "--ttl", help="How long the token may be used (e.g. 24h)."),
) -> None:
    """Print a join token that lets one proxy obtain certificates for IDENTITY."""
    ttl_s = _duration(ttl, "--ttl")
    store = IssuerDirectory(directory)

    def make() -> tuple[str, str]:
        spiffe_id = resolve_identity(identity, store.trust_domain()).uri
        return spiffe_id, make_token(store.token_secret(), spiffe_id, now=time.time(), ttl_s=ttl_s)

    spiffe_id, text = _guard(make)
    err.print(f"join token for [bold]{spiffe_id}[/], valid {format_duration(ttl_s)}")
    typer.echo(text)


@rotate_app.command("issuer")
def rotate_issuer(
    directory: Path = DIR_OPTION,
    issuer_ttl: str = typer.Option(
        format_duration(DEFAULT_ISSUER_TTL_S).replace(" ", ""),
        "--issuer-ttl",
        help="Lifetime of the new issuer.",
    ),
) -> None:
    """Replace the issuer with one signed by the current anchor; leaves stay valid."""
    ttl_s = _duration(issuer_ttl, "--issuer-ttl")
    store = IssuerDirectory(directory)
    _guard(lambda: store.rotate_issuer(now=time.time(), ttl_s=ttl_s))
    out.print("[green]new issuer written[/]; control planes pick it up within seconds")
    if len(_guard(store.load_bundle).anchors) > 1:
        out.print(
            "anchor rotation, step 2 of 3 done: after one leaf lifetime (24h by default), "
            "run [bold]tulle identity rotate finish[/]"
        )
    _show(store)


@rotate_app.command("anchor")
def rotate_anchor(
    directory: Path = DIR_OPTION,
    anchor_ttl: str = typer.Option(
        format_duration(DEFAULT_ANCHOR_TTL_S).replace(" ", ""),
        "--anchor-ttl",
        help="Lifetime of the new anchor.",
    ),
) -> None:
    """Step 1 of 3: add a new anchor to the trust bundle beside the current one."""
    ttl_s = _duration(anchor_ttl, "--anchor-ttl")
    store = IssuerDirectory(directory)
    _guard(lambda: store.rotate_anchor(now=time.time(), ttl_s=ttl_s))
    out.print(
        "[green]anchor rotation, step 1 of 3 done[/]: the bundle trusts both anchors.\n"
        "Wait until every proxy has the new bundle (seconds for proxies watching the control "
        "plane; at most one leaf lifetime otherwise), then run "
        "[bold]tulle identity rotate issuer[/]."
    )
    _show(store)


@rotate_app.command("finish")
def rotate_finish(
    directory: Path = DIR_OPTION,
    leaf_ttl: str = typer.Option(
        format_duration(DEFAULT_LEAF_TTL_S).replace(" ", ""),
        "--leaf-ttl",
        help="The longest leaf lifetime the control planes issue (default 24h).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Drop the old anchor even if old leaves may still be in use."
    ),
) -> None:
    """Step 3 of 3: drop the old anchor once no valid leaf can chain to it."""
    leaf_s = _duration(leaf_ttl, "--leaf-ttl")
    store = IssuerDirectory(directory)
    _guard(lambda: store.finish_rotation(now=time.time(), leaf_ttl_s=leaf_s, force=force))
    out.print("[green]anchor rotation finished[/]: the bundle holds only the new anchor")
    _show(store)


def _warn_permissions(store: IssuerDirectory) -> None:
    for path in store.loose_permissions():
        err.print(f"[yellow]WARNING:[/] {path} is readable by others; chmod it to 0600/0700")


def _show(store: IssuerDirectory) -> None:
    trust_domain = _guard(store.trust_domain)
    anchor = _guard(store.load_anchor).certificate
    bundle = _guard(store.load_bundle)
    issuer = _guard(store.load_issuer).certificate
    now = time.time()

    table = Table(title=f"trust domain {trust_domain} ({store.path})", title_justify="left")
    table.add_column("role", no_wrap=True)
    for column in ("subject", "not before", "not after", "left"):
        table.add_column(column, overflow="fold")
    fingerprints = Table(title="SHA-256 fingerprints", title_justify="left")
    fingerprints.add_column("role", no_wrap=True)
    fingerprints.add_column("fingerprint", overflow="fold")
    rows: list[tuple[str, x509.Certificate]] = [
        ("anchor (current)" if a == anchor else "anchor (previous)", a) for a in bundle.anchors
    ]
    if anchor not in bundle.anchors:
        rows.append(("anchor (NOT IN BUNDLE)", anchor))
    rows.append(("issuer", issuer))
    warnings: list[str] = []
    for role, certificate in rows:
        remaining = certificate.not_valid_after_utc.timestamp() - now
        style = "red" if remaining < WARN_RED_S else "yellow" if remaining < WARN_YELLOW_S else ""
        if remaining <= 0:
            warnings.append(f"[bold red]WARNING:[/] the {role} EXPIRED {_when(certificate)}")
        elif remaining < WARN_YELLOW_S:
            colour = "bold red" if remaining < WARN_RED_S else "bold yellow"
            warnings.append(
                f"[{colour}]WARNING:[/] the {role} expires in {format_duration(remaining)} "
                f"({_when(certificate)}); {_advice(role)}"
            )
        table.add_row(
            role,
            escape(certificate.subject.rfc4514_string()),
            _iso(certificate.not_valid_before_utc),
            _iso(certificate.not_valid_after_utc),
            f"[{style}]{format_duration(remaining)}[/]" if style else format_duration(remaining),
        )
        fingerprints.add_row(role, fingerprint_sha256(certificate))
    out.print(table)
    out.print(fingerprints)
    if not bundle.anchors_of(issuer):
        warnings.append(
            "[bold red]WARNING:[/] the issuer is not signed by any anchor in the bundle"
        )
    if len(bundle.anchors) > 1:
        step = "3 (`rotate finish`)" if is_issued_by(issuer, anchor) else "2 (`rotate issuer`)"
        out.print(f"anchor rotation in progress; next step: {step}")
    for warning in warnings:
        err.print(warning)


def _advice(role: str) -> str:
    if role == "issuer":
        return "run `tulle identity rotate issuer`"
    return "start an anchor rotation: `tulle identity rotate anchor`"


def _when(certificate: x509.Certificate) -> str:
    return _iso(certificate.not_valid_after_utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
