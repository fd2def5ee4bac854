"""`tulle init`: capture the current network namespace's TCP for its sidecar.

The rules are `tulle.net.capture`'s (and docs/transparent.md lists them);
this module picks the iptables backend, runs the commands and says what it
did. The backend: `--firewall-bin` when given, else the one of
`iptables-nft` / `iptables-legacy` that already holds rules in this
namespace (two backends both filtering the same packets confuse everyone),
else nft. IPv6 gets the same rules through the matching `ip6tables`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import typer

from tulle.cli.app import app
from tulle.net.capture import (
    ADMIN_PORT,
    INBOUND_PORT,
    IPV4,
    IPV6,
    OUTBOUND_PORT,
    PROXY_UID,
    CaptureError,
    CaptureSettings,
    Plan,
    build,
    count_rules,
    has_tulle_chains,
    jump_add,
    jump_check,
    pick_backend,
    removal,
)

BACKENDS = ("iptables-nft", "iptables-legacy")
CAP_NET_ADMIN = 12
COMMAND_TIMEOUT_S = 30.0
# A jump added several times (by hand, or by an older tool) is deleted this
# many times at most.
MAX_JUMP_DELETES = 32


class InitError(Exception):
    """What stops `tulle init` (printed as it is, exit 1)."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """One backend's programs for one family."""

    main: str
    save: str
    restore: str


def binaries(firewall_bin: str, family: int) -> Binaries:
    """`iptables-legacy` -> iptables-legacy(-save|-restore), or the ip6tables ones."""
    directory, _, base = firewall_bin.rpartition("/")
    if family == IPV6 and base.startswith("iptables"):
        base = "ip6tables" + base[len("iptables") :]
    prefix = f"{directory}/" if directory else ""
    if base.endswith(("-nft", "-legacy")):
        stem, _, variant = base.rpartition("-")
        return Binaries(
            f"{prefix}{base}", f"{prefix}{stem}-{variant}-save", f"{prefix}{stem}-{variant}-restore"
        )
    return Binaries(f"{prefix}{base}", f"{prefix}{base}-save", f"{prefix}{base}-restore")


