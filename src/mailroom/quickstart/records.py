"""Every DNS record a mailroom host and its domains publish, from the config: one list that
``mailroom init`` prints (zone-file snippet and table) and ``mailroom check`` verifies.

Per domain: MX; SPF; one DKIM record per key; DMARC with a report address (RFC 7489); the
``_mta-sts`` TXT and the ``mta-sts.`` name serving the policy (RFC 8461); TLS-RPT (RFC 8460); SRV
records for clients (RFC 6186, with RFC 8314 §5.1's "." target for a service offered only over
implicit TLS); the ``autoconfig.`` name (Thunderbird) and ``_autodiscover._tcp`` SRV (Outlook);
CAA (RFC 8659). For the host: A/AAAA of the public addresses and SPF for the HELO name. At the
hosting provider: the PTR of each public address (reverse DNS must name the host, FCrDNS).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailroom.config import Config
from mailroom.dns import reverse_name
from mailroom.mailauth import records as authrecords
from mailroom.mailauth.dkim import SigningKey
from mailroom.quickstart import mtasts

TTL = authrecords.DEFAULT_TTL
REVERSE = "reverse DNS"  # the zone name used for PTR records: the provider's, not the user's


@dataclass(frozen=True)
class Service:
    """A client-facing listener: what autoconfig and SRV records announce."""

    name: str  # listener name: imaps, imap, pop3s, pop3, submissions, submission
    protocol: str  # imap, pop3, smtp
    port: int
    tls: str  # "implicit" or "starttls"


_SERVICES = (
    ("imaps", "imap", "implicit"),
    ("imap", "imap", "starttls"),
    ("pop3s", "pop3", "implicit"),
    ("pop3", "pop3", "starttls"),
    ("submissions", "smtp", "implicit"),
    ("submission", "smtp", "starttls"),
)


def client_services(cfg: Config) -> list[Service]:
    """The enabled client listeners, implicit TLS first (RFC 8314 §3 prefers it), first port each."""
    out = []
    for name, protocol, tls in _SERVICES:
        endpoints = getattr(cfg.listeners, name)
        if endpoints:
            out.append(Service(name, protocol, endpoints[0].port, tls))
    return out


@dataclass(frozen=True)
class Record:
    name: str  # absolute, lower-case, without the final dot
    rtype: str  # MX, A, AAAA, TXT, SRV, CNAME, CAA, PTR
    value: str  # zone-file rdata; TXT: the record's text, unquoted and unsplit
    kind: str  # what `mailroom check` verifies: mx, spf, dkim, dmarc, mta-sts, srv, ...
    purpose: str  # a short comment for people
    zone: str  # the zone it belongs in (REVERSE for PTR)
    domain: str = ""  # the mail domain it serves ("" for the host's own records)

    def zone_line(self, width: int = 0, comment: bool = True) -> str:
        purpose = self.purpose if comment else ""
        return authrecords.DnsRecord(self.name, self.rtype, self.value, purpose).zone_line(TTL, width)

    @property
    def relative(self) -> str:
        """The name as DNS provider web forms want it: relative to the zone, "@" for the apex."""
        if self.zone == REVERSE:
            return self.name
        if self.name == self.zone:
            return "@"
        return self.name.removesuffix("." + self.zone)


def _zone_for(name: str, domains: Sequence[str]) -> str:
    """The longest local domain containing ``name``, else the name's parent (a guess at its zone)."""
    best = ""
    for domain in domains:
        if (name == domain or name.endswith("." + domain)) and len(domain) > len(best):
            best = domain
    if best:
        return best
    return name.split(".", 1)[1] if name.count(".") >= 2 else name


def report_address(cfg: Config, domain: str) -> str:
    return cfg.public.report_address or f"postmaster@{domain}"


