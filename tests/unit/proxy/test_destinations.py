"""The outbound's destination rules (tulle.proxy.destinations), without sockets."""

from __future__ import annotations

import pytest

from tulle.codec.http1 import Http1Error, RequestDecoder, RequestHead
from tulle.codec.http2 import MalformedRequest, parse_request_head, with_hop
from tulle.proxy.destinations import DestinationGuard, normalize_ip

LOCAL = {"127.0.0.1", "127.0.0.2", "192.0.2.2", "::1", "0.0.0.0", "::"}


def guard(raw_mode: str = "forward", inbound: str = "0.0.0.0") -> DestinationGuard:
    return DestinationGuard(
        own=(
            ("inbound", (inbound, 4143)),
            ("outbound", ("127.0.0.1", 4140)),
            ("admin", ("127.0.0.1", 4191)),
        ),
        denied=[("127.0.0.1", 9990)],
        raw_mode=raw_mode,
        is_local=lambda ip: ip in LOCAL or ip.startswith("127."),
    )


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.1", 4140),
        ("127.0.0.1", 4191),
        ("0.0.0.0", 4140),
        ("::ffff:127.0.0.1", 4191),
        # The inbound listens on 0.0.0.0: every local address reaches it.
        ("127.0.0.1", 4143),
        ("127.9.9.9", 4143),
        ("192.0.2.2", 4143),
        ("::", 4143),
    ],
)
def test_own_listeners_are_loops(host: str, port: int) -> None:
    refusal = guard().check_raw(host, port)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (508, "loop-detected")


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.2", 4140),  # the outbound listens on 127.0.0.1 only
        ("10.1.2.3", 4143),  # not a local address
        ("127.0.0.1", 8080),
    ],
)
def test_other_addresses_are_forwarded(host: str, port: int) -> None:
    assert guard().check_raw(host, port) is None


def test_specific_inbound_bind_matches_only_its_address() -> None:
    g = guard(inbound="127.0.0.1")
    assert g.check_raw("127.0.0.1", 4143) is not None
    assert g.check_raw("192.0.2.2", 4143) is None


def test_denied_addresses_are_forbidden() -> None:
    refusal = guard().check_raw("127.0.0.1", 9990)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (403, "destination-forbidden")
    assert guard().check_endpoint(("127.0.0.1", 9990)) is not None


def test_refuse_mode_refuses_every_raw_address_but_still_names_loops() -> None:
    g = guard("refuse")
    refusal = g.check_raw("10.1.2.3", 80)
    assert refusal is not None and refusal.status == 403
    own = g.check_raw("127.0.0.1", 4140)
    assert own is not None and own.status == 508


def test_endpoints_may_be_the_own_inbound_but_not_outbound_or_admin() -> None:
    g = guard()
    assert g.check_endpoint(("127.0.0.1", 4143)) is None
    assert g.check_endpoint(("127.0.0.1", 4140)) is not None
    assert g.check_endpoint(("127.0.0.1", 4191)) is not None
    # A host name cannot be judged here: the hop count cuts its loops.
    assert g.check_endpoint(("localhost", 4140)) is None


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        guard("sometimes")


def test_normalize_ip() -> None:
    assert normalize_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalize_ip("[0:0::1]") == "::1"
    assert normalize_ip("books") is None
    assert normalize_ip("a:b") is None


class _Heads:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        return None

    def on_request_end(self, head: RequestHead) -> None:
        return None


def test_http1_hop_count_is_read_and_not_forwarded_as_it_came() -> None:
    sink = _Heads()
    RequestDecoder(sink).feed(b"GET / HTTP/1.1\r\nHost: a\r\ntulle-hops: 3\r\nX: y\r\n\r\n")
    head = sink.heads[0]
    assert head.hops == 3
    assert head.encoded == [b"Host: a\r\n", b"X: y\r\n"]


@pytest.mark.parametrize("value", [b"x", b"-1", b"99999", b""])
def test_http1_bad_hop_count_is_a_400(value: bytes) -> None:
    with pytest.raises(Http1Error) as err:
        RequestDecoder(_Heads()).feed(
            b"GET / HTTP/1.1\r\nHost: a\r\ntulle-hops: " + value + b"\r\n\r\n"
        )
    assert err.value.status == 400


def test_http2_hop_count() -> None:
    base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    assert parse_request_head(base).hops == 0
    head = parse_request_head([*base, (b"tulle-hops", b"5")])
    assert head.hops == 5
    assert with_hop([*base, (b"tulle-hops", b"5")], head.hops) == [*base, (b"tulle-hops", b"6")]
    with pytest.raises(MalformedRequest):
        parse_request_head([*base, (b"tulle-hops", b"many")])


def test_descriptor_budget_keeps_a_reserve_for_admin() -> None:
    from tulle.net.descriptors import ADMIN_RESERVE, DescriptorBudget

    budget = DescriptorBudget(limit=1024)
    try:
        assert budget.connect_at == 1024 - ADMIN_RESERVE
        # Accepting stops an eighth of the limit before upstream connects do.
        assert budget.shed_at == budget.connect_at - 128
        assert budget.accept_ok(budget.shed_at - 1) and not budget.accept_ok(budget.shed_at)
        assert budget.connect_ok(budget.shed_at) and not budget.connect_ok(budget.connect_at)
    finally:
        budget.close()
