"""Autoconfig, autodiscover, the Apple profile and the MTA-STS policy: built from the config,
answered by Host header; and wired into the running server's http listener."""

from __future__ import annotations

import asyncio
import http.client
import plistlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mailroom import config as configmod
from mailroom.config import Config
from mailroom.quickstart import mtasts
from mailroom.web.autoconfig import register_pages
from mailroom.web.http import Request, Response, Router, parse_head
from tests.server_fixture import running_server

HOST = "mail.example.org"


def cfg_with(tmp: Path, **listeners: Any) -> Config:
    return configmod.from_dict(
        {"server": {"hostname": HOST, "data_dir": str(tmp)}, "listeners": listeners}
        if listeners
        else {"server": {"hostname": HOST, "data_dir": str(tmp)}}
    )


def get(cfg: Config, target: str, host: str, method: str = "GET", body: bytes = b"") -> Response:
    router = Router()
    register_pages(router, cfg)
    request = parse_head(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), https=True)
    if body:
        object.__setattr__(request, "body", body)  # what the HTTP layer passes once it reads bodies
    return asyncio.run(router.dispatch(request))


def servers(xml: bytes) -> list[tuple[str, str, str, str, str]]:
    root = ET.fromstring(xml)
    out = []
    for element in root.iter():
        if element.tag in ("incomingServer", "outgoingServer"):
            out.append(
                (
                    str(element.get("type")),
                    str(element.findtext("hostname")),
                    str(element.findtext("port")),
                    str(element.findtext("socketType")),
                    str(element.findtext("username")),
                )
            )
    return out


