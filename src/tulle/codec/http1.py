"""HTTP/1.x codec over `httptools` (llhttp): bytes in, head/body/end callbacks out.

Sans-IO: the decoders never touch a socket; the proxy feeds them what it read
and they call a handler. They enforce the proxy's input rules (RFC 9112):

* a request line or header section over the limit is a 431;
* malformed syntax is a 400;
* `Content-Length` together with `Transfer-Encoding`, or two `Content-Length`
  headers, is a 400 and the connection must close (request smuggling, RFC 9112
  6.3) -- llhttp refuses these in its strict mode, which is what we run;
* hop-by-hop headers (RFC 9110 7.6.1: `Connection` and the fields it names,
  `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` unless upgrading,
  `Transfer-Encoding`/`Content-Length` which the proxy re-frames) are removed
  when a head is re-encoded; `Host` and end-to-end headers pass untouched,
  and so do the framing and identity headers a `Connection` header may not
  nominate (`_NOT_NOMINABLE`);
* after a request that ends the connection (`Connection: close`, HTTP/1.0
  without keep-alive) every further byte is ignored, not an error.

Bodies are re-framed, never buffered: a Content-Length body keeps its length,
a chunked body is re-chunked piece by piece as it arrives (trailers kept), and
a close-delimited response body is sent chunked to HTTP/1.1 clients.

The common head -- HTTP/1.1, `Name: value` lines, no framing or connection
field in a request, a Content-Length response -- is parsed in one call by the
C scanner `tulle.codec._h1native` when it is built (see its source for the
exact subset), and its end-to-end lines are kept as one bytes object to be
forwarded as they came. Every other head goes to llhttp as before, which
alone decides what is refused: the scanner only ever says "mine" or "not
mine". `TULLE_H1_SCANNER=python` (or no compiler at install) leaves every
head to llhttp.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import httptools

MAX_HEAD_BYTES = 64 * 1024

# Lower-case names the proxy consumes or re-frames instead of forwarding.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"content-length",
        b"upgrade",
        b"trailer",
    }
)

# The count of proxy hops a request has crossed: each hop replaces it with
# its own count plus one, so a request going round a loop of proxies is
# refused once the count passes the proxy's bound (docs/architecture.md).
HOPS_HEADER = b"tulle-hops"
# The request headers a hop does not forward as they came: hop-by-hop ones and
# the hop count, which the proxy writes afresh.
_NOT_FORWARDED_REQ = HOP_BY_HOP | {HOPS_HEADER}

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    508: b"Loop Detected",
}


class Http1Error(Exception):
    """Input the proxy must refuse: `status` is the answer, `reason` goes in
    `tulle-proxy-error`, and `close` says the connection cannot be reused."""

    def __init__(self, status: int, reason: str, detail: str = "", close: bool = True) -> None:
        super().__init__(f"{status} {reason}: {detail}" if detail else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.close = close


ScanRequest = Callable[[bytes, int, int], Any]


def _load_scanner() -> tuple[ScanRequest | None, ScanRequest | None]:
    """The native head scanner's two functions, or (None, None): llhttp only."""
    if os.environ.get("TULLE_H1_SCANNER", "auto") == "python":
        return None, None
    try:
        from tulle.codec import _h1native  # type: ignore[attr-defined]
    except ImportError:
        return None, None
    return _h1native.scan_request, _h1native.scan_response


# Read by each decoder when it is made (tests set them to None to run llhttp only).
SCAN_REQUEST, SCAN_RESPONSE = _load_scanner()

# The mesh's caller-identity header (tulle.core.policy.CLIENT_ID_HEADER): an
# inbound proxy drops a client's copy, so the decoders note whether one came.
_CLIENT_ID = b"tulle-client-id"


