"""A stream's attempts (tulle.proxy.http2.stream with a `Call`), in memory.

A real h2 client, the proxy's stream, and one real h2 server per attempt,
joined by passing bytes by hand; the `Call` is a stub that grants or refuses
the next attempt, so these tests check what the stream does with the
answer: replay the kept request on a new upstream stream, pass the upstream's
answer on when no retry is granted, hold a gRPC response's headers until its
trailers, and report the end once (cancellation included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.errors
import h2.events

from tulle.codec.http2 import Header
from tulle.core.outcome import CANCELLED, SUCCESS, Outcome
from tulle.core.retry import NOT_SENT, STATUS
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.http2.connection import H2Limits, Outbox
from tulle.proxy.http2.dispatch import H2Counters, Routed
from tulle.proxy.http2.h2py import new_h2_connection
from tulle.proxy.http2.stream import ProxyStream, with_grpc_timeout


def peer(client_side: bool) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def exchange(a: h2.connection.H2Connection, b: h2.connection.H2Connection) -> None:
    """Pass bytes both ways until quiet."""
    for _ in range(10):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return
        if out_a:
            b.receive_data(out_a)
        if out_b:
            a.receive_data(out_b)


class Side:
    """A DownSide/UpSide over a bare h2 connection."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self.h2 = conn
        self.dirty = False
        self.writable = True
        self.released: list[int] = []

    def mark_dirty(self) -> None:
        return None

    def forget_stream(self, stream_id: int) -> None:
        self.released.append(stream_id)

    def release_stream(self, stream_id: int) -> None:
        self.released.append(stream_id)


GRPC_REQUEST: list[Header] = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc"),
    (b":path", b"/pkg.Svc/Call"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
]  # fmt: skip
BODY = b"\x00\x00\x00\x00\x05hello"


class StubCall:
    """Grants `retries` more attempts, then none; records what it is told."""

    def __init__(self, retries: int, hold: bool = False, refuse: bool = False) -> None:
        self.retries = retries
        self.hold = hold
        self.refuse = refuse
        self.replay_limit = 1024
        self.mirrored = False
        self.edits = None
        self.copies: list[tuple[object, list[bytes] | None, object]] = []
        self.asked: list[tuple[int, int, int, bool, bool]] = []
        self.ended_with: list[tuple[int, int | None, Outcome, str]] = []
        self.errors: list[str] = []

    def hold_headers(self) -> bool:
        return self.hold

    def next_attempt(
        self, failure: int, status: int, grpc_status: int, replayable: bool, complete: bool
    ) -> Routed | Refused | None:
        self.asked.append((failure, status, grpc_status, replayable, complete))
        if self.retries <= 0:
            return None
        self.retries -= 1
        if self.refuse:
            return Refused(ProxyError.ENDPOINTS_EJECTED, "all ejected")
        return Routed(("127.0.0.1", 2), call=self)

    def proxy_error(self, error: ProxyError | str) -> None:
        self.errors.append(error if isinstance(error, str) else error.reason)

    def copy(
        self,
        headers: Sequence[Header] | None,
        body: list[bytes] | None,
        trailers: list[Header] | None,
    ) -> None:
        # What is copied is looked at after the stream is over: the lists are kept.
        self.copies.append((headers, None if body is None else list(body), trailers))

    def ended(self, status: int, grpc_status: int | None, outcome: Outcome, error: str) -> None:
        self.ended_with.append((status, grpc_status, outcome, error))


