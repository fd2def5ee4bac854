"""Run inside a fresh network namespace (`unshare -n`): a proxy whose outbound
receives, through an iptables REDIRECT, connections whose original destination
is the proxy's own inbound. Prints one JSON line of what the clients saw.

Used by test_proxy_loops.py; standalone so that the namespace, its iptables
rule and the proxy all go away with this process.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request

OUTBOUND, INBOUND, ADMIN, APP = 4140, 4143, 4191, 8080
LOOPBACK = "127.0.0.1"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def in_child() -> None:
    # A loop that is not cut ends at this limit instead of the host's.
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
    # Killed with this probe, whatever ends it (a test timeout included).
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def admin(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{ADMIN}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except OSError as exc:
        return 0, str(exc)


def exchange(data: bytes) -> str:
    """Send `data` to the (redirected) inbound port; what came back, or how it ended."""
    with socket.create_connection((LOOPBACK, INBOUND), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except TimeoutError:
            return "timeout"
        except ConnectionResetError:
            return "reset"
    return got.decode("latin-1") or "closed"


def main() -> int:
    run("ip", "link", "set", "lo", "up")
    redirect = f"-t nat -A OUTPUT -p tcp -d {LOOPBACK} --dport {INBOUND} -j REDIRECT"
    run("iptables", *redirect.split(), "--to-ports", str(OUTBOUND))
    flags = (
        f"--outbound-addr {LOOPBACK}:{OUTBOUND} --inbound-addr {LOOPBACK}:{INBOUND} "
        f"--admin-addr {LOOPBACK}:{ADMIN} --app-addr {LOOPBACK}:{APP} --detect-timeout 0.1"
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tulle", "proxy", *flags.split()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=in_child,
    )
    try:
        deadline = time.monotonic() + 60
        while admin("/ready")[0] != 200:
            if time.monotonic() > deadline or proxy.poll() is not None:
                print(json.dumps({"error": "proxy not ready"}))
                return 1
            time.sleep(0.1)
        result = {
            # Opaque bytes: forwarded to the original destination, which is the proxy.
            "opaque": exchange(b"\x00\x01 not a protocol the proxy knows\n"),
            # HTTP without Host: routed by the original destination.
            "http": exchange(b"GET / HTTP/1.0\r\n\r\n").split("\r\n\r\n")[0],
            "fds": len(os.listdir(f"/proc/{proxy.pid}/fd")),
            "metrics": admin("/metrics")[1],
            "live": admin("/live")[0],
        }
        print(json.dumps(result))
    finally:
        proxy.kill()
        proxy.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
