"""The one upstream dialler: TCP, mesh TLS with ALPN, the peer's identity, one error vocabulary.

Every connection the proxy opens towards an endpoint or an app -- an HTTP/1
pooled connection, an HTTP/2 upstream connection, an opaque or `CONNECT`
tunnel -- is opened by `dial`, so they fail the same way: a `DialFailed`
whose `reason` is the `tulle-proxy-error` the caller answers with
(`tulle.proxy.errors.ProxyError` has the same reasons, with their HTTP and
gRPC statuses):

    connect-timeout         nothing answered within the connect timeout
    connect-refused         the address refused the connection (RST)
    connect-error           any other socket error (unreachable, reset...)
    tls-handshake-failed    the mesh TLS handshake failed
    identity-mismatch       the peer's certificate names another SPIFFE ID
    descriptors-exhausted   the connection would use a descriptor kept for admin

The identity is checked before anything is written: a caller never sends a
byte to a peer that is not who discovery said. `descriptors-exhausted` says
nothing about the endpoint (the caller does not count it against it).
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tulle.net.deadline import within
from tulle.net.mtls import verify_identity

if TYPE_CHECKING:
    from tulle.net.descriptors import DescriptorBudget

CONNECT_TIMEOUT = "connect-timeout"
CONNECT_REFUSED = "connect-refused"
CONNECT_ERROR = "connect-error"
TLS_HANDSHAKE_FAILED = "tls-handshake-failed"
IDENTITY_MISMATCH = "identity-mismatch"
DESCRIPTORS_EXHAUSTED = "descriptors-exhausted"

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


class DialFailed(Exception):
    """A dial that failed: `reason` is one of this module's reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def failure_of(exc: BaseException, label: str) -> DialFailed:
    """An exception from `create_connection` (or its timeout) as a `DialFailed`."""
    if isinstance(exc, TimeoutError):
        return DialFailed(CONNECT_TIMEOUT, f"connecting to {label} timed out")
    if isinstance(exc, ConnectionRefusedError):
        return DialFailed(CONNECT_REFUSED, f"{label} refused the connection")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return DialFailed(DESCRIPTORS_EXHAUSTED, str(exc))
    if isinstance(exc, ssl.SSLError):
        return DialFailed(TLS_HANDSHAKE_FAILED, f"connecting to {label}: {exc}")
    return DialFailed(CONNECT_ERROR, f"connecting to {label}: {exc or type(exc).__name__}")


async def dial(
    factory: Callable[[], _P],
    address: tuple[str, int],
    *,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    expected_identity: str | None = None,
    fds: DescriptorBudget | None = None,
    server_hostname: str | None = "",
) -> tuple[asyncio.BaseTransport, _P, str]:
    """Connect to `address` (over `tls` when given, whose context carries the
    ALPN), check the peer's SPIFFE ID against `expected_identity`, and admit
    the new descriptor against `fds`. Returns the transport, the protocol and
    the verified peer identity ("" in plaintext); raises `DialFailed`.

    `server_hostname` is the TLS SNI: "" (the mesh's default) sends none, as
    peers are told apart by their SPIFFE ID, not by name; None sends the host."""
    loop = asyncio.get_running_loop()
    label = f"{address[0]}:{address[1]}"
    try:
        transport, protocol = await within(
            loop.create_connection(
                factory,
                address[0],
                address[1],
                ssl=tls,
                server_hostname=server_hostname if tls is not None else None,
            ),
            timeout_s,
        )
    except (OSError, TimeoutError) as exc:
        raise failure_of(exc, label) from None
    if fds is not None and not fds.admit_upstream(transport):
        # The last descriptors are the admin listener's (tulle.net.descriptors).
        transport.abort()
        raise DialFailed(DESCRIPTORS_EXHAUSTED, "the proxy is out of file descriptors")
    peer_id = ""
    if tls is not None and expected_identity:
        try:
            peer_id = verify_identity(transport.get_extra_info("ssl_object"), expected_identity)
        except ssl.SSLError as exc:
            transport.close()
            raise DialFailed(IDENTITY_MISMATCH, f"{label}: {exc}") from None
    return transport, protocol, peer_id