class MessageHead:
    """Fields shared by request and response heads."""

    __slots__ = (
        "_encoded",
        "_headers",
        "chunked",
        "connection_tokens",
        "content_length",
        "fields",
        "forwarded",
        "keep_alive",
        "trailers",
        "transfer_encoding",
        "upgrade",
        "version",
    )

    # Subclasses set every slot in their own __init__ (one call per head less).
    # Original-case (name, value) pairs in arrival order, hop-by-hop included:
    # `_headers`, or, from the scanner, None until asked for, then split out of
    # `fields` (every field line as it came, b"Name: value\r\n" each).
    fields: bytes
    _headers: list[tuple[bytes, bytes]] | None
    # The end-to-end headers, already encoded as b"Name: value\r\n" lines: one
    # bytes `forwarded` from the scanner (`_encoded` None until someone asks
    # for `encoded`), else the list built line by line by the llhttp path.
    forwarded: bytes
    _encoded: list[bytes] | None
    content_length: int | None
    chunked: bool
    transfer_encoding: bytes | None
    connection_tokens: tuple[bytes, ...]
    upgrade: bytes | None
    keep_alive: bool
    version: bytes
    trailers: list[tuple[bytes, bytes]] | None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header as (name, value), in arrival order (editable)."""
        pairs = self._headers
        if pairs is None:
            pairs = []
            # Scanned lines are exactly `name ": " value` and a name holds no
            # colon, so the first ": " is the separator.
            for line in self.fields.split(b"\r\n")[:-1]:
                name, _, value = line.partition(b": ")
                pairs.append((name, value))
            self._headers = pairs
        return pairs

    @headers.setter
    def headers(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._headers = pairs

    @property
    def encoded(self) -> list[bytes]:
        """The end-to-end header lines, one b"Name: value\r\n" each (editable)."""
        lines = self._encoded
        if lines is None:
            # Scanned values hold no CR, so CRLF splits lines exactly.
            lines = [line + b"\r\n" for line in self.forwarded.split(b"\r\n")[:-1]]
            self._encoded = lines
        return lines

    @encoded.setter
    def encoded(self, lines: list[bytes]) -> None:
        self._encoded = lines

    def header(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    def end_to_end_block(self) -> bytes:
        """The header lines to forward, as one bytes (`encoded_end_to_end`, joined)."""
        if self.connection_tokens:
            return b"".join(self.encoded_end_to_end())
        lines = self._encoded
        return self.forwarded if lines is None else b"".join(lines)

    def encoded_end_to_end(self) -> list[bytes]:
        """`encoded`, minus the fields a Connection header names (rare)."""
        named = self.connection_tokens
        if not named:
            return self.encoded
        drop = frozenset(named)
        return [line for line in self.encoded if line.split(b":", 1)[0].lower() not in drop]

    def end_to_end(self) -> list[tuple[bytes, bytes]]:
        """Headers to forward: everything but hop-by-hop and Connection-named ones."""
        drop = HOP_BY_HOP
        named = self.connection_tokens
        if named:
            drop = drop | frozenset(named)
        return [(n, v) for n, v in self.headers if n.lower() not in drop]


class RequestHead(MessageHead):
    __slots__ = ("expect_continue", "has_client_id", "hops", "host", "method", "target")

    def __init__(self) -> None:
        self._headers = []
        self.fields = b""
        self.forwarded = b""
        self._encoded = []
        self.content_length = None
        self.chunked = False
        self.transfer_encoding = None
        self.connection_tokens = ()
        self.upgrade = None
        self.keep_alive = True
        self.version = b"1.1"
        self.trailers = None
        self.method = b"GET"
        self.target = b""
        self.host: bytes | None = None
        self.expect_continue = False
        # `tulle-hops`: proxies this request crossed before this one (0 if absent).
        self.hops = 0
        # Whether the head carries a `tulle-client-id` (an inbound proxy drops it).
        self.has_client_id = False


class ResponseHead(MessageHead):
    __slots__ = ("reason", "status")

    def __init__(self) -> None:
        self._headers = []
        self.fields = b""
        self.forwarded = b""
        self._encoded = []
        self.content_length = None
        self.chunked = False
        self.transfer_encoding = None
        self.connection_tokens = ()
        self.upgrade = None
        self.keep_alive = True
        self.version = b"1.1"
        self.trailers = None
        self.status = 0
        self.reason = b""


class RequestHandler(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self, head: RequestHead) -> None: ...


class ResponseHandler(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, head: ResponseHead) -> None: ...


def _note_special(head: MessageHead, lname: bytes, value: bytes) -> None:
    if lname == b"connection":
        low = value.lower()
        if low not in _PLAIN_CONNECTION:
            # Only names other than the hop-by-hop ones matter: they are extra
            # fields the sender wants removed (RFC 9110 7.6.1), except those
            # a sender may not make hop-by-hop (see _NOT_NOMINABLE).
            tokens = [t.strip() for t in low.split(b",")]
            head.connection_tokens = head.connection_tokens + tuple(
                t for t in tokens if t and t not in _NOT_NOMINABLE
            )
    elif lname == b"transfer-encoding":
        head.transfer_encoding = value
        head.chunked = value.rstrip().lower().endswith(b"chunked")
    elif lname == b"content-length":
        head.content_length = int(value)  # llhttp already refused a bad value
    elif lname == b"upgrade":
        head.upgrade = value


_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})

# Connection tokens that are ignored rather than honoured. `Host` is needed by
# every hop (RFC 9110 7.2: a proxy MUST NOT drop it; 7.6.1: a sender MUST NOT
# nominate a field meant for all recipients); the framing headers are
# re-written by the proxy from the parsed message anyway; and the headers that
# say who the caller is (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`, and the
# mesh's own `tulle-client-id` and `tulle-hops`) are exactly what a client
# would nominate to strip what a proxy in front of it added. nginx honours no
# nomination at all; this keeps RFC 9110's rule for every other name.
_NOT_NOMINABLE = _PLAIN_CONNECTION | {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"x-forwarded-for",
    b"forwarded",
    b"x-real-ip",
    b"tulle-client-id",
    b"tulle-hops",
}

# Names whose presence changes framing or routing; everything else is only stored.
_SPECIAL_REQ = frozenset(
    {
        b"host",
        b"connection",
        b"transfer-encoding",
        b"content-length",
        b"upgrade",
        b"expect",
        HOPS_HEADER,
        _CLIENT_ID,
    }
)
_SPECIAL_RESP = frozenset({b"connection", b"transfer-encoding", b"content-length", b"upgrade"})


def parse_hops(value: bytes) -> int:
    """The value of a `tulle-hops` header: a small decimal number, else a 400."""
    text = value.strip()
    if not text.isdigit() or len(text) > 4:
        raise Http1Error(400, "bad-request", "tulle-hops must be a number of hops")
    return int(text)


# b"tulle-hops: N\r\n" for every count a proxy may send, built once (no
# formatting per request); counts past the bound are refused, never sent.
HOPS_LINES = tuple(b"tulle-hops: %d\r\n" % n for n in range(256))


class RequestDecoder:
    """Parses a stream of HTTP/1 requests and calls `handler` for each part.

    `feed()` returns None, or, after a CONNECT or Upgrade request head, the
    offset in `data` where the tunnelled bytes start (the caller owns them).
    """

    __slots__ = (
        "_handler",
        "_head",
        "_head_bytes",
        "_ignoring",
        "_in_body",
        "_max_head",
        "_parser",
        "_scan",
        "_slow",
        "_url_parts",
        "finished",
        "messages_begun",
    )

    def __init__(self, handler: RequestHandler, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._handler = handler
        self._max_head = max_head_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._head = RequestHead()
        self._head_bytes = 0
        self._in_body = False
        self._url_parts: list[bytes] = []
        self._scan = SCAN_REQUEST
        # llhttp is partway through a message: the next bytes are its.
        self._slow = False
        self.messages_begun = 0
        # A request that ends the connection (`Connection: close`, HTTP/1.0
        # without keep-alive) is complete, or `stop()` was called: whatever
        # follows is ignored, as nginx does, never an error that would replace
        # the answer to the request before it.
        self.finished = False
        self._ignoring = False

    @property
    def in_head(self) -> bool:
        """True while a request has begun but its head is not complete."""
        return self.messages_begun > 0 and not self._in_body and self._head_bytes > 0

    def reset(self) -> None:
        """Start afresh after a refused upgrade (llhttp stays paused after one)."""
        if self._ignoring:
            return
        self._parser = httptools.HttpRequestParser(self)
        self._head_bytes = 0
        self._in_body = False
        self._slow = False

    def stop(self) -> None:
        """Ignore every byte from now on (the connection is being closed)."""
        self.finished = True
        self._ignoring = True
        # A parser with no callbacks: what it parses goes nowhere, and the
        # errors it raises are ignored below.
        self._parser = httptools.HttpRequestParser(_NO_CALLBACKS)

    def feed(self, data: bytes) -> int | None:
        pos = 0
        scan = self._scan
        if scan is not None and not self._slow and not self.finished:
            # Whole bodiless heads the scanner takes, one call each; the first
            # one it does not take (and all after it) goes to llhttp.
            size = len(data)
            handler = self._handler
            while True:
                got = scan(data, pos, self._max_head)
                if got is None:
                    break
                head = RequestHead()
                pos, head.method, head.target, head.fields, head.forwarded, specials = got
                head._encoded = head._headers = None
                self._head = head
                self.messages_begun += 1
                for lname, value in specials:
                    if lname == b"host":
                        if head.host is not None:
                            raise Http1Error(400, "bad-request", "more than one Host header")
                        head.host = value
                    elif lname == HOPS_HEADER:
                        head.hops = max(head.hops, parse_hops(value))
                    else:
                        head.has_client_id = True
                self._in_body = True
                handler.on_request_head(head)
                self._in_body = False
                handler.on_request_end(head)
                if pos == size or self.finished:
                    return None
            if pos:
                data = data[pos:]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._ignoring:
                self._parser = httptools.HttpRequestParser(_NO_CALLBACKS)
                return None
            return pos + int(upgrade.args[0])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Http1Error):
                raise cause from None
            raise
        except httptools.HttpParserInvalidMethodError:
            if self.finished:
                return None
            raise Http1Error(400, "bad-request", "invalid method") from None
        except httptools.HttpParserError as exc:
            if self.finished:
                # Bytes after a request that ended the connection.
                return None
            detail = str(exc.args[0]) if exc.args else "malformed request"
            raise Http1Error(400, "bad-request", detail) from None
        if not self._in_body and self._head_bytes > self._max_head:
            raise Http1Error(431, "header-too-large", "request header section too large")
        return None

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._head = RequestHead()
        self._head_bytes = 1
        self._in_body = False
        self._url_parts = []
        self._slow = True
        self.messages_begun += 1

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            raise Http1Error(431, "header-too-large", "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head.trailers is not None or self._in_body:
            if head.trailers is None:
                head.trailers = []
            head.trailers.append((name, value))
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise Http1Error(431, "header-too-large", "request header section too large")
        head._headers.append((name, value))  # type: ignore[union-attr]
        lname = name.lower()
        if lname not in _NOT_FORWARDED_REQ:
            head._encoded.append(name + b": " + value + b"\r\n")  # type: ignore[union-attr]
        if lname in _SPECIAL_REQ:
            if lname == b"host":
                if head.host is not None:
                    raise Http1Error(400, "bad-request", "more than one Host header")
                head.host = value
            elif lname == b"expect":
                head.expect_continue = value.lower() == b"100-continue"
            elif lname == HOPS_HEADER:
                head.hops = max(head.hops, parse_hops(value))
            elif lname == _CLIENT_ID:
                head.has_client_id = True
            else:
                _note_special(head, lname, value)

    def on_headers_complete(self) -> None:
        head = self._head
        parser = self._parser
        head.method = parser.get_method()
        head.version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        head.keep_alive = parser.should_keep_alive()
        parts = self._url_parts
        head.target = parts[0] if len(parts) == 1 else b"".join(parts)
        self._in_body = True
        self._handler.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self._handler.on_request_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        self._in_body = False
        self._slow = False
        head = self._head
        if not head.keep_alive:
            self.finished = True
        self._handler.on_request_end(head)


# The protocol object of a parser whose output is ignored: it has no callbacks.
_NO_CALLBACKS = object()


class ResponseDecoder:
    """Parses the responses of one upstream connection.

    Call `expect(head_request=...)` before each request is sent: a response to
    HEAD has no body whatever its Content-Length says, which llhttp cannot know.
    """

    __slots__ = (
        "_body_left",
        "_handler",
        "_head",
        "_head_bytes",
        "_head_request",
        "_in_body",
        "_max_head",
        "_parser",
        "_replace_parser",
        "_scan",
        "_slow",
    )

    def __init__(self, handler: ResponseHandler, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._handler = handler
        self._max_head = max_head_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._head = ResponseHead()
        self._head_bytes = 0
        self._in_body = False
        self._head_request = False
        self._replace_parser = False
        self._scan = SCAN_RESPONSE
        # llhttp is partway through a message: the next bytes are its.
        self._slow = False
        # Body bytes still to come of a response the scanner took.
        self._body_left = 0

    def expect(self, handler: ResponseHandler, head_request: bool) -> None:
        """Route the next response's events to `handler` (the exchange)."""
        self._handler = handler
        self._head_request = head_request

    @property
    def in_close_delimited_body(self) -> bool:
        h = self._head
        return self._in_body and not h.chunked and h.content_length is None

    def feed(self, data: bytes) -> int | None:
        pos = 0
        left = self._body_left
        if left:
            # The rest of a Content-Length body after a scanned head.
            size = len(data)
            if size < left:
                self._body_left = left - size
                self._handler.on_response_body(data)
                return None
            self._body_left = 0
            self._handler.on_response_body(data if size == left else data[:left])
            self._in_body = False
            self._handler.on_response_end(self._head)
            if size == left:
                return None
            pos = left
        scan = self._scan
        if scan is not None and not self._slow:
            size = len(data)
            # A response to HEAD goes to llhttp, which knows it ends at its head.
            while not self._head_request:
                got = scan(data, pos, self._max_head)
                if got is None:
                    break
                head = ResponseHead()
                end, head.status, head.reason, head.fields, head.forwarded, length = got
                head._encoded = head._headers = None
                head.content_length = length
                self._head = head
                self._in_body = True
                self._handler.on_response_head(head)
                pos = end + length
                if pos > size:
                    if end < size:
                        self._handler.on_response_body(data[end:])
                    self._body_left = pos - size
                    return None
                if length:
                    self._handler.on_response_body(data[end:pos])
                self._in_body = False
                self._handler.on_response_end(head)
                if pos == size:
                    return None
            if pos:
                data = data[pos:]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return pos + int(upgrade.args[0])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Http1Error):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            if self._replace_parser:
                # A HEAD response ended at its head; bytes llhttp took as body
                # would be a protocol violation by the upstream anyway.
                pass
            else:
                detail = str(exc.args[0]) if exc.args else "malformed response"
                raise Http1Error(502, "upstream-protocol-error", detail) from None
        finally:
            if self._replace_parser:
                self._replace_parser = False
                self._slow = False
                self._parser = httptools.HttpResponseParser(self)
        if not self._in_body and self._head_bytes > self._max_head:
            raise Http1Error(502, "upstream-header-too-large", "response header section too large")
        return None

    def connection_closed(self, clean: bool) -> bool:
        """The upstream's connection ended; True when that completed the response.

        Only a close-delimited body ends at the close (RFC 9112 6.3), and only
        at a clean one (FIN): a reset means the upstream crashed or was killed
        partway through, so the body is cut short, as is any Content-Length
        or chunked body still open. On False the caller treats whatever
        response is in progress as broken; nothing is signalled here.
        """
        if clean and self.in_close_delimited_body:
            self._in_body = False
            self._handler.on_response_end(self._head)
            return True
        return False

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._head = ResponseHead()
        self._head_bytes = 1
        self._in_body = False
        self._slow = True

    def on_status(self, status: bytes) -> None:
        self._head.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if self._in_body:
            if head.trailers is None:
                head.trailers = []
            head.trailers.append((name, value))
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise Http1Error(502, "upstream-header-too-large", "response header section too large")
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname in _SPECIAL_RESP:
                _note_special(head, lname, value)
        else:
            head._encoded.append(name + b": " + value + b"\r\n")  # type: ignore[union-attr]
        head._headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        head = self._head
        parser = self._parser
        head.status = parser.get_status_code()
        head.version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        head.keep_alive = parser.should_keep_alive()
        self._in_body = True
        self._handler.on_response_head(head)
        if self._head_request and head.status >= 200:
            # No body follows a response to HEAD; end it here and start a new
            # parser for the next response on this connection.
            self._in_body = False
            self._replace_parser = True
            self._head_request = False
            self._handler.on_response_end(head)

    def on_body(self, body: bytes) -> None:
        if not self._replace_parser:
            self._handler.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._replace_parser:
            return
        self._in_body = False
        self._slow = False
        self._head_bytes = 0
        self._handler.on_response_end(self._head)


# -- encoding ---------------------------------------------------------------


def encode_headers(out: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")


def encode_chunk(out: list[bytes], data: bytes) -> None:
    if data:
        out.append(b"%x\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")


def encode_last_chunk(out: list[bytes], trailers: list[tuple[bytes, bytes]] | None) -> None:
    if trailers:
        out.append(b"0\r\n")
        encode_headers(out, trailers)
        out.append(b"\r\n")
    else:
        out.append(b"0\r\n\r\n")


def error_response(
    status: int, reason: str, message: str, *, close: bool, extra: bytes = b""
) -> bytes:
    """A proxy-made response: `tulle-proxy-error` names the cause; `extra` is
    more header lines (each ending in CRLF), such as `retry-after`."""
    body = message.encode("utf-8", "replace") + b"\n"
    phrase = REASONS.get(status, b"Error")
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, phrase),
        b"tulle-proxy-error: " + reason.encode("ascii", "replace") + b"\r\n",
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    if extra:
        head.append(extra)
    if close:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)
