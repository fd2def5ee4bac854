"""The exact rules `tulle init` writes (tulle.net.capture), their removal and backend choice."""

from __future__ import annotations

import pytest

from tulle.cli.init import binaries
from tulle.net.capture import (
    CHAINS,
    IPV4,
    IPV6,
    CaptureError,
    CaptureSettings,
    build,
    count_rules,
    has_tulle_chains,
    parse_ports,
    pick_backend,
    removal,
)

T = ("-m", "comment", "--comment", "tulle")


def test_default_rules_exactly() -> None:
    plan = build(CaptureSettings())
    assert plan.chains == ("TULLE_PREROUTING", "TULLE_INBOUND", "TULLE_OUTPUT", "TULLE_OUTBOUND")
    assert [r.spec() for r in plan.rules] == [
        ["-A", "TULLE_PREROUTING", "-p", "tcp", "-j", "TULLE_INBOUND", *T],
        ["-A", "TULLE_INBOUND", "-p", "tcp", "--dport", "4191", "-j", "RETURN", *T],
        ["-A", "TULLE_INBOUND", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "4143", *T],
        ["-A", "TULLE_OUTPUT", "-o", "lo", "!", "-d", "127.0.0.1/32", "-m", "owner",
         "--uid-owner", "2102", "-j", "TULLE_INBOUND", *T],
        ["-A", "TULLE_OUTPUT", "-m", "owner", "--uid-owner", "2102", "-j", "RETURN", *T],
        ["-A", "TULLE_OUTPUT", "-o", "lo", "-j", "RETURN", *T],
        ["-A", "TULLE_OUTPUT", "-p", "tcp", "-j", "TULLE_OUTBOUND", *T],
        ["-A", "TULLE_OUTBOUND", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "4140", *T],
    ]  # fmt: skip
    assert [r.spec() for r in plan.jumps] == [
        ["-A", "PREROUTING", "-j", "TULLE_PREROUTING", *T],
        ["-A", "OUTPUT", "-j", "TULLE_OUTPUT", *T],
    ]


