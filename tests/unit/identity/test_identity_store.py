"""The issuer directory: permissions, refusal to overwrite, rotation, reloading."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tulle.identity.ca import is_issued_by
from tulle.identity.store import (
    ANCHOR_KEY,
    ISSUER_CERT,
    ISSUER_KEY,
    TOKEN_SECRET,
    IdentityStoreError,
    IssuerDirectory,
    IssuerStore,
    IssuerUnavailable,
)

NOW = 1_800_000_000.0
DAY = 86_400.0


@pytest.fixture()
def directory(tmp_path: Path) -> IssuerDirectory:
    store = IssuerDirectory(tmp_path / "identity")
    store.init("cluster.local", now=NOW)
    return store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_permissions(directory: IssuerDirectory) -> None:
    assert _mode(directory.path) == 0o700
    for name in (ANCHOR_KEY, ISSUER_KEY, TOKEN_SECRET):
        assert _mode(directory.file(name)) == 0o600
    assert directory.loose_permissions() == []
    material = directory.load_material()
    assert material.trust_domain == "cluster.local"
    assert len(material.bundle.anchors) == 1


def test_init_refuses_to_overwrite(directory: IssuerDirectory) -> None:
    before = directory.load_anchor().certificate
    with pytest.raises(IdentityStoreError, match="refusing to overwrite"):
        directory.init("cluster.local", now=NOW)
    assert directory.load_anchor().certificate == before
    directory.init("cluster.local", now=NOW, force=True)
    assert directory.load_anchor().certificate != before


def test_issuer_rotation_keeps_bundle(directory: IssuerDirectory) -> None:
    old = directory.load_material()
    new_issuer = directory.rotate_issuer(now=NOW + DAY)
    material = directory.load_material()
    assert material.issuer.certificate == new_issuer.certificate != old.issuer.certificate
    assert material.bundle == old.bundle


def test_anchor_rotation_procedure(directory: IssuerDirectory) -> None:
    old_anchor = directory.load_anchor().certificate
    old_issuer = directory.load_issuer().certificate

    new_anchor = directory.rotate_anchor(now=NOW).certificate
    bundle = directory.load_bundle()
    assert set(bundle.anchors) == {old_anchor, new_anchor}
    # Step 1 leaves the issuer alone: nothing is signed by the new anchor yet.
    assert directory.load_issuer().certificate == old_issuer
    with pytest.raises(IdentityStoreError, match="finish the previous rotation"):
        directory.rotate_anchor(now=NOW)
    with pytest.raises(IdentityStoreError, match="rotate issuer"):
        directory.finish_rotation(now=NOW + 10 * DAY)

    issuer = directory.rotate_issuer(now=NOW + 60).certificate
    assert is_issued_by(issuer, new_anchor) and not is_issued_by(issuer, old_anchor)
    assert len(directory.load_bundle().anchors) == 2
    with pytest.raises(IdentityStoreError, match="may still be valid"):
        directory.finish_rotation(now=NOW + 3600, leaf_ttl_s=DAY)

    finished = directory.finish_rotation(now=NOW + 60 + DAY, leaf_ttl_s=DAY)
    assert finished.anchors == (new_anchor,)
    assert directory.load_bundle().anchors == (new_anchor,)
    with pytest.raises(IdentityStoreError, match="no anchor rotation"):
        directory.finish_rotation(now=NOW + 2 * DAY)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityStoreError, match="is missing"):
        IssuerDirectory(tmp_path / "nope").load_material()


def test_store_reloads_on_change_and_keeps_last_good(directory: IssuerDirectory) -> None:
    clock = [0.0]
    store = IssuerStore(directory, check_interval_s=1.0, clock=lambda: clock[0])
    first = store.current().issuer.certificate

    directory.rotate_issuer(now=NOW + 10)
    assert store.current().issuer.certificate == first  # not checked again yet
    clock[0] = 1.0
    second = store.current().issuer.certificate
    assert second != first

    # A half-done rotation: a key that does not match the certificate.
    directory.file(ISSUER_KEY).write_bytes(directory.file(ANCHOR_KEY).read_bytes())
    clock[0] = 2.0
    assert store.current().issuer.certificate == second
    assert store.last_error is not None and "does not match" in store.last_error

    directory.rotate_issuer(now=NOW + 20)
    clock[0] = 3.0
    assert store.current().issuer.certificate not in (first, second)
    assert store.last_error is None


def test_store_without_material_is_unavailable(tmp_path: Path) -> None:
    store = IssuerStore(IssuerDirectory(tmp_path))
    with pytest.raises(IssuerUnavailable, match="is missing"):
        store.current()
    (tmp_path / ISSUER_CERT).write_text("garbage")
    with pytest.raises(IssuerUnavailable):
        store.current()


def test_ensure_initialises_once(tmp_path: Path) -> None:
    directory = IssuerDirectory(tmp_path / "up")
    first = directory.ensure("cluster.local", now=NOW)
    again = directory.ensure("cluster.local", now=NOW + 5)
    assert again.issuer.certificate == first.issuer.certificate
    with pytest.raises(IdentityStoreError, match="is for trust domain 'cluster\\.local'"):
        directory.ensure("example.org", now=NOW)