class World:
    """The client, the proxy's downstream side, and one upstream per attempt."""

    def __init__(self, call: StubCall) -> None:
        self.client = peer(True)
        self.down = Side(new_h2_connection(client_side=False, limits=H2Limits()))
        exchange(self.client, self.down.h2)
        self.upstreams: list[tuple[Side, h2.connection.H2Connection]] = []
        self.client.send_headers(1, GRPC_REQUEST)
        exchange(self.client, self.down.h2)
        self.stream = ProxyStream(
            self.down, 1, Routed(("127.0.0.1", 1), call=call), GRPC_REQUEST, is_grpc=True,
            outbox=Outbox(), counters=H2Counters(), loop=asyncio.get_running_loop(),
        )  # fmt: skip
        self.stream.attach = self.attach
        self.attach(self.stream)

    def attach(self, stream: ProxyStream) -> None:
        """As the pool does: a fresh upstream connection, the stream's headers on it."""
        up = Side(new_h2_connection(client_side=True, limits=H2Limits()))
        upstream = peer(False)
        exchange(up.h2, upstream)
        headers = stream.request_headers
        assert headers is not None
        end = stream.request.end and not stream.request.chunks
        up.h2.send_headers(1, headers, end_stream=end)
        if end:
            stream.request.end_sent = True
        self.upstreams.append((up, upstream))
        stream.bind_upstream(up, 1)

    def send_request(self) -> None:
        self.client.send_data(1, BODY, end_stream=True)
        for event in self.down.h2.receive_data(self.client.data_to_send()):
            if isinstance(event, h2.events.DataReceived):
                self.stream.on_request_data(event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded):
                self.stream.on_request_end(None)

    def upstream_got(self, index: int) -> bytes:
        up, upstream = self.upstreams[index]
        events = upstream.receive_data(up.h2.data_to_send())
        return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))

    def respond(self, index: int, *blocks: tuple[list[Header], bool] | bytes) -> None:
        """The upstream of attempt `index` answers; its frames reach the stream."""
        up, upstream = self.upstreams[index]
        for block in blocks:
            if isinstance(block, bytes):
                upstream.send_data(1, block)
            else:
                upstream.send_headers(1, block[0], end_stream=block[1])
        for event in up.h2.receive_data(upstream.data_to_send()):
            if isinstance(event, h2.events.ResponseReceived):
                self.stream.on_response_headers(list(event.headers), event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                self.stream.on_response_data(event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.TrailersReceived):
                self.stream.on_response_end(list(event.headers))

    def client_saw(self) -> list[object]:
        return self.client.receive_data(self.down.h2.data_to_send())


UNAVAILABLE_ONLY: tuple[list[Header], bool] = (
    [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"14")],
    True,
)
OK_HEAD: tuple[list[Header], bool] = (
    [(b":status", b"200"), (b"content-type", b"application/grpc")],
    False,
)


def test_a_trailers_only_unavailable_is_retried_with_the_kept_request() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1)
        world = World(call)
        world.send_request()
        assert world.upstream_got(0) == BODY
        world.respond(0, UNAVAILABLE_ONLY)
        assert call.asked == [(STATUS, 200, 14, True, True)]
        # The second attempt carries the same request, body included.
        assert len(world.upstreams) == 2 and world.upstream_got(1) == BODY
        world.respond(1, OK_HEAD, b"\x00\x00\x00\x00\x02ok", ([(b"grpc-status", b"0")], True))
        events = world.client_saw()
        heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
        assert len(heads) == 1 and (b"grpc-status", b"14") not in heads[0].headers
        assert trailers and (b"grpc-status", b"0") in trailers[0].headers
        assert call.ended_with == [(200, 0, SUCCESS, "")]

    asyncio.run(scenario())


def test_when_retries_are_exhausted_the_upstreams_answer_goes_back() -> None:
    async def scenario() -> None:
        call = StubCall(retries=2)
        world = World(call)
        world.send_request()
        for attempt in range(3):
            assert world.upstream_got(attempt) == BODY
            world.respond(attempt, UNAVAILABLE_ONLY)
        assert len(call.asked) == 3 and len(world.upstreams) == 3
        heads = [e for e in world.client_saw() if isinstance(e, h2.events.ResponseReceived)]
        assert heads and (b"grpc-status", b"14") in heads[0].headers
        # The endpoint's own answer, passed on in full: the call judges it.
        assert call.ended_with == [(200, 14, SUCCESS, "")]
        assert call.errors == []

    asyncio.run(scenario())


def test_a_retry_with_nothing_to_pick_is_answered_with_the_calls_refusal() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1, refuse=True)
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, UNAVAILABLE_ONLY)
        heads = [e for e in world.client_saw() if isinstance(e, h2.events.ResponseReceived)]
        assert heads and (b"tulle-proxy-error", b"endpoints-ejected") in heads[0].headers
        assert call.errors == ["endpoints-ejected"]
        assert [e[3] for e in call.ended_with] == ["endpoints-ejected"]

    asyncio.run(scenario())


