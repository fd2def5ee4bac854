"""Watchers: from source-of-truth snapshots to one publisher per watched authority.

A source (the manifest file today, Kubernetes later) hands the watcher a whole
`Manifest` whenever it changes. The watcher recomputes the state of every
authority somebody watches and lets each publisher tell its listeners when that
state really changed. Listeners are translators: their `update` must not block
or await, which is what lets one manifest change fan out to thousands of
streams in a single pass of the event loop. Publishers exist only while
somebody listens, so that clients asking for made-up names cost nothing once
they leave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tulle.control.destination.authority import authority_key, lookup
from tulle.control.manifest import Manifest
from tulle.core.discovery import EMPTY_PROFILE, Endpoint, Profile


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What a stream should currently tell about one authority."""

    name: str  # the service the authority resolved to; "" when it names none
    exists: bool
    endpoints: tuple[Endpoint, ...]  # sorted by address, for stable messages
    profile: Profile


MISSING = ServiceState(name="", exists=False, endpoints=(), profile=EMPTY_PROFILE)


class StateListener(Protocol):
    def update(self, state: ServiceState) -> None:
        """Called on every change; MUST NOT block (queue and return)."""


def state_for(manifest: Manifest, key: str) -> ServiceState:
    spec = lookup(manifest, key)
    if spec is None:
        return MISSING
    endpoints = tuple(sorted(spec.endpoints, key=lambda ep: ep.address))
    return ServiceState(name=spec.name, exists=True, endpoints=endpoints, profile=spec.profile)


class ServicePublisher:
    """The current state of one authority and the listeners that follow it."""

    __slots__ = ("_listeners", "key", "state")

    def __init__(self, key: str, state: ServiceState) -> None:
        self.key = key
        self.state = state
        self._listeners: list[StateListener] = []

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def add(self, listener: StateListener) -> None:
        self._listeners.append(listener)
        listener.update(self.state)

    def remove(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, state: ServiceState) -> bool:
        """Store and fan out a new state; False (and nothing sent) when unchanged."""
        if state == self.state:
            return False
        self.state = state
        for listener in tuple(self._listeners):
            listener.update(state)
        return True


class DestinationWatcher:
    """Keeps the current manifest and one publisher per watched authority."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._publishers: dict[str, ServicePublisher] = {}

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def publisher_count(self) -> int:
        return len(self._publishers)

    def subscribe(self, authority: str, listener: StateListener) -> ServicePublisher:
        """Start following an authority; the listener gets the current state at once."""
        key = authority_key(authority)
        publisher = self._publishers.get(key)
        if publisher is None:
            publisher = ServicePublisher(key, state_for(self._manifest, key))
            self._publishers[key] = publisher
        publisher.add(listener)
        return publisher

    def unsubscribe(self, publisher: ServicePublisher, listener: StateListener) -> None:
        publisher.remove(listener)
        if publisher.listener_count == 0 and self._publishers.get(publisher.key) is publisher:
            del self._publishers[publisher.key]

    def update_manifest(self, manifest: Manifest) -> int:
        """Apply a new manifest; returns how many publishers changed state."""
        self._manifest = manifest
        changed = 0
        for key, publisher in tuple(self._publishers.items()):
            if publisher.publish(state_for(manifest, key)):
                changed += 1
        return changed
