"""What the demo shop's services share: options, an HTTP server, mesh clients.

Calls between services go through the instance's sidecar without any Tulle
code: HTTP with `urllib`, which honours the `http_proxy` that `tulle up` sets;
gRPC by dialing the sidecar's outbound (`TULLE_OUTBOUND`) with the service's
name as the HTTP/2 `:authority`, which is what the proxy routes by. (grpcio
would also honour `http_proxy`, but through CONNECT, which the proxy can only
forward as opaque TCP: no per-request metrics, retries or balancing.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import grpc

LOOPBACK = "127.0.0.1"


def parse_args(description: str, argv: list[str] | None, **extra: Any) -> argparse.Namespace:
    """`--port` (default: $PORT) and `--replica` (default: $TULLE_REPLICA), plus extras.

    `extra` maps option names (without dashes) to (type, default, help) tuples.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "0")),
        help="port to listen on, on 127.0.0.1 (default: $PORT)",
    )
    parser.add_argument(
        "--replica",
        type=int,
        default=int(os.environ.get("TULLE_REPLICA", "0")),
        help="which replica this is (default: $TULLE_REPLICA)",
    )
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text)
    return parser.parse_args(argv)


def log(message: str) -> None:
    name = os.environ.get("TULLE_INSTANCE", os.path.basename(sys.argv[0]))
    print(f"[{name}] {message}", flush=True)


def stop_on_sigterm() -> None:
    """Turn SIGTERM into a clean exit of the main thread (finally blocks run)."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)


class JsonHandler(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 handler with JSON helpers and no access log."""

    protocol_version = "HTTP/1.1"
    server_version = "tulle-shop"

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_body(status, json.dumps(payload).encode() + b"\n", "application/json")

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request lines would drown the terminal `tulle up` streams to;
        # the mesh's metrics are where requests are counted.
        return


def serve_http(handler: type[BaseHTTPRequestHandler], port: int, what: str) -> None:
    """Serve on 127.0.0.1:port until SIGTERM or Ctrl-C."""
    stop_on_sigterm()
    server = ThreadingHTTPServer((LOOPBACK, port), handler)
    server.daemon_threads = True
    log(f"{what} listening on http://{LOOPBACK}:{server.server_address[1]}")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class MeshCallError(Exception):
    """A call to another service failed: status (or 0 for no answer) and why."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def get_json(service: str, path: str, timeout_s: float = 3.0) -> Any:
    """GET http://<service><path> through the sidecar; the decoded JSON body."""
    return call_json("GET", f"http://{service}{path}", None, timeout_s)


def call_json(method: str, url: str, payload: Any, timeout_s: float = 3.0) -> Any:
    """Call `url` through the sidecar with an optional JSON body; the decoded answer."""
    data = json.dumps(payload).encode() if payload is not None else None
    body = fetch(method, url, data, timeout_s)
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise MeshCallError(0, f"{url}: not JSON: {exc}") from None


def fetch(method: str, url: str, data: bytes | None = None, timeout_s: float = 3.0) -> bytes:
    """Call `url` (urllib honours http_proxy); the body, or MeshCallError."""
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise MeshCallError(exc.code, f"{url}: {exc.code} {exc.reason}") from None
    except OSError as exc:
        raise MeshCallError(0, f"{url}: {exc}") from None


def grpc_channel(service: str) -> grpc.Channel:
    """A channel to `service` through the sidecar.

    `SHOP_GRPC_VIA=authority` (the default) dials the sidecar's outbound and
    lets it route each HTTP/2 stream by `:authority`: per-request metrics,
    retries and balancing. `SHOP_GRPC_VIA=connect` makes grpcio tunnel the
    connection with HTTP CONNECT through `http_proxy` instead, which a proxy
    can only forward as opaque TCP (balanced per connection, no retries).
    """
    if os.environ.get("SHOP_GRPC_VIA", "authority") == "connect":
        return grpc.insecure_channel(f"{service}:80", options=[("grpc.enable_http_proxy", 1)])
    target = os.environ.get("TULLE_OUTBOUND", service)
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.default_authority", service),
            # The sidecar is the proxy; grpcio must not add a CONNECT hop.
            ("grpc.enable_http_proxy", 0),
        ],
    )


def serve_grpc(register: Callable[[grpc.Server], None], port: int, what: str) -> None:
    """Serve gRPC on 127.0.0.1:port until SIGTERM or Ctrl-C."""
    stop_on_sigterm()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    register(server)
    bound = server.add_insecure_port(f"{LOOPBACK}:{port}")
    server.start()
    log(f"{what} listening on grpc://{LOOPBACK}:{bound}")
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=1.0).wait(2.0)
