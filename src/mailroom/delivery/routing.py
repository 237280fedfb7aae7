"""Routing: recipient domain -> the ordered list of (host, address, port) to try.

    route = await resolve_route("example.org", resolver, rng=random.Random(), ipv6=True,
                                smarthosts=SmarthostPolicy.parse("relay.example:587", {}))
    if route.failure:            # a local Reply (wire.smtp.replies.Reply): 4xx retry / 5xx bounce
        ...
    for target in route.targets: # Target(host, address, port, kind, preference, relay)
        ...                      # connect to target.address:target.port, verify TLS for target.host

Rules, in order:

1. A smarthost (``SmarthostPolicy``: one relay for everything and/or per destination domain; the
   domain map wins; a key ``".example.com"`` matches the subdomains of example.com, a key
   ``"example.com"`` that domain only) replaces MX routing. The relay's host name is resolved to
   A/AAAA (no MX lookup, as Postfix does for ``[relay]``). Any failure to resolve a relay is
   temporary: it is a configuration or DNS problem on our side, not the recipient's.
2. Address literals ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3) are connected to
   directly on port 25. General literals (``[tag:...]``) are a permanent failure.
3. MX records (RFC 5321 §5.1): ascending preference, random order among equal preferences (from
   the injected ``rng``); hosts that are our own name (``self_names``) are dropped together with all
   less preferred ones (RFC 5321 §5.1 loop rule); at most ``max_mx_hosts`` hosts are used.
4. A null MX (RFC 7505 §3: the single record ``0 .``) is a permanent 556 5.1.10. A "." mixed with
   real MX records is ignored (it cannot be connected to) and the others are used.
5. No MX record at all (NODATA): the implicit MX, the domain's own A/AAAA (RFC 5321 §5.1).
6. Per host, IPv6 addresses first, then IPv4, when ``ipv6`` is on; IPv4 only otherwise. An address
   already listed for a more preferred host is not repeated; at most ``max_targets`` targets.

Outcomes (``Route.failure``):

=====================================================  =======================
domain does not exist (NXDOMAIN) / invalid name         550 5.1.2 permanent
null MX                                                 556 5.1.10 permanent
no MX and the domain has no address                     550 5.4.4 permanent
our own name is the best MX                             554 5.4.6 permanent
MX / address lookup SERVFAIL, timeout, DNS disabled     451 4.4.3 temporary
MX hosts exist but none has a usable address            451 4.4.4 temporary
=====================================================  =======================
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mailroom.dns import MX, AddressResult, Resolver, Status, to_ascii
from mailroom.wire.smtp.replies import Reply

__all__ = [
    "SMTP_PORT",
    "Relay",
    "Route",
    "SmarthostPolicy",
    "Target",
    "parse_relay",
    "resolve_route",
]

SMTP_PORT = 25
MAX_MX_HOSTS = 5
MAX_TARGETS = 10

TargetKind = Literal["mx", "implicit", "literal", "relay"]


@dataclass(frozen=True)
class Relay:
    """A smarthost: ``host`` is a name or an IP address (IPv6 without brackets)."""

    host: str
    port: int = SMTP_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_RELAY = re.compile(r"\[([^\[\]]+)\](?::(\d{1,5}))?|([^\[\]:]+)(?::(\d{1,5}))?")


def parse_relay(text: str) -> Relay:
    """``"relay.example:587"``, ``"relay.example"`` (port 25), ``"[192.0.2.1]:25"``, ``"[2001:db8::1]:587"``.

    Raises ValueError. Brackets only delimit an address; they do not change the lookup.
    """
    m = _RELAY.fullmatch(text.strip())
    if not m:
        raise ValueError(f'expected "host:port" or "[address]:port", got {text!r}')
    if m.group(1) is not None:
        host = str(ipaddress.ip_address(m.group(1)))
        port_text = m.group(2)
    else:
        host = m.group(3)
        port_text = m.group(4)
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = to_ascii(host)
    port = int(port_text) if port_text else SMTP_PORT
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return Relay(host, port)


@dataclass(frozen=True)
class SmarthostPolicy:
    """Relay all mail through ``default`` and/or mail for some domains through ``domains``."""

    default: Relay | None = None
    domains: Mapping[str, Relay] = field(default_factory=dict)

    @classmethod
    def parse(cls, default: str | None, domains: Mapping[str, str]) -> SmarthostPolicy:
        mapping: dict[str, Relay] = {}
        for key, value in domains.items():
            dot = key.startswith(".")
            mapping[("." if dot else "") + to_ascii(key.lstrip("."))] = parse_relay(value)
        return cls(parse_relay(default) if default else None, mapping)

    def relay_for(self, domain: str) -> Relay | None:
        """``domain`` as an A-label (or an address literal)."""
        exact = self.domains.get(domain)
        if exact is not None:
            return exact
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = self.domains.get("." + ".".join(labels[i:]))
            if parent is not None:
                return parent
        return self.default


@dataclass(frozen=True)
class Target:
    """One place to try: connect to ``address``:``port``; ``host`` names it (TLS, logs, Remote-MTA)."""

    host: str
    address: str
    port: int
    kind: TargetKind
    preference: int | None = None  # the MX preference ("mx" only)
    relay: Relay | None = None  # set for "relay": look up its TLS mode and credentials by it


@dataclass(frozen=True)
class Route:
    """The targets in order, or ``failure`` (a local reply: 5xx bounce, 4xx retry later)."""

    domain: str
    targets: tuple[Target, ...] = ()
    failure: Reply | None = None
    notes: tuple[str, ...] = ()  # hosts skipped and why, for the log

    @property
    def permanent(self) -> bool:
        return self.failure is not None and self.failure.code >= 500

    @property
    def temporary(self) -> bool:
        return self.failure is not None and self.failure.code < 500


def _fail(domain: str, code: int, enhanced: str, text: str, notes: Sequence[str] = ()) -> Route:
    return Route(domain, (), Reply(code, enhanced, (_one_line(text),)), tuple(notes))


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:400]


async def resolve_route(
    domain: str,
    resolver: Resolver,
    *,
    rng: random.Random,
    ipv6: bool = True,
    smarthosts: SmarthostPolicy | None = None,
    self_names: Collection[str] = (),
    max_mx_hosts: int = MAX_MX_HOSTS,
    max_targets: int = MAX_TARGETS,
) -> Route:
    """Where to deliver mail for ``domain`` (U-label, A-label or address literal); see the module doc."""
    literal = domain.strip()
    if literal.startswith("["):
        name = literal
    else:
        try:
            name = to_ascii(literal)
        except ValueError as exc:
            # RFC 3463 X.1.2: bad destination system address.
            return _fail(literal, 550, "5.1.2", f"invalid destination domain {literal!r}: {exc}")

    relay = smarthosts.relay_for(name) if smarthosts else None
    if relay is not None:
        return await _route_relay(name, relay, resolver, ipv6=ipv6, max_targets=max_targets)
    if name.startswith("["):
        return _route_literal(name, ipv6=ipv6)

    mx = await resolver.mx(name)
    if mx.status is Status.NXDOMAIN:
        return _fail(name, 550, "5.1.2", f"domain {name} does not exist ({mx.error})")
    if mx.temporary:
        # RFC 3463 X.4.3: directory server failure.
        return _fail(name, 451, "4.4.3", f"DNS lookup of MX for {name} failed: {mx.error}")
    if mx.status is Status.NODATA:
        # RFC 5321 §5.1: no MX -> the domain itself is the implicit MX, preference 0.
        addrs = await resolver.addresses(name, ipv6)
        if addrs.temporary:
            return _fail(name, 451, "4.4.3", f"DNS lookup of the address of {name} failed: {addrs.error}")
        if not addrs.ok:
            family = "MX, AAAA or A" if ipv6 else "MX or A (IPv6 delivery is off)"
            return _fail(name, 550, "5.4.4", f"domain {name} has no {family} record")
        implicit = [Target(name, a, SMTP_PORT, "implicit") for a in _order(addrs.records, ipv6)]
        return Route(name, tuple(implicit[:max_targets]))

    records = list(mx.records)
    if len(records) == 1 and records[0].is_null:
        # RFC 7505 §3 / §4.3: a null MX: the domain accepts no mail; 556 5.1.10.
        return _fail(name, 556, "5.1.10", f"domain {name} does not accept mail (null MX)")
    notes: list[str] = []
    if any(r.is_null for r in records):
        notes.append("ignored a null MX listed together with other MX records")
        records = [r for r in records if not r.is_null]
    ordered = _order_mx(records, rng)
    own = {to_ascii(n) for n in self_names}
    mine = [r.preference for r in ordered if r.host in own]
    if mine:
        # RFC 5321 §5.1: discard our own name and every record of equal or higher preference value.
        ordered = [r for r in ordered if r.preference < min(mine)]
        if not ordered:
            return _fail(name, 554, "5.4.6", f"mail for {name} loops back to myself (we are its best MX)")
        notes.append(f"dropped MX records at preference {min(mine)} and above: that is this host")
    hosts = ordered[:max_mx_hosts]
    if len(ordered) > len(hosts):
        notes.append(f"using the first {max_mx_hosts} of {len(ordered)} MX hosts")
    lookups: list[AddressResult] = list(
        await asyncio.gather(*(resolver.addresses(r.host, ipv6) for r in hosts))
    )
    targets: list[Target] = []
    seen: set[str] = set()
    temporary = False
    for record, addrs in zip(hosts, lookups, strict=True):
        if not addrs.ok:
            temporary = temporary or addrs.temporary
            notes.append(f"MX host {record.host} skipped: {addrs.status.value} {addrs.error}".rstrip())
            continue
        for address in _order(addrs.records, ipv6):
            if address not in seen:
                seen.add(address)
                targets.append(Target(record.host, address, SMTP_PORT, "mx", record.preference))
    if not targets:
        code = "4.4.3" if temporary else "4.4.4"
        return _fail(name, 451, code, f"no usable MX host for {name}: " + "; ".join(notes), notes)
    return Route(name, tuple(targets[:max_targets]), None, tuple(notes))


def _order_mx(records: Sequence[MX], rng: random.Random) -> list[MX]:
    """RFC 5321 §5.1: lowest preference first; equal preferences in random order."""
    by_pref: dict[int, list[MX]] = {}
    for r in records:
        by_pref.setdefault(r.preference, []).append(r)
    out: list[MX] = []
    for pref in sorted(by_pref):
        group = sorted(by_pref[pref], key=lambda r: r.host)  # the answer's order must not matter
        rng.shuffle(group)
        out.extend(group)
    return out


def _order(addresses: Sequence[str], ipv6: bool) -> list[str]:
    """IPv6 first, then IPv4; IPv6 dropped when ``ipv6`` is off."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    return (v6 + v4) if ipv6 else v4