def srv_records(cfg: Config, domain: str) -> list[Record]:
    """RFC 6186 §3 + RFC 8314 §5.1: implicit-TLS services at the host, their plaintext/STARTTLS
    twins "not offered here" (target ".") so clients use TLS from the first byte."""
    host = cfg.server.hostname
    enabled = {s.name: s for s in client_services(cfg)}
    out: list[Record] = []
    pairs = (("submissions", "submission"), ("imaps", "imap"), ("pop3s", "pop3"))
    for secure, plain in pairs:
        for name in (secure, plain):
            service = enabled.get(name)
            if name == plain and secure in enabled:
                service = None
            value = f"0 1 {service.port} {host}." if service else "0 0 0 ."
            purpose = (
                f"{name} at {host}:{service.port} (RFC 6186)"
                if service
                else f"no {name}: clients use {secure} (RFC 8314 §5.1)"
                if secure in enabled
                else f"{name} not offered (RFC 6186 §3)"
            )
            out.append(Record(f"_{name}._tcp.{domain}", "SRV", value, "srv", purpose, domain, domain))
    if cfg.listeners.https:
        port = cfg.listeners.https[0].port
        out.append(
            Record(
                f"_autodiscover._tcp.{domain}",
                "SRV",
                f"0 1 {port} {host}.",
                "srv",
                "Outlook autodiscover at the host",
                domain,
                domain,
            )
        )
    return out


def domain_records(
    cfg: Config, domain: str, keys: Sequence[SigningKey], mta_sts_mode: mtasts.Mode | None
) -> list[Record]:
    host = cfg.server.hostname
    addresses = list(cfg.public.addresses)
    report = report_address(cfg, domain)
    out: list[Record] = [
        Record(
            domain, "MX", f"10 {host}.", "mx", "mail for the domain goes to the host (RFC 5321 §5.1)", domain
        ),
        Record(domain, "TXT", authrecords.spf_record(host, addresses), "spf", "SPF (RFC 7208)", domain),
    ]
    for key in keys:
        out.append(
            Record(key.record_name, "TXT", key.record, "dkim", f"DKIM {key.key_type} key (RFC 6376)", domain)
        )
    out.append(
        Record(
            f"_dmarc.{domain}",
            "TXT",
            authrecords.dmarc_record(report, "quarantine"),
            "dmarc",
            "DMARC, aggregate reports to " + report + " (RFC 7489)",
            domain,
        )
    )
    report_domain = report.rpartition("@")[2].lower()
    if report_domain != domain:
        name = f"{domain}._report._dmarc.{report_domain}"
        out.append(
            Record(
                name,
                "TXT",
                "v=DMARC1",
                "dmarc-report",
                "lets another domain receive the reports (RFC 7489 §7.1)",
                report_domain,
            )
        )
    if mta_sts_mode is not None:
        policy = mtasts.policy_text(mta_sts_mode, [host])
        out.append(
            Record(
                f"_mta-sts.{domain}",
                "TXT",
                mtasts.txt_record(policy),
                "mta-sts",
                f"MTA-STS, policy mode {mta_sts_mode} (RFC 8461)",
                domain,
            )
        )
        out.append(
            Record(
                f"mta-sts.{domain}",
                "CNAME",
                f"{host}.",
                "name",
                "serves the MTA-STS policy over HTTPS",
                domain,
            )
        )
    out.append(
        Record(
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:{report}",
            "tls-rpt",
            "TLS reports (RFC 8460)",
            domain,
        )
    )
    out += srv_records(cfg, domain)
    if cfg.listeners.http or cfg.listeners.https:
        out.append(
            Record(
                f"autoconfig.{domain}",
                "CNAME",
                f"{host}.",
                "name",
                "Thunderbird autoconfig at the host",
                domain,
            )
        )
    for issuer in cfg.public.caa_issuers:
        out.append(
            Record(
                domain,
                "CAA",
                f'0 issue "{issuer}"',
                "caa",
                f"only {issuer} may issue certificates (RFC 8659)",
                domain,
            )
        )
    return [Record(r.name, r.rtype, r.value, r.kind, r.purpose, r.zone, domain) for r in out]


