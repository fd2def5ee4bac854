"""What a validated manifest converts to: the control plane's model of the mesh."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tulle.core.discovery import Endpoint, Profile
from tulle.core.policy import EMPTY_POLICY, PolicySpec


@dataclass(frozen=True, slots=True)
class InstancesSpec:
    """How `tulle up` runs a service locally. Validated here, used there."""

    # argv; a string in the manifest is split like a shell would (no shell runs).
    # May contain the placeholders {port} and {replica}.
    command: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    identity: str | None = None
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    port: int | None
    protocol: str
    endpoints: tuple[Endpoint, ...]
    profile: Profile
    instances: InstancesSpec | None = None
    identity: str | None = None
    line: int = 0  # where the service starts in its file, for messages


@dataclass(frozen=True, slots=True)
class IngressSpec:
    """Where `tulle up` lets calls from outside the mesh in. Validated here, used there."""

    port: int | None = None  # None: `tulle up`'s default (or its --ingress-port)
    services: tuple[str, ...] | None = None  # None: every service
    line: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    services: Mapping[str, ServiceSpec]
    # The `policy:` section as written (for tools that merge documents).
    policy: Mapping[str, Any] | None = None
    source: str = "mesh.yaml"
    # Used by `tulle up` only; the control plane ignores it.
    ingress: IngressSpec | None = None
    # The `policy:` section validated: what the Policy service serves.
    authorization: PolicySpec = EMPTY_POLICY
