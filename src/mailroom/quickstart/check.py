"""``mailroom check``: every record ``mailroom init`` asked for, as DNS really answers it.

All lookups go through the configured resolver (``[dns] nameservers``), never the system one.
Each finding is ``ok``, ``missing``, ``wrong``, ``error`` (DNS failed: cannot tell) or ``skipped``,
with the exact fix. Beyond the records: the PTR of each public address names the host and the host
resolves back to it (FCrDNS); the certificate the server serves is trusted, current and covers
the host and the policy/autoconfig names; optionally, outbound port 25 is reachable.

Semantic where it matters: SPF is evaluated (``check_host`` for each public address must give
``pass``), so a record the user extended (``include:``) is still right; DKIM compares the public
key; MTA-STS compares the policy id; DMARC and TLS-RPT are parsed.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import dns.name
import dns.reversename
from cryptography import x509
from cryptography.x509 import verification

from mailroom.config import Config
from mailroom.dns import MX, Lookup, Resolver, Status
from mailroom.mailauth import spf
from mailroom.mailauth.dmarc import RecordError, parse_record
from mailroom.mailauth.resolver import from_dns
from mailroom.quickstart import mtasts
from mailroom.quickstart.records import REVERSE, Record

FindingStatus = Literal["ok", "missing", "wrong", "error", "skipped"]
FAILING = ("missing", "wrong", "error")
CERT_MIN_DAYS = 14  # an ACME certificate renews at a third of its life: 30 days for Let's Encrypt
SMTP_OUT_TIMEOUT = 5.0


@dataclass
class Finding:
    check: str  # mx, spf, dkim, dmarc, mta-sts, tls-rpt, srv, name, caa, address, ptr, certificate, smtp-out
    name: str
    rtype: str
    status: FindingStatus
    detail: str
    fix: str = ""
    found: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()
    domain: str = ""  # "" for the host's own findings

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["found"], data["expected"] = list(self.found), list(self.expected)
        return data


@dataclass
class Context:
    cfg: Config
    resolver: Resolver
    ca_files: Sequence[Path] = ()
    system_cas: Path | None = None  # None: the platform's default bundle
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))

    @property
    def host(self) -> str:
        return self.cfg.server.hostname


# --- helpers ------------------------------------------------------------------------------------------


def _line(record: Record) -> str:
    """The record as one zone-file line, without the alignment padding or the comment."""
    name, ttl, rclass, rtype, rdata = record.zone_line(comment=False).split(None, 4)
    return f"{name} {ttl} {rclass} {rtype} {rdata}"


def _lines(records: Iterable[Record]) -> str:
    return "\n".join(_line(r) for r in records)


def _publish(records: Sequence[Record]) -> str:
    return "publish: " + _lines(records)


def _replace(records: Sequence[Record]) -> str:
    first = records[0]
    return f"replace the {first.rtype} record(s) of {first.name} with: " + _lines(records)


def _lookup_failure(result: Lookup[Any], records: Sequence[Record], check: str) -> Finding | None:
    """A finding for NXDOMAIN/NODATA (missing) or TEMPFAIL (error); None when records were found."""
    first = records[0]
    expected = tuple(r.value for r in records)
    if result.temporary:
        return Finding(
            check,
            first.name,
            first.rtype,
            "error",
            f"DNS lookup failed: {result.error}",
            "retry; if it persists, check [dns] nameservers and the zone's name servers",
            expected=expected,
            domain=first.domain,
        )
    if not result.ok:
        return Finding(
            check,
            first.name,
            first.rtype,
            "missing",
            first.purpose,
            _publish(records),
            expected=expected,
            domain=first.domain,
        )
    return None


def _finding(
    records: Sequence[Record], status: FindingStatus, detail: str, found: Iterable[str], check: str = ""
) -> Finding:
    first = records[0]
    fix = "" if status == "ok" else (_replace(records) if status == "wrong" else _publish(records))
    return Finding(
        check or first.kind,
        first.name,
        first.rtype,
        status,
        detail,
        fix,
        tuple(found),
        tuple(r.value for r in records),
        first.domain,
    )


def _tag_records(texts: Iterable[str], version: str) -> list[str]:
    """TXT records that start with ``version`` (``v=spf1``, ``v=DMARC1``...), case-insensitively for SPF."""
    out = []
    for text in texts:
        head = text.strip()
        if version == "v=spf1":
            if head.lower() == "v=spf1" or head.lower().startswith("v=spf1 "):
                out.append(text)
        elif re.match(re.escape(version) + r"\s*(;|$)", head):
            out.append(text)
    return out


def _tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), re.sub(r"\s+", "", value))
    return tags


def _dotted(name: str) -> str:
    return name if name == "." else name.rstrip(".") + "."


# --- one check per kind of record ------------------------------------------------------------------


async def _check_mx(ctx: Context, records: Sequence[Record]) -> Finding:
    domain = records[0].name
    result = await ctx.resolver.mx(domain)
    failure = _lookup_failure(result, records, "mx")
    if failure:
        return failure
    found = [f"{m.preference} {_dotted(m.host)}" for m in sorted(result.records)]
    ours = [m for m in result.records if m.host == ctx.host]
    if not ours:
        return _finding(
            records, "wrong", f"mail for {domain} goes to {', '.join(found)}, not to {ctx.host}", found
        )
    best = min(m.preference for m in result.records)
    if min(m.preference for m in ours) > best:
        others = [m.host for m in result.records if m.preference < min(x.preference for x in ours)]
        return _finding(records, "wrong", f"{', '.join(others)} is tried before {ctx.host}", found)
    return _finding(records, "ok", f"mail for {domain} goes to {ctx.host}", found)


async def _host_addresses(ctx: Context) -> list[str]:
    result = await ctx.resolver.addresses(ctx.host, ipv6=True)
    return list(result.records)


async def _check_spf(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.txt(first.name)
    failure = _lookup_failure(result, records, first.kind)
    if failure:
        return failure
    found = _tag_records(result.records, "v=spf1")
    if not found:
        return _finding(records, "missing", f"{first.name} has TXT records but no SPF record", result.records)
    if len(found) > 1:
        return _finding(
            records,
            "wrong",
            "more than one SPF record: receivers treat that as an error (RFC 7208 §4.5)",
            found,
        )
    addresses = list(ctx.cfg.public.addresses) or await _host_addresses(ctx)
    if not addresses:
        same = found[0].split() == first.value.split()
        return _finding(
            records,
            "ok" if same else "wrong",
            "the host has no address to evaluate SPF with" + ("" if same else "; the text differs"),
            found,
        )
    lookup = from_dns(ctx.resolver)
    bad = []
    for ip in addresses:
        if first.kind == "spf-helo":
            outcome = await spf.check_helo(lookup, ip, first.name, timeout=ctx.cfg.dns.timeout * 4)
        else:
            outcome = await spf.check_host(
                lookup, ip, f"postmaster@{first.name}", ctx.host, timeout=ctx.cfg.dns.timeout * 4
            )
        if outcome.result != "pass":
            bad.append(
                f"{ip}: {outcome.result}" + (f" ({outcome.explanation})" if outcome.explanation else "")
            )
    if bad:
        return _finding(records, "wrong", "SPF does not pass for " + "; ".join(bad), found)
    return _finding(records, "ok", f"SPF passes for {', '.join(addresses)}", found)


async def _check_dkim(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.txt(first.name)
    failure = _lookup_failure(result, records, "dkim")
    if failure:
        return failure
    want = _tags(first.value)
    keys = [t for t in result.records if "p" in _tags(t)]
    if any(_tags(t).get("p") == want["p"] and _tags(t).get("k", "rsa") == want.get("k", "rsa") for t in keys):
        return _finding(
            records, "ok", f"the {want.get('k', 'rsa')} public key matches the key on disk", result.records
        )
    if not keys:
        return _finding(records, "wrong", "no DKIM key record (no p= tag)", result.records)
    return _finding(
        records, "wrong", "a different key is published (split wrongly, or from an older key)", result.records
    )


async def _check_dmarc(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.txt(first.name)
    failure = _lookup_failure(result, records, "dmarc")
    if failure:
        return failure
    found = _tag_records(result.records, "v=DMARC1")
    if first.kind == "dmarc-report":
        if found:
            return _finding(records, "ok", "reports for the domain are accepted here", found)
        return _finding(records, "missing", first.purpose, result.records)
    if not found:
        return _finding(
            records, "missing", f"{first.name} has TXT records but no DMARC record", result.records
        )
    if len(found) > 1:
        return _finding(
            records, "wrong", "more than one DMARC record: receivers ignore both (RFC 7489 §6.6.3)", found
        )
    try:
        record = parse_record(found[0])
    except RecordError as exc:
        return _finding(records, "wrong", f"unusable DMARC record: {exc}", found)
    detail = f"p={record.p}" + (
        f", reports to {', '.join(record.rua)}" if record.rua else ", no rua= (you get no reports)"
    )
    return _finding(records, "ok", detail, found)


async def _check_mta_sts(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.txt(first.name)
    failure = _lookup_failure(result, records, "mta-sts")
    if failure:
        return failure
    found = [t for t in result.records if mtasts.parse_txt(t) is not None]
    if not found:
        return _finding(
            records, "missing", f"{first.name} has TXT records but no v=STSv1 record", result.records
        )
    if len(found) > 1:
        return _finding(
            records, "wrong", "more than one v=STSv1 record: senders ignore MTA-STS (RFC 8461 §3.1)", found
        )
    want = mtasts.parse_txt(first.value) or {}
    have = mtasts.parse_txt(found[0]) or {}
    if have.get("id") != want.get("id"):
        return _finding(
            records,
            "wrong",
            f"id={have.get('id')} is not the id of the policy served now ({want.get('id')}): senders keep using an older policy",
            found,
        )
    return _finding(records, "ok", "announces the policy served now", found)


async def _check_tls_rpt(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.txt(first.name)
    failure = _lookup_failure(result, records, "tls-rpt")
    if failure:
        return failure
    found = _tag_records(result.records, "v=TLSRPTv1")
    if not found:
        return _finding(
            records, "missing", f"{first.name} has TXT records but no v=TLSRPTv1 record", result.records
        )
    if len(found) > 1:
        return _finding(records, "wrong", "more than one v=TLSRPTv1 record (RFC 8460 §3)", found)
    rua = _tags(found[0]).get("rua", "")
    if not rua.startswith(("mailto:", "https:")):
        return _finding(records, "wrong", "no rua= with a mailto: or https: address", found)
    return _finding(records, "ok", f"reports to {rua}", found)


def _srv(text: str) -> tuple[int, str]:
    parts = text.split()
    return (int(parts[2]), _dotted(parts[3].lower())) if len(parts) == 4 else (-1, text)


async def _check_srv(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.query(first.name, "SRV")
    failure = _lookup_failure(result, records, "srv")
    if failure:
        return failure
    want = _srv(first.value)
    have = [_srv(t) for t in result.records]
    if want[1] == ".":
        if have == [(0, ".")]:
            return _finding(records, "ok", "not offered: clients use the TLS service", result.records)
        return _finding(
            records, "wrong", 'should say the service is not offered (target ".")', result.records
        )
    if want in have and (0, ".") not in have:
        return _finding(records, "ok", f"{want[1].rstrip('.')} port {want[0]}", result.records)
    return _finding(records, "wrong", f"expected {want[1].rstrip('.')} port {want[0]}", result.records)


async def _check_name(ctx: Context, records: Sequence[Record]) -> Finding:
    """A name that must reach the host: a CNAME to it, or the same addresses."""
    first = records[0]
    cname = await ctx.resolver.query(first.name, "CNAME")
    if cname.ok:
        targets = [_dotted(t) for t in cname.records]
        if _dotted(ctx.host) in targets:
            return _finding(records, "ok", f"points to {ctx.host}", targets)
        return _finding(records, "wrong", f"points to {', '.join(targets)}, not {ctx.host}", targets)
    if cname.temporary:
        return _lookup_failure(cname, records, "name") or _finding(records, "error", cname.error, ())
    mine, theirs = await asyncio.gather(
        ctx.resolver.addresses(ctx.host, ipv6=True), ctx.resolver.addresses(first.name, ipv6=True)
    )
    if theirs.status in (Status.NXDOMAIN, Status.NODATA):
        return _finding(records, "missing", first.purpose, ())
    if theirs.temporary:
        return _lookup_failure(theirs, records, "name") or _finding(records, "error", theirs.error, ())
    if mine.ok and set(theirs.records) == set(mine.records):
        return _finding(
            records, "ok", f"same addresses as {ctx.host} (a CNAME keeps them in step)", theirs.records
        )
    return _finding(records, "wrong", f"its addresses are not {ctx.host}'s", theirs.records)


def _caa_issuers(texts: Iterable[str]) -> list[str]:
    """The issuer domains of the ``issue`` properties (RFC 8659 §4.2: value = domain [; params])."""
    issuers = []
    for text in texts:
        m = re.fullmatch(r'\s*(\d+)\s+(\S+)\s+"?([^"]*)"?\s*', text)
        if m and m.group(2).lower() == "issue":
            issuers.append(m.group(3).split(";")[0].strip().lower())
    return issuers


async def _check_caa(ctx: Context, records: Sequence[Record]) -> Finding:
    first = records[0]
    result = await ctx.resolver.query(first.name, "CAA")
    failure = _lookup_failure(result, records, "caa")
    if failure:
        return failure
    allowed = _caa_issuers(result.records)
    wanted = [_caa_issuers([r.value])[0] for r in records]
    blocked = [w for w in wanted if w not in allowed]
    if blocked:
        return _finding(
            records,
            "wrong",
            f"CAA does not allow {', '.join(blocked)}: certificate issuance would fail",
            result.records,
        )
    return _finding(records, "ok", f"{', '.join(wanted)} may issue", result.records)


# --- the host: addresses, PTR / FCrDNS --------------------------------------------------------------


async def check_addresses(ctx: Context, records: Sequence[Record]) -> list[Finding]:
    host = ctx.host
    out = []
    if not ctx.cfg.public.addresses:
        result = await ctx.resolver.addresses(host, ipv6=True)
        if result.ok:
            detail = "resolves; set [public] addresses to check A/AAAA, SPF and PTR exactly"
            out.append(Finding("address", host, "A/AAAA", "ok", detail, found=result.records))
        elif result.temporary:
            out.append(Finding("address", host, "A/AAAA", "error", f"DNS lookup failed: {result.error}"))
        else:
            out.append(
                Finding(
                    "address",
                    host,
                    "A/AAAA",
                    "missing",
                    f"{host} has no address",
                    f"publish {host}. 3600 IN A <public IPv4> (and AAAA <public IPv6>), "
                    "and list them in [public] addresses",
                )
            )
        return out
    for rtype in ("A", "AAAA"):
        group = [r for r in records if r.rtype == rtype]
        result = await ctx.resolver.query(host, rtype)
        if group:
            failure = _lookup_failure(result, group, "address")
            if failure:
                out.append(failure)
                continue
            want = {str(ipaddress.ip_address(r.value)) for r in group}
            have = {str(ipaddress.ip_address(t)) for t in result.records}
            if want == have:
                out.append(
                    _finding(
                        group, "ok", "the public address(es) of [public] addresses", sorted(have), "address"
                    )
                )
            else:
                extra = sorted(have - want)
                detail = "differs from [public] addresses" + (
                    f"; {', '.join(extra)} is not this host" if extra else ""
                )
                out.append(_finding(group, "wrong", detail, sorted(have), "address"))
        elif result.ok:
            family = "IPv4" if rtype == "A" else "IPv6"
            out.append(
                Finding(
                    "address",
                    host,
                    rtype,
                    "wrong",
                    f"{', '.join(result.records)} is published but [public] addresses has no {family} address: "
                    f"senders would connect there and find no PTR/SPF match",
                    f"remove the {rtype} record(s) of {host}, or add the address to [public] addresses",
                    tuple(result.records),
                )
            )
    return out


async def check_ptr(ctx: Context, record: Record) -> Finding:
    ip = str(dns.reversename.to_address(dns.name.from_text(record.name)))
    fix = f"ask your hosting provider to set the reverse DNS (PTR) of {ip} to {ctx.host}"
    result = await ctx.resolver.ptr(ip)
    if result.temporary:
        return Finding(
            "ptr",
            ip,
            "PTR",
            "error",
            f"DNS lookup failed: {result.error}",
            "retry later",
            expected=(record.value,),
        )
    if not result.ok:
        return Finding(
            "ptr",
            ip,
            "PTR",
            "missing",
            "no reverse DNS: big providers refuse or junk such mail",
            fix,
            expected=(record.value,),
        )
    names = tuple(_dotted(n) for n in result.records)
    if _dotted(ctx.host) not in names:
        return Finding(
            "ptr",
            ip,
            "PTR",
            "wrong",
            f"names {', '.join(names)}, not {ctx.host}",
            fix,
            names,
            (record.value,),
        )
    forward = await ctx.resolver.addresses(ctx.host, ipv6=True)
    if ip not in {str(ipaddress.ip_address(a)) for a in forward.records}:
        return Finding(
            "ptr",
            ip,
            "PTR",
            "wrong",
            f"names {ctx.host}, but {ctx.host} does not resolve back to {ip} (FCrDNS fails)",
            f"publish {ctx.host}. {'A' if ':' not in ip else 'AAAA'} {ip}",
            names,
            (record.value,),
        )
    return Finding(
        "ptr", ip, "PTR", "ok", f"names {ctx.host}, which resolves back (FCrDNS)", "", names, (record.value,)
    )


# --- the certificate ----------------------------------------------------------------------------------


def certificate_names(cfg: Config, domains: Sequence[str], modes: dict[str, mtasts.Mode | None]) -> list[str]:
    names = [cfg.server.hostname]
    for domain in domains:
        if modes.get(domain):
            names.append(f"mta-sts.{domain}")
        if cfg.listeners.http or cfg.listeners.https:
            names.append(f"autoconfig.{domain}")
    return names


def _trust_store(ctx: Context) -> tuple[list[x509.Certificate], str]:
    certs: list[x509.Certificate] = []
    bundle = ctx.system_cas or Path(
        ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    )
    problems = []
    for path in [bundle, *ctx.ca_files]:
        try:
            with warnings.catch_warnings():  # old roots in the system bundle have odd serials
                warnings.simplefilter("ignore")
                certs += x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
    return certs, "; ".join(problems)


def check_certificate(ctx: Context, names: Sequence[str]) -> Finding:
    from mailroom.acme.status import served_certificate

    cfg = ctx.cfg
    path, source = served_certificate(cfg)
    fix_names = (
        "add them to [tls] acme_names (the server asks for a new certificate at its next start)"
        if cfg.tls.mode == "acme"
        else "get a certificate that names them"
    )
    expected = tuple(names)
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        fix = (
            "start the server: it gets a certificate from the ACME CA (ports 80/443 must reach it)"
            if cfg.tls.mode == "acme"
            else f"start the server once (it makes {path})"
            if source == "self-signed"
            else f"put the certificate chain at {path}"
        )
        return Finding(
            "certificate", str(path), "cert", "missing", "no certificate yet", fix, expected=expected
        )
    except (OSError, ValueError) as exc:
        return Finding(
            "certificate", str(path), "cert", "error", f"cannot read it: {exc}", "", expected=expected
        )
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        have = []
    found = tuple(have)
    missing = [
        n
        for n in names
        if n not in have and not any(h.startswith("*.") and n.split(".", 1)[1] == h[2:] for h in have)
    ]
    if missing:
        return Finding(
            "certificate",
            str(path),
            "cert",
            "wrong",
            f"does not cover {', '.join(missing)}",
            fix_names,
            found,
            expected,
        )
    left = leaf.not_valid_after_utc - ctx.now
    if left.total_seconds() <= 0:
        return Finding(
            "certificate",
            str(path),
            "cert",
            "wrong",
            f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
            _renew_fix(cfg),
            found,
            expected,
        )
    if leaf.subject == leaf.issuer and source == "self-signed":
        fix = (
            "the ACME certificate has not arrived yet: start the server and see `mailroom cert status`"
            if cfg.tls.mode == "acme"
            else 'set [tls] mode = "acme" (free certificates from Let\'s Encrypt) or "files"'
        )
        return Finding(
            "certificate",
            str(path),
            "cert",
            "wrong",
            "self-signed: clients warn and MTA-STS senders refuse it",
            fix,
            found,
            expected,
        )
    store_certs, problem = _trust_store(ctx)
    if not store_certs:
        return Finding(
            "certificate",
            str(path),
            "cert",
            "error",
            f"no CA certificates to verify with ({problem})",
            "",
            found,
            expected,
        )
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(store_certs))
            .time(ctx.now)
            .build_server_verifier(x509.DNSName(cfg.server.hostname))
        )
        verifier.verify(leaf, chain[1:])
    except verification.VerificationError as exc:
        return Finding(
            "certificate",
            str(path),
            "cert",
            "wrong",
            f"not trusted: issued by {chain[-1].issuer.rfc4514_string()}, not a CA trusted here ({exc})",
            "serve the full chain from a public CA (--ca-file adds a private CA for tests)",
            found,
            expected,
        )
    if left < datetime.timedelta(days=CERT_MIN_DAYS):
        return Finding(
            "certificate",
            str(path),
            "cert",
            "wrong",
            f"expires in {left.days} days ({leaf.not_valid_after_utc:%Y-%m-%d})",
            _renew_fix(cfg),
            found,
            expected,
        )
    detail = f"trusted, covers {', '.join(names)}, expires {leaf.not_valid_after_utc:%Y-%m-%d}"
    return Finding("certificate", str(path), "cert", "ok", detail, "", found, expected)


def _renew_fix(cfg: Config) -> str:
    if cfg.tls.mode == "acme":
        return "see `mailroom cert status` for why renewal fails; `mailroom cert renew` retries now"
    return f"replace {cfg.tls.cert or 'the certificate'} with a current one"


# --- outbound port 25 ---------------------------------------------------------------------------------


async def check_smtp_out(ctx: Context, target: str | None, timeout: float = SMTP_OUT_TIMEOUT) -> Finding:
    """Connect to an MX on port 25 (or the smarthost) and wait for its 220 greeting."""
    cfg = ctx.cfg
    relay = cfg.delivery.smarthost
    smarthost_fix = (
        "your provider blocks outbound port 25: relay through a smarthost, e.g. in [delivery]:\n"
        '  smarthost = "smtp.provider.example:587"\n  smarthost_username = "you@provider.example"\n'
        '  smarthost_password_file = "/etc/mailroom/smarthost.pw"'
    )
    if target is None and relay:
        target = relay
        what = "the smarthost"
        fix = f"check [delivery] smarthost = {relay!r} and that this host may connect to it"
    else:
        what = "outbound port 25"
        fix = smarthost_fix
    if target is None:
        mx = await ctx.resolver.mx("gmail.com")
        if not mx.ok:
            return Finding(
                "smtp-out",
                "gmail.com",
                "tcp/25",
                "error",
                f"cannot look up an MX to try: {mx.error}",
                "use --smtp-out-target HOST:PORT",
            )
        first: MX = sorted(mx.records)[0]
        target = f"{first.host}:25"
    host, _, port_text = target.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        if not port_text.isdigit():
            return Finding("smtp-out", target, "tcp", "error", "expected HOST:PORT", "")
        port = int(port_text)
        result = await ctx.resolver.addresses(host, ipv6=cfg.delivery.ipv6)
        if not result.ok:
            return Finding("smtp-out", target, "tcp", "error", f"cannot resolve {host}: {result.error}", "")
        addresses = list(result.records)
    address = addresses[-1] if not cfg.delivery.ipv6 else addresses[0]
    source = cfg.delivery.source_ipv6 if ":" in address else cfg.delivery.source_ipv4
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, port, local_addr=(source, 0) if source else None
            )
            try:
                greeting = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return Finding(
            "smtp-out",
            target,
            "tcp",
            "wrong",
            f"{what}: no answer from {address} port {port} within {timeout:g}s",
            fix,
        )
    except OSError as exc:
        return Finding(
            "smtp-out",
            target,
            "tcp",
            "wrong",
            f"{what}: cannot connect to {address} port {port}: {exc.strerror or exc}",
            fix,
        )
    text = greeting.decode("latin-1", "replace").strip()
    if not text.startswith("220"):
        return Finding("smtp-out", target, "tcp", "wrong", f"{what}: {address} answered {text[:80]!r}", fix)
    return Finding("smtp-out", target, "tcp", "ok", f"{what}: {address} port {port} greets: {text[:60]}")


# --- everything ---------------------------------------------------------------------------------------

_CHECKS: dict[str, Callable[[Context, Sequence[Record]], Any]] = {
    "mx": _check_mx,
    "spf": _check_spf,
    "spf-helo": _check_spf,
    "dkim": _check_dkim,
    "dmarc": _check_dmarc,
    "dmarc-report": _check_dmarc,
    "mta-sts": _check_mta_sts,
    "tls-rpt": _check_tls_rpt,
    "srv": _check_srv,
    "name": _check_name,
    "caa": _check_caa,
}


async def run_checks(
    ctx: Context,
    records: Sequence[Record],
    cert_names: Sequence[str],
    *,
    smtp_out: bool = False,
    smtp_out_target: str | None = None,
) -> list[Finding]:
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        if r.kind in _CHECKS:
            groups.setdefault((r.kind, r.name, r.rtype), []).append(r)
    tasks = [_CHECKS[kind](ctx, group) for (kind, _, _), group in groups.items()]
    host_tasks = [check_addresses(ctx, [r for r in records if r.kind == "address"])]
    ptr_tasks = [check_ptr(ctx, r) for r in records if r.kind == "ptr" and r.zone == REVERSE]
    results = await asyncio.gather(*tasks)
    (address_findings,) = await asyncio.gather(*host_tasks)
    ptr_findings = await asyncio.gather(*ptr_tasks)
    findings: list[Finding] = list(results) + list(address_findings) + list(ptr_findings)
    if not ctx.cfg.public.addresses:
        findings.append(
            Finding(
                "ptr",
                ctx.host,
                "PTR",
                "skipped",
                "no [public] addresses: reverse DNS (PTR, FCrDNS) not checked",
                "set [public] addresses in the config",
            )
        )
    findings.append(check_certificate(ctx, cert_names))
    if smtp_out:
        findings.append(await check_smtp_out(ctx, smtp_out_target))
    return findings


def ready_for_enforce(findings: Sequence[Finding]) -> bool:
    """RFC 8461 §5: enforce only once nothing is missing or wrong (certificate and records)."""
    return not any(f.failing for f in findings if f.check != "smtp-out")
