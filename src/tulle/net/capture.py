"""Transparent capture: the exact iptables rules `tulle init` writes, as data.

Pure: settings in, rule lists out; running the commands is `tulle.cli.init`'s.
Everything lives in four chains of the nat table that belong to Tulle, reached
by one jump from each of the built-in PREROUTING and OUTPUT chains:

    PREROUTING -> TULLE_PREROUTING -> TULLE_INBOUND  (REDIRECT to the inbound port)
    OUTPUT     -> TULLE_OUTPUT     -> TULLE_OUTBOUND (REDIRECT to the outbound port)

The rules, in order (the model is Linkerd's proxy-init, uid 2102 included):

* inbound: every TCP connection arriving from outside is redirected to the
  proxy's inbound port, except to the proxy's admin port (probes and scrapes
  reach the admin as they are) and the `--inbound-ports-to-ignore`;
* outbound, for locally made TCP connections:
  - the proxy (its uid) calling this namespace's own non-loopback address
    over `lo` goes to the inbound chain: a sidecar calling its own service
    reaches its app through its inbound, as any other caller would;
  - anything else the proxy makes is left alone: its upstream connections
    must not come back to it (a loop);
  - anything else over `lo` is left alone: the app talking to itself, to its
    own sidecar's ports or to another process of the pod is not a call
    between services;
  - `--subnets-to-ignore` and `--outbound-ports-to-ignore` are left alone;
  - the rest is redirected to the proxy's outbound port, which reads the
    original destination (SO_ORIGINAL_DST) to know where it was going.

Idempotence: applying flushes and refills Tulle's own chains (one
`iptables-restore --noflush` transaction, so the rules change at once) and
adds each jump only when it is missing; running it twice leaves one set of
rules. Removal deletes the jumps and then the chains. Rules of other tools
in the same tables are never touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PROXY_UID = 2102
INBOUND_PORT = 4143
OUTBOUND_PORT = 4140
ADMIN_PORT = 4191

TABLE = "nat"
CHAIN_PREROUTING = "TULLE_PREROUTING"
CHAIN_INBOUND = "TULLE_INBOUND"
CHAIN_OUTPUT = "TULLE_OUTPUT"
CHAIN_OUTBOUND = "TULLE_OUTBOUND"
# In the order they are created (the jumps refer to them); removed in reverse.
CHAINS = (CHAIN_PREROUTING, CHAIN_INBOUND, CHAIN_OUTPUT, CHAIN_OUTBOUND)
# (built-in chain, Tulle chain it jumps to)
JUMPS = (("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT))
COMMENT = "tulle"

IPV4 = 4
IPV6 = 6


class CaptureError(ValueError):
    """A setting `tulle init` cannot turn into rules (a clear message)."""


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """What to capture; the defaults are the proxy's default ports."""

    proxy_uid: int = PROXY_UID
    inbound_port: int = INBOUND_PORT
    outbound_port: int = OUTBOUND_PORT
    admin_port: int = ADMIN_PORT
    inbound_ports_to_ignore: tuple[str, ...] = ()
    outbound_ports_to_ignore: tuple[str, ...] = ()
    subnets_to_ignore: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `-A chain args...` in the nat table."""

    chain: str
    args: tuple[str, ...]

    def spec(self) -> list[str]:
        return ["-A", self.chain, *self.args]


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules for one address family (iptables or ip6tables)."""

    family: int
    chains: tuple[str, ...]
    rules: tuple[Rule, ...]
    jumps: tuple[Rule, ...] = field(default=())

    def restore_input(self) -> str:
        """`iptables-restore --noflush` input: declaring a chain flushes it."""
        lines = [f"*{TABLE}"]
        lines += [f":{chain} - [0:0]" for chain in self.chains]
        lines += [_quote_line(rule.spec()) for rule in self.rules]
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"

    def commands(self, binary: str) -> list[str]:
        """The plan as command lines (what `tulle init` prints)."""
        out = [f"{binary} -t {TABLE} -N {chain}" for chain in self.chains]
        out += [f"{binary} -t {TABLE} {_quote_line(rule.spec())}" for rule in self.rules]
        out += [f"{binary} -t {TABLE} {_quote_line(rule.spec())}" for rule in self.jumps]
        return out


def parse_ports(values: Iterable[str], flag: str) -> tuple[str, ...]:
    """Ports and ranges (`8080`, `9000-9100`, comma-separated) as iptables
    `--dport` values (`8080`, `9000:9100`)."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            low_text, sep, high_text = item.partition("-")
            try:
                low = int(low_text)
                high = int(high_text) if sep else low
            except ValueError:
                raise CaptureError(f"{flag}: {item!r} is not a port or a range A-B") from None
            if not (1 <= low <= 65535 and 1 <= high <= 65535) or high < low:
                raise CaptureError(f"{flag}: {item!r} is not a port or range in 1-65535")
            spec = str(low) if low == high else f"{low}:{high}"
            if spec not in out:
                out.append(spec)
    return tuple(out)


def parse_subnets(values: Iterable[str]) -> tuple[str, ...]:
    """CIDRs in their canonical form (`10.1.2.3/8` is refused: host bits set)."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                net = ipaddress.ip_network(item, strict=True)
            except ValueError as exc:
                raise CaptureError(f"--subnets-to-ignore: {exc}") from None
            if str(net) not in out:
                out.append(str(net))
    return tuple(out)


