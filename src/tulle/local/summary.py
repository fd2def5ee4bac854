"""The start-up summary of `tulle up`: what runs where, and how to call it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(state: dict[str, Any], console: Console) -> None:
    """Render a state JSON (as written by the supervisor) for people."""
    pids = {p["name"]: p.get("pid") for p in state.get("processes", [])}
    isolation = state.get("isolation")
    table = Table(title="tulle up: the local mesh", title_justify="left")
    columns = ["service", "instance", "app", "inbound", "outbound", "admin", "pid"]
    if isolation:
        columns[2:2] = ["address", "namespace"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for instance in state.get("instances", []):
        app_pid = pids.get(instance["name"])
        proxy_pid = pids.get(f"{instance['name']}.proxy")
        where = [instance["app"].rsplit(":", 1)[0], instance.get("netns", "")] if isolation else []
        table.add_row(
            instance["service"],
            instance["name"],
            *where,
            instance["app"].rsplit(":", 1)[1],
            instance["inbound"].rsplit(":", 1)[1],
            instance["outbound"].rsplit(":", 1)[1],
            instance["admin"].rsplit(":", 1)[1],
            f"{app_pid or '-'} / {proxy_pid or '-'}",
        )
    console.print(table, soft_wrap=True)
    if isolation:
        console.print(
            f"  pid column: app / sidecar; each instance in its network namespace on bridge "
            f"{isolation.get('bridge')} ({isolation.get('subnet')}), capture by `tulle init`",
            style="dim",
            markup=False,
            highlight=False,
        )
        virtual = isolation.get("virtual_addresses") or {}
        console.print(
            "  services by name (each namespace's /etc/hosts): "
            + ", ".join(f"{name} {address}" for name, address in virtual.items()),
            style="dim",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print("  pid column: app / sidecar; every address is on 127.0.0.1", style="dim")
    control = state.get("control", {})
    ingress = state.get("ingress", {})
    console.print(
        f"control plane   grpc {control.get('grpc')}  admin {control.get('admin')}"
        f"  pid {pids.get('control') or '-'}",
        markup=False,
        highlight=False,
    )
    if control.get("http"):
        console.print(f"dashboard       {control['http']}", markup=False, highlight=False)
        console.print(
            "                `tulle dashboard` opens it with the API token (live tap needs it)",
            style="dim",
            markup=False,
            highlight=False,
        )
    addr = ingress.get("addr", "")
    console.print(
        f"ingress         {addr}  admin {ingress.get('admin')}  pid {pids.get('ingress') or '-'}",
        markup=False,
        highlight=False,
    )
    services = ingress.get("services") or [s["name"] for s in state.get("services", [])]
    if services:
        console.print("\nCall a service through the ingress:")
        first = services[0]
        console.print(f"  curl -H 'Host: {first}' http://{addr}/", markup=False, highlight=False)
        console.print(f"  curl -x http://{addr} http://{first}/", markup=False, highlight=False)
        console.print(
            f"  (reachable through the ingress: {', '.join(services)})",
            markup=False,
            highlight=False,
        )
    for process in state.get("processes", []):
        if process.get("state") in ("cannot-start", "crash-loop"):
            console.print(
                f"\nnot running, given up: {process['name']}: {process.get('error', '')}\n"
                f"  its log: {process.get('log', '')}; `tulle check` lists it too",
                style="bold red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"\nState and logs: {state.get('state_dir')} "
        "(state.json, logs/<process>.log, mesh.generated.yaml, api-token, admin-token)",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