def host_records(cfg: Config, domains: Sequence[str]) -> list[Record]:
    host = cfg.server.hostname
    zone = _zone_for(host, domains)
    out = []
    for text in cfg.public.addresses:
        address = ipaddress.ip_address(text)
        rtype = "A" if address.version == 4 else "AAAA"
        out.append(Record(host, rtype, str(address), "address", "the host's public address", zone))
    for r in authrecords.host_records(host, list(cfg.public.addresses)):
        out.append(
            Record(r.name, r.rtype, r.value, "spf-helo", "SPF for the HELO name (RFC 7208 §2.3)", zone)
        )
    if zone not in domains:  # a host outside every mail domain needs its own CAA
        for issuer in cfg.public.caa_issuers:
            out.append(
                Record(host, "CAA", f'0 issue "{issuer}"', "caa", f"only {issuer} may issue (RFC 8659)", zone)
            )
    for text in cfg.public.addresses:
        name = reverse_name(text)
        out.append(
            Record(
                name, "PTR", f"{host}.", "ptr", f"reverse DNS of {text}: ask your hosting provider", REVERSE
            )
        )
    return out


def plan(
    cfg: Config,
    domains: Sequence[str],
    keys: Mapping[str, Sequence[SigningKey]],
    mta_sts_modes: Mapping[str, mtasts.Mode | None],
) -> list[Record]:
    """Every record, grouped by zone: each domain's, then the host's, then the PTRs."""
    out: list[Record] = []
    host = host_records(cfg, domains)
    for domain in domains:
        out += domain_records(cfg, domain, keys.get(domain, ()), mta_sts_modes.get(domain))
        out += [r for r in host if r.zone == domain]
    out += [r for r in host if r.zone not in domains]
    # the report-authorization record lives in the report domain's zone
    return sorted(out, key=lambda r: _zone_order(r, domains))


def _zone_order(record: Record, domains: Sequence[str]) -> int:
    if record.zone == REVERSE:
        return len(domains) + 1
    return domains.index(record.zone) if record.zone in domains else len(domains)


def zones(records: Sequence[Record]) -> list[str]:
    seen: list[str] = []
    for r in records:
        if r.zone not in seen:
            seen.append(r.zone)
    return seen


def zone_snippet(records: Sequence[Record]) -> str:
    """Zone-file text with absolute names; every record parses with any zone-file reader
    (TXT split into strings of at most 255 bytes, RFC 1035 §3.3.14)."""
    out = []
    for zone in zones(records):
        width = max(len(r.name) + 1 for r in records if r.zone == zone)
        if zone == REVERSE:
            out.append(
                "; reverse DNS: not in your zones -- ask your hosting provider to set these PTR records"
            )
        else:
            out.append(f"; zone {zone}")
        out += [r.zone_line(width) for r in records if r.zone == zone]
        out.append("")
    return "\n".join(out)


def table(records: Sequence[Record]) -> str:
    """The same records for DNS providers' web forms: names relative to the zone, TXT unsplit."""
    out = []
    for zone in zones(records):
        rows = [r for r in records if r.zone == zone]
        if zone == REVERSE:
            out.append("At your hosting provider (reverse DNS of each public address):")
        else:
            out.append(f'Zone {zone} (names relative to the zone, "@" = {zone}):')
        names = [_table_name(r) for r in rows]
        width = max(len(n) for n in names)
        out.append(f"  {'NAME'.ljust(width)}  TYPE   VALUE")
        out += [
            f"  {n.ljust(width)}  {r.rtype.ljust(5)}  {r.value}" for n, r in zip(names, rows, strict=True)
        ]
        out.append("")
    return "\n".join(out)


def ptr_address(record: Record) -> str:
    """The address a PTR record is for (``7.113.0.203.in-addr.arpa`` -> ``203.0.113.7``)."""
    import dns.name  # CLI only: the server's web pages import this module too
    import dns.reversename

    return str(dns.reversename.to_address(dns.name.from_text(record.name)))


def _table_name(record: Record) -> str:
    # providers ask for the address, not the in-addr.arpa name
    return ptr_address(record) if record.zone == REVERSE else record.relative
