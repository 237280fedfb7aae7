"""The DNS view of mailauth: one lookup function whose answers are values, never exceptions.

SPF, DKIM and DMARC need five record types and must tell "the data does not exist" (a permanent
answer: ``none`` / ``permerror``) from "the lookup failed" (``temperror``, RFC 7208 §2.6.6,
RFC 6376 §6.1.2, RFC 7489 §6.6.3). Everything in mailauth sees DNS only through :class:`DnsLookup`:

    answer = await lookup("_dmarc.example.org", "TXT")

Record formats in :attr:`Answer.records`:

- ``TXT``: each record's character-strings concatenated (RFC 7208 §3.3, RFC 6376 §3.6.2.2)
- ``A`` / ``AAAA``: the address in its usual text form
- ``MX``: ``"<preference> <host>"``, host without the trailing dot
- ``PTR``: the host name without the trailing dot

The resolver follows CNAMEs (as a stub resolver's recursive server does). :func:`from_dns` adapts
``mailroom.dns.Resolver``; :class:`StaticLookup` is a small in-memory table for tests and checks.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from mailroom.dns import Resolver

RRType = Literal["TXT", "A", "AAAA", "MX", "PTR"]
RR_TYPES: tuple[RRType, ...] = ("TXT", "A", "AAAA", "MX", "PTR")


class DnsStatus(enum.Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"  # RFC 8020: the name does not exist
    NODATA = "nodata"  # the name exists, no record of this type
    TEMPERROR = "temperror"  # SERVFAIL, timeout, network error, lookups off


@dataclass(frozen=True, slots=True)
class Answer:
    status: DnsStatus
    records: tuple[str, ...] = ()
    error: str = ""

    @classmethod
    def found(cls, records: Iterable[str]) -> Answer:
        values = tuple(records)
        return cls(DnsStatus.OK, values) if values else cls(DnsStatus.NODATA, (), "empty answer")

    @classmethod
    def nxdomain(cls, error: str = "") -> Answer:
        return cls(DnsStatus.NXDOMAIN, (), error or "no such name")

    @classmethod
    def nodata(cls, error: str = "") -> Answer:
        return cls(DnsStatus.NODATA, (), error or "no record of that type")

    @classmethod
    def temperror(cls, error: str = "") -> Answer:
        return cls(DnsStatus.TEMPERROR, (), error or "temporary DNS failure")

    @property
    def ok(self) -> bool:
        return self.status is DnsStatus.OK

    @property
    def temporary(self) -> bool:
        return self.status is DnsStatus.TEMPERROR

    @property
    def missing(self) -> bool:
        """NXDOMAIN or NODATA: a permanent "nothing there"."""
        return self.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA)


class DnsLookup(Protocol):
    """``await lookup(name, rdtype)``: the only way mailauth sees DNS."""

    async def __call__(self, name: str, rdtype: RRType, /) -> Answer: ...


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


class StaticLookup:
    """Answers from a table: ``{name: {"TXT": [...], "A": [...], "CNAME": "target"}}``.

    A name that is absent (and has nothing below it) is NXDOMAIN; present without the type is
    NODATA; names in ``tempfail`` answer TEMPERROR. CNAMEs are followed. ``queries`` records
    every (name, type) asked, so a test can prove what was (not) looked up.
    """

    def __init__(
        self,
        records: Mapping[str, Mapping[str, str | Iterable[str]]] | None = None,
        *,
        tempfail: Iterable[str] = (),
    ) -> None:
        self.table: dict[str, dict[str, list[str]]] = {}
        for name, types in (records or {}).items():
            node = self.table.setdefault(_norm(name), {})
            for rtype, values in types.items():
                node.setdefault(rtype.upper(), []).extend([values] if isinstance(values, str) else values)
        self.tempfail = {_norm(n) for n in tempfail}
        self.queries: list[tuple[str, str]] = []

    def _exists(self, name: str) -> bool:
        return name in self.table or any(key.endswith("." + name) for key in self.table)

    async def __call__(self, name: str, rdtype: RRType, /) -> Answer:
        current = _norm(name)
        self.queries.append((current, rdtype))
        for _ in range(8):
            if current in self.tempfail:
                return Answer.temperror(f"SERVFAIL for {current} (static)")
            node = self.table.get(current, {})
            if node.get(rdtype):
                return Answer.found(node[rdtype])
            if node.get("CNAME"):
                current = _norm(node["CNAME"][0])
                continue
            return Answer.nodata() if self._exists(current) else Answer.nxdomain()
        return Answer.temperror("CNAME chain too long")


def from_dns(resolver: Resolver) -> DnsLookup:
    """Adapt ``mailroom.dns.Resolver`` (results as ``Lookup`` values) to :class:`DnsLookup`."""
    from mailroom.dns import Status

    statuses = {
        Status.OK: DnsStatus.OK,
        Status.NXDOMAIN: DnsStatus.NXDOMAIN,
        Status.NODATA: DnsStatus.NODATA,
        Status.TEMPFAIL: DnsStatus.TEMPERROR,
    }

    async def lookup(name: str, rdtype: RRType, /) -> Answer:
        if rdtype == "MX":
            mx = await resolver.mx(name)
            records: tuple[str, ...] = tuple(f"{r.preference} {r.host}" for r in mx.records)
            status, error = mx.status, mx.error
        else:
            # TXT: strings joined; PTR: host names without the dot; A/AAAA: text addresses.
            result = await resolver.txt(name) if rdtype == "TXT" else await resolver.query(name, rdtype)
            records, status, error = result.records, result.status, result.error
        if status is Status.OK and not records:
            return Answer.nodata(error)
        return Answer(statuses[status], records if status is Status.OK else (), error)

    return lookup
