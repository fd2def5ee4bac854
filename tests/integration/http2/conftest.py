"""Fixtures for HTTP/2 and gRPC through Tulle (launchers in h2support)."""

from __future__ import annotations

import pytest
from h2support import Mesh, start_mesh
from support.process import ProcessGroup


@pytest.fixture(scope="module")
def mesh(module_processes: ProcessGroup) -> Mesh:
    """Three gRPC servers and an h2 backend behind two proxy hops, for one test module."""
    return start_mesh(module_processes)
