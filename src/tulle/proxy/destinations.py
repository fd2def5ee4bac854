"""Which destination addresses the proxy refuses to forward to, and why.

A proxy that forwards to one of its own listeners calls itself: every hop
opens another connection to itself until the process runs out of file
descriptors. And an outbound that forwards to any loopback `IP:PORT` lets a
caller reach what sits behind the mesh's back (an app's own port, a sidecar's
admin with `POST /shutdown` and `/tap`). The rules, decided once per
authority or endpoint (the router caches the answer), never per request:

* **own listeners** (inbound, outbound, admin): refused, `508 loop-detected`.
  A listener bound to `0.0.0.0` or `::` is reached through every local
  address of the host, so any local IP at that port counts (the kernel says
  which addresses are local: `net.listen.is_local_address`). A destination of
  `0.0.0.0`/`::` reaches loopback, so it matches by port alone. An
  IPv4-mapped IPv6 address is compared as the IPv4 address it is.
* **denied addresses** (`--deny-dst`; `tulle up` lists every proxy's admin
  and the control plane's ports): refused, `403 destination-forbidden`.
* **raw addresses** (`IP:PORT` rather than a service name) with
  `--outbound-raw-addresses=refuse` (the `tulle up` ingress): refused,
  `403 destination-forbidden`. With `forward`, the default, an `IP:PORT` that
  no rule above refuses is forwarded as it is: the outbound routes, it is
  not a firewall (docs/architecture.md).

Endpoints from discovery are checked with the same rules except that this
proxy's own inbound is allowed: a sidecar calling its own service reaches its
app through its inbound, which is not a loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tulle.core.discovery import Address

LOOP_DETECTED = "loop-detected"
DESTINATION_FORBIDDEN = "destination-forbidden"
RAW_FORWARD = "forward"
RAW_REFUSE = "refuse"
RAW_MODES = (RAW_FORWARD, RAW_REFUSE)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a destination is refused: the status and `tulle-proxy-error` reason."""

    status: int
    reason: str
    detail: str


def normalize_ip(host: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); None if not an IP."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _unspecified(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


class DestinationGuard:
    """The rules above for one proxy; pure apart from `is_local` (injected)."""

    def __init__(
        self,
        *,
        own: Iterable[tuple[str, Address]],
        denied: Iterable[Address] = (),
        raw_mode: str = RAW_FORWARD,
        is_local: Callable[[str], bool],
    ) -> None:
        if raw_mode not in RAW_MODES:
            raise ValueError(f"raw address mode must be one of {RAW_MODES}, not {raw_mode!r}")
        # (role, normalised ip, port) of each of this proxy's listeners.
        self._own = [(role, normalize_ip(a[0]) or a[0], a[1]) for role, a in own]
        self._denied = [(normalize_ip(a[0]) or a[0], a[1]) for a in denied]
        self._ports = {port for _, _, port in self._own} | {port for _, port in self._denied}
        self.refuse_raw = raw_mode == RAW_REFUSE
        self._is_local = is_local

    def _reaches(self, ip: str, port: int, listen_ip: str, listen_port: int) -> bool:
        """Would a connection to ip:port arrive at a socket listening on listen_ip:listen_port?"""
        if port != listen_port:
            return False
        if ip == listen_ip or _unspecified(ip):
            return True
        return _unspecified(listen_ip) and self._is_local(ip)

    def _check(self, ip: str, port: int, *, own_inbound: bool) -> Refusal | None:
        if port not in self._ports:
            return None
        for role, listen_ip, listen_port in self._own:
            if role == "inbound" and not own_inbound:
                continue
            if self._reaches(ip, port, listen_ip, listen_port):
                return Refusal(
                    508,
                    LOOP_DETECTED,
                    f"{_fmt(ip, port)} is this proxy's own {role} listener",
                )
        for listen_ip, listen_port in self._denied:
            if self._reaches(ip, port, listen_ip, listen_port):
                return Refusal(
                    403,
                    DESTINATION_FORBIDDEN,
                    f"{_fmt(ip, port)} is a protected address (--deny-dst)",
                )
        return None

    def check_raw(self, host: str, port: int) -> Refusal | None:
        """A raw `IP:PORT` authority, or an original destination: None to forward."""
        ip = normalize_ip(host) or host
        refusal = self._check(ip, port, own_inbound=True)
        if refusal is None and self.refuse_raw:
            return Refusal(
                403,
                DESTINATION_FORBIDDEN,
                f"raw address {_fmt(ip, port)} refused here: call a service by name",
            )
        return refusal

    def check_endpoint(self, address: Address) -> Refusal | None:
        """An endpoint that discovery gave for a service name: None to use it."""
        ip = normalize_ip(address[0])
        if ip is None:
            # A host name (static configuration): the hop count cuts any loop.
            return None
        return self._check(ip, address[1], own_inbound=False)


def _fmt(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
