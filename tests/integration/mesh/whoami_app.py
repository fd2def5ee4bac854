"""An app for path and identity tests: tells what request it received, over HTTP/1.1, h2c and gRPC.

    python whoami_app.py        # prints `listening <port>`

Every request, whatever its path, is answered 200 with a JSON document:
`path` (the request target or `:path` exactly as received), `client_ids`
(every `tulle-client-id` header value, any case) and `trailer_client_ids`
(the same, from the request's trailers), `headers` (every field). HTTP/1.1 (keep-alive, chunked with
trailers) and prior-knowledge HTTP/2 share the port; an HTTP/2 request with a
gRPC content type gets the document as one gRPC message and `grpc-status: 0`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NAME = b"tulle-client-id"


Fields = list[tuple[bytes, bytes]]


def report(path: bytes, headers: Fields, trailers: Fields) -> bytes:
    document: dict[str, Any] = {
        "path": path.decode("latin-1"),
        "client_ids": [v.decode("latin-1") for n, v in headers if n.lower() == NAME],
        "trailer_client_ids": [v.decode("latin-1") for n, v in trailers if n.lower() == NAME],
        # Every field as received (names lower-cased), for header-forwarding tests.
        "headers": [[n.decode("latin-1").lower(), v.decode("latin-1")] for n, v in headers],
    }
    return json.dumps(document).encode()


class Http1:
    """httptools callbacks for one HTTP/1.1 connection."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.in_head = True

    def on_message_begin(self) -> None:
        self.url, self.headers, self.trailers, self.in_head = b"", [], [], True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        (self.headers if self.in_head else self.trailers).append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_message_complete(self) -> None:
        body = report(self.url, self.headers, self.trailers)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )


class H2:
    """One prior-knowledge HTTP/2 connection; answers when a request has ended."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.heads: dict[int, list[tuple[bytes, bytes]]] = {}
        self.trailers: dict[int, list[tuple[bytes, bytes]]] = {}

    def feed(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.heads[event.stream_id] = list(event.headers)
                if event.stream_ended is not None:
                    self.answer(event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self.trailers[event.stream_id] = list(event.headers)
                if event.stream_ended is not None:
                    self.answer(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_ended is not None:
                    self.answer(event.stream_id)
        self.transport.write(self.conn.data_to_send())

    def answer(self, stream_id: int) -> None:
        head = self.heads.pop(stream_id, [])
        fields = dict(head)
        body = report(fields.get(b":path", b""), head, self.trailers.pop(stream_id, []))
        try:
            if fields.get(b"content-type", b"").startswith(b"application/grpc"):
                self.conn.send_headers(
                    stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")]
                )
                self.conn.send_data(stream_id, struct.pack(">BI", 0, len(body)) + body)
                self.conn.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
            else:
                self.conn.send_headers(
                    stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                )
                self.conn.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.H2Error:
            pass  # the stream was reset meanwhile


class App(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.first = b""
        self.handler: Http1 | H2 | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.handler is None:
            self.first += data
            if PREFACE.startswith(self.first):
                return  # maybe HTTP/2: wait for the whole preface
            data, self.first = self.first, b""
            self.handler = H2(self.transport) if data.startswith(PREFACE) else Http1(self.transport)
        try:
            if isinstance(self.handler, H2):
                self.handler.feed(data)
            else:
                self.handler.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(App, "127.0.0.1", 0)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