def test_held_headers_let_a_status_in_trailers_be_retried() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1, hold=True)
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, OK_HEAD)
        # Nothing reached the client yet: the headers are held.
        assert not [e for e in world.client_saw() if isinstance(e, h2.events.ResponseReceived)]
        world.respond(0, ([(b"grpc-status", b"14")], True))
        assert len(world.upstreams) == 2
        world.upstream_got(1)
        world.respond(1, OK_HEAD, b"\x00\x00\x00\x00\x02ok", ([(b"grpc-status", b"0")], True))
        events = world.client_saw()
        assert len([e for e in events if isinstance(e, h2.events.ResponseReceived)]) == 1
        assert call.ended_with == [(200, 0, SUCCESS, "")]

    asyncio.run(scenario())


def test_a_request_too_big_to_keep_is_offered_as_not_replayable() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1)
        call.replay_limit = 4
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, UNAVAILABLE_ONLY)
        assert call.asked == [(STATUS, 200, 14, False, True)]

    asyncio.run(scenario())


def test_an_upstream_that_refuses_the_stream_is_an_unsent_failure() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1)
        world = World(call)
        world.send_request()
        world.stream.on_upstream_reset(h2.errors.ErrorCodes.REFUSED_STREAM)
        assert call.asked[0][0] == NOT_SENT
        assert len(world.upstreams) == 2 and world.upstream_got(1) == BODY

    asyncio.run(scenario())


def test_a_cancelled_call_is_reported_once_as_cancelled() -> None:
    async def scenario() -> None:
        call = StubCall(retries=3)
        world = World(call)
        world.send_request()
        world.stream.on_client_reset()
        world.stream.on_client_reset()
        assert call.ended_with == [(499, 1, CANCELLED, "client-gone")]
        assert call.asked == []

    asyncio.run(scenario())


def test_the_next_attempt_is_told_what_is_left_of_the_deadline() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1)
        world = World(call)
        world.stream.request_headers = None
        world.stream.replay_headers = [*GRPC_REQUEST, (b"grpc-timeout", b"10S")]
        world.stream.set_deadline(10.0)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, UNAVAILABLE_ONLY)
        up, upstream = world.upstreams[1]
        events = upstream.receive_data(up.h2.data_to_send())
        (received,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        timeout = dict(received.headers)[b"grpc-timeout"]
        assert timeout.endswith(b"m") and 9000 <= int(timeout[:-1]) <= 10000

    asyncio.run(scenario())


def test_grpc_timeout_is_rewritten_only_where_it_was() -> None:
    plain: list[Header] = [(b":path", b"/")]
    assert with_grpc_timeout(plain, 1.0) is plain
    assert with_grpc_timeout([(b"grpc-timeout", b"5S")], 0.0004) == [(b"grpc-timeout", b"1m")]


def test_a_mirrored_stream_hands_its_whole_request_over_once_it_is_over() -> None:
    async def scenario() -> None:
        call = StubCall(retries=1)
        call.mirrored = True
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, UNAVAILABLE_ONLY)
        assert call.copies == []  # a retry is not the end: nothing copied yet
        world.upstream_got(1)
        world.respond(1, OK_HEAD, b"\x00\x00\x00\x00\x02ok", ([(b"grpc-status", b"0")], True))
        # Once, after the answer, with the client's request (not each attempt's).
        assert call.copies == [(GRPC_REQUEST, [BODY], None)]
        assert call.ended_with == [(200, 0, SUCCESS, "")]

    asyncio.run(scenario())


def test_a_mirrored_stream_whose_body_was_not_kept_hands_over_none() -> None:
    async def scenario() -> None:
        call = StubCall(retries=0)
        call.mirrored = True
        call.replay_limit = 4
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, OK_HEAD, ([(b"grpc-status", b"0")], True))
        assert call.copies == [(GRPC_REQUEST, None, None)]

    asyncio.run(scenario())


def test_an_unmirrored_stream_copies_nothing() -> None:
    async def scenario() -> None:
        call = StubCall(retries=0)
        world = World(call)
        world.send_request()
        world.upstream_got(0)
        world.respond(0, OK_HEAD, ([(b"grpc-status", b"0")], True))
        assert call.copies == [] and call.ended_with == [(200, 0, SUCCESS, "")]

    asyncio.run(scenario())
