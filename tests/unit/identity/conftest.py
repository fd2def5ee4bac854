"""Fixtures for identity unit tests: issuer material made in memory, at a fixed time."""

from __future__ import annotations

import time

import pytest

from tulle.identity.store import IssuerMaterial


@pytest.fixture(scope="module")
def now() -> float:
    return float(int(time.time()))


@pytest.fixture(scope="module")
def material(now: float) -> IssuerMaterial:
    return IssuerMaterial.generate("cluster.local", now=now)
