"""Client autoconfiguration pages, built from the config (host name, listener ports, TLS modes).

- Thunderbird autoconfig (config-v1.1.xml): ``https://autoconfig.DOMAIN/mail/config-v1.1.xml``
  and ``https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml``; the domain comes from
  ``?emailaddress=``, else the Host header (``autoconfig.`` removed).
- Outlook autodiscover, "POX" schema: ``POST /autodiscover/autodiscover.xml`` (found through the
  ``_autodiscover._tcp`` SRV record, so the certificate only needs the host name).
- Apple configuration profile: ``/apple/mailroom.mobileconfig?email=ADDRESS`` (an unsigned
  profile with one mail account; no password in it, the device asks for it).

Nothing here is secret: host names and ports are what the MX and SRV records publish anyway.
Implicit TLS is offered first (RFC 8314 §3), STARTTLS second; plaintext never.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid

from mailroom.config import Config
from mailroom.dns import to_ascii
from mailroom.quickstart.records import Service, client_services
from mailroom.web import mtasts
from mailroom.web.http import Handler, Request, Response, Router, text

AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
# Outlook capitalises the path; the Router matches exactly.
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
MOBILECONFIG_PATH = "/apple/mailroom.mobileconfig"
XML = "application/xml; charset=utf-8"
_ADDRESS = re.compile(r"[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,253}")


def register_pages(router: Router, cfg: Config) -> None:
    """Add autoconfig, autodiscover, the Apple profile and the MTA-STS policy to ``router``."""

    async def thunderbird(request: Request) -> Response:
        return autoconfig_response(cfg, request)

    async def outlook(request: Request) -> Response:
        return autodiscover_response(cfg, request)

    async def apple(request: Request) -> Response:
        return mobileconfig_response(cfg, request)

    for path in AUTOCONFIG_PATHS:
        add_default(router, path, thunderbird)
    for path in AUTODISCOVER_PATHS:
        add_default(router, path, outlook, methods=("POST", "GET", "HEAD"))
    add_default(router, MOBILECONFIG_PATH, apple)
    mtasts.register(router, cfg)


def add_default(
    router: Router, path: str, handler: Handler, methods: tuple[str, ...] = ("GET", "HEAD")
) -> None:
    """Add a page that an exact route added later (a plugin, a test) overrides: the Router tries
    exact routes before prefix ones, so the page is a prefix route answering only its own path."""

    async def exactly(request: Request) -> Response:
        return await handler(request) if request.path == path else text(404)

    router.add(path, exactly, prefix=True, methods=methods)


def _query(request: Request, *names: str) -> str:
    values = urllib.parse.parse_qs(request.query, keep_blank_values=False)
    for name in names:
        for key, found in values.items():
            if key.lower() == name and found:
                return found[0].strip()
    return ""


def _address(text_value: str) -> tuple[str, str] | None:
    """(address, A-label domain) or None."""
    if not _ADDRESS.fullmatch(text_value):
        return None
    local, _, domain = text_value.rpartition("@")
    try:
        return f"{local}@{to_ascii(domain)}", to_ascii(domain)
    except ValueError:
        return None


def _domain(request: Request) -> str | None:
    """The mail domain asked about: from the address given, else from the Host header."""
    email = _query(request, "emailaddress", "email")
    if email:
        parsed = _address(email)
        return parsed[1] if parsed else None
    host = request.host.removeprefix("autoconfig.").removeprefix("autodiscover.")
    try:
        return to_ascii(host) if host and not host.startswith("[") else None
    except ValueError:
        return None


def _socket_type(service: Service) -> str:
    return "SSL" if service.tls == "implicit" else "STARTTLS"


def thunderbird_xml(cfg: Config, domain: str) -> bytes:
    """Thunderbird's config-v1.1.xml (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat)."""
    import xml.etree.ElementTree as ET  # loaded on the first request, not at start

    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} (mailroom)"
    ET.SubElement(provider, "displayShortName").text = domain
    for service in client_services(cfg):
        if service.protocol == "smtp":
            server = ET.SubElement(provider, "outgoingServer", type="smtp")
        else:
            server = ET.SubElement(provider, "incomingServer", type=service.protocol)
        ET.SubElement(server, "hostname").text = cfg.server.hostname
        ET.SubElement(server, "port").text = str(service.port)
        ET.SubElement(server, "socketType").text = _socket_type(service)
        ET.SubElement(server, "authentication").text = "password-cleartext"  # inside TLS only
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def autoconfig_response(cfg: Config, request: Request) -> Response:
    domain = _domain(request)
    if domain is None:
        return text(400, "emailaddress= is not an address, and the Host header names no domain")
    return Response(200, thunderbird_xml(cfg, domain), XML, [("Cache-Control", "max-age=3600")])


_POX_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
_POX_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


