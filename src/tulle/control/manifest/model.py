"""What a validated manifest converts to: the control plane's model of the mesh."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tulle.core.discovery import Endpoint, Profile
from tulle.core.policy import EMPTY_POLICY, PolicySpec


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    port: int | None
    protocol: str
    endpoints: tuple[Endpoint, ...]
    profile: Profile
    identity: str | None = None
    line: int = 0  # where the service starts in its file, for messages


@dataclass(frozen=True, slots=True)
class Manifest:
    services: Mapping[str, ServiceSpec]
    # The `policy:` section as written (for tools that merge documents).
    policy: Mapping[str, Any] | None = None
    source: str = "mesh.yaml"
    # The `policy:` section validated: what the Policy service serves.
    authorization: PolicySpec = EMPTY_POLICY
