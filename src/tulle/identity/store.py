"""The issuer directory on disk: initialise, load, reload on change, rotate.

Layout of `DIR` (0700; keys and the token secret 0600):

    identity.json   {"trust_domain": ...}
    anchor.crt/.key the current trust anchor; its key is needed only to make
                    issuers, so production may keep this pair offline
    bundle.pem      every anchor workloads trust (1, or 2 during rotation)
    issuer.crt/.key the intermediate the control plane signs leaves with
    token.secret    the HMAC key of local-mode join tokens

Every write goes to a temporary file in `DIR` and is renamed into place, so a
reader sees the old file or the new one, never half of one. A reload that sees
an issuer key and certificate that do not belong together (a rotation between
its two renames) keeps the previous material and tries again later.

Anchor rotation, with no moment when a valid peer is refused:
1. `rotate_anchor`: a new anchor joins the bundle beside the old one; the
   issuer is untouched. Proxies receive the two-anchor bundle.
2. `rotate_issuer`: a new issuer signed by the new anchor; new leaves chain to
   it, old leaves still chain to the old anchor, both are trusted.
3. `finish_rotation`: once every leaf from the old issuer has expired (one leaf
   lifetime after step 2), the old anchor leaves the bundle.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tulle.identity.ca import (
    DEFAULT_ANCHOR_TTL_S,
    DEFAULT_ISSUER_TTL_S,
    DEFAULT_LEAF_TTL_S,
    KeyPair,
    TrustBundle,
    certificates_to_pem,
    is_issued_by,
    make_anchor,
    make_issuer,
)
from tulle.identity.spiffe import validate_trust_domain
from tulle.identity.tokens import SECRET_BYTES, new_secret

CONFIG_FILE = "identity.json"
ANCHOR_CERT = "anchor.crt"
ANCHOR_KEY = "anchor.key"
BUNDLE_FILE = "bundle.pem"
ISSUER_CERT = "issuer.crt"
ISSUER_KEY = "issuer.key"
TOKEN_SECRET = "token.secret"
ALL_FILES = (
    CONFIG_FILE,
    ANCHOR_CERT,
    ANCHOR_KEY,
    BUNDLE_FILE,
    ISSUER_CERT,
    ISSUER_KEY,
    TOKEN_SECRET,
)
# The files the control plane reads; a change to any of them triggers a reload.
SERVING_FILES = (CONFIG_FILE, BUNDLE_FILE, ISSUER_CERT, ISSUER_KEY, TOKEN_SECRET)
MAX_ANCHORS = 2


class IdentityStoreError(Exception):
    """The issuer directory is missing, incomplete or inconsistent; the message says how."""


@dataclass(frozen=True, slots=True)
class IssuerMaterial:
    """Everything the control plane needs to certify workloads."""

    trust_domain: str
    issuer: KeyPair
    bundle: TrustBundle
    token_secret: bytes

    @classmethod
    def generate(
        cls, trust_domain: str, *, now: float, issuer_ttl_s: float = DEFAULT_ISSUER_TTL_S
    ) -> IssuerMaterial:
        """Fresh in-memory material (tests, and `tulle up` before it writes a directory)."""
        anchor = make_anchor(trust_domain, now=now)
        issuer = make_issuer(trust_domain, anchor, now=now, ttl_s=issuer_ttl_s)
        return cls(trust_domain, issuer, TrustBundle((anchor.certificate,)), new_secret())


class IssuerDirectory:
    """One issuer directory; every method reads or writes the files directly."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def existing_files(self) -> list[str]:
        return [name for name in ALL_FILES if self.file(name).exists()]

    # -- creation and rotation -------------------------------------------------

    def init(
        self,
        trust_domain: str,
        *,
        now: float,
        anchor_ttl_s: float = DEFAULT_ANCHOR_TTL_S,
        issuer_ttl_s: float = DEFAULT_ISSUER_TTL_S,
        force: bool = False,
    ) -> IssuerMaterial:
        validate_trust_domain(trust_domain)
        present = self.existing_files()
        if present and not force:
            raise IdentityStoreError(
                f"{self.path} already holds {', '.join(present)}; "
                "refusing to overwrite a trust anchor (use --force to replace it)"
            )
        self._make_dir()
        anchor = make_anchor(trust_domain, now=now, ttl_s=anchor_ttl_s)
        issuer = make_issuer(trust_domain, anchor, now=now, ttl_s=issuer_ttl_s)
        secret = new_secret()
        self._write(CONFIG_FILE, json.dumps({"trust_domain": trust_domain}).encode() + b"\n")
        self._write(TOKEN_SECRET, secret)
        self._write_pair(ANCHOR_KEY, ANCHOR_CERT, anchor)
        self._write(BUNDLE_FILE, certificates_to_pem([anchor.certificate]))
        self._write_pair(ISSUER_KEY, ISSUER_CERT, issuer)
        return IssuerMaterial(trust_domain, issuer, TrustBundle((anchor.certificate,)), secret)

    def ensure(self, trust_domain: str, *, now: float) -> IssuerMaterial:
        """Load the directory, initialising it first if it holds nothing (for `tulle up`).

        An existing directory for another trust domain is an error, never replaced.
        """
        if not self.existing_files():
            return self.init(trust_domain, now=now)
        material = self.load_material()
        if material.trust_domain != trust_domain:
            raise IdentityStoreError(
                f"{self.path} is for trust domain {material.trust_domain!r}, not {trust_domain!r}"
            )
        return material

    def rotate_issuer(self, *, now: float, ttl_s: float = DEFAULT_ISSUER_TTL_S) -> KeyPair:
        """A new issuer signed by the current anchor; existing leaves stay valid."""
        anchor = self.load_anchor()
        issuer = make_issuer(self.trust_domain(), anchor, now=now, ttl_s=ttl_s)
        self._write_pair(ISSUER_KEY, ISSUER_CERT, issuer)
        return issuer

    def rotate_anchor(self, *, now: float, ttl_s: float = DEFAULT_ANCHOR_TTL_S) -> KeyPair:
        """Step 1 of anchor rotation: a new anchor, trusted beside the old one."""
        bundle = self.load_bundle()
        if len(bundle.anchors) >= MAX_ANCHORS:
            raise IdentityStoreError(
                "the trust bundle already holds two anchors: finish the previous rotation "
                "first (`tulle identity rotate finish`)"
            )
        anchor = make_anchor(self.trust_domain(), now=now, ttl_s=ttl_s)
        # The bundle is written first: if we stop between the writes, workloads
        # already trust the new anchor and nothing is signed by it yet.
        self._write(BUNDLE_FILE, certificates_to_pem([anchor.certificate, *bundle.anchors]))
        self._write_pair(ANCHOR_KEY, ANCHOR_CERT, anchor)
        return anchor

    def finish_rotation(
        self, *, now: float, leaf_ttl_s: float = DEFAULT_LEAF_TTL_S, force: bool = False
    ) -> TrustBundle:
        """Step 3: drop every anchor but the current one, when that cannot break a leaf."""
        anchor = self.load_anchor().certificate
        bundle = self.load_bundle()
        if len(bundle.anchors) < MAX_ANCHORS:
            raise IdentityStoreError("no anchor rotation is under way: the bundle has one anchor")
        issuer = self._load_certificate(ISSUER_CERT)
        if not is_issued_by(issuer, anchor):
            raise IdentityStoreError(
                "the issuer is still signed by the old anchor: run `tulle identity rotate issuer` "
                "first, then wait one leaf lifetime"
            )
        issuer_age = now - issuer.not_valid_before_utc.timestamp()
        if issuer_age < leaf_ttl_s and not force:
            wait_s = int(leaf_ttl_s - issuer_age) + 1
            raise IdentityStoreError(
                f"leaves from the previous issuer may still be valid for {wait_s} s "
                "(one leaf lifetime after `rotate issuer`); dropping the old anchor now would "
                "break them. Wait, or pass --force"
            )
        new_bundle = TrustBundle((anchor,))
        self._write(BUNDLE_FILE, new_bundle.pem())
        return new_bundle

    # -- reading ---------------------------------------------------------------

    def trust_domain(self) -> str:
        raw = self._read(CONFIG_FILE)
        try:
            value = json.loads(raw)["trust_domain"]
            return validate_trust_domain(str(value))
        except (ValueError, KeyError, TypeError) as error:
            raise IdentityStoreError(f"{self.file(CONFIG_FILE)} is not valid: {error}") from None

    def load_anchor(self) -> KeyPair:
        return KeyPair(self._load_certificate(ANCHOR_CERT), self._load_key(ANCHOR_KEY, ANCHOR_CERT))

    def load_issuer(self) -> KeyPair:
        return KeyPair(self._load_certificate(ISSUER_CERT), self._load_key(ISSUER_KEY, ISSUER_CERT))

    def load_bundle(self) -> TrustBundle:
        try:
            anchors = tuple(x509.load_pem_x509_certificates(self._read(BUNDLE_FILE)))
        except ValueError as error:
            raise IdentityStoreError(f"{self.file(BUNDLE_FILE)} is not PEM: {error}") from None
        if not 1 <= len(anchors) <= MAX_ANCHORS:
            raise IdentityStoreError(
                f"{self.file(BUNDLE_FILE)} holds {len(anchors)} anchors; it must hold 1 or 2"
            )
        return TrustBundle(anchors)

    def token_secret(self) -> bytes:
        secret = self._read(TOKEN_SECRET)
        if len(secret) < SECRET_BYTES // 2:
            raise IdentityStoreError(f"{self.file(TOKEN_SECRET)} is too short to be a secret")
        return secret

    def load_material(self) -> IssuerMaterial:
        """What the control plane serves from, checked for consistency."""
        trust_domain = self.trust_domain()
        issuer = self.load_issuer()
        bundle = self.load_bundle()
        if not bundle.anchors_of(issuer.certificate):
            raise IdentityStoreError(
                f"{self.file(ISSUER_CERT)} is not signed by any anchor in {self.file(BUNDLE_FILE)}"
            )
        return IssuerMaterial(trust_domain, issuer, bundle, self.token_secret())

    def signature(self) -> tuple[tuple[int, int, int], ...]:
        """Cheap change detection: (inode, size, mtime) of each serving file."""
        result = []
        for name in SERVING_FILES:
            try:
                info = self.file(name).stat()
            except FileNotFoundError:
                result.append((0, 0, 0))
                continue
            result.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(result)

    def loose_permissions(self) -> list[str]:
        """Files (and the directory) that others than the owner can read."""
        loose = []
        for path, allowed in [(self.path, 0o700)] + [
            (self.file(n), 0o600) for n in (ANCHOR_KEY, ISSUER_KEY, TOKEN_SECRET)
        ]:
            if path.exists() and stat.S_IMODE(path.stat().st_mode) & ~allowed:
                loose.append(str(path))
        return loose

    # -- file plumbing ---------------------------------------------------------

    def _make_dir(self) -> None:
        created = not self.path.exists()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            # mkdir's mode is filtered by the umask; make sure it is exactly 0700.
            os.chmod(self.path, 0o700)

    def _read(self, name: str) -> bytes:
        path = self.file(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise IdentityStoreError(
                f"{path} is missing; is {self.path} an issuer directory "
                "(`tulle identity init --dir ...`)?"
            ) from None
        except OSError as error:
            raise IdentityStoreError(f"cannot read {path}: {error.strerror}") from None

    def _load_certificate(self, name: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self._read(name))
        except ValueError as error:
            raise IdentityStoreError(
                f"{self.file(name)} is not a PEM certificate: {error}"
            ) from None

    def _load_key(self, name: str, cert_name: str) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self._read(name), password=None)
        except (ValueError, TypeError) as error:
            raise IdentityStoreError(
                f"{self.file(name)} is not a PEM private key: {error}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityStoreError(f"{self.file(name)} is not an ECDSA key")
        certificate = self._load_certificate(cert_name)
        if certificate.public_key() != key.public_key():
            raise IdentityStoreError(f"{self.file(name)} does not match {self.file(cert_name)}")
        return key

    def _write_pair(self, key_name: str, cert_name: str, pair: KeyPair) -> None:
        key_pem = pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._write(key_name, key_pem)
        self._write(cert_name, pair.certificate.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes) -> None:
        # mkstemp creates the file 0600, so a key is never readable by others,
        # not even for the moment between creation and chmod.
        descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.file(name))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class IssuerUnavailable(Exception):
    """The control plane has no usable issuer; the message says why."""


