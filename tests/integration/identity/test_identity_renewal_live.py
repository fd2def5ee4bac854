"""Short-lived leaves renew again and again while TLS connections keep succeeding."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import grpc
import pytest
from mtls_support import API, LOOPBACK, WEB, exchange, tls_echo_server

from tulle.control.identity_service import add_identity_servicer
from tulle.identity.client import CertManager
from tulle.identity.store import IssuerDirectory
from tulle.identity.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEAF_TTL_S = 3.0
RUN_S = 10.0
INTERVAL_S = 0.05


def test_renewals_under_traffic_and_issuer_rotation(tmp_path: Path) -> None:
    directory = IssuerDirectory(tmp_path)
    directory.init("cluster.local", now=time.time())

    async def scenario() -> None:
        server = grpc.aio.server()
        service = add_identity_servicer(
            server, tmp_path, leaf_ttl_s=LEAF_TTL_S, check_interval_s=0.2
        )
        address = f"{LOOPBACK}:{server.add_insecure_port(f'{LOOPBACK}:0')}"
        await server.start()
        managers = [
            CertManager.from_control_plane(
                identity,
                [address],
                make_token(directory.token_secret(), identity, now=time.time(), ttl_s=600),
            )
            for identity in (WEB, API)
        ]
        web, api = managers
        try:
            for manager in managers:
                await manager.start()
                await manager.wait_ready(10)
            ok = failures = 0
            errors: list[str] = []
            rotated = False
            async with tls_echo_server(api.server_context()) as echo_server:
                started = time.monotonic()
                while time.monotonic() - started < RUN_S:  # bounded in time...
                    if not rotated and time.monotonic() - started > RUN_S / 2:
                        directory.rotate_issuer(now=time.time())
                        rotated = True
                    try:
                        # ...each exchange bounded by its own timeouts.
                        echo, _ = await exchange(echo_server.port, web.client_context(), API)
                        ok += echo == b"ping\n"
                    except (OSError, ssl.SSLError, TimeoutError) as error:
                        failures += 1
                        errors.append(repr(error))
                    await asyncio.sleep(INTERVAL_S)
            assert failures == 0, errors[:5]
            assert ok > 50
            # ~2 s per renewal at 70 % of a 3 s leaf (notAfter is whole seconds).
            assert web.renewals >= 4 and api.renewals >= 4, (web.renewals, api.renewals)
            assert web.failures == 0 and api.failures == 0
            issuer = directory.load_issuer().certificate
            for manager in managers:
                assert manager.current is not None
                assert manager.current.intermediates[0] == issuer  # renewed after rotation
            assert service.counters.counts["ok"] == web.renewals + api.renewals
        finally:
            for manager in managers:
                await manager.close()
            await service.close()
            await server.stop(grace=None)

    asyncio.run(scenario())
