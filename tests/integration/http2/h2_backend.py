"""A tiny plaintext HTTP/2 server for tests: GET answers `hello from <port>`, POST echoes the body.

    python h2_backend.py --port 0     # prints `LISTENING <port>`

`GET /status/<code>` answers that status; `GET /big/<n>` answers n bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class Backend(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, bytes] = {}
        self.pending: dict[int, memoryview] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            print(f"protocol error from client: {exc}", flush=True)
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                self.paths[event.stream_id] = headers.get(b":path", b"/")
                self.bodies[event.stream_id] = bytearray()
                if headers.get(b":method") == b"GET":
                    del self.bodies[event.stream_id]
                    self.respond_get(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = self.bodies.pop(event.stream_id, None)
                if body is not None:
                    self.send(event.stream_id, b"200", bytes(body))
            elif isinstance(event, h2.events.WindowUpdated):
                self.flush_pending()
            elif isinstance(event, h2.events.StreamReset):
                self.pending.pop(event.stream_id, None)
        self.transport.write(self.conn.data_to_send())

    def respond_get(self, stream_id: int) -> None:
        path = self.paths[stream_id]
        if path.startswith(b"/status/"):
            self.send(stream_id, path[8:], b"status\n")
        elif path.startswith(b"/big/"):
            self.send(stream_id, b"200", b"b" * int(path[5:]))
        else:
            self.send(stream_id, b"200", b"hello from " + self.name.encode() + b"\n")

    def send(self, stream_id: int, status: bytes, body: bytes) -> None:
        try:
            self.conn.send_headers(
                stream_id,
                [(b":status", status), (b"content-length", str(len(body)).encode())],
            )
        except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError):
            return  # reset by the client in the same read
        self.pending[stream_id] = memoryview(body)
        self.flush_pending()

    def flush_pending(self) -> None:
        for stream_id, body in list(self.pending.items()):
            while body:
                size = min(
                    self.conn.local_flow_control_window(stream_id),
                    len(body),
                    self.conn.max_outbound_frame_size,
                )
                if size <= 0:
                    break
                self.conn.send_data(stream_id, body[:size])
                body = body[size:]
            if body:
                self.pending[stream_id] = body
            else:
                del self.pending[stream_id]
                self.conn.end_stream(stream_id)


async def serve(port: int, host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    holder: list[str] = ["?"]
    server = await loop.create_server(lambda: Backend(holder[0]), host, port)
    holder[0] = str(server.sockets[0].getsockname()[1])
    print(f"LISTENING {holder[0]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A tiny HTTP/2 test server.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.host))


if __name__ == "__main__":
    main()
