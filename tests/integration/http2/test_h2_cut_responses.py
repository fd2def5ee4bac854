"""An HTTP/2 upstream that dies partway through a response: the client's stream is reset.

The same rule as HTTP/1 (tests/integration/proxy/test_proxy_cut_responses.py):
a response cut short never reaches the client as complete. Over HTTP/2 that
means the client's stream ends with RST_STREAM, never END_STREAM, whether the
upstream connection was reset, closed without ending the stream, or ended it
short of its content-length.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from h2raw import RawH2
from h2support import Server, start_harness
from hyperframe.frame import Frame, RstStreamFrame
from support.process import ProcessGroup
from support.tcpservers import ConnectionServer, arm_reset

pytestmark = pytest.mark.integration

PART = b"0123456789" * 100


class CutShortH2Server(ConnectionServer):
    """An h2 upstream on a thread: answers each request with a head and part of a
    body, then ends as `how` says: "rst" (TCP reset), "fin" (TCP close without
    ending the stream) or "short" (END_STREAM short of its content-length)."""

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__()

    def answer(self, connection: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        connection.sendall(conn.data_to_send())
        for _ in range(100):  # frames until a request has fully arrived; bounded
            chunk = connection.recv(65536)
            if not chunk:
                return
            events = conn.receive_data(chunk)
            connection.sendall(conn.data_to_send())
            ended = [e for e in events if isinstance(e, h2.events.StreamEnded)]
            if ended:
                break
        else:
            return
        stream_id = ended[0].stream_id
        headers = [(":status", "200"), ("content-type", "text/plain")]
        if self.how == "short":
            headers.append(("content-length", "5000"))
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, PART, end_stream=self.how == "short")
        connection.sendall(conn.data_to_send())
        if self.how == "rst":
            arm_reset(connection)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, CutShortH2Server]]:
    servers = {how: CutShortH2Server(how) for how in ("rst", "fin", "short")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def proxy(module_processes: ProcessGroup, upstreams: dict[str, CutShortH2Server]) -> Server:
    routes = {f"cut-{how}": [server.addr] for how, server in upstreams.items()}
    return start_harness(module_processes, routes, "cut-h2-hop")


@pytest.mark.parametrize("how", ["rst", "fin", "short"])
def test_cut_response_never_reaches_the_client_as_complete(proxy: Server, how: str) -> None:
    """Either the upstream's 200 was passed on and the stream is then reset, or
    the cut came before any of it reached the client and the proxy answers
    with its own error; never the upstream's 200 ended cleanly."""
    raw = RawH2(proxy.port)
    try:
        raw.handshake()
        raw.send(raw.request(1, f"cut-{how}", "/"))
        for _ in range(20):  # bounded; stops at the stream's end
            raw.read_until(None, timeout=0.5)
            if any(_ends(f) for f in raw.frames) or raw.closed:
                break
        heads = raw.headers_of(1)
        assert heads, raw.frames
        status = dict(heads[0])[b":status"]
        end = next(f for f in raw.frames if _ends(f))
        if status == b"200":
            assert isinstance(end, RstStreamFrame), raw.frames
            assert PART.startswith(raw.data_of(1))
        else:
            assert status == b"502" and b"tulle-proxy-error" in dict(heads[0])
    finally:
        raw.close()


def _ends(frame: Frame) -> bool:
    return frame.stream_id == 1 and (
        isinstance(frame, RstStreamFrame) or "END_STREAM" in getattr(frame, "flags", ())
    )
