"""The real resolver behind :mod:`mailroom.dns`: dnspython's async stub resolver.

Kept apart so that only a server that actually looks something up loads dnspython;
:func:`mailroom.dns.from_config` imports this module at the first lookup.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset
import dns.ttl
import dns.zonefile

from mailroom.dns import (
    MX,
    AddressResult,
    Lookup,
    MXResult,
    Status,
    TextResult,
    invalid_name,
    merge_addresses,
    parse_nameserver,
    to_ascii,
)

__all__ = ["DnsResolver", "read_zone_text"]


def _name_text(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return "."
    return name.to_text(omit_final_dot=True).lower()


class DnsResolver:
    """dnspython's async stub resolver with explicit name servers; no search list.

    ``cache``: keep answers for their TTL (the server turns it on: every inbound message asks for
    the same SPF and DMARC records; tests that change records between lookups leave it off).

    ``nameservers``: ``["127.0.0.1:5353", "[::1]:5353"]`` and/or ``"system"`` (the servers of
    ``resolv_conf``). ``timeout``: the time allowed for one lookup, all servers together.
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        timeout: float = 3.0,
        *,
        resolv_conf: str = "/etc/resolv.conf",
        cache: bool = False,
    ) -> None:
        servers: list[tuple[str, int]] = []
        for entry in nameservers:
            if entry == "system":
                system = dns.resolver.Resolver(configure=False)
                system.read_resolv_conf(resolv_conf)  # reads the file only, no lookups
                for ns in system.nameservers:
                    address = ns.address if isinstance(ns, dns.nameserver.Do53Nameserver) else str(ns)
                    servers.append((address, system.port))
            else:
                servers.append(parse_nameserver(entry))
        if not servers:
            raise ValueError("no name servers configured")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        resolver.lifetime = timeout
        resolver.timeout = max(timeout / len(servers), 0.05)
        resolver.use_edns(0, 0, 1232)  # TC answers fall back to TCP inside resolve()
        if cache:
            resolver.cache = dns.resolver.LRUCache(10_000)  # answers expire with their TTL
        self._resolver = resolver
        self.servers = tuple(servers)

    async def _resolve(self, name: str, rdtype: dns.rdatatype.RdataType) -> Lookup[dns.rdata.Rdata]:
        try:
            qname = dns.name.from_text(to_ascii(name))
        except (ValueError, dns.exception.DNSException) as exc:
            return invalid_name(exc)
        try:
            answer = await self._resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=True)
        except dns.resolver.NXDOMAIN:
            return Lookup(Status.NXDOMAIN, (), f"{qname} does not exist")
        except dns.resolver.YXDOMAIN as exc:  # a DNAME made the name too long: it cannot exist
            return Lookup(Status.NXDOMAIN, (), str(exc))
        except dns.resolver.NoAnswer:
            return Lookup(Status.NODATA, (), f"{qname} has no {dns.rdatatype.to_text(rdtype)} record")
        except dns.resolver.NoNameservers as exc:  # SERVFAIL / REFUSED from every server
            return Lookup(Status.TEMPFAIL, (), str(exc))
        except dns.exception.Timeout as exc:
            return Lookup(Status.TEMPFAIL, (), f"timeout: {exc}")
        except (dns.exception.DNSException, OSError) as exc:
            return Lookup(Status.TEMPFAIL, (), f"{type(exc).__name__}: {exc}")
        return Lookup(Status.OK, tuple(answer))

    async def mx(self, domain: str) -> MXResult:
        result = await self._resolve(domain, dns.rdatatype.MX)
        if not result.ok:
            return Lookup(result.status, (), result.error)
        records = tuple(
            MX(int(r.preference), _name_text(r.exchange))  # type: ignore[attr-defined]
            for r in result.records
        )
        return Lookup(Status.OK, records)

    async def _text(self, name: str, rdtype: dns.rdatatype.RdataType) -> TextResult:
        result = await self._resolve(name, rdtype)
        if not result.ok:
            return Lookup(result.status, (), result.error)
        if rdtype == dns.rdatatype.TXT:
            # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: the strings of one record are concatenated.
            texts = tuple(
                b"".join(r.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
                for r in result.records
            )
            return Lookup(Status.OK, texts)
        if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
            return Lookup(Status.OK, tuple(_name_text(r.target) for r in result.records))  # type: ignore[attr-defined]
        return Lookup(Status.OK, tuple(r.to_text() for r in result.records))

    async def addresses(self, host: str, ipv6: bool = True) -> AddressResult:
        if ipv6:
            v6, v4 = await asyncio.gather(
                self._text(host, dns.rdatatype.AAAA), self._text(host, dns.rdatatype.A)
            )
            return merge_addresses(v6, v4)
        return merge_addresses(None, await self._text(host, dns.rdatatype.A))

    async def txt(self, name: str) -> TextResult:
        return await self._text(name, dns.rdatatype.TXT)

    async def ptr(self, ip: str) -> TextResult:
        try:
            name = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        except (ValueError, dns.exception.DNSException) as exc:
            return invalid_name(exc)
        return await self._text(name, dns.rdatatype.PTR)

    async def query(self, name: str, rdtype: str) -> TextResult:
        return await self._text(name, dns.rdatatype.from_text(rdtype))


_DIRECTIVE = re.compile(r"^\$(ORIGIN|TTL|INCLUDE|GENERATE)\b[ \t]*(\S*)", re.IGNORECASE)


def read_zone_text(text: str, origin: str) -> list[dns.rrset.RRset]:
    """RFC 1035 §5.1 master file text, split at its directives (dnspython's ``read_rrsets`` reads
    records only, and its zone reader refuses an SOA away from the zone's origin)."""
    rrsets: list[dns.rrset.RRset] = []
    current = dns.name.from_text(origin)
    ttl = 300
    section: list[str] = []

    def flush() -> None:
        if any(line.strip() and not line.lstrip().startswith(";") for line in section):
            rrsets.extend(
                dns.zonefile.read_rrsets(
                    "\n".join(section) + "\n", origin=current, relativize=False, default_ttl=ttl, rdclass=None
                )
            )
        section.clear()

    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if m is None:
            section.append(line)
            continue
        flush()
        directive, value = m.group(1).upper(), m.group(2)
        if directive == "ORIGIN":
            current = dns.name.from_text(value, current)
        elif directive == "TTL":
            ttl = dns.ttl.from_text(value)
        else:
            raise ValueError(f"${directive} is not supported in zone text")
    flush()
    return rrsets
