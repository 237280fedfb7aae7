"""DNS for mailroom: one async resolver interface whose results are values, never exceptions.

Delivery, SPF and DMARC must tell a permanent answer from a temporary failure, so every lookup
returns a :class:`Lookup` with one of four statuses:

=============  ==========================================================================
``OK``         the name has records of the type (``records`` is not empty)
``NXDOMAIN``   the name does not exist (rcode 3), or it is not a valid domain name at all
``NODATA``     the name exists but has no records of the type (NOERROR, empty answer)
``TEMPFAIL``   SERVFAIL, REFUSED by every server, timeout, network error, lookups disabled
=============  ==========================================================================

``NXDOMAIN`` and ``NODATA`` are permanent (``.permanent``); ``TEMPFAIL`` is ``.temporary`` and
carries a one-line ``error`` for the log.

Implementations of :class:`Resolver`:

- :class:`DnsResolver`: dnspython's async stub resolver with explicit name servers only
  (``dns.asyncresolver.Resolver(configure=False)``); ``"system"`` reads /etc/resolv.conf
  explicitly. It never calls ``socket.getaddrinfo`` on a name.
- :class:`NoDnsResolver`: dev mode / ``[dns] nameservers = []``: every lookup is ``TEMPFAIL``
  ("DNS lookups are disabled"), so outbound mail waits in the queue instead of bouncing.
- :class:`FakeResolver`: records from a dict or from zone-file text, shipped in the package for
  tests and ``mailroom check``.

Names: U-labels are accepted and A-labels are queried (RFC 5890/5891; the stdlib IDNA 2003 codec
per label, as dnspython does without the ``idna`` package). Returned host names are lower-case
A-labels without the trailing dot; the root name (a null MX, RFC 7505) is returned as ``"."``.

API (all lookups are coroutines)::

    await resolver.mx(domain)                 -> Lookup[MX]   (MX(preference, host); unsorted)
    await resolver.addresses(host, ipv6=True) -> Lookup[str]  (AAAA first, then A; A only if not ipv6)
    await resolver.txt(name)                  -> Lookup[str]  (each TXT record's strings joined)
    await resolver.ptr(ip)                    -> Lookup[str]  (host names)
    await resolver.query(name, "TLSA")        -> Lookup[str]  (any type, rdata in presentation form)
    from_config(cfg.dns)                      -> Resolver
"""

from __future__ import annotations

import encodings.idna
import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from mailroom.config import DNSConfig

if TYPE_CHECKING:
    from mailroom.dnsquery import DnsResolver

__all__ = [
    "MX",
    "AddressResult",
    "DnsResolver",
    "FakeResolver",
    "Lookup",
    "MXResult",
    "NoDnsResolver",
    "Resolver",
    "Status",
    "TextResult",
    "from_config",
    "to_ascii",
]

T = TypeVar("T")

_MAX_CNAME_CHAIN = 8
_LDH_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # "_" for _dmarc, _domainkey, ...


