"""`tulle up --isolated`: each instance in a network namespace of its own.

Theory of operation. A mesh gets one Linux bridge on the host, with the
host's address `.1` of a /24 that nothing on the host routes yet. Each
instance gets a network namespace, joined to the bridge by a veth pair (the
host end is a bridge port, the other end is the namespace's `eth0`), an
address `.2`, `.3`, ... of that /24, and `tulle init`'s capture rules, so
its sidecar (uid `PROXY_UID`, which the rules exempt) takes every TCP
connection in and out. Every service gets a *virtual address* (`.128` on):
no interface has it; each namespace's `/etc/netns/<ns>/hosts`, which `ip
netns exec` mounts over `/etc/hosts` for the processes it starts, names it,
and the control plane's generated manifest knows it as the service (plan.py),
so that an app's plain `http://catalog/` goes: name -> virtual address ->
captured by its sidecar's outbound -> routed by `Host` (or by the address) ->
mTLS to a peer namespace's app port -> captured by that sidecar's inbound ->
the peer app on its own 127.0.0.1.

Names are unique per mesh: the tag is a hash of the state directory, so two
meshes (or tests) never share a bridge, a namespace or an `/etc/netns`
directory. Nothing of the host is changed but what this module creates; the
bridge has netfilter calls off (`nf_call_iptables 0`), so a host firewall
that drops forwarded packets (Docker's `FORWARD DROP`) does not see the
traffic between namespaces, and no host rule is needed. No default route is
given: an instance reaches the mesh and the host's bridge address, nothing
outside.

Clean-up must survive `kill -9` of `tulle up`, so every object is written to
`<state dir>/network.json` *before* it is created; `destroy` deletes what the
record names (and only names of this module's own pattern), whichever of
them exist, and then the record: on a normal stop, and from the next `tulle
up` or `tulle down` after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tulle.net.capture import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, PROXY_UID

T = TypeVar("T")

RECORD_FILE = "network.json"
# Where the /24 of a mesh is taken from; the tag picks where the search starts.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
# In each /24: .1 the host (bridge), instances from .2, virtual addresses from .128.
FIRST_INSTANCE = 2
FIRST_VIRTUAL = 128
LAST_VIRTUAL = 254
# Every instance has the namespace to itself, so its ports are the defaults.
APP_PORT = 8080
PROXY_INBOUND_PORT = INBOUND_PORT
PROXY_OUTBOUND_PORT = OUTBOUND_PORT
PROXY_ADMIN_PORT = ADMIN_PORT
ETC_NETNS = Path("/etc/netns")
COMMAND_TIMEOUT_S = 30.0
# Only names of these shapes are ever deleted, whatever a record says.
_OWN_NAME = re.compile(r"^tulle-[0-9a-f]{6}(-[a-z0-9.-]+)?$")
_OWN_VETH = re.compile(r"^tv-[0-9a-f]{6}-[0-9]+$")
REQUIRED_TOOLS = ("ip", "iptables", "setpriv")
_CLONE_NEWNET = 0x40000000


class IsolationError(Exception):
    """`--isolated` cannot run here, or a step failed (a message for people)."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """One instance's namespace: its name, its veth's host end, its address."""

    instance: str
    name: str
    veth: str
    address: str


@dataclass(frozen=True, slots=True)
class Network:
    """Everything `create` makes for one mesh (pure data: `plan_network`)."""

    tag: str
    bridge: str
    subnet: str
    host_address: str
    namespaces: tuple[Namespace, ...]
    # service name -> its virtual address
    virtual: dict[str, str] = field(default_factory=dict)

    def namespace(self, instance: str) -> Namespace:
        return next(ns for ns in self.namespaces if ns.instance == instance)

    @property
    def prefix_length(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


def mesh_tag(state_dir: Path) -> str:
    """Six hex digits naming one mesh's objects: its state directory's hash."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]


