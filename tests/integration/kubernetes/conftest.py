"""Fixtures of the Kubernetes tests: one real API server for the session."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_cluster import Cluster, KubeletStandIn, require_binaries, start_cluster
from kube_injector import Injector
from support.process import ProcessGroup


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        require_binaries()
    except RuntimeError as exc:
        # A failure, not a skip: these tests must not pass by not running.
        pytest.fail(str(exc), pytrace=False)
    group = ProcessGroup()
    root = Path(tempfile.mkdtemp(prefix="tulle-k8s-"))
    try:
        yield start_cluster(group, root)
    finally:
        group.close()


@pytest.fixture
def kubelet(cluster: Cluster) -> KubeletStandIn:
    return KubeletStandIn(cluster)


@pytest.fixture
def injector(cluster: Cluster, processes: ProcessGroup, tmp_path: Path) -> Iterator[Injector]:
    """A control plane serving the injection webhook, which the API server calls."""
    made = Injector(cluster, processes, tmp_path)
    try:
        yield made
    finally:
        made.remove()