def _run(args: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise InitError(f"{args[0]}: not found (install iptables)") from None
    except subprocess.TimeoutExpired:
        raise InitError(f"{' '.join(args)}: no answer in {COMMAND_TIMEOUT_S:.0f}s") from None


def _must(args: list[str], *, stdin: str | None = None) -> str:
    done = _run(args, stdin=stdin)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        hint = ""
        if "Permission denied" in detail or "you must be root" in detail.lower():
            hint = "\nhint: tulle init needs root or CAP_NET_ADMIN"
        raise InitError(f"{' '.join(args)} failed ({done.returncode}): {detail}{hint}")
    return done.stdout


def has_net_admin() -> bool:
    """Root, or CAP_NET_ADMIN in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def choose_backend(explicit: str) -> str:
    if explicit:
        if shutil.which(explicit) is None:
            raise InitError(f"--firewall-bin {explicit}: not found")
        return explicit
    counts: list[tuple[str, int | None]] = []
    for name in BACKENDS:
        save = binaries(name, IPV4).save
        if shutil.which(name) is None or shutil.which(save) is None:
            counts.append((name, None))
            continue
        done = _run([save, "-t", "nat"])
        counts.append((name, count_rules(done.stdout) if done.returncode == 0 else 0))
    picked = pick_backend(counts)
    if picked is None:
        plain = shutil.which("iptables")
        if plain is None:
            raise InitError("no iptables found: install iptables (nft or legacy)")
        return "iptables"
    return picked


def apply_plan(plan: Plan, bins: Binaries) -> None:
    """Flush-and-fill Tulle's chains at once, then add each jump if missing."""
    _must([bins.restore, "--noflush"], stdin=plan.restore_input())
    for jump in plan.jumps:
        if _run([bins.main, *jump_check(jump)]).returncode != 0:
            _must([bins.main, *jump_add(jump)])


def remove_plan(plan: Plan, bins: Binaries) -> int:
    """Delete the jumps and chains; the number of things removed."""
    removed = 0
    deletes, chains = removal(plan)
    for delete in deletes:
        for _ in range(MAX_JUMP_DELETES):
            if _run([bins.main, *delete]).returncode != 0:
                break
            removed += 1
    present = _run([bins.save, "-t", "nat"])
    if present.returncode == 0 and not has_tulle_chains(present.stdout):
        return removed
    for args in chains:
        if _run([bins.main, *args]).returncode == 0 and args[2] == "-X":
            removed += 1
    return removed


def _ipv6_usable(bins: Binaries) -> bool:
    return (
        shutil.which(bins.main) is not None
        and shutil.which(bins.restore) is not None
        and os.path.exists("/proc/net/if_inet6")
    )


@app.command()
def init(
    proxy_uid: int = typer.Option(
        PROXY_UID, "--proxy-uid", help="The uid the proxy runs as: its traffic is not captured."
    ),
    inbound_port: int = typer.Option(
        INBOUND_PORT, "--inbound-port", help="The proxy's inbound port (inbound TCP goes there)."
    ),
    outbound_port: int = typer.Option(
        OUTBOUND_PORT,
        "--outbound-port",
        help="The proxy's outbound port (outbound TCP goes there).",
    ),
    admin_port: int = typer.Option(
        ADMIN_PORT, "--admin-port", help="The proxy's admin port: never captured inbound."
    ),
    inbound_ports_to_ignore: list[str] = typer.Option(
        [], "--inbound-ports-to-ignore", help="Inbound ports not captured: 8080,9000-9100."
    ),
    outbound_ports_to_ignore: list[str] = typer.Option(
        [], "--outbound-ports-to-ignore", help="Outbound ports not captured: 443,6443."
    ),
    subnets_to_ignore: list[str] = typer.Option(
        [], "--subnets-to-ignore", help="Outbound destinations not captured (CIDRs)."
    ),
    firewall_bin: str = typer.Option(
        "",
        "--firewall-bin",
        help="iptables-nft, iptables-legacy or a path (default: the backend already in use, "
        "else nft).",
    ),
    ipv6: bool = typer.Option(True, "--ipv6/--no-ipv6", help="Also write the ip6tables rules."),
    remove: bool = typer.Option(False, "--remove", help="Undo: delete Tulle's rules and chains."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the rules; change nothing."),
) -> None:
    """Capture this network namespace's TCP for the sidecar (iptables), or --remove it."""
    settings = CaptureSettings(
        proxy_uid=proxy_uid,
        inbound_port=inbound_port,
        outbound_port=outbound_port,
        admin_port=admin_port,
        inbound_ports_to_ignore=tuple(inbound_ports_to_ignore),
        outbound_ports_to_ignore=tuple(outbound_ports_to_ignore),
        subnets_to_ignore=tuple(subnets_to_ignore),
    )
    try:
        plans = [build(settings, IPV4), build(settings, IPV6)]
    except CaptureError as exc:
        typer.echo(f"tulle init: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        _init(plans, firewall_bin, ipv6=ipv6, remove=remove, dry_run=dry_run)
    except InitError as exc:
        typer.echo(f"tulle init: {exc}", err=True)
        raise typer.Exit(1) from None


def _init(plans: list[Plan], firewall_bin: str, *, ipv6: bool, remove: bool, dry_run: bool) -> None:
    if dry_run:
        backend = firewall_bin or "iptables"
    else:
        if not has_net_admin():
            raise InitError(
                "changing packet rules needs root or CAP_NET_ADMIN "
                "(in a pod: the init container's securityContext adds NET_ADMIN and NET_RAW)"
            )
        backend = choose_backend(firewall_bin)
    for plan in plans:
        bins = binaries(backend, plan.family)
        if plan.family == IPV6 and not dry_run and not (ipv6 and _ipv6_usable(bins)):
            if ipv6:
                print(f"# IPv6: skipped ({bins.main} or IPv6 not available)")
            continue
        if plan.family == IPV6 and not ipv6:
            continue
        name = bins.main.rpartition("/")[2]
        if remove:
            if dry_run:
                deletes, chains = removal(plan)
                for args in deletes + chains:
                    print(f"{name} {' '.join(args)}")
                continue
            count = remove_plan(plan, bins)
            print(f"# {name}: removed {count} jumps and chains")
            continue
        if not dry_run:
            apply_plan(plan, bins)
        print(f"# {name}{' (dry run)' if dry_run else ''}: flush-and-fill, nat table")
        for line in plan.commands(name):
            print(line)
    sys.stdout.flush()