def _route_literal(literal: str, *, ipv6: bool) -> Route:
    # RFC 5321 §4.1.3: IPv4-address-literal / "IPv6:" IPv6-addr / General-address-literal.
    inner = literal[1:-1] if literal.endswith("]") else ""
    text = inner[5:] if inner[:5].lower() == "ipv6:" else inner
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return _fail(literal, 550, "5.1.2", f"unsupported address literal {literal}")
    if (address.version == 6) != (inner[:5].lower() == "ipv6:"):
        return _fail(literal, 550, "5.1.2", f"malformed address literal {literal}")
    if address.version == 6 and not ipv6:
        return _fail(literal, 550, "5.4.4", f"cannot deliver to {literal}: IPv6 delivery is off")
    return Route(literal, (Target(literal, str(address), SMTP_PORT, "literal"),))


async def _route_relay(
    domain: str, relay: Relay, resolver: Resolver, *, ipv6: bool, max_targets: int
) -> Route:
    try:
        ip = ipaddress.ip_address(relay.host)
    except ValueError:
        pass
    else:
        if ip.version == 6 and not ipv6:
            return _fail(domain, 451, "4.4.4", f"smarthost {relay} is IPv6 but IPv6 delivery is off")
        return Route(domain, (Target(relay.host, str(ip), relay.port, "relay", None, relay),))
    addrs = await resolver.addresses(relay.host, ipv6)
    if not addrs.ok:
        # Always temporary: a relay that does not resolve is our configuration or our DNS.
        code = "4.4.3" if addrs.temporary else "4.4.4"
        return _fail(
            domain, 451, code, f"smarthost {relay.host} not found: {addrs.status.value} {addrs.error}"
        )
    targets = [Target(relay.host, a, relay.port, "relay", None, relay) for a in _order(addrs.records, ipv6)]
    return Route(domain, tuple(targets[:max_targets]))