def outlook_xml(cfg: Config, email: str) -> bytes:
    """Autodiscover POX response ([MS-OXDSCLI] §2.2.4) with IMAP/POP3 and SMTP settings."""
    import xml.etree.ElementTree as ET

    root = ET.Element("Autodiscover", xmlns=_POX_RESPONSE)
    response = ET.SubElement(root, "Response", xmlns=_POX_OUTLOOK)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    seen: set[str] = set()
    for service in client_services(cfg):
        if service.protocol in seen:  # one entry per protocol, the preferred (implicit TLS) one
            continue
        seen.add(service.protocol)
        protocol = ET.SubElement(account, "Protocol")
        ET.SubElement(protocol, "Type").text = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}[
            service.protocol
        ]
        ET.SubElement(protocol, "Server").text = cfg.server.hostname
        ET.SubElement(protocol, "Port").text = str(service.port)
        if email:
            ET.SubElement(protocol, "LoginName").text = email
        ET.SubElement(protocol, "DomainRequired").text = "off"
        ET.SubElement(protocol, "SPA").text = "off"
        if service.tls == "implicit":
            ET.SubElement(protocol, "SSL").text = "on"
        else:
            ET.SubElement(protocol, "Encryption").text = "TLS"  # STARTTLS
        ET.SubElement(protocol, "AuthRequired").text = "on"
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def autodiscover_response(cfg: Config, request: Request) -> Response:
    # The request body (<EMailAddress>) is used when the HTTP layer passes it on; LoginName is left
    # out otherwise, and Outlook then uses the address the user typed.
    body = getattr(request, "body", b"")
    email = ""
    m = re.search(
        rb"<EMailAddress>\s*([^<\s]{1,254})\s*</EMailAddress>", body if isinstance(body, bytes) else b""
    )
    candidate = m.group(1).decode("utf-8", "replace") if m else _query(request, "emailaddress", "email")
    if candidate:
        parsed = _address(candidate)
        email = parsed[0] if parsed else ""
    return Response(200, outlook_xml(cfg, email), XML)


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, "/".join(parts))).upper()


def apple_profile(cfg: Config, email: str) -> bytes:
    """A configuration profile (Apple's Configuration Profile Reference, com.apple.mail.managed).

    UUIDs are derived from host and address, so downloading it again replaces the installed profile.
    No password: the device asks for it when the profile is installed."""
    import plistlib

    services = client_services(cfg)
    incoming = next((s for s in services if s.protocol == "imap"), None) or next(
        (s for s in services if s.protocol == "pop3"), None
    )
    outgoing = next((s for s in services if s.protocol == "smtp"), None)
    host = cfg.server.hostname
    ident = ".".join(reversed(host.split(".")))
    account: dict[str, object] = {
        "EmailAccountDescription": email,
        "EmailAccountName": email.partition("@")[0],
        "EmailAccountType": "EmailTypePOP" if incoming and incoming.protocol == "pop3" else "EmailTypeIMAP",
        "EmailAddress": email,
        "PayloadDescription": f"Mail account {email} at {host}",
        "PayloadDisplayName": email,
        "PayloadIdentifier": f"{ident}.mailroom.account.{_uuid(host, email, 'account')}",
        "PayloadType": "com.apple.mail.managed",
        "PayloadUUID": _uuid(host, email, "account"),
        "PayloadVersion": 1,
    }
    if incoming:
        account |= {
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "IncomingMailServerHostName": host,
            "IncomingMailServerPortNumber": incoming.port,
            "IncomingMailServerUseSSL": True,  # implicit TLS, or STARTTLS on a STARTTLS port
            "IncomingMailServerUsername": email,
        }
    if outgoing:
        account |= {
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerHostName": host,
            "OutgoingMailServerPortNumber": outgoing.port,
            "OutgoingMailServerUseSSL": True,
            "OutgoingMailServerUsername": email,
            "OutgoingPasswordSameAsIncomingPassword": True,
        }
    profile = {
        "PayloadContent": [account],
        "PayloadDescription": f"Sets up the mail account {email} on {host}.",
        "PayloadDisplayName": f"Mail: {email}",
        "PayloadIdentifier": f"{ident}.mailroom.{_uuid(host, email)}",
        "PayloadOrganization": email.partition("@")[2],
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": _uuid(host, email),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def mobileconfig_response(cfg: Config, request: Request) -> Response:
    parsed = _address(_query(request, "email", "emailaddress"))
    if parsed is None:
        return text(400, "add ?email=you@example.org")
    email = parsed[0]
    filename = re.sub(r"[^A-Za-z0-9@._-]", "_", email) + ".mobileconfig"
    return Response(
        200,
        apple_profile(cfg, email),
        "application/x-apple-aspen-config",
        [("Content-Disposition", f'attachment; filename="{filename}"')],
    )