def _check_port(value: int, flag: str) -> None:
    if not 1 <= value <= 65535:
        raise CaptureError(f"{flag}: {value} is not a port in 1-65535")


def build(settings: CaptureSettings, family: int = IPV4) -> Plan:
    """The rules for `settings` in one address family."""
    _check_port(settings.inbound_port, "--inbound-port")
    _check_port(settings.outbound_port, "--outbound-port")
    _check_port(settings.admin_port, "--admin-port")
    if settings.inbound_port == settings.outbound_port:
        raise CaptureError("the inbound and outbound ports must differ")
    if settings.proxy_uid < 0:
        raise CaptureError(f"--proxy-uid: {settings.proxy_uid} is not a uid")
    inbound_ignore = parse_ports(settings.inbound_ports_to_ignore, "--inbound-ports-to-ignore")
    outbound_ignore = parse_ports(settings.outbound_ports_to_ignore, "--outbound-ports-to-ignore")
    subnets = parse_subnets(settings.subnets_to_ignore)
    loopback = "127.0.0.1/32" if family == IPV4 else "::1/128"
    uid = str(settings.proxy_uid)
    tag = ("-m", "comment", "--comment", COMMENT)
    to_inbound = ("-j", CHAIN_INBOUND, *tag)

    rules: list[Rule] = [Rule(CHAIN_PREROUTING, ("-p", "tcp", "-j", CHAIN_INBOUND, *tag))]
    # The admin port first: probes reach the admin whatever else is ignored.
    for port in (str(settings.admin_port), *inbound_ignore):
        rules.append(Rule(CHAIN_INBOUND, ("-p", "tcp", "--dport", port, "-j", "RETURN", *tag)))
    rules.append(
        Rule(
            CHAIN_INBOUND,
            ("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(settings.inbound_port), *tag),
        )
    )
    rules += [
        Rule(
            CHAIN_OUTPUT,
            ("-o", "lo", "!", "-d", loopback, "-m", "owner", "--uid-owner", uid, *to_inbound),
        ),
        Rule(CHAIN_OUTPUT, ("-m", "owner", "--uid-owner", uid, "-j", "RETURN", *tag)),
        Rule(CHAIN_OUTPUT, ("-o", "lo", "-j", "RETURN", *tag)),
        Rule(CHAIN_OUTPUT, ("-p", "tcp", "-j", CHAIN_OUTBOUND, *tag)),
    ]
    for net in subnets:
        if ipaddress.ip_network(net).version == family:
            rules.append(Rule(CHAIN_OUTBOUND, ("-d", net, "-j", "RETURN", *tag)))
    for port in outbound_ignore:
        rules.append(Rule(CHAIN_OUTBOUND, ("-p", "tcp", "--dport", port, "-j", "RETURN", *tag)))
    rules.append(
        Rule(
            CHAIN_OUTBOUND,
            ("-p", "tcp", "-j", "REDIRECT", "--to-ports", str(settings.outbound_port), *tag),
        )
    )
    jumps = tuple(Rule(builtin, ("-j", own, *tag)) for builtin, own in JUMPS)
    return Plan(family, CHAINS, tuple(rules), jumps)


def jump_check(rule: Rule) -> list[str]:
    """`-C`: is this jump present? (exit status 0 when it is)."""
    return ["-t", TABLE, "-C", rule.chain, *rule.args]


def jump_add(rule: Rule) -> list[str]:
    return ["-t", TABLE, "-A", rule.chain, *rule.args]


def jump_delete(rule: Rule) -> list[str]:
    return ["-t", TABLE, "-D", rule.chain, *rule.args]


def removal(plan: Plan) -> tuple[list[list[str]], list[list[str]]]:
    """Undoing a plan: (jump deletions, repeated while they succeed;
    chain flushes and deletions, in order, each allowed to fail when absent)."""
    deletes = [jump_delete(rule) for rule in plan.jumps]
    chains: list[list[str]] = []
    for chain in reversed(plan.chains):
        chains.append(["-t", TABLE, "-F", chain])
    for chain in reversed(plan.chains):
        chains.append(["-t", TABLE, "-X", chain])
    return deletes, chains


def count_rules(save_output: str) -> int:
    """Rules in an `iptables-save` dump (how much a backend is in use)."""
    return sum(1 for line in save_output.splitlines() if line.startswith("-A "))


def has_tulle_chains(save_output: str) -> bool:
    return any(
        line.startswith(f":{chain} ") for line in save_output.splitlines() for chain in CHAINS
    )


def pick_backend(rule_counts: Sequence[tuple[str, int | None]]) -> str | None:
    """The backend to use: the one holding the most rules, the first (nft) on
    a tie; backends whose count is None are not installed."""
    best: str | None = None
    best_count = -1
    for name, count in rule_counts:
        if count is not None and count > best_count:
            best, best_count = name, count
    return best


def _quote_line(words: Sequence[str]) -> str:
    return " ".join(f'"{w}"' if (" " in w or not w) else w for w in words)
