"""The DNS records a mailroom domain should publish: MX, SPF, DKIM, DMARC, in zone-file syntax."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailroom.mailauth.dkim import SigningKey
from mailroom.mailauth.dmarc import POLICIES, Policy

DEFAULT_TTL = 3600


def split_txt(text: str, size: int = 255) -> list[str]:
    """RFC 1035 §3.3.14: a TXT record is character-strings of at most 255 octets each; readers
    concatenate them (RFC 7208 §3.3, RFC 6376 §3.6.2.2). Splits on octets, never inside a
    UTF-8 sequence."""
    data = text.encode("utf-8")
    parts: list[str] = []
    while data:
        cut = min(size, len(data))
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        parts.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    return parts or [""]


def quote_txt(text: str) -> str:
    """The record as zone-file quoted strings: ``"a" "b"`` (RFC 1035 §5.1 escapes)."""
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in split_txt(text))


@dataclass(frozen=True)
class DnsRecord:
    name: str  # without the final dot
    rtype: str
    value: str  # TXT: the record text (unquoted); others: zone-file rdata
    comment: str = ""

    def zone_line(self, ttl: int = DEFAULT_TTL, width: int = 0) -> str:
        rdata = quote_txt(self.value) if self.rtype == "TXT" else self.value
        if self.rtype == "TXT" and len(split_txt(self.value)) > 1:
            rdata = f"( {rdata} )"
        line = f"{(self.name + '.').ljust(width)} {ttl} IN {self.rtype.ljust(4)} {rdata}"
        return f"{line}  ; {self.comment}" if self.comment else line


def spf_record(hostname: str = "", addresses: Iterable[str] = (), *, all_qualifier: str = "-") -> str:
    """``v=spf1 ip4:... ip6:... a:<hostname> -all`` (RFC 7208 §5.6 ip4/ip6, §5.3 a, §5.1 all).

    The sending addresses are listed exactly; ``a:<hostname>`` keeps the record right when the
    server's address changes and its A/AAAA records follow.
    """
    terms = ["v=spf1"]
    for text in addresses:
        address = ipaddress.ip_address(text.strip())
        terms.append(f"ip{address.version}:{address}")
    host = hostname.strip().rstrip(".").lower()
    if host and "." in host and host != "localhost":
        terms.append(f"a:{host}")
    if all_qualifier not in ("-", "~", "?"):
        raise ValueError(f"SPF all qualifier must be -, ~ or ?, got {all_qualifier!r}")
    terms.append(f"{all_qualifier}all")
    return " ".join(terms)


def dmarc_record(report_address: str = "", policy: Policy = "quarantine") -> str:
    """``v=DMARC1; p=...; rua=mailto:...`` (RFC 7489 §6.3)."""
    if policy not in POLICIES:
        raise ValueError(f"DMARC policy must be none, quarantine or reject, got {policy!r}")
    record = f"v=DMARC1; p={policy}"
    if report_address:
        if "@" not in report_address or any(c in report_address for c in " ,;!"):
            raise ValueError(f"not a report address: {report_address!r}")
        record += f"; rua=mailto:{report_address}"  # RFC 7489 §6.2: aggregate reports
    return record


def domain_records(
    domain: str,
    *,
    hostname: str,
    addresses: Sequence[str] = (),
    keys: Sequence[SigningKey] = (),
    report_address: str | None = None,
    dmarc_policy: Policy = "quarantine",
) -> list[DnsRecord]:
    """MX, SPF, one DKIM record per key, DMARC (reports to postmaster@domain unless told)."""
    domain = domain.strip().rstrip(".").lower()
    host = hostname.strip().rstrip(".").lower()
    report = f"postmaster@{domain}" if report_address is None else report_address
    out = []
    if host and host != "localhost":
        out.append(DnsRecord(domain, "MX", f"10 {host}.", "RFC 5321 §5.1: where mail for the domain goes"))
    out.append(DnsRecord(domain, "TXT", spf_record(host, addresses), "SPF (RFC 7208)"))
    for key in keys:
        out.append(DnsRecord(key.record_name, "TXT", key.record, f"DKIM {key.algorithm} (RFC 6376)"))
    out.append(DnsRecord(f"_dmarc.{domain}", "TXT", dmarc_record(report, dmarc_policy), "DMARC (RFC 7489)"))
    report_domain = report.rpartition("@")[2].lower()
    if report and report_domain != domain:
        # RFC 7489 §7.1: the report domain must agree to receive reports for this one.
        out.append(
            DnsRecord(
                f"{domain}._report._dmarc.{report_domain}", "TXT", "v=DMARC1", "in the report domain's zone"
            )
        )
    return out


def host_records(hostname: str, addresses: Sequence[str] = ()) -> list[DnsRecord]:
    """The server name's own SPF record, for HELO checks (RFC 7208 §2.3)."""
    host = hostname.strip().rstrip(".").lower()
    if not host or host == "localhost":
        return []
    terms = (
        ["v=spf1"]
        + [f"ip{ipaddress.ip_address(a).version}:{ipaddress.ip_address(a)}" for a in addresses]
        + ["a", "-all"]
    )
    return [DnsRecord(host, "TXT", " ".join(terms), "SPF for the HELO name (RFC 7208 §2.3)")]


def zone_text(records: Sequence[DnsRecord], ttl: int = DEFAULT_TTL) -> str:
    width = max((len(r.name) + 1 for r in records), default=0)
    return "".join(r.zone_line(ttl, width) + "\n" for r in records)
