"""Watchers, translators and bounded queues of the Destination service, without sockets."""

from __future__ import annotations

import asyncio
from textwrap import dedent, indent
from typing import Any

import grpc
import pytest

from tulle.api.destination_client import (
    apply_update,
    normalize_service_name,
    parse_control_addresses,
    profile_from_message,
)
from tulle.api.proto import destination_pb2 as pb
from tulle.control.destination.authority import authority_key, lookup
from tulle.control.destination.service import DestinationService
from tulle.control.destination.translator import (
    EndpointTranslator,
    ProfileTranslator,
    UpdateQueue,
    profile_message,
)
from tulle.control.destination.watcher import DestinationWatcher
from tulle.control.manifest import Manifest, parse_manifest
from tulle.control.metrics import ControlMetrics
from tulle.core.discovery import Endpoint, Profile, ServiceView


def manifest(services: str) -> Manifest:
    return parse_manifest("services:\n" + services)


def drain(queue: UpdateQueue[Any]) -> list[Any]:
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
    return items


def endpoints_of(update: pb.Update) -> list[tuple[str, int]]:
    if update.WhichOneof("update") == "add":
        return [(a.addr.host, a.addr.port) for a in update.add.addrs]
    return [(a.host, a.port) for a in update.remove.addrs]


ONE = "  - name: web\n    port: 8080\n    endpoints: [10.0.0.1:80, 10.0.0.2:80]\n"
TWO = "  - name: web\n    port: 8080\n    endpoints: [10.0.0.2:80, 10.0.0.3:80]\n"


# -- authority rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "found"),
    [
        ("web", True),
        ("WEB", True),
        ("web.", True),
        ("web:80", True),
        ("web:8080", True),
        ("web.:8080", True),
        ("web:9090", False),
        ("other", False),
        ("web:x", False),
    ],
)
def test_the_authority_rule(authority: str, found: bool) -> None:
    spec = lookup(manifest(ONE), authority_key(authority))
    assert (spec is not None) is found


def test_a_service_without_a_port_accepts_any_port() -> None:
    assert lookup(manifest("  - name: db\n"), authority_key("db:5432")) is not None


@pytest.mark.parametrize(
    ("name", "normal"),
    [("Web", "web"), ("web.", "web"), ("web:80", "web"), ("WEB.:8080", "web:8080"), ("a.b", "a.b")],
)
def test_the_client_normalises_names(name: str, normal: str) -> None:
    assert normalize_service_name(name) == normal


def test_control_addresses_parse() -> None:
    assert parse_control_addresses("127.0.0.1:8086, [::1]:8087") == [
        ("127.0.0.1", 8086),
        ("::1", 8087),
    ]
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_control_addresses(" , ")
    with pytest.raises(ValueError, match="port 'x' is not a number"):
        parse_control_addresses("a:x")


# -- translators ------------------------------------------------------------------


def test_the_first_update_is_a_snapshot_and_later_ones_are_diffs() -> None:
    watcher = DestinationWatcher(manifest(ONE))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    watcher.subscribe("web", EndpointTranslator(queue))
    (snapshot,) = drain(queue)
    assert snapshot.snapshot
    assert endpoints_of(snapshot) == [("10.0.0.1", 80), ("10.0.0.2", 80)]

    assert watcher.update_manifest(manifest(TWO)) == 1
    add, remove = drain(queue)
    # Add before Remove: the client never sees a transiently smaller set.
    assert add.WhichOneof("update") == "add" and not add.snapshot
    assert endpoints_of(add) == [("10.0.0.3", 80)]
    assert remove.WhichOneof("update") == "remove"
    assert endpoints_of(remove) == [("10.0.0.1", 80)]


def test_an_unchanged_manifest_sends_nothing() -> None:
    watcher = DestinationWatcher(manifest(ONE))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    watcher.subscribe("web", EndpointTranslator(queue))
    drain(queue)
    assert watcher.update_manifest(manifest(ONE)) == 0
    assert drain(queue) == []


def test_a_changed_endpoint_is_sent_again_as_an_add() -> None:
    watcher = DestinationWatcher(manifest(ONE))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    watcher.subscribe("web", EndpointTranslator(queue))
    drain(queue)
    weighted = (
        "  - name: web\n    port: 8080\n    endpoints:\n      - 10.0.0.1:80\n"
        "      - {address: 10.0.0.2:80, weight: 5}\n"
    )
    watcher.update_manifest(manifest(weighted))
    (add,) = drain(queue)
    assert endpoints_of(add) == [("10.0.0.2", 80)]
    assert add.add.addrs[0].weight == 5


def test_existence_changes_become_no_endpoints_updates() -> None:
    watcher = DestinationWatcher(manifest("  - name: other\n"))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    watcher.subscribe("web", EndpointTranslator(queue))
    (first,) = drain(queue)
    assert first.snapshot and first.no_endpoints.exists is False

    watcher.update_manifest(manifest("  - name: web\n"))
    (empty,) = drain(queue)
    assert empty.WhichOneof("update") == "no_endpoints" and empty.no_endpoints.exists

    watcher.update_manifest(manifest(ONE))
    (add,) = drain(queue)
    assert endpoints_of(add) == [("10.0.0.1", 80), ("10.0.0.2", 80)] and not add.snapshot

    watcher.update_manifest(manifest("  - name: other\n"))
    (gone,) = drain(queue)
    assert gone.WhichOneof("update") == "no_endpoints" and not gone.no_endpoints.exists


