"""Network namespaces made by a test: create, enter, run things inside, remove.

Everything happens inside namespaces the test creates (a veth pair joins two
of them, with 10.x addresses that exist only there), so no rule or address of
the machine's own namespace changes. Entering a namespace is `setns(2)`:
in a child before exec (`preexec`; `as_uid` then runs the command as a
sidecar's proxy runs, uid 2102), or in a helper thread of the test process
(`run_in`), where it changes only that thread's namespace.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest

from support.tools import find_binary, missing

CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 30.0
THREAD_TIMEOUT_S = 60.0
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def require_netns() -> None:
    """Root and `ip`; skip when not root, fail under CI when `ip` is missing."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and iptables rules need root (run the tests as root)")
    if find_binary("ip") is None:
        missing("ip", "apt-get install -y iproute2")


def iptables_backends() -> list[str]:
    """The iptables backends this machine has (both, on Debian's iptables package)."""
    return [name for name in ("iptables-nft", "iptables-legacy") if find_binary(name)]


def enter(name: str) -> None:
    """Move the calling thread into network namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def in_netns(name: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside namespace `name` by `ip netns exec` (which execs it).

    Rather than `preexec`: a Python `preexec_fn` makes subprocess fork the
    test process and run Python in the child, and once gRPC's threads run in
    the test process (earlier tests), its fork handlers abort such a child
    (SIGABRT, "epoll_wait error: Bad file descriptor").
    """
    return ["ip", "netns", "exec", name, *argv]


def preexec(name: str) -> Callable[[], None]:
    """For `Popen(preexec_fn=...)`: the child enters namespace `name` before exec."""
    return lambda: enter(name)


def as_uid(uid: int, argv: Sequence[str]) -> list[str]:
    """`argv` run as `uid` (no groups, no privileges but reading files).

    `setpriv` rather than `Popen(user=...)`: the interpreter may live where
    only root can reach it (pyenv under /root), so the process keeps one
    capability, to read files. It has no other: NET_ADMIN is gone, and its
    packets carry `uid`, which is what the capture rules match on.
    """
    setpriv = find_binary("setpriv")
    if setpriv is None:
        missing("setpriv", "apt-get install -y util-linux")
    return [setpriv, "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
            "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
            *argv]  # fmt: skip


def run_in(name: str, fn: Callable[[], T], timeout: float = THREAD_TIMEOUT_S) -> T:
    """Call `fn` in a fresh thread inside namespace `name`; its result or exception."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            enter(name)
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in namespace {name} took more than {timeout} s")
    if error:
        raise error[0]
    return result[0]


def run(name: str, argv: Sequence[str], uid: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `name` (bounded in time)."""
    return subprocess.run(
        in_netns(name, list(argv) if uid is None else as_uid(uid, argv)),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Pair:
    """Two namespaces joined by a veth pair: `a` at `a_ip`, `b` at `b_ip` (a /24)."""

    a: str
    b: str
    a_ip: str
    b_ip: str


@contextmanager
def netns_pair(tag: str) -> Iterator[Pair]:
    """Namespaces `tulle-<tag>-<pid>-a|b`, removed on exit whatever happened."""
    base = f"tulle-{tag}-{os.getpid()}"
    pair = Pair(f"{base}-a", f"{base}-b", "10.231.0.1", "10.231.0.2")
    created: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # Made inside a, its peer moved straight into b: nothing appears in
        # the machine's own namespace, even for a moment.
        _ip("-n", pair.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
            "netns", pair.b)  # fmt: skip
        for ns, ip in ((pair.a, pair.a_ip), (pair.b, pair.b_ip)):
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0")
            _ip("-n", ns, "link", "set", "veth0", "up")
        yield pair
    finally:
        for ns in created:
            # Deleting a namespace deletes its veth end, its rules and addresses.
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