class IssuerStore:
    """The control plane's view of an issuer directory, reloaded when the files change.

    `current()` is called on every Certify; it stats the files at most once per
    `check_interval_s`, so a rotation is picked up within that time with no
    restart, and a broken rotation keeps the last good material in service.
    """

    def __init__(
        self,
        directory: IssuerDirectory,
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._material: IssuerMaterial | None = None
        self._signature: tuple[tuple[int, int, int], ...] | None = None
        self._checked_at = float("-inf")
        self.last_error: str | None = None
        self.reloads = 0

    def current(self) -> IssuerMaterial:
        if self._clock() - self._checked_at >= self.check_interval_s:
            self.refresh()
        if self._material is None:
            raise IssuerUnavailable(self.last_error or "the issuer has not been loaded")
        return self._material

    def refresh(self) -> bool:
        """Reload if the files changed; True when new material was taken into service."""
        self._checked_at = self._clock()
        signature = self.directory.signature()
        if signature == self._signature and self._material is not None:
            return False
        try:
            material = self.directory.load_material()
        except IdentityStoreError as error:
            # Keep serving the last good material (fail static); retry next check.
            self.last_error = str(error)
            return False
        self._signature = signature
        self.last_error = None
        previous = self._material
        changed = (
            previous is None
            or previous.issuer.certificate != material.issuer.certificate
            or previous.bundle != material.bundle
            or previous.token_secret != material.token_secret
        )
        self._material = material
        if changed:
            self.reloads += 1
        return changed
