"""The `tulle` command line's table of contents: every top-level command and its modules.

Data only, imported by the dispatcher (`tulle.cli.main`), the root help
(`tulle.cli.roothelp`) and the root typer app (`tulle.cli.app`) alike, so that
none of them imports another to read it.
"""

from __future__ import annotations

NAME = "tulle"
HELP = "Tulle: a service mesh. A light sidecar proxy beside every service, and a control plane."
VERSION_HELP = "Print the version and exit."

# Every top-level command: its one-line help as the root help shows it, and the
# modules that register it. In the order typer lists them (commands in the order
# their modules register them, then sub-groups), so the root help reads the same.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stat": (
        "Golden metrics per service, instance or workload: success rate, RPS, latency, mTLS.",
        ("tulle.cli.observe",),
    ),
    "routes": (
        "Golden metrics per route of one service (as its callers see it).",
        ("tulle.cli.observe",),
    ),
    "edges": (
        "Who calls whom: rate, success, identities and whether the edge is mTLS.",
        ("tulle.cli.observe",),
    ),
    "top": (
        "The busiest paths right now (live, from tap), refreshing until Ctrl-C.",
        ("tulle.cli.observe",),
    ),
    "tap": (
        "Watch live requests through a service's proxies: method, path, status, latency, identity.",
        ("tulle.cli.observe",),
    ),
    "check": (
        "Health checks of the mesh (or --pre: of this machine); exits 1 when one fails.",
        ("tulle.cli.observe",),
    ),
    "apply": (
        "Change a running mesh: merge FILE into the control plane's manifest (validated first).",
        ("tulle.cli.observe",),
    ),
    "authz": (
        "Show the authorization policies that apply to SERVICE, and how often each decided.",
        ("tulle.cli.authz",),
    ),
    "control": (
        "Run a control-plane replica serving the Destination API from a manifest.",
        ("tulle.cli.control",),
    ),
    "dashboard": (
        "Open the dashboard (served by the control plane) in a browser, or print its URL.",
        ("tulle.cli.dashboard",),
    ),
    "install": (
        "Print the control plane's Kubernetes objects: `tulle install | kubectl apply -f -`.",
        ("tulle.cli.install",),
    ),
    "uninstall": (
        "Print what removes Tulle: `tulle uninstall | kubectl delete -f -`.",
        ("tulle.cli.install",),
    ),
    "inject": (
        "Add Tulle's proxy to every pod template of FILE (- for stdin), printed as YAML.",
        ("tulle.cli.inject",),
    ),
    "proxy-await": (
        "Wait until the local proxy is ready (the injected postStart hook); exit 1 on timeout.",
        ("tulle.cli.inject",),
    ),
    "proxy": (
        "Run the sidecar proxy beside one workload instance: outbound for the app's calls, "
        "inbound for calls to the app, admin for metrics and health.",
        ("tulle.cli.proxy",),
    ),
    "init": (
        "Capture this network namespace's TCP for the sidecar (iptables), or --remove it.",
        ("tulle.cli.init",),
    ),
    "up": (
        "Run a whole mesh on this machine: control plane, every service with its sidecar, ingress.",
        ("tulle.cli.up",),
    ),
    "down": (
        "Stop a mesh started with `tulle up --detach`, and wait until no process is left.",
        ("tulle.cli.up",),
    ),
    "trace-receiver": (
        "Receive the proxies' spans over OTLP/HTTP; keep them for GET /traces and a file.",
        ("tulle.cli.traces",),
    ),
    "manifest": ("Work with the local manifest (mesh.yaml).", ("tulle.cli.control",)),
    "demo": (
        "Run the demo: a small backend with a Tulle proxy in front of it.",
        ("tulle.cli.demo", "tulle.cli.demo_shop"),
    ),
    "identity": (
        "The mesh's certificate authority: trust anchor, issuer, join tokens, rotation.",
        ("tulle.cli.identity",),
    ),
}
