"""The mutating admission webhook: HTTPS `POST /inject`, AdmissionReview v1 in and out.

The API server calls it for every Pod created in a namespace the
MutatingWebhookConfiguration selects (`tulle install` writes it;
docs/kubernetes.md, "Injection"). The decision and the mutation are
`tulle.k8s.inject.inject_pod`'s, the protocol is `tulle.k8s.admission`'s;
this module only moves bytes and asks the API server for the namespace's
annotations (a pod does not carry them).

It is served over TLS with the replica's own leaf (the one of the gRPC API,
`ServingCertificate.ssl_context`), which the configuration's `caBundle`
(the trust bundle) verifies.

Every byte may be hostile, and a crash here would take the control plane
down, so each request is bounded: its head (16 KiB), its body (8 MiB; the
API server's own limit for an object is 3 MiB), the time to send them, and
the number of connections at once. What is wrong gets a status and a
one-line reason: 400 not an AdmissionReview, 404, 405, 411 no length, 413
too large, 500 when the namespace could not be read (the API server then
applies the failure policy). A pod whose own `tulle.io/` annotations cannot
be used is refused (`allowed: false`) with the reason, which kubectl shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping

from tulle.k8s.admission import AdmissionRequest, ReviewError, allow, deny, json_patch, parse_review
from tulle.k8s.inject import InjectConfig, InjectError, inject_pod
from tulle.net.small_http import bound_address, close_server

log = logging.getLogger("tulle.control.webhook")

PATH = "/inject"
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
READ_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 128

NamespaceAnnotations = Callable[[str], Awaitable[Mapping[str, str]]]


class _HttpError(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class InjectionWebhook:
    """`start()` on an address with a TLS context, `close()` when done."""

    def __init__(
        self,
        config: Callable[[], InjectConfig],
        namespace_annotations: NamespaceAnnotations,
    ) -> None:
        # A callable: the trust bundle it carries may change (anchor rotation).
        self._config = config
        self._namespace_annotations = namespace_annotations
        self._server: asyncio.Server | None = None
        self._connections = 0
        self.injected = 0
        self.skipped = 0
        self.refused = 0
        self.errors = 0

    async def start(self, host: str, port: int, context: ssl.SSLContext) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            ssl=context,
            limit=MAX_HEAD_BYTES,
            ssl_handshake_timeout=READ_TIMEOUT_S,
        )
        return bound_address(self._server)

    async def close(self) -> None:
        await close_server(self._server)

    def render_prometheus(self) -> str:
        lines = [
            "# HELP webhook_admissions_total Pods the injection webhook answered.",
            "# TYPE webhook_admissions_total counter",
        ]
        for outcome, count in (
            ("injected", self.injected),
            ("skipped", self.skipped),
            ("refused", self.refused),
            ("error", self.errors),
        ):
            lines.append(f'webhook_admissions_total{{outcome="{outcome}"}} {count}')
        return "\n".join(lines) + "\n"

    # -- HTTP --------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            keep_alive = True
            first = True
            while keep_alive:
                timeout = READ_TIMEOUT_S if first else IDLE_TIMEOUT_S
                first = False
                try:
                    status, body, keep_alive = await self._one(reader, timeout)
                except _HttpError as error:
                    status, body, keep_alive = error.status, (error.reason + "\n").encode(), False
                    ctype = "text/plain"
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                    raise
                except Exception:
                    # A shape of pod nobody foresaw: one 500 (the failure policy
                    # decides), never a dead control plane.
                    self.errors += 1
                    log.exception("injection webhook: unexpected error")
                    status, body, keep_alive = (
                        "500 Internal Server Error",
                        b"internal error\n",
                        False,
                    )
                    ctype = "text/plain"
                else:
                    ctype = "application/json"
                if not status:
                    break  # the client closed, or went quiet between requests
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
                ).encode()
                writer.write(head + body)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, timeout: float) -> tuple[str, bytes, bool]:
        """One request: (status, body, keep the connection); status "" when there was none."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise _HttpError("400 Bad Request", "incomplete request head") from None
            return "", b"", False
        except asyncio.LimitOverrunError:
            raise _HttpError(
                "431 Request Header Fields Too Large", f"head over {MAX_HEAD_BYTES} bytes"
            ) from None
        except TimeoutError:
            return "", b"", False
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError("400 Bad Request", "not an HTTP/1.x request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _HttpError("400 Bad Request", "malformed header line")
            key = name.lower()
            if key in headers and key in ("content-length", "transfer-encoding"):
                raise _HttpError("400 Bad Request", f"repeated {name}")
            headers[key] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        if target.split("?", 1)[0] != PATH:
            raise _HttpError("404 Not Found", f"not found: the webhook is POST {PATH}")
        if method != "POST":
            raise _HttpError("405 Method Not Allowed", f"method not allowed: POST {PATH}")
        if "transfer-encoding" in headers:
            raise _HttpError("411 Length Required", "send the body with a Content-Length")
        length_text = headers.get("content-length", "")
        if not length_text.isdigit():
            raise _HttpError("411 Length Required", "a Content-Length is required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _HttpError(
                "413 Content Too Large", f"body of {length} bytes over {MAX_BODY_BYTES}"
            )
        try:
            body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT_S)
        except TimeoutError:
            raise _HttpError("408 Request Timeout", "the body did not arrive in time") from None
        try:
            request = parse_review(body)
        except ReviewError as exc:
            self.errors += 1
            raise _HttpError("400 Bad Request", f"bad AdmissionReview: {exc}") from None
        return "200 OK", await self.review(request), keep_alive

    # -- admission ---------------------------------------------------------------------

    async def review(self, request: AdmissionRequest) -> bytes:
        """The answer to one AdmissionReview; raises _HttpError 500 when it cannot decide."""
        if request.kind != "Pod" or request.operation not in ("CREATE", ""):
            self.skipped += 1
            return allow(request, [])
        try:
            annotations = await self._namespace_annotations(request.namespace)
        except Exception as exc:  # any failure to read the API: the failure policy decides
            self.errors += 1
            log.warning("cannot read namespace %r for injection: %s", request.namespace, exc)
            raise _HttpError(
                "500 Internal Server Error", f"cannot read namespace {request.namespace!r}"
            ) from None
        try:
            result = inject_pod(
                request.obj,
                self._config(),
                namespace=request.namespace,
                namespace_annotations=annotations,
            )
        except InjectError as exc:
            self.refused += 1
            return deny(request, f"tulle injection: {exc}")
        if not result.decision.inject:
            self.skipped += 1
            return allow(request, [])
        self.injected += 1
        return allow(request, json_patch(request.obj, result.pod))
