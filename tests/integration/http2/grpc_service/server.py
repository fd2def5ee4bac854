"""The test gRPC server: `python -m grpc_service.server --port 0` prints `LISTENING <port>`.

Run from tests/integration/http2 (or with it on PYTHONPATH). Cancelled `Slow`
calls print `CANCELLED <payload>` so a test can see that a client's
cancellation reached the server through the proxies. With `--log-calls`,
every `Unary` call prints `CALL Unary <payload>` (a mirror test counts the
copies it got); with `--delay-ms N`, `Unary` answers N ms late (a slow mirror).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from grpc_service import echo_pb2, echo_pb2_grpc

# Fail's message that makes it fail only every other call (a flaky endpoint).
EVERY_OTHER = "every-other"

# Large enough for the 16 MB message tests, with room for framing.
_MAX_MESSAGE = 64 << 20


class EchoService(echo_pb2_grpc.EchoServicer):
    def __init__(self, name: str, log_calls: bool = False, delay_ms: int = 0) -> None:
        self.name = name
        self.fail_calls = 0
        self.log_calls = log_calls
        self.delay_ms = delay_ms

    def _reply(self, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:
        payload = b"x" * request.reply_size if request.reply_size else request.payload
        return echo_pb2.EchoReply(payload=payload, server=self.name)

    async def Unary(self, request, context):  # type: ignore[no-untyped-def]
        if self.log_calls:
            print(f"CALL Unary {request.payload[:64].decode(errors='replace')}", flush=True)
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        return self._reply(request)

    async def ServerStream(self, request, context):  # type: ignore[no-untyped-def]
        for _ in range(request.count):
            yield self._reply(request)
            if request.delay_ms:
                await asyncio.sleep(request.delay_ms / 1000)

    async def ClientStream(self, request_iterator: AsyncIterator[echo_pb2.EchoRequest], context):  # type: ignore[no-untyped-def]
        received = 0
        total = 0
        async for request in request_iterator:
            received += 1
            total += len(request.payload)
        return echo_pb2.EchoReply(payload=str(total).encode(), server=self.name, received=received)

    async def Bidi(self, request_iterator: AsyncIterator[echo_pb2.EchoRequest], context):  # type: ignore[no-untyped-def]
        async for request in request_iterator:
            yield self._reply(request)

    async def Slow(self, request, context):  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(request.delay_ms / 1000)
        except asyncio.CancelledError:
            print(f"CANCELLED {request.payload.decode(errors='replace')}", flush=True)
            raise
        return self._reply(request)

    async def Fail(self, request, context):  # type: ignore[no-untyped-def]
        if request.message == EVERY_OTHER:
            # Fail every other call of this kind this server gets, succeed otherwise.
            self.fail_calls += 1
            if self.fail_calls % 2 == 0:
                return self._reply(request)
        if request.status_code:
            await context.abort(grpc.StatusCode(_code(request.status_code)), request.message)
        return self._reply(request)


def _code(number: int) -> tuple[int, str]:
    for status in grpc.StatusCode:
        if status.value[0] == number:
            return status.value  # type: ignore[no-any-return]
    return grpc.StatusCode.UNKNOWN.value  # type: ignore[no-any-return]


async def serve(port: int, log_calls: bool = False, delay_ms: int = 0) -> None:
    options = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService(str(bound), log_calls, delay_ms), server)
    await server.start()
    print(f"LISTENING {bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="The Echo test gRPC server.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--log-calls", action="store_true", help="print CALL lines for Unary")
    parser.add_argument("--delay-ms", type=int, default=0, help="answer Unary this late")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.log_calls, args.delay_ms))


if __name__ == "__main__":
    main()
