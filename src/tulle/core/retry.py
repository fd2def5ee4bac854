"""The retry rule: whether a failed attempt may be sent again, from the route and the failure.

One rule for every route, after Linkerd's guarantees and RFC 9110 9.2.2 /
RFC 9112 9.3.1 (a request that may have been applied is resent automatically
only when its method is idempotent, unless the operator says otherwise):

    failure                         retryable absent    true      false
    not sent (NOT_SENT)             retried             retried   retried
    reset after writing (RESET)     idempotent methods  retried   never
    a response status (STATUS)      never               retried   never

* not sent: the upstream never received the request -- the connection was
  refused or failed, TLS or the identity check failed, or a pooled connection
  was found dead before any byte was written;
* reset: the connection failed after the request was written and before a
  response head, so the upstream may have run it;
* a response status: 5xx, or the route's `retry.codes`, or for gRPC the
  statuses the route's `retry.grpcStatuses` names (UNAVAILABLE...); on a
  route that is not marked retryable it is the application's answer and goes
  back as it is.

Idempotent methods are GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110
9.2.2). A failure after the response has started to reach the client is never
retried, nor is a response timeout (the route timeout bounds the request).

This module only decides from the failure's kind; the caller adds what makes a
retry possible at all (the request's bytes kept for replay, its body complete,
the attempt cap) and, for every retry of a request that may have reached the
upstream, the service's retry budget. Retries of unsent requests cost the
upstream nothing and are not drawn from the budget; the attempt cap bounds them.
"""

from __future__ import annotations

# Kinds of failed attempt (small ints: compared on the request path).
NOT_SENT = 0
RESET = 1
STATUS = 2

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def retry_allowed(
    retryable: bool | None,
    method: bytes,
    failure: int,
    status: int = 0,
    retry_statuses: frozenset[int] = frozenset(),
    grpc_status: int = -1,
    retry_grpc_statuses: frozenset[int] = frozenset(),
) -> bool:
    """Whether a failed attempt of kind `failure` may be retried on this route.

    `status` is the response status for `STATUS` failures; `retry_statuses`
    the route's `retry.codes` (empty: every 5xx). A gRPC response
    (`grpc_status` >= 0) is judged by its gRPC status: retried only when the
    route names it (`retry.grpcStatuses`); its HTTP status is 200."""
    if failure == NOT_SENT:
        return True
    if retryable is False:
        return False
    if failure == RESET:
        return retryable is True or method in IDEMPOTENT_METHODS
    if retryable is not True:
        return False
    if grpc_status >= 0 and status < 500:
        return grpc_status in retry_grpc_statuses
    if retry_statuses:
        return status in retry_statuses
    return status >= 500
