"""Helpers for identity integration tests: hand-made certificates and a TLS echo server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tulle.identity.ca import KeyPair, generate_key, issue_leaf
from tulle.identity.spiffe import parse_spiffe_id
from tulle.identity.store import IssuerMaterial
from tulle.identity.tls import WorkloadCertificate, peer_identity, verify_peer_identity

LOOPBACK = "127.0.0.1"
WEB = "spiffe://cluster.local/ns/default/sa/web"
API = "spiffe://cluster.local/ns/default/sa/api"
IO_TIMEOUT_S = 5.0


def workload(
    identity: str, material: IssuerMaterial, *, now: float, ttl_s: float = 3600.0
) -> WorkloadCertificate:
    """A genuine leaf from `material`'s issuer, as Certify would hand it out."""
    key = generate_key()
    leaf = issue_leaf(
        parse_spiffe_id(identity), key.public_key(), material.issuer, now=now, ttl_s=ttl_s
    )
    return WorkloadCertificate(
        identity, key, leaf, (material.issuer.certificate,), material.bundle, now
    )


def forged_self_signed(
    identity: str, material: IssuerMaterial, *, now: float
) -> WorkloadCertificate:
    """A self-signed leaf naming `identity`, with the real anchor's subject as its own."""
    key = generate_key()
    name = material.bundle.anchors[0].subject
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(now - 60, tz=dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(now + 3600, tz=dt.UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return WorkloadCertificate(identity, key, leaf, (), material.bundle, now)


def forged_by_impostor_issuer(
    identity: str, material: IssuerMaterial, *, now: float
) -> WorkloadCertificate:
    """A leaf that names the real issuer as its issuer but is signed by another key."""
    impostor = KeyPair(material.issuer.certificate, generate_key())
    key = generate_key()
    leaf = issue_leaf(parse_spiffe_id(identity), key.public_key(), impostor, now=now)
    return WorkloadCertificate(
        identity, key, leaf, (material.issuer.certificate,), material.bundle, now
    )


@dataclass
class EchoServer:
    port: int
    peers: list[str | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tls_echo_server(context: ssl.SSLContext) -> AsyncIterator[EchoServer]:
    """Echoes each line back; records each client's identity and ALPN protocol."""
    state = EchoServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        state.peers.append(peer_identity(ssl_object))
        state.alpn.append(ssl_object.selected_alpn_protocol())
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def exchange(
    port: int, context: ssl.SSLContext, expected_server: str | None = None
) -> tuple[bytes, str | None]:
    """Connect, check the server's identity if asked, send one line; the echo and server id."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(LOOPBACK, port, ssl=context, server_hostname=None),
        IO_TIMEOUT_S,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        server_id = peer_identity(ssl_object)
        if expected_server is not None:
            verify_peer_identity(ssl_object, expected_server)
        writer.write(b"ping\n")
        await writer.drain()
        echo = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)
        if not echo:
            raise ConnectionResetError("the server closed the connection")
        return echo, server_id
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
