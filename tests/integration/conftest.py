"""Fixtures for integration tests: real backends and proxies on 127.0.0.1.

Every process is started through a `ProcessGroup` whose fixture stops it in a
`finally`, whatever the test did. Backends live for the session (they are
stateless apart from counters that tests read as deltas); proxies that tests
share live for a module; a test that needs special flags starts its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.mesh import Backend, Proxy, start_backend, start_proxy
from support.process import ProcessGroup


@pytest.fixture
def processes() -> Iterator[ProcessGroup]:
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def module_processes() -> Iterator[ProcessGroup]:
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def session_processes() -> Iterator[ProcessGroup]:
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def http_backend(session_processes: ProcessGroup) -> Backend:
    return start_backend(session_processes, "http")


@pytest.fixture(scope="session")
def tcp_echo_backend(session_processes: ProcessGroup) -> Backend:
    return start_backend(session_processes, "tcp-echo")


@pytest.fixture(scope="session")
def banner_backend(session_processes: ProcessGroup) -> Backend:
    return start_backend(session_processes, "banner")


@pytest.fixture(scope="module")
def one_hop(module_processes: ProcessGroup, http_backend: Backend) -> Proxy:
    """A proxy whose outbound knows `books` (the backend) and whose inbound app
    is the backend: one Tulle hop either way."""
    return start_proxy(
        module_processes, app_addr=http_backend.addr, static_dst={"books": [http_backend.addr]}
    )


@pytest.fixture(scope="module")
def two_hops(module_processes: ProcessGroup, http_backend: Backend) -> tuple[Proxy, Proxy]:
    """client -> A outbound (`books` = B inbound) -> B inbound -> backend."""
    server_side = start_proxy(module_processes, app_addr=http_backend.addr, name="proxy-b")
    client_side = start_proxy(
        module_processes,
        static_dst={"books": [f"127.0.0.1:{server_side.inbound_port}"]},
        name="proxy-a",
    )
    return client_side, server_side
