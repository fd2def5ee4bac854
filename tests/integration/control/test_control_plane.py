"""`tulle control` as a real process, checked with a raw gRPC client."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from control_launcher import mesh, start_control, write_manifest
from support.process import ProcessGroup
from support.streams import Reader

from tulle.api.proto import destination_pb2 as pb
from tulle.api.proto import destination_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def addresses(update: pb.Update) -> set[int]:
    kind = update.WhichOneof("update")
    if kind == "add":
        return {a.addr.port for a in update.add.addrs}
    if kind == "remove":
        return {a.port for a in update.remove.addrs}
    return set()


def test_snapshot_then_edits_reach_the_stream_within_a_second(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001, 9002))
    replica = start_control(processes, manifest)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as channel:
            stub = pb_grpc.DestinationStub(channel)
            request = pb.GetDestination(path="WEB:8080", context_token="test")
            updates = Reader(stub.Get(request))
            profiles = Reader(stub.GetProfile(request))

            snapshot = await updates.next()
            assert snapshot.snapshot
            assert addresses(snapshot) == {9001, 9002}
            assert snapshot.add.addrs[0].protocol_hint == "http/1.1"
            profile = await profiles.next()
            assert profile.fully_qualified_name == "web"
            assert profile.routes[0].name == "get-items"
            assert profile.routes[0].timeout.ToNanoseconds() == 500_000_000

            for new_ports, added, removed in (
                ((9002, 9003), {9003}, {9001}),
                ((9004,), {9004}, {9002, 9003}),
            ):
                started = time.monotonic()
                write_manifest(manifest, mesh(*new_ports))
                add = await updates.next()
                elapsed = time.monotonic() - started
                assert add.WhichOneof("update") == "add" and not add.snapshot
                assert addresses(add) == added
                remove = await updates.next()
                assert remove.WhichOneof("update") == "remove"
                assert addresses(remove) == removed
                assert elapsed < 1.0, f"the edit took {elapsed:.2f} s to reach the stream"

            # A profile-only edit reaches the profile stream, not the endpoint one.
            write_manifest(manifest, mesh(9004).replace("500ms", "2s"))
            changed = await profiles.next()
            assert changed.routes[0].timeout.ToNanoseconds() == 2_000_000_000

            write_manifest(manifest, "services: []\n")
            gone = await updates.next()
            assert gone.WhichOneof("update") == "no_endpoints"
            assert gone.no_endpoints.exists is False

    asyncio.run(scenario())
    assert replica.metric("control_destination_streams_opened_total", rpc="get") == 1
    assert replica.metric("control_manifest_reload_total", result="ok") == 5


def test_a_broken_edit_is_refused_and_the_last_good_state_kept(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001))
    replica = start_control(processes, manifest)

    async def first_update(stub: pb_grpc.DestinationAsyncStub) -> pb.Update:
        return await Reader(stub.Get(pb.GetDestination(path="web"))).next()

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as channel:
            stub = pb_grpc.DestinationStub(channel)
            updates = Reader(stub.Get(pb.GetDestination(path="web")))
            await updates.next()

            write_manifest(manifest, mesh(9002).replace("500ms", "fast"))
            with pytest.raises(TimeoutError):
                await updates.next(0.8)
            # A new stream is served from the last good manifest too.
            assert addresses(await first_update(stub)) == {9001}

            write_manifest(manifest, mesh(9003))
            add = await updates.next()
            assert addresses(add) == {9003}

    asyncio.run(scenario())
    assert replica.metric("control_manifest_reload_total", result="error") == 1
    assert replica.metric("control_manifest_reload_total", result="ok") == 2
    log = replica.process.output()
    assert "refused manifest edit" in log
    assert 'mesh.yaml:8: services[0].routes[0].timeout: expected a duration like "500ms"' in log


def test_admin_endpoints(processes: ProcessGroup, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001))
    replica = start_control(processes, manifest)
    assert replica.admin_get("/ready") == (200, "ready\n")
    assert replica.admin_get("/live") == (200, "live\n")
    assert replica.admin_get("/nope")[0] == 404
    status, text = replica.admin_get("/metrics")
    assert status == 200
    assert "# TYPE control_manifest_reload_total counter" in text
    assert replica.metric("control_manifest_services") == 1
    assert replica.metric("process_resident_memory_bytes") > 1_000_000


def test_sigterm_stops_the_replica_cleanly(processes: ProcessGroup, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001))
    replica = start_control(processes, manifest)
    replica.process.signal(signal.SIGTERM)
    assert replica.process.wait_exit(5.0) == 0
    assert "Traceback" not in replica.process.output()


def test_a_broken_manifest_at_start_is_a_clear_error(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("services:\n  - name: web\n    port: eighty\n")
    process = processes.tulle(
        "control-bad",
        ["control", "--manifest", str(manifest), "--grpc-addr", "127.0.0.1:0"],
    )
    assert process.wait_exit(10.0) == 1
    output = process.output()
    assert 'mesh.yaml:3: services[0].port: expected a whole number, got "eighty"' in output
    assert "Traceback" not in output


def test_manifest_validate_exits_1_with_the_problems(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("services:\n  - name: web\n    protocol: http2\n")
    process = processes.start(
        "validate", [sys.executable, "-m", "tulle", "manifest", "validate", str(manifest)]
    )
    assert process.wait_exit(10.0) == 1
    assert "mesh.yaml:3: services[0].protocol: expected one of" in process.output()