def test_thunderbird_autoconfig_by_host_and_by_address(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path)
    response = get(cfg, "/mail/config-v1.1.xml", "autoconfig.example.org")
    assert response.status == 200 and response.content_type.startswith("application/xml")
    root = ET.fromstring(response.body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    assert root.findtext("emailProvider/domain") == "example.org"
    assert servers(response.body) == [
        ("imap", HOST, "993", "SSL", "%EMAILADDRESS%"),
        ("imap", HOST, "143", "STARTTLS", "%EMAILADDRESS%"),
        ("pop3", HOST, "995", "SSL", "%EMAILADDRESS%"),
        ("pop3", HOST, "110", "STARTTLS", "%EMAILADDRESS%"),
        ("smtp", HOST, "465", "SSL", "%EMAILADDRESS%"),
        ("smtp", HOST, "587", "STARTTLS", "%EMAILADDRESS%"),
    ]
    by_address = get(cfg, "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40Example.NET", HOST)
    assert ET.fromstring(by_address.body).findtext("emailProvider/domain") == "example.net"
    assert get(cfg, "/mail/config-v1.1.xml?emailaddress=nonsense", HOST).status == 400


def test_autoconfig_follows_the_listeners(tmp_path: Path) -> None:
    cfg = cfg_with(
        tmp_path,
        imap="",
        imaps="127.0.0.1:10993",
        pop3="",
        pop3s="",
        submission="127.0.0.1:10587",
        submissions="",
    )
    response = get(cfg, "/mail/config-v1.1.xml", "autoconfig.example.org")
    assert [(s[0], s[2], s[3]) for s in servers(response.body)] == [
        ("imap", "10993", "SSL"),
        ("smtp", "10587", "STARTTLS"),
    ]


def test_outlook_autodiscover(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path, imaps="", pop3s="")
    body = b"<Autodiscover><Request><EMailAddress>carol@example.org</EMailAddress></Request></Autodiscover>"
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        response = get(cfg, path, "autodiscover.example.org", "POST", body)
        assert response.status == 200
        ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
        root = ET.fromstring(response.body)
        protocols = root.findall(".//r:Protocol", ns)
        got = [
            (p.findtext("r:Type", namespaces=ns), p.findtext("r:Port", namespaces=ns), p.findtext("r:SSL", namespaces=ns),
             p.findtext("r:Encryption", namespaces=ns), p.findtext("r:LoginName", namespaces=ns))
            for p in protocols
        ]  # fmt: skip
        assert got == [
            ("IMAP", "143", None, "TLS", "carol@example.org"),  # STARTTLS only: Encryption TLS
            ("POP3", "110", None, "TLS", "carol@example.org"),
            ("SMTP", "465", "on", None, "carol@example.org"),
        ]
    # without a body (or an address in it), no LoginName: Outlook uses the address typed
    response = get(cfg, "/autodiscover/autodiscover.xml", HOST, "POST")
    assert b"LoginName" not in response.body and b"<Server>mail.example.org</Server>" in response.body


def test_apple_profile(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path)
    response = get(cfg, "/apple/mailroom.mobileconfig?email=dave%40example.org", HOST)
    assert response.status == 200 and response.content_type == "application/x-apple-aspen-config"
    assert ("Content-Disposition", 'attachment; filename="dave@example.org.mobileconfig"') in response.headers
    profile = plistlib.loads(response.body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert (account["EmailAccountType"], account["EmailAddress"]) == ("EmailTypeIMAP", "dave@example.org")
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (HOST, 993)
    assert (account["OutgoingMailServerHostName"], account["OutgoingMailServerPortNumber"]) == (HOST, 465)
    assert account["IncomingMailServerUsername"] == "dave@example.org"
    assert not [k for k in account if k in ("IncomingPassword", "OutgoingPassword")]
    again = plistlib.loads(get(cfg, "/apple/mailroom.mobileconfig?email=dave@example.org", HOST).body)
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # installing again replaces, not duplicates
    assert get(cfg, "/apple/mailroom.mobileconfig", HOST).status == 400


def test_mta_sts_policy_by_host(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path)
    assert get(cfg, "/.well-known/mta-sts.txt", "mta-sts.example.org").status == 404  # no state yet
    mtasts.write_state(tmp_path, {"example.org": "testing", "example.net": "enforce"})
    response = get(cfg, "/.well-known/mta-sts.txt", "mta-sts.example.org")
    assert response.status == 200 and response.content_type == "text/plain"
    assert response.body == f"version: STSv1\r\nmode: testing\r\nmx: {HOST}\r\nmax_age: 86400\r\n".encode()
    enforced = get(cfg, "/.well-known/mta-sts.txt", "MTA-STS.example.net:443")
    assert b"mode: enforce\r\n" in enforced.body and b"max_age: 604800\r\n" in enforced.body
    assert get(cfg, "/.well-known/mta-sts.txt", "mta-sts.other.example").status == 404
    assert get(cfg, "/.well-known/mta-sts.txt", HOST).status == 404
    forced = configmod.from_dict(
        {"server": {"hostname": HOST, "data_dir": str(tmp_path)}, "public": {"mta_sts": "enforce"}}
    )
    assert b"mode: enforce" in get(forced, "/.well-known/mta-sts.txt", "mta-sts.example.org").body
    off = configmod.from_dict(
        {"server": {"hostname": HOST, "data_dir": str(tmp_path)}, "public": {"mta_sts": "none"}}
    )
    assert get(off, "/.well-known/mta-sts.txt", "mta-sts.example.org").status == 404


def test_pages_on_the_running_servers_http_listener(tmp_path: Path) -> None:
    with running_server(tmp_path, services=("smtp", "submissions", "imaps", "http")) as server:
        mtasts.write_state(server.data_dir, {"example.org": "testing"})
        conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=10)
        conn.request(
            "GET",
            "/mail/config-v1.1.xml?emailaddress=alice@example.org",
            headers={"Host": "autoconfig.example.org"},
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and b"<hostname>mx.example.org</hostname>" in body
        assert f"<port>{server.ports['imaps']}</port>".encode() in body
        conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.org"})
        response = conn.getresponse()
        assert response.status == 200 and response.read().startswith(b"version: STSv1\r\nmode: testing")
        conn.close()


def test_policy_state(tmp_path: Path) -> None:
    assert mtasts.read_state(tmp_path) == {}
    mtasts.write_state(tmp_path, {"example.org": "testing"})
    first = mtasts.state_path(tmp_path).read_text()
    mtasts.write_state(tmp_path, {"example.org": "testing", "example.net": "testing"})
    assert (
        '"changed"' in first and first.split('"changed": ')[1][:22] in mtasts.state_path(tmp_path).read_text()
    )
    mtasts.state_path(tmp_path).write_text("{not json")
    assert mtasts.read_state(tmp_path) == {}
    testing, enforce = (mtasts.policy_text(m, [HOST]) for m in ("testing", "enforce"))  # type: ignore[attr-defined]
    assert mtasts.policy_id(testing) != mtasts.policy_id(enforce)
    assert mtasts.policy_id(testing).isalnum() and len(mtasts.policy_id(testing)) <= 32  # RFC 8461 §3.1
    assert mtasts.parse_txt(mtasts.txt_record(testing)) == {"v": "STSv1", "id": mtasts.policy_id(testing)}
    assert mtasts.parse_txt("v=STSv2; id=1") is None


@pytest.mark.parametrize("setting", ["auto", "testing", "enforce", "none"])
def test_effective_mode(tmp_path: Path, setting: str) -> None:
    cfg = configmod.from_dict({"server": {"data_dir": str(tmp_path)}, "public": {"mta_sts": setting}})
    expected = {"auto": "testing", "testing": "testing", "enforce": "enforce", "none": None}[setting]
    assert mtasts.effective_mode(cfg, "testing") == expected
    assert mtasts.effective_mode(cfg, None) is None  # an unknown domain has no policy


def test_an_exact_route_added_later_overrides_a_default_page(tmp_path: Path) -> None:
    router = Router()
    register_pages(router, cfg_with(tmp_path))

    async def mine(request: Request) -> Response:
        return Response(200, b"mine")

    router.add("/mail/config-v1.1.xml", mine)
    request = parse_head(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.example.org\r\n\r\n")
    assert asyncio.run(router.dispatch(request)).body == b"mine"
    longer = parse_head(b"GET /mail/config-v1.1.xml.bak HTTP/1.1\r\nHost: autoconfig.example.org\r\n\r\n")
    assert asyncio.run(router.dispatch(longer)).status == 404


def test_autodiscover_post_body_reaches_the_page_over_http(tmp_path: Path) -> None:
    import http.client

    from tests.server_fixture import running_server

    with running_server(tmp_path, services=("smtp", "submissions", "imaps", "http")) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.ports["http"], timeout=10)
        body = (
            b"<Autodiscover><Request><EMailAddress>carol@example.org</EMailAddress></Request></Autodiscover>"
        )
        conn.request("POST", "/autodiscover/autodiscover.xml", body, {"Host": "autodiscover.example.org"})
        response = conn.getresponse()
        xml = response.read()
        conn.close()
    assert response.status == 200
    assert b"<LoginName>carol@example.org</LoginName>" in xml