def pick_subnet(tag: str, taken: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """A /24 of `SUBNET_POOL` overlapping nothing in `taken`; the tag picks the first tried."""
    subnets = list(SUBNET_POOL.subnets(new_prefix=24))
    start = int(tag, 16) % len(subnets)
    for offset in range(len(subnets)):
        candidate = subnets[(start + offset) % len(subnets)]
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise IsolationError(f"no free /24 left in {SUBNET_POOL} for the mesh's bridge")


def plan_network(
    state_dir: Path,
    instances: Sequence[str],
    services: Sequence[str],
    taken: Sequence[ipaddress.IPv4Network],
) -> Network:
    """Names and addresses for a mesh's instances and services; creates nothing."""
    if len(instances) > FIRST_VIRTUAL - FIRST_INSTANCE:
        raise IsolationError(
            f"--isolated runs at most {FIRST_VIRTUAL - FIRST_INSTANCE} instances "
            f"(one /24); this mesh has {len(instances)}"
        )
    if len(services) > LAST_VIRTUAL - FIRST_VIRTUAL + 1:
        raise IsolationError(
            f"--isolated gives at most {LAST_VIRTUAL - FIRST_VIRTUAL + 1} services a "
            f"virtual address; this mesh has {len(services)}"
        )
    tag = mesh_tag(state_dir)
    subnet = pick_subnet(tag, taken)
    base = subnet.network_address
    namespaces = tuple(
        Namespace(
            instance=name,
            name=f"tulle-{tag}-{name}",
            veth=f"tv-{tag}-{index}",
            address=str(base + FIRST_INSTANCE + index),
        )
        for index, name in enumerate(instances)
    )
    virtual = {name: str(base + FIRST_VIRTUAL + index) for index, name in enumerate(services)}
    return Network(
        tag=tag,
        bridge=f"tulle-{tag}",
        subnet=str(subnet),
        host_address=str(base + 1),
        namespaces=namespaces,
        virtual=virtual,
    )


def hosts_file(network: Network, namespace: Namespace) -> str:
    """The `/etc/hosts` an instance's processes see: services by virtual address."""
    lines = [
        "# Written by `tulle up --isolated`: the mesh's services at their virtual addresses.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{namespace.address}\t{namespace.instance}",
    ]
    lines += [f"{address}\t{service}" for service, address in network.virtual.items()]
    return "\n".join(lines) + "\n"


# -- requirements -------------------------------------------------------------


def check_requirements(
    euid: int | None = None, which: Callable[[str], str | None] = shutil.which
) -> None:
    """Root and the tools; else an IsolationError saying exactly what is missing."""
    problems: list[str] = []
    if (os.geteuid() if euid is None else euid) != 0:
        problems.append(
            "root (it creates network namespaces, a bridge and iptables rules): "
            "run it with sudo, or without --isolated"
        )
    missing = [tool for tool in REQUIRED_TOOLS if which(tool) is None]
    if missing:
        problems.append(
            f"{', '.join(missing)} on PATH (Debian/Ubuntu: apt-get install iproute2 "
            "iptables util-linux)"
        )
    if problems:
        raise IsolationError("--isolated needs " + "; and ".join(problems))


def taken_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to."""
    found: list[ipaddress.IPv4Network] = []
    for args in (["-4", "-o", "addr", "show"], ["-4", "route", "show", "table", "all"]):
        done = _ip(*args, check=False)
        for word in done.split():
            if "/" in word or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", word):
                with contextlib.suppress(ValueError):
                    found.append(ipaddress.IPv4Network(word, strict=False))
    return found


# -- the record ---------------------------------------------------------------


class Record:
    """`<state dir>/network.json`: what was (or is about to be) created."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RECORD_FILE
        self.bridges: list[str] = []
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self.etc_dirs: list[str] = []
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        for key in ("bridges", "namespaces", "veths", "etc_dirs"):
            value = data.get(key)
            if isinstance(value, list):
                getattr(self, key).extend(str(item) for item in value)

    @property
    def empty(self) -> bool:
        return not (self.bridges or self.namespaces or self.veths or self.etc_dirs)

    def add(self, kind: str, name: str) -> None:
        """Write `name` down before it is created (write-then-rename)."""
        items: list[str] = getattr(self, kind)
        if name not in items:
            items.append(name)
        self._save()

    def _save(self) -> None:
        data = {
            "bridges": self.bridges,
            "namespaces": self.namespaces,
            "veths": self.veths,
            "etc_dirs": self.etc_dirs,
        }
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(self.path)

    def forget(self) -> None:
        self.bridges, self.namespaces, self.veths, self.etc_dirs = [], [], [], []
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# -- creating and destroying ---------------------------------------------------


def _ip(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationError(f"ip {' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise IsolationError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create(
    network: Network,
    record: Record,
    init_argv: Sequence[str],
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Make the bridge, the namespaces with their capture rules, the hosts files.

    `init_argv`: how to run `tulle init` (run inside each namespace). Raises
    IsolationError; what was made so far is in `record` for `destroy`.
    """
    for name in (network.bridge, *(ns.name for ns in network.namespaces)):
        if _link_exists(name) or Path("/run/netns", name).exists():
            raise IsolationError(
                f"{name} exists already and is not in this mesh's record "
                f"({record.path}); remove it (`ip link del` / `ip netns del`) and retry"
            )
    record.add("bridges", network.bridge)
    # Netfilter calls off: bridged packets skip the host's iptables (module docstring).
    bridge_options = ["nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"]
    try:
        _ip("link", "add", network.bridge, "type", "bridge", *bridge_options)
    except IsolationError:
        _ip("link", "add", network.bridge, "type", "bridge")
    _ip("addr", "add", f"{network.host_address}/{network.prefix_length}", "dev", network.bridge)
    _ip("link", "set", network.bridge, "up")
    say(f"bridge {network.bridge}: {network.subnet}, the host at {network.host_address}")
    for ns in network.namespaces:
        _create_namespace(network, ns, record, init_argv)
        say(f"{ns.instance}: namespace {ns.name} at {ns.address} (veth {ns.veth})")


def _create_namespace(
    network: Network, ns: Namespace, record: Record, init_argv: Sequence[str]
) -> None:
    record.add("namespaces", ns.name)
    _ip("netns", "add", ns.name)
    _ip("-n", ns.name, "link", "set", "lo", "up")
    record.add("veths", ns.veth)
    # The peer is created straight inside the namespace: never a stray eth0 on the host.
    _ip("link", "add", ns.veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
    _ip("link", "set", ns.veth, "master", network.bridge)
    _ip("link", "set", ns.veth, "up")
    _ip("-n", ns.name, "addr", "add", f"{ns.address}/{network.prefix_length}", "dev", "eth0")
    _ip("-n", ns.name, "link", "set", "eth0", "up")
    etc = ETC_NETNS / ns.name
    record.add("etc_dirs", str(etc))
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts_file(network, ns))
    argv = ["ip", "netns", "exec", ns.name, *init_argv]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S * 2, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationError(f"tulle init in {ns.name}: {exc}") from None
    if done.returncode != 0:
        raise IsolationError(
            f"tulle init in {ns.name} failed: {(done.stderr or done.stdout).strip()}"
        )


def namespace_pids(name: str) -> list[int]:
    """The processes inside namespace `name` (none when it does not exist)."""
    if not Path("/run/netns", name).exists():
        return []
    out = _ip("netns", "pids", name, check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def _delete_link(name: str) -> list[str]:
    """Delete a link if it exists; a problem only when it is still there after."""
    if not _link_exists(name):
        return []
    try:
        _ip("link", "del", name)
    except IsolationError as exc:
        # Gone meanwhile (a veth goes with its namespace, asynchronously): fine.
        return [str(exc)] if _link_exists(name) else []
    return []


def destroy(record: Record, say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Delete what the record names (killing what still runs inside); returns problems."""
    problems: list[str] = []
    for name in record.namespaces:
        if not _OWN_NAME.match(name):
            problems.append(f"not removing namespace {name!r}: not a name tulle makes")
            continue
        for pid in namespace_pids(name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if Path("/run/netns", name).exists():
            try:
                _ip("netns", "del", name)
                say(f"removed namespace {name}")
            except IsolationError as exc:
                problems.append(str(exc))
    for name in record.veths:
        # Deleting a namespace deletes its veth pair (the kernel does it a moment
        # later); this is for a crash between creating the two.
        if _OWN_VETH.match(name):
            problems += _delete_link(name)
    for name in record.bridges:
        if _OWN_NAME.match(name) and _link_exists(name):
            failed = _delete_link(name)
            problems += failed
            if not failed:
                say(f"removed bridge {name}")
    for directory in record.etc_dirs:
        path = Path(directory)
        if path.parent == ETC_NETNS and _OWN_NAME.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    if record.etc_dirs:
        with contextlib.suppress(OSError):
            # The parent only when it is empty: other tools use /etc/netns too.
            ETC_NETNS.rmdir()
    if not problems:
        record.forget()
    return problems


# -- running code inside a namespace ---------------------------------------------

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def run_in_namespace(name: str, fn: Callable[[], T], timeout_s: float = 5.0) -> T | None:
    """`fn()` on a short-lived thread moved into namespace `name`; None on any failure.

    setns(2) moves only the calling thread, so the supervisor's own threads stay
    in the host's namespace; the thread ends after `fn`, taking the namespace with it.
    """
    result: list[T] = []

    def body() -> None:
        if _libc is None:
            return
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        except OSError:
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                return
        finally:
            os.close(fd)
        with contextlib.suppress(Exception):
            result.append(fn())

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else None


def proxy_prefix(namespace: str, setpriv: str = "setpriv") -> list[str]:
    """What runs a sidecar in its namespace as `PROXY_UID`.

    `--pdeathsig TERM` after the uid change: a change of uid clears the
    parent-death signal the supervisor set, and the proxy must still stop
    when `tulle up` is killed. `dac_read_search` (reading files only): the
    interpreter may live where only root can read (pyenv under /root), and
    the proxy reads the mesh's token files (mode 0600, root's).
    """
    return [
        "ip", "netns", "exec", namespace,
        setpriv, "--reuid", str(PROXY_UID), "--regid", str(PROXY_UID), "--clear-groups",
        "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
        "--pdeathsig", "TERM",
    ]  # fmt: skip


def app_prefix(namespace: str) -> list[str]:
    """What runs an app in its namespace (as the user of `tulle up`, not the proxy's uid)."""
    return ["ip", "netns", "exec", namespace]


def describe(network: Network) -> dict[str, object]:
    """For state.json (and the people reading it)."""
    return {
        "bridge": network.bridge,
        "subnet": network.subnet,
        "host": network.host_address,
        "namespaces": {ns.instance: ns.name for ns in network.namespaces},
        "virtual_addresses": dict(network.virtual),
    }
