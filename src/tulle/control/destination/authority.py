"""How a requested authority (`name` or `name:port`) names a manifest service.

The rule, also written in destination.proto: match case-insensitively, ignore
one trailing dot of the name, and accept the port when it is absent, 80, equal
to the service's declared port, or when the service declares no port. Any other
port names no service, so that a client asking for the wrong port learns it at
once rather than reaching endpoints that serve something else.
"""

from __future__ import annotations

from tulle.control.manifest import Manifest, ServiceSpec

DEFAULT_PORT = 80


def normalize_authority(path: str) -> tuple[str, int | None]:
    """Split and normalise an authority; port 80 and a missing port both give None."""
    text = path.strip().lower()
    host, sep, port_text = text.rpartition(":")
    port: int | None = None
    # Only a numeric suffix is a port; anything else stays part of the name
    # (and then names no service, as service names have no colon).
    if sep and host and port_text.isdigit():
        port = int(port_text)
        text = host
    text = text.removesuffix(".")
    if port == DEFAULT_PORT:
        port = None
    return text, port


def authority_key(path: str) -> str:
    """The key under which streams for the same authority share one publisher."""
    name, port = normalize_authority(path)
    return name if port is None else f"{name}:{port}"


def lookup(manifest: Manifest, key: str) -> ServiceSpec | None:
    """The service an authority names.

    A source that registers one service per port (Kubernetes) keys them
    `name:port`; those are tried when the bare name does not match.
    """
    name, port = normalize_authority(key)
    spec = manifest.services.get(name)
    if spec is not None and (port is None or spec.port is None or port == spec.port):
        return spec
    if port is not None:
        return manifest.services.get(f"{name}:{port}")
    return None