class Status(enum.Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Lookup(Generic[T]):
    """The outcome of one lookup. ``records`` is empty unless ``status`` is OK."""

    status: Status
    records: tuple[T, ...] = ()
    error: str = ""  # human-readable reason when not OK

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def permanent(self) -> bool:
        """The name or the data does not exist: retrying will not help."""
        return self.status in (Status.NXDOMAIN, Status.NODATA)

    @property
    def temporary(self) -> bool:
        return self.status is Status.TEMPFAIL


@dataclass(frozen=True, slots=True, order=True)
class MX:
    """RFC 5321 §5.1 / RFC 1035 §3.3.9: one MX record. ``host`` is ``"."`` for a null MX (RFC 7505)."""

    preference: int
    host: str

    @property
    def is_null(self) -> bool:
        return self.host == "."


MXResult = Lookup[MX]
AddressResult = Lookup[str]
TextResult = Lookup[str]


class Resolver(Protocol):
    """The only way the rest of mailroom sees DNS."""

    async def mx(self, domain: str) -> MXResult: ...

    async def addresses(self, host: str, ipv6: bool = True) -> AddressResult: ...

    async def txt(self, name: str) -> TextResult: ...

    async def ptr(self, ip: str) -> TextResult: ...

    async def query(self, name: str, rdtype: str) -> TextResult: ...


# --- names ------------------------------------------------------------------------------------------


def to_ascii(name: str) -> str:
    """A DNS name as lower-case A-labels without the trailing dot; ValueError when it cannot be one.

    RFC 5891 §4 (via the stdlib IDNA 2003 ToASCII per label); labels are LDH plus "_" (service
    labels such as ``_dmarc``), 1-63 octets (RFC 1035 §2.3.4), at most 253 octets in all.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty name")
    labels: list[str] = []
    for label in text.split("."):
        if not label:
            raise ValueError(f"empty label in {name!r}")
        if not label.isascii():
            try:
                label = encodings.idna.ToASCII(label).decode("ascii")
            except UnicodeError as exc:
                raise ValueError(f"invalid internationalised label in {name!r}: {exc}") from None
        label = label.lower()
        if not _LDH_LABEL.fullmatch(label):
            raise ValueError(f"invalid label {label!r} in {name!r}")
        labels.append(label)
    ascii_name = ".".join(labels)
    if len(ascii_name) > 253:
        raise ValueError("name longer than 253 octets")
    return ascii_name


def reverse_name(ip: str) -> str:
    """The PTR name of an address: RFC 1035 §3.5 (in-addr.arpa), RFC 3596 §2.5 (ip6.arpa)."""
    address = ipaddress.ip_address(ip)  # ValueError when not an address
    return address.reverse_pointer


def invalid_name(exc: Exception) -> Lookup[T]:
    return Lookup(Status.NXDOMAIN, (), f"invalid name: {exc}")


def merge_addresses(v6: AddressResult | None, v4: AddressResult) -> AddressResult:
    """AAAA then A. OK when either has addresses (a temporary failure of the other family is
    tolerated); otherwise TEMPFAIL wins over NXDOMAIN, which wins over NODATA."""
    results = [r for r in (v6, v4) if r is not None]
    records = tuple(a for r in results for a in r.records)
    if records:
        return Lookup(Status.OK, records)
    for status in (Status.TEMPFAIL, Status.NXDOMAIN):
        for r in results:
            if r.status is status:
                return Lookup(status, (), r.error)
    return Lookup(Status.NODATA, (), "; ".join(r.error for r in results if r.error))


# --- the real resolver ------------------------------------------------------------------------------

_SERVER = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})|([0-9A-Fa-f:.]+)")


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:5353"``, ``"192.0.2.53"``, ``"2001:db8::53"`` -> (ip, port)."""
    m = _SERVER.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a name server address: {text!r}")
    host = m.group(1) or m.group(3) or m.group(5)
    port = int(m.group(2) or m.group(4) or 53)
    ipaddress.ip_address(host)  # ValueError when not an address: never a name to resolve
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


class NoDnsResolver:
    """Lookups switched off (``[dns] nameservers = []``, dev mode): everything is TEMPFAIL."""

    ERROR = "DNS lookups are disabled ([dns] nameservers is empty)"

    def _off(self) -> Lookup[T]:
        return Lookup(Status.TEMPFAIL, (), self.ERROR)

    async def mx(self, domain: str) -> MXResult:
        return self._off()

    async def addresses(self, host: str, ipv6: bool = True) -> AddressResult:
        return self._off()

    async def txt(self, name: str) -> TextResult:
        return self._off()

    async def ptr(self, ip: str) -> TextResult:
        return self._off()

    async def query(self, name: str, rdtype: str) -> TextResult:
        return self._off()


# --- the fake ------------------------------------------------------------------------------------------

RecordValues = str | Iterable[str]


class FakeResolver:
    """An in-memory resolver with the same answers, statuses and IDNA handling as the real one.

    ``records`` maps a name to ``{type: value or [values]}``; values are written as in a zone file's
    rdata except TXT, which is the record's text itself (already joined, unquoted)::

        FakeResolver({
            "example.org": {"MX": ["10 mx1.example.org", "20 mx2.example.org"], "TXT": "v=spf1 -all"},
            "mx1.example.org": {"A": "192.0.2.1", "AAAA": "2001:db8::1"},
        }, tempfail=["broken.example", ("example.net", "MX")])

    A name is NXDOMAIN unless it or a name below it has records (empty non-terminals are NODATA,
    RFC 8020). CNAMEs are followed. ``tempfail`` names (or (name, type) pairs) answer TEMPFAIL, as a
    SERVFAIL would. Every query is appended to ``queries`` as (A-label name, type).
    """

    def __init__(
        self,
        records: Mapping[str, Mapping[str, RecordValues]] | None = None,
        *,
        tempfail: Iterable[str | tuple[str, str]] = (),
    ) -> None:
        self._data: dict[str, dict[str, list[str]]] = {}
        self._tempfail: set[tuple[str, str]] = set()
        self.queries: list[tuple[str, str]] = []
        for name, types in (records or {}).items():
            for rtype, values in types.items():
                for value in [values] if isinstance(values, str) else values:
                    self.add(name, rtype, value)
        for item in tempfail:
            name, rtype = (item, "*") if isinstance(item, str) else item
            self.fail(name, rtype)

    @classmethod
    def from_zone(cls, text: str, origin: str = ".", **kwargs: object) -> FakeResolver:
        """Records from zone-file text (RFC 1035 §5: ``$ORIGIN``, ``$TTL``, ``@``, parentheses...).

        Several zones may follow each other (one ``$ORIGIN`` each); SOA records are taken like any
        other. ``$INCLUDE`` and ``$GENERATE`` are refused (ValueError / dns.exception.SyntaxError).
        """
        import dns.rdatatype

        from mailroom.dnsquery import read_zone_text

        fake = cls(**kwargs)  # type: ignore[arg-type]
        for rrset in read_zone_text(text, origin):
            rtype = dns.rdatatype.to_text(rrset.rdtype)
            for rdata in rrset:
                if rrset.rdtype == dns.rdatatype.TXT:
                    value = b"".join(rdata.strings).decode("utf-8", "replace")
                else:
                    value = rdata.to_text()
                fake.add(rrset.name.to_text(), rtype, value)
        return fake

    def add(self, name: str, rtype: str, value: str) -> None:
        rtype = rtype.upper()
        key = to_ascii(name) if name.strip() not in (".", "") else "."
        if rtype == "MX":
            pref, _, host = value.strip().partition(" ")
            value = f"{int(pref)} {self._host(host)}"
        elif rtype in ("CNAME", "PTR", "NS"):
            value = self._host(value)
        elif rtype in ("A", "AAAA"):
            value = str(ipaddress.ip_address(value.strip()))
        self._data.setdefault(key, {}).setdefault(rtype, []).append(value)

    def remove(self, name: str, rtype: str | None = None) -> None:
        node = self._data.get(to_ascii(name), {})
        if rtype is None:
            node.clear()
        else:
            node.pop(rtype.upper(), None)

    def fail(self, name: str, rtype: str = "*") -> None:
        self._tempfail.add((to_ascii(name), rtype.upper()))

    @staticmethod
    def _host(text: str) -> str:
        text = text.strip()
        return "." if text in (".", "") else to_ascii(text)

    def _exists(self, name: str) -> bool:
        if any(self._data.get(name, {}).values()):
            return True
        suffix = "." + name
        return any(key.endswith(suffix) and any(types.values()) for key, types in self._data.items())

    def _lookup(self, name: str, rtype: str) -> Lookup[str]:
        try:
            current = to_ascii(name)
        except ValueError as exc:
            return invalid_name(exc)
        self.queries.append((current, rtype))
        for _ in range(_MAX_CNAME_CHAIN):
            if (current, rtype) in self._tempfail or (current, "*") in self._tempfail:
                return Lookup(Status.TEMPFAIL, (), f"SERVFAIL for {current} {rtype} (fake)")
            node = self._data.get(current, {})
            if node.get(rtype):
                return Lookup(Status.OK, tuple(node[rtype]))
            if node.get("CNAME") and rtype != "CNAME":
                current = node["CNAME"][0]
                continue
            if not self._exists(current):
                return Lookup(Status.NXDOMAIN, (), f"{current} does not exist")
            return Lookup(Status.NODATA, (), f"{current} has no {rtype} record")
        return Lookup(Status.TEMPFAIL, (), f"CNAME chain too long at {name}")

    async def mx(self, domain: str) -> MXResult:
        result = self._lookup(domain, "MX")
        if not result.ok:
            return Lookup(result.status, (), result.error)
        records = []
        for value in result.records:
            pref, _, host = value.partition(" ")
            records.append(MX(int(pref), host))
        return Lookup(Status.OK, tuple(records))

    async def addresses(self, host: str, ipv6: bool = True) -> AddressResult:
        v6 = self._lookup(host, "AAAA") if ipv6 else None
        return merge_addresses(v6, self._lookup(host, "A"))

    async def txt(self, name: str) -> TextResult:
        return self._lookup(name, "TXT")

    async def ptr(self, ip: str) -> TextResult:
        try:
            name = reverse_name(ip)
        except ValueError as exc:
            return invalid_name(exc)
        return self._lookup(name, "PTR")

    async def query(self, name: str, rdtype: str) -> TextResult:
        return self._lookup(name, rdtype.upper())


class LazyResolver:
    """Builds the real resolver at the first lookup, so an idle server never loads dnspython
    (about 4 MiB resident); the name servers were already checked when the config was read."""

    def __init__(self, nameservers: Sequence[str], timeout: float) -> None:
        self.nameservers = tuple(nameservers)
        self.timeout = timeout
        self._real: Resolver | None = None

    def _resolver(self) -> Resolver:
        if self._real is None:
            from mailroom.dnsquery import DnsResolver

            self._real = DnsResolver(self.nameservers, self.timeout, cache=True)
        return self._real

    async def mx(self, domain: str) -> MXResult:
        return await self._resolver().mx(domain)

    async def addresses(self, host: str, ipv6: bool = True) -> AddressResult:
        return await self._resolver().addresses(host, ipv6)

    async def txt(self, name: str) -> TextResult:
        return await self._resolver().txt(name)

    async def ptr(self, ip: str) -> TextResult:
        return await self._resolver().ptr(ip)

    async def query(self, name: str, rdtype: str) -> TextResult:
        return await self._resolver().query(name, rdtype)


def from_config(cfg: DNSConfig) -> Resolver:
    """The resolver ``[dns]`` asks for: none (lookups off) when ``nameservers`` is empty."""
    if not cfg.nameservers:
        return NoDnsResolver()
    return LazyResolver(list(cfg.nameservers), cfg.timeout)


def __getattr__(name: str) -> Any:
    """``from mailroom.dns import DnsResolver`` keeps working; the import happens only then."""
    if name == "DnsResolver":
        from mailroom.dnsquery import DnsResolver

        return DnsResolver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
