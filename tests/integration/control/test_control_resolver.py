"""The proxy's ControlResolver against real `tulle control` replicas: snapshots,
edits, fail-static when replicas die, and recovery on another or a restarted one."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from control_launcher import Replica, mesh, start_control, write_manifest
from support.ports import free_port
from support.process import ProcessGroup

from tulle.api.destination_client import ControlResolver
from tulle.core.backoff import BackoffSpec
from tulle.core.discovery import ServiceView

pytestmark = pytest.mark.integration

# Short backoff so that a test waits seconds, not the production 10 s cap.
FAST_BACKOFF = BackoffSpec(min_s=0.05, max_s=0.5, jitter=0.5)
WAIT_S = 8.0


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    """Poll until `check` holds; returns how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def ports(view: ServiceView) -> set[int]:
    return {port for _, port in view.endpoints}


def kill(replica: Replica) -> None:
    replica.process.signal(signal.SIGKILL)
    replica.process.wait_exit(5.0)


def test_the_resolver_follows_the_manifest(processes: ProcessGroup, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001, 9002, extra="  - name: canary\n"))
    replica = start_control(processes, manifest)

    async def scenario() -> None:
        resolver = ControlResolver([replica.grpc_address], proxy_id="test-proxy")
        try:
            view = resolver.resolve("Web.:80")
            assert resolver.resolve("web") is view
            assert await view.wait_known(WAIT_S)
            assert ports(view) == {9001, 9002}
            await eventually(lambda: bool(view.profile.routes), "the profile")
            assert view.profile.routes[0].timeout_s == 0.5
            assert view.profile.routes[0].retryable is True

            missing = resolver.resolve("nothing-here")
            assert await missing.wait_known(WAIT_S)
            assert missing.exists is False

            write_manifest(manifest, mesh(9003, extra="  - name: nothing-here\n"))
            took = await eventually(lambda: ports(view) == {9003}, "the edit")
            assert took < 1.5
            await eventually(lambda: missing.exists is True, "the new service")
            assert resolver.updates_received >= 6
            assert resolver.reconnects == 0
        finally:
            await resolver.close()

    asyncio.run(scenario())


def test_failover_to_another_replica(processes: ProcessGroup, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001))
    replicas = [start_control(processes, manifest, name=f"control-{i}") for i in range(2)]

    async def scenario() -> None:
        resolver = ControlResolver(
            [r.grpc_address for r in replicas], proxy_id="test-proxy", backoff=FAST_BACKOFF
        )
        try:
            view = resolver.resolve("web")
            assert await view.wait_known(WAIT_S)
            await eventually(lambda: resolver.streams_connected == 2, "both streams")

            def serving() -> list[Replica]:
                return [
                    r
                    for r in replicas
                    if r.process.alive() and r.metric("control_destination_streams", rpc="get") == 1
                ]

            (active,) = await asyncio.to_thread(serving)
            (standby,) = [r for r in replicas if r is not active]
            await asyncio.to_thread(kill, active)
            # Fail static: what the view knew is still there.
            assert ports(view) == {9001}
            await eventually(lambda: resolver.reconnects >= 2, "both streams reconnected")
            assert standby.metric("control_destination_streams", rpc="get") == 1

            write_manifest(manifest, mesh(9002))
            await eventually(lambda: ports(view) == {9002}, "the edit via the standby")
        finally:
            await resolver.close()

    asyncio.run(scenario())


def test_fail_static_then_recover_on_a_restarted_replica(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001, 9002))
    port = free_port()
    first = start_control(processes, manifest, grpc_port=port, name="control-first")

    async def scenario() -> None:
        resolver = ControlResolver([("127.0.0.1", port)], backoff=FAST_BACKOFF)
        try:
            view = resolver.resolve("web")
            assert await view.wait_known(WAIT_S)
            await eventually(lambda: bool(view.profile.routes), "the profile")
            await asyncio.to_thread(kill, first)

            # While no replica runs the view keeps serving what it knew.
            write_manifest(manifest, mesh(9003))
            await asyncio.sleep(1.0)
            assert ports(view) == {9001, 9002}
            assert view.exists is True
            assert view.profile.routes[0].name == "get-items"
            failures = resolver.stream_failures
            assert failures >= 2

            await asyncio.to_thread(
                start_control, processes, manifest, grpc_port=port, name="control-second"
            )
            # The snapshot of the new stream replaces the stale endpoints.
            await eventually(lambda: ports(view) == {9003}, "recovery after the restart")
            assert resolver.reconnects >= 1
        finally:
            await resolver.close()

    asyncio.run(scenario())
