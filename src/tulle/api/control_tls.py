"""How a client dials the control plane's gRPC API: TLS against the trust anchors, or plaintext.

The control plane serves Destination, Identity and Policy over TLS with its
own certificate (`tulle.control.serving_tls`): a leaf from the mesh's issuer
whose DNS SAN is `CONTROL_NAME` (and `localhost`). A client verifies it with
the mesh's trust anchors, which it is given before it has a certificate of its
own (`--trust-anchors FILE`, as Linkerd ships its anchor to every proxy), and
with `grpc.ssl_target_name_override` set to the expected name, so the check
does not depend on the address dialled (an IP, a replica's own name).

Why the DNS name is enough to tell the control plane apart: only the holder
of the issuer key can mint a leaf that chains to the anchors, and
Identity.Certify never puts a DNS name in a workload's leaf (its only SAN is
the SPIFFE URI), so a meshed workload cannot pass for the control plane.

`ControlTls` is None for plaintext: loopback meshes without mTLS only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

# The control plane's DNS name in its serving certificate (the `tulle-control`
# Service in namespace `tulle`); clients expect it unless told otherwise.
CONTROL_NAME = "tulle-control.tulle.svc"
# Its SPIFFE identity, in the certificate's URI SAN (namespace/ServiceAccount).
CONTROL_NAMESPACE = "tulle"
CONTROL_SERVICE_ACCOUNT = "tulle-control"


class TrustAnchorsError(ValueError):
    """The trust-anchors file is unreadable or holds no certificate; the message says which."""


@dataclass(frozen=True, slots=True)
class ControlTls:
    """Verify the control plane against `anchors_pem` and the name `server_name`."""

    anchors_pem: bytes
    server_name: str = CONTROL_NAME

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.anchors_pem)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)]


PEM_START = "-----BEGIN"


def load_trust_anchors(path: str | Path) -> bytes:
    """The PEM certificates of `path`; TrustAnchorsError when unreadable or not PEM.

    `path` may also be the PEM text itself (it starts with `-----BEGIN`): an
    injected pod gets the anchors in an environment variable, since it cannot
    mount the control plane's ConfigMap from another namespace (Linkerd ships
    its anchors the same way)."""
    if isinstance(path, str) and path.lstrip().startswith(PEM_START):
        data = path.encode()
        path = "(inline PEM)"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TrustAnchorsError(f"cannot read trust anchors {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TrustAnchorsError(f"trust anchors {path}: no PEM certificate in the file")
    return data


def open_channel(
    target: str, options: Sequence[tuple[str, int | str]], tls: ControlTls | None
) -> grpc.aio.Channel:
    """A channel to one control-plane replica, TLS when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])