def test_the_client_view_follows_the_translated_updates() -> None:
    """Translator output applied by the client reproduces the manifest's endpoints."""
    watcher = DestinationWatcher(manifest(ONE))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    watcher.subscribe("web", EndpointTranslator(queue))
    view = ServiceView("web")
    # A stale entry, as after a reconnect: the snapshot must replace it.
    view.apply_add([Endpoint(("10.9.9.9", 1))])
    for states in (ONE, TWO, "  - name: web\n", ONE):
        watcher.update_manifest(manifest(states))
        for update in drain(queue):
            apply_update(view, update)
            # Repeats are harmless.
            apply_update(view, update)
        expected = manifest(states).services["web"].endpoints
        assert set(view.endpoints) == {ep.address for ep in expected}
        assert view.exists is True


def test_profiles_are_sent_whole_and_deduplicated() -> None:
    routes = indent(
        dedent(
            """\
          - name: web
            timeout: 3s
            routes:
              - name: r
                timeout: 250ms
                retry: {codes: [503], grpcStatuses: [UNAVAILABLE, 4]}
                matches:
                  - path: {type: Exact, value: /a}
                    method: GET
                    headers: [{name: X-A, value: "^b", type: RegularExpression}]
            retryBudget: {retryRatio: 0.5, minRetriesPerSecond: 3, ttl: 5s}
            backends: [{name: web, weight: 9}, {name: canary, weight: 1}]
          - name: canary
        """
        ),
        "  ",
    )
    source = manifest(routes)
    watcher = DestinationWatcher(source)
    queue: UpdateQueue[pb.DestinationProfile] = UpdateQueue(16)
    watcher.subscribe("web", ProfileTranslator(queue))
    (message,) = drain(queue)
    assert message.fully_qualified_name == "web"
    # What the client decodes is exactly what the manifest said.
    assert profile_from_message(message) == source.services["web"].profile

    watcher.update_manifest(manifest(routes + "  - name: unrelated\n"))
    assert drain(queue) == []
    watcher.update_manifest(manifest("  - name: web\n"))
    (plain,) = drain(queue)
    assert profile_from_message(plain) == Profile()


def test_profile_messages_are_built_once_per_profile() -> None:
    profile = Profile(timeout_s=1.0)
    assert profile_message("web", profile) is profile_message("web", profile)


def test_publishers_exist_only_while_watched() -> None:
    watcher = DestinationWatcher(manifest(ONE))
    queue: UpdateQueue[pb.Update] = UpdateQueue(16)
    translator = EndpointTranslator(queue)
    publisher = watcher.subscribe("made-up", translator)
    assert watcher.publisher_count == 1
    watcher.unsubscribe(publisher, translator)
    assert watcher.publisher_count == 0


# -- bounded queues -------------------------------------------------------------


def test_a_full_queue_overflows_instead_of_growing() -> None:
    queue: UpdateQueue[int] = UpdateQueue(3)
    assert all(queue.put(i) for i in range(3))
    assert queue.put(3) is False
    assert queue.overflowed
    assert len(queue) == 0
    assert queue.put(4) is False

    async def read() -> int | None:
        return await queue.get()

    assert asyncio.run(read()) is None


def test_a_waiting_reader_is_woken_by_a_put() -> None:
    async def scenario() -> list[int | None]:
        queue: UpdateQueue[int] = UpdateQueue(2)
        reader = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put(7)
        first = await asyncio.wait_for(reader, 1.0)
        reader = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put(1)
        queue.put(2)
        queue.put(3)  # overflow while the reader waits
        second = await asyncio.wait_for(reader, 1.0)
        return [first, second]

    assert asyncio.run(scenario()) == [7, None]


class _Aborted(Exception):
    pass


class FakeContext:
    """Just what the servicer uses of grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code = code
        raise _Aborted(details)


def test_a_slow_stream_is_ended_and_its_subscription_released() -> None:
    async def scenario() -> tuple[list[pb.Update], FakeContext, ControlMetrics, int]:
        watcher = DestinationWatcher(manifest(ONE))
        metrics = ControlMetrics()
        service = DestinationService(watcher, metrics, queue_capacity=2)
        context = FakeContext()
        request = pb.GetDestination(path="web", context_token="t")
        stream = service.Get(request, context)  # type: ignore[arg-type]
        received = [await anext(stream)]
        # The reader stalls while the manifest changes more often than the queue holds.
        for states in (TWO, ONE, TWO, ONE):
            watcher.update_manifest(manifest(states))
        with pytest.raises(_Aborted):
            async for update in stream:
                received.append(update)
        return received, context, metrics, watcher.publisher_count

    received, context, metrics, publishers = asyncio.run(scenario())
    assert received[0].snapshot
    assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert metrics.stream_overflows["get"] == 1
    assert metrics.streams_active["get"] == 0
    assert publishers == 0
