"""`tulle up --isolated`'s plan: names, addresses, hosts files, the record (no namespaces made)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tulle.control.manifest import ManifestError, parse_manifest
from tulle.local import isolation
from tulle.local.isolation import IsolationError, Record, check_requirements, plan_network
from tulle.local.manifest import parse_local_manifest


def test_names_are_unique_per_state_dir_and_fit_interface_names(tmp_path: Path) -> None:
    one = plan_network(tmp_path / "a", ["web-0", "catalog-0"], ["web", "catalog"], [])
    two = plan_network(tmp_path / "b", ["web-0", "catalog-0"], ["web", "catalog"], [])
    assert one.tag != two.tag
    assert one.bridge != two.bridge
    assert not {ns.name for ns in one.namespaces} & {ns.name for ns in two.namespaces}
    for network in (one, two):
        # IFNAMSIZ: 15 characters and a NUL.
        assert all(
            len(name) <= 15 for name in [network.bridge, *(n.veth for n in network.namespaces)]
        )
    again = plan_network(tmp_path / "a", ["web-0", "catalog-0"], ["web", "catalog"], [])
    assert again == one  # the same state dir: the same names (clean-up finds them)


def test_addresses_instances_then_virtual_in_one_free_subnet(tmp_path: Path) -> None:
    network = plan_network(tmp_path, ["web-0", "catalog-0", "catalog-1"], ["web", "catalog"], [])
    subnet = ipaddress.IPv4Network(network.subnet)
    assert subnet.subnet_of(isolation.SUBNET_POOL) and subnet.prefixlen == 24
    base = int(subnet.network_address)
    assert int(ipaddress.IPv4Address(network.host_address)) == base + 1
    assert [int(ipaddress.IPv4Address(ns.address)) - base for ns in network.namespaces] == [2, 3, 4]
    assert [int(ipaddress.IPv4Address(a)) - base for a in network.virtual.values()] == [128, 129]
    # A /24 the host already uses is skipped.
    moved = plan_network(tmp_path, ["web-0"], ["web"], [subnet])
    assert not ipaddress.IPv4Network(moved.subnet).overlaps(subnet)


def test_pick_subnet_says_when_the_pool_is_full() -> None:
    with pytest.raises(IsolationError, match="no free /24"):
        isolation.pick_subnet("abcdef", [isolation.SUBNET_POOL])


def test_too_many_instances_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IsolationError, match="at most 126 instances"):
        plan_network(tmp_path, [f"s-{i}" for i in range(127)], ["s"], [])


def test_hosts_file_names_every_service_by_its_virtual_address(tmp_path: Path) -> None:
    network = plan_network(tmp_path, ["web-0", "catalog-0"], ["web", "catalog"], [])
    web = network.namespace("web-0")
    lines = isolation.hosts_file(network, web).splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert f"{web.address}\tweb-0" in lines
    assert f"{network.virtual['catalog']}\tcatalog" in lines
    assert f"{network.virtual['web']}\tweb" in lines


def test_requirements_name_what_is_missing() -> None:
    with pytest.raises(IsolationError) as info:
        check_requirements(euid=1000, which=lambda tool: None if tool == "iptables" else "/x")
    message = str(info.value)
    assert "needs root" in message and "iptables" in message and "setpriv" not in message
    check_requirements(euid=0, which=lambda tool: f"/usr/sbin/{tool}")


def test_record_survives_a_new_process_and_only_own_names_are_deleted(tmp_path: Path) -> None:
    record = Record(tmp_path)
    assert record.empty
    record.add("namespaces", "tulle-abcdef-web-0")
    record.add("bridges", "eth0")  # a corrupted record must never name the host's links
    loaded = Record(tmp_path)
    assert loaded.namespaces == ["tulle-abcdef-web-0"]
    deleted: list[str] = []
    problems = isolation.destroy(loaded, deleted.append)
    # Neither exists here; eth0, not a name tulle makes, is not even looked at.
    assert problems == [] and deleted == []
    assert not (tmp_path / isolation.RECORD_FILE).exists()
    assert isolation._OWN_NAME.match("eth0") is None
    assert isolation._OWN_VETH.match("tv-abcdef-3") is not None


SERVICES = "services:\n  - name: web\n    instances: {command: python -m web}\n"


def test_the_manifest_setting_is_the_local_runners() -> None:
    assert parse_local_manifest(SERVICES).isolated is False
    assert parse_local_manifest("isolated: true\n" + SERVICES).isolated is True
    with pytest.raises(ManifestError, match="isolated"):
        parse_local_manifest("isolated: maybe\n" + SERVICES)
    # The control plane accepts the field and ignores it (it serves the generated copy).
    assert "web" in parse_manifest("isolated: true\n" + SERVICES).services
