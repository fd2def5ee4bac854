"""The errors the proxy answers itself: one table for every protocol.

A `ProxyError` is a reason (the `tulle-proxy-error` header and the `reason`
label of `proxy_error_total`), the HTTP status an HTTP/1 or HTTP/2 client
gets and the gRPC status a gRPC client gets (in a trailers-only response).
The request plan (`tulle.proxy.plan`) and the connection code name an error
by its member; each protocol only maps the member onto its wire, so the same
fault gives the same reason over HTTP/1, HTTP/2 and gRPC.

gRPC statuses follow the gRPC HTTP mapping: what another attempt may cure
(no endpoints yet, overloaded, a refused or reset connection) is
UNAVAILABLE, a deadline DEADLINE_EXCEEDED, a refusal by policy
PERMISSION_DENIED, and what retrying cannot help (a malformed request, a
loop through the mesh) INTERNAL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tulle.codec.http2 import GrpcStatus

_UNAVAILABLE = GrpcStatus.UNAVAILABLE
_INTERNAL = GrpcStatus.INTERNAL
_DENIED = GrpcStatus.PERMISSION_DENIED


class ProxyError(enum.Enum):
    """(reason, HTTP status, gRPC status) of one proxy-made answer."""

    # The request itself (the client's mistake).
    BAD_REQUEST = ("bad-request", 400, _INTERNAL)
    BAD_PATH = ("bad-path", 400, _INTERNAL)
    MISSING_HOST = ("missing-host", 400, _INTERNAL)
    UNSUPPORTED_SCHEME = ("unsupported-scheme", 400, _INTERNAL)
    CONNECT_NOT_ALLOWED = ("connect-not-allowed", 400, _INTERNAL)
    # Policy and the outbound's destination rules.
    FORBIDDEN = ("unauthorized", 403, _DENIED)
    # No valid end-user token (JWT) where the policy wants one: 401 + WWW-Authenticate.
    UNAUTHENTICATED = ("unauthenticated", 401, GrpcStatus.UNAUTHENTICATED)
    RATE_LIMITED = ("rate-limited", 429, GrpcStatus.RESOURCE_EXHAUSTED)
    # A route's injected abort (chaos testing); the route's status replaces these.
    FAULT_INJECTED = ("fault-injected", 503, _UNAVAILABLE)
    DESTINATION_FORBIDDEN = ("destination-forbidden", 403, _DENIED)
    # Retrying a loop cannot help, so not UNAVAILABLE: the mesh is misrouted.
    LOOP_DETECTED = ("loop-detected", 508, _INTERNAL)
    # Discovery and balancing: nowhere to send the request now.
    UNKNOWN_SERVICE = ("unknown-service", 503, _UNAVAILABLE)
    DISCOVERY_TIMEOUT = ("discovery-timeout", 503, _UNAVAILABLE)
    NO_ENDPOINTS = ("no-endpoints", 503, _UNAVAILABLE)
    ENDPOINTS_EJECTED = ("endpoints-ejected", 503, _UNAVAILABLE)
    OVERLOADED = ("overloaded", 503, _UNAVAILABLE)
    IDENTITY_NOT_READY = ("identity-not-ready", 503, _UNAVAILABLE)
    DESCRIPTORS_EXHAUSTED = ("descriptors-exhausted", 503, _UNAVAILABLE)
    # Dialling the endpoint (`tulle.net.dial`).
    CONNECT_REFUSED = ("connect-refused", 502, _UNAVAILABLE)
    CONNECT_ERROR = ("connect-error", 502, _UNAVAILABLE)
    CONNECT_TIMEOUT = ("connect-timeout", 504, _UNAVAILABLE)
    TLS_HANDSHAKE_FAILED = ("tls-handshake-failed", 502, _UNAVAILABLE)
    IDENTITY_MISMATCH = ("identity-mismatch", 502, _UNAVAILABLE)
    # The upstream, once connected.
    UPSTREAM_RESET = ("upstream-reset", 502, _UNAVAILABLE)
    UPSTREAM_CLOSED = ("upstream-closed", 502, _UNAVAILABLE)
    UPSTREAM_GOAWAY = ("upstream-goaway", 503, _UNAVAILABLE)
    UPSTREAM_PROTOCOL_ERROR = ("upstream-protocol-error", 502, _UNAVAILABLE)
    RESPONSE_TIMEOUT = ("response-timeout", 504, GrpcStatus.DEADLINE_EXCEEDED)
    INTERNAL = ("proxy-internal-error", 500, _INTERNAL)

    @property
    def reason(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @property
    def grpc_status(self) -> int:
        return int(self.value[2])

    @classmethod
    def of(cls, reason: str) -> ProxyError:
        """The member for a reason (an HTTP/1 codec error, a destination
        refusal); an unknown reason is an internal error."""
        return _BY_REASON.get(reason, cls.INTERNAL)


_BY_REASON = {error.reason: error for error in ProxyError}


@dataclass(frozen=True, slots=True)
class Refused:
    """The request ends here with a proxy-made answer: which, and why."""

    error: ProxyError
    detail: str = ""
    # Set by an injected fault: the HTTP / gRPC status of the answer in place
    # of the error's (0 / -1: the error's), and a delay before it is sent.
    status: int = 0
    grpc_status: int = -1
    delay_s: float = 0.0
    # Headers added to the answer (`retry-after` of a rate limit).
    headers: tuple[tuple[bytes, bytes], ...] = ()
