"""Helpers for the quickstart tests: run the CLI, make a private CA, parse what init prints, and
publish zones in the loopback Knot (../shared/peers/start-dns.sh)."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.zonefile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEERS_STATE = Path(os.environ.get("PEERS_STATE", "/var/lib/mailroom-peers"))
KNOT = ("127.0.0.1", 5353)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``mailroom ARGS`` with init/check present (python -m mailroom.cli_quickstart)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "NO_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "mailroom.cli_quickstart", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def check_json(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("--config", str(config), "check", "--json", *extra)
    assert result.stdout.strip().startswith("{"), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def finding(report: dict[str, Any], check: str, name: str | None = None) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["check"] == check and (name is None or f["name"] == name)]
    assert len(found) == 1, (check, name, [(f["check"], f["name"]) for f in report["findings"]])
    return found[0]


def failing(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (f["check"], f["name"], f["status"])
        for f in report["findings"]
        if f["status"] in ("missing", "wrong", "error")
    ]


# --- certificates ---------------------------------------------------------------------------------


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path  # the CA certificate (PEM), for --ca-file and clients


def make_ca(directory: Path, name: str = "mailroom quickstart test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(cert, key, path)


def issue(ca: CA, names: list[str], directory: Path, days: int = 30) -> tuple[Path, Path]:
    """A server certificate for ``names`` signed by ``ca``: (chain path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    chain, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return chain, key_path


# --- what init prints -------------------------------------------------------------------------------


def snippet(init_stdout: str) -> str:
    """The zone-file snippet out of init's output."""
    start = init_stdout.index("1. Publish these DNS records")
    start = init_stdout.index("\n", start) + 1
    end = init_stdout.index("The same for DNS providers")
    return init_stdout[start:end].strip() + "\n"


def password(init_stdout: str) -> str:
    m = re.search(r"^  password:  (\S+)$", init_stdout, re.M)
    assert m, init_stdout
    return m.group(1)


def rrsets(zone_text: str) -> list[dns.rrset.RRset]:
    return list(
        dns.zonefile.read_rrsets(
            zone_text, origin=dns.name.root, relativize=False, default_ttl=3600, rdclass=None
        )
    )


def blocks(zone_text: str) -> dict[str, str]:
    """The snippet's blocks: "; zone X" -> records of zone X; "; reverse DNS..." -> "reverse"."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in zone_text.splitlines():
        if line.startswith("; zone "):
            current = line.split()[2]
        elif line.startswith("; reverse DNS"):
            current = "reverse"
        elif line.strip() and not line.startswith(";"):
            out.setdefault(current, []).append(line)
    return {k: "\n".join(v) + "\n" for k, v in out.items()}


# --- Knot -------------------------------------------------------------------------------------------

_serial = itertools.count(int(time.time()))


def knot_resolver() -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [KNOT[0]]
    r.port = KNOT[1]
    r.lifetime = 5
    return r


@dataclass
class Zone:
    """A zone served by the loopback Knot from $PEERS_STATE/dns/extra/<origin>.zone."""

    origin: str
    records: list[str] = field(default_factory=list)  # zone-file lines with absolute names
    serial: int = 0

    @property
    def path(self) -> Path:
        return PEERS_STATE / "dns" / "extra" / f"{self.origin}.zone"

    def text(self) -> str:
        head = [
            f"$ORIGIN {self.origin}.",
            "$TTL 300",
            f"@ SOA ns1.quickstart.test. hostmaster.quickstart.test. {self.serial} 3600 600 86400 60",
            "@ NS ns1.quickstart.test.",
        ]
        return "\n".join(head + self.records) + "\n"

    def remove(self, name: str, rtype: str) -> list[str]:
        """Drop the records of (name, type); returns the removed lines."""
        gone = [line for line in self.records if _matches(line, name, rtype)]
        self.records = [line for line in self.records if line not in gone]
        return gone

    def replace(self, name: str, rtype: str, *rdata: str) -> list[str]:
        gone = self.remove(name, rtype)
        self.records += [f"{name}. 300 IN {rtype} {value}" for value in rdata]
        return gone


def _matches(line: str, name: str, rtype: str) -> bool:
    parts = line.split()
    return (
        len(parts) > 3 and parts[0].rstrip(".").lower() == name.lower() and parts[3].upper() == rtype.upper()
    )


def publish(*zones: Zone) -> None:
    """Write the zones and have Knot (re)load them; returns once Knot serves the new serials."""
    for zone in zones:
        zone.serial = next(_serial)
        zone.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = zone.path.with_suffix(".tmp")
        tmp.write_text(zone.text())
        tmp.chmod(0o644)
        tmp.replace(zone.path)
    _reload()
    resolver = knot_resolver()
    deadline = time.monotonic() + 15
    for zone in zones:
        while True:
            try:
                answer = resolver.resolve(zone.origin + ".", "SOA")
                if answer[0].serial == zone.serial:  # type: ignore[attr-defined]
                    break
            except dns.exception.DNSException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Knot does not serve {zone.origin} serial {zone.serial}")
            time.sleep(0.05)


def withdraw(*zones: Zone) -> None:
    for zone in zones:
        zone.path.unlink(missing_ok=True)
    _reload()


def _reload() -> None:
    from tests.conftest import PEERS

    result = subprocess.run(
        ["bash", str(PEERS / "start-dns.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def zones_from_snippet(text: str, domain: str, reverse_origin: str) -> tuple[Zone, Zone]:
    parts = blocks(text)
    forward = Zone(domain, parts[domain].splitlines())
    reverse = Zone(reverse_origin, parts.get("reverse", "").splitlines())
    return forward, reverse


def loopback_net() -> tuple[str, str]:
    """A /24 on loopback nobody else in this suite uses: (prefix "127.53.N", reverse zone)."""
    n = (os.getpid() + int(time.time())) % 200 + 20
    prefix = f"127.53.{n}"
    ipaddress.ip_address(prefix + ".1")
    return prefix, f"{n}.53.127.in-addr.arpa"


# --- a mail client that knows only an address and a password --------------------------------------


@dataclass(frozen=True)
class Settings:
    host: str
    ip: str
    imap: tuple[int, str]  # (port, "SSL" | "STARTTLS")
    smtp: tuple[int, str]
    source: str  # what the settings came from


def resolve_ip(name: str) -> str:
    """An IPv4 address for ``name`` from Knot (CNAMEs followed), never the system resolver."""
    return str(knot_resolver().resolve(name, "A")[0].address)  # type: ignore[attr-defined]


def https_get(name: str, path: str, context: Any, port: int = 443) -> tuple[int, bytes, str]:
    """GET https://name/path with the certificate checked for ``name``, connecting to Knot's address."""
    import http.client
    import socket

    ip = resolve_ip(name)
    sock = socket.create_connection((ip, port), timeout=10)
    conn = http.client.HTTPSConnection(name, port, context=context, timeout=10)
    conn.sock = context.wrap_socket(sock, server_hostname=name)
    conn.request("GET", path, headers={"Host": name})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, response.getheader("Content-Type", "")


def discover(address: str, context: Any, https_port: int = 443) -> Settings:
    """What Thunderbird does: https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=...;
    then RFC 6186 SRV records, which must agree."""
    import urllib.parse
    import xml.etree.ElementTree as ET

    domain = address.rpartition("@")[2]
    status, body, ctype = https_get(
        f"autoconfig.{domain}",
        "/mail/config-v1.1.xml?emailaddress=" + urllib.parse.quote(address),
        context,
        https_port,
    )
    assert status == 200 and "xml" in ctype, (status, body)
    root = ET.fromstring(body)
    provider = root.find("emailProvider")
    assert provider is not None and provider.findtext("domain") == domain
    imap = next(s for s in provider.findall("incomingServer") if s.get("type") == "imap")
    smtp = provider.findall("outgoingServer")[0]
    assert imap.findtext("username") == "%EMAILADDRESS%"
    host = str(imap.findtext("hostname"))
    imap_setting = (int(str(imap.findtext("port"))), str(imap.findtext("socketType")))
    smtp_setting = (int(str(smtp.findtext("port"))), str(smtp.findtext("socketType")))
    # RFC 6186: the SRV records say the same
    resolver = knot_resolver()
    for service, (port, socket_type) in (("imaps", imap_setting), ("submissions", smtp_setting)):
        (srv,) = resolver.resolve(f"_{service}._tcp.{domain}", "SRV")
        assert (srv.target.to_text(omit_final_dot=True), srv.port) == (host, port), service  # type: ignore[attr-defined]
        assert socket_type == "SSL"
    (plain,) = resolver.resolve(f"_imap._tcp.{domain}", "SRV")
    assert plain.target.to_text() == "."  # type: ignore[attr-defined]
    return Settings(host, resolve_ip(host), imap_setting, smtp_setting, "autoconfig+SRV")


def imap_client(settings: Settings, context: Any) -> Any:
    import imaplib
    import socket

    class IMAP(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout: float | None) -> Any:
            sock = socket.create_connection((settings.ip, self.port), timeout)
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)

    return IMAP(settings.host, settings.imap[0], ssl_context=context, timeout=15)


def smtp_client(settings: Settings, context: Any) -> Any:
    import smtplib
    import socket

    class SMTP(smtplib.SMTP_SSL):
        def _get_socket(self, host: str, port: int, timeout: float) -> Any:
            sock = socket.create_connection((settings.ip, port), timeout)
            return self.context.wrap_socket(sock, server_hostname=host)

    return SMTP(settings.host, settings.smtp[0], local_hostname="laptop.local", context=context, timeout=15)
