"""A mail client that knows only an address and a password sets itself up: Thunderbird autoconfig
over HTTPS from the running server (autoconfig.DOMAIN found in Knot), RFC 6186 SRV records from
Knot, then IMAP login and a message sent over submission, read back over IMAP. Also the other
pages (Outlook autodiscover, Apple profile, MTA-STS policy) over the wire.

The host listens on its own loopback address 127.53.N.1 with the standard ports (root only), with
a certificate from a private CA the client trusts.
"""

from __future__ import annotations

import os
import plistlib
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.interop.conftest import start_peer
from tests.quickstart.support import (
    CA,
    Settings,
    Zone,
    discover,
    https_get,
    imap_client,
    issue,
    loopback_net,
    make_ca,
    password,
    publish,
    run_cli,
    smtp_client,
    snippet,
    withdraw,
    zones_from_snippet,
)
from tests.server_fixture import RunningServer

pytestmark = pytest.mark.interop


@dataclass
class Host:
    domain: str
    host: str
    ip: str
    admin: str
    password: str
    ca: CA
    server: RunningServer

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.path))


def wait_for(predicate: object, timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    return None


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("binds the standard ports (443, 465, 993) on a loopback address: needs root")
    start_peer("start-dns.sh")
    root = tmp_path_factory.mktemp("quickstart-client")
    prefix, reverse_origin = loopback_net()
    domain = f"client{uuid.uuid4().hex[:6]}.test"
    name, ip = f"mail.{domain}", f"{prefix}.9"
    ca = make_ca(root / "ca")
    cert, key = issue(ca, [name, f"mta-sts.{domain}", f"autoconfig.{domain}"], root / "tls")
    result = run_cli(
        "init", name, "--domain", domain, "--admin", f"carol@{domain}", "--public-ip", ip,
        "--config", str(root / "mailroom.toml"), "--data-dir", str(root / "data"), "--user", "",
        "--tls", "files", "--cert", str(cert), "--key", str(key),
        "--nameserver", "127.0.0.1:5353", "--bind", ip,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    forward, _ = zones_from_snippet(snippet(result.stdout), domain, reverse_origin)
    zones: list[Zone] = [forward]  # reverse DNS is not what this module tests
    publish(*zones)
    server = RunningServer(root, root / "mailroom.toml", {"smtp": 25}, host=ip)
    server.start()
    try:
        yield Host(domain, name, ip, f"carol@{domain}", password(result.stdout), ca, server)
    finally:
        if server.proc is not None:
            assert server.stop() == 0, server.log()[-3000:]
        withdraw(*zones)
        assert "Traceback" not in server.log(), server.log()


def test_client_discovers_logs_in_sends_and_reads(host: Host) -> None:
    ctx = host.context()
    settings = discover(host.admin, ctx)
    assert settings == Settings(host.host, host.ip, (993, "SSL"), (465, "SSL"), "autoconfig+SRV")
    tag = uuid.uuid4().hex
    with imap_client(settings, ctx) as imap:
        imap.login(host.admin, host.password)
        with smtp_client(settings, ctx) as smtp:
            smtp.login(host.admin, host.password)
            smtp.sendmail(
                host.admin,
                [host.admin],
                f"From: {host.admin}\r\nTo: {host.admin}\r\nSubject: {tag}\r\n\r\nhello\r\n",
            )

        def found() -> bytes | None:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", tag)
            return data[0] or None

        numbers = wait_for(found)
        assert numbers, host.server.log()[-2000:]
        _, fetched = imap.fetch(numbers.split()[0], "(BODY[])")  # type: ignore[union-attr]
        assert f"Subject: {tag}".encode() in fetched[0][1]


def test_outlook_apple_and_mta_sts_pages(host: Host) -> None:
    ctx = host.context()
    import http.client
    import socket

    sock = socket.create_connection((host.ip, 443), timeout=10)
    conn = http.client.HTTPSConnection(host.host, 443, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(sock, server_hostname=host.host)
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
        'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>' + host.admin + "</EMailAddress>"
        "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    )
    conn.request("POST", "/Autodiscover/Autodiscover.xml", body=body, headers={"Content-Type": "text/xml"})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, data
    assert b"<Server>" + host.host.encode() + b"</Server>" in data and b"<Port>993</Port>" in data
    conn.close()

    status, profile, ctype = https_get(host.host, f"/apple/mailroom.mobileconfig?email={host.admin}", ctx)
    assert status == 200 and ctype == "application/x-apple-aspen-config"
    account = plistlib.loads(profile)["PayloadContent"][0]
    assert account["IncomingMailServerHostName"] == host.host and account["EmailAddress"] == host.admin
    assert not any("Password" in key and key != "OutgoingPasswordSameAsIncomingPassword" for key in account)

    status, policy, ctype = https_get(f"mta-sts.{host.domain}", "/.well-known/mta-sts.txt", ctx)
    assert status == 200 and ctype.startswith("text/plain")
    assert policy.decode().split("\r\n")[:3] == ["version: STSv1", "mode: testing", f"mx: {host.host}"]