def test_exclusions_and_ports() -> None:
    settings = CaptureSettings(
        proxy_uid=1337,
        inbound_port=15006,
        outbound_port=15001,
        admin_port=9901,
        inbound_ports_to_ignore=("22, 9000-9100", "22"),
        outbound_ports_to_ignore=("443",),
        subnets_to_ignore=("10.96.0.0/12", "fd00::/8"),
    )
    rules = [r.spec() for r in build(settings, IPV4).rules]
    inbound = [r for r in rules if r[1] == "TULLE_INBOUND"]
    assert [r[5] for r in inbound[:3]] == ["9901", "22", "9000:9100"]
    assert inbound[-1][-5:-4] == ["15006"]
    outbound = [r for r in rules if r[1] == "TULLE_OUTBOUND"]
    assert outbound == [
        ["-A", "TULLE_OUTBOUND", "-d", "10.96.0.0/12", "-j", "RETURN", *T],
        ["-A", "TULLE_OUTBOUND", "-p", "tcp", "--dport", "443", "-j", "RETURN", *T],
        ["-A", "TULLE_OUTBOUND", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001", *T],
    ]
    assert all("1337" in r for r in rules if "--uid-owner" in r)
    # IPv6: only the IPv6 subnet, and ::1 as the loopback exception.
    v6 = [r.spec() for r in build(settings, IPV6).rules]
    assert ["-A", "TULLE_OUTBOUND", "-d", "fd00::/8", "-j", "RETURN", *T] in v6
    assert not any("10.96.0.0/12" in r for r in v6)
    assert any("::1/128" in r for r in v6)


def test_order_proxy_uid_before_redirect() -> None:
    # The proxy's own connections must return before anything redirects them.
    rules = [r.spec() for r in build(CaptureSettings()).rules]
    output = [r for r in rules if r[1] == "TULLE_OUTPUT"]
    uid_return = output.index(
        ["-A", "TULLE_OUTPUT", "-m", "owner", "--uid-owner", "2102", "-j", "RETURN", *T]
    )
    to_outbound = output.index(["-A", "TULLE_OUTPUT", "-p", "tcp", "-j", "TULLE_OUTBOUND", *T])
    assert uid_return < to_outbound


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (CaptureSettings(inbound_ports_to_ignore=("http",)), "not a port"),
        (CaptureSettings(outbound_ports_to_ignore=("70000",)), "1-65535"),
        (CaptureSettings(outbound_ports_to_ignore=("9-3",)), "1-65535"),
        (CaptureSettings(subnets_to_ignore=("10.1.2.3/8",)), "host bits"),
        (CaptureSettings(subnets_to_ignore=("nonsense",)), "subnets-to-ignore"),
        (CaptureSettings(inbound_port=4140), "must differ"),
        (CaptureSettings(admin_port=0), "--admin-port"),
        (CaptureSettings(proxy_uid=-1), "--proxy-uid"),
    ],
)
def test_bad_settings_are_clear_errors(settings: CaptureSettings, message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        build(settings)


def test_parse_ports_dedups_and_ranges() -> None:
    assert parse_ports(["80,80", "1-2", " ", "5-5"], "--x") == ("80", "1:2", "5")


def test_restore_input_flushes_own_chains_only() -> None:
    text = build(CaptureSettings()).restore_input()
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    # Declaring a chain under --noflush flushes it: only Tulle's chains are declared,
    # and the built-in chains' jumps are not in the transaction (added once, checked first).
    assert [ln for ln in lines if ln.startswith(":")] == [f":{c} - [0:0]" for c in CHAINS]
    assert not any(ln.startswith(("-A PREROUTING", "-A OUTPUT")) for ln in lines)
    assert "-A TULLE_OUTPUT -o lo ! -d 127.0.0.1/32" in text


def test_removal_deletes_jumps_then_flushes_then_deletes_chains() -> None:
    deletes, chains = removal(build(CaptureSettings()))
    assert deletes == [
        ["-t", "nat", "-D", "PREROUTING", "-j", "TULLE_PREROUTING", *T],
        ["-t", "nat", "-D", "OUTPUT", "-j", "TULLE_OUTPUT", *T],
    ]
    assert [c[2] for c in chains] == ["-F"] * 4 + ["-X"] * 4
    assert chains[0][3] == "TULLE_OUTBOUND"


def test_commands_print_every_rule() -> None:
    plan = build(CaptureSettings(outbound_ports_to_ignore=("443",)))
    lines = plan.commands("iptables-nft")
    assert lines[0] == "iptables-nft -t nat -N TULLE_PREROUTING"
    assert "iptables-nft -t nat -A TULLE_OUTBOUND -p tcp --dport 443 -j RETURN " \
        "-m comment --comment tulle" in lines  # fmt: skip
    assert lines[-1] == "iptables-nft -t nat -A OUTPUT -j TULLE_OUTPUT -m comment --comment tulle"
    assert len(lines) == 4 + len(plan.rules) + 2


SAVE = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:TULLE_OUTPUT - [0:0]
-A PREROUTING -j DOCKER
-A OUTPUT -j TULLE_OUTPUT
COMMIT
"""


def test_backend_choice() -> None:
    assert count_rules(SAVE) == 2
    assert has_tulle_chains(SAVE)
    assert not has_tulle_chains("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    # The one with rules, else the first (nft); missing backends never win.
    assert pick_backend([("iptables-nft", 0), ("iptables-legacy", 3)]) == "iptables-legacy"
    assert pick_backend([("iptables-nft", 0), ("iptables-legacy", 0)]) == "iptables-nft"
    assert pick_backend([("iptables-nft", None), ("iptables-legacy", 0)]) == "iptables-legacy"
    assert pick_backend([("iptables-nft", None), ("iptables-legacy", None)]) is None


def test_binaries_per_backend_and_family() -> None:
    legacy6 = binaries("iptables-legacy", IPV6)
    assert (legacy6.main, legacy6.save, legacy6.restore) == (
        "ip6tables-legacy",
        "ip6tables-legacy-save",
        "ip6tables-legacy-restore",
    )
    plain = binaries("/usr/sbin/iptables", IPV4)
    assert (plain.main, plain.save, plain.restore) == (
        "/usr/sbin/iptables",
        "/usr/sbin/iptables-save",
        "/usr/sbin/iptables-restore",
    )
    assert binaries("iptables-nft", IPV4).restore == "iptables-nft-restore"
