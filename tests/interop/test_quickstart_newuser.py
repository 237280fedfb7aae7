"""A scripted new user, timed: from nothing to a message sent from one mailroom host to another and
read over IMAP.

Two hosts on their own loopback addresses (127.53.N.1 and .2, standard ports; root only), DNS in the
loopback Knot, certificates from Pebble over ACME (http-01 on port 5002, where Pebble validates).
For each host: `mailroom init`, publish exactly the printed records, start the server, wait for the
ACME certificate, `mailroom check` all green. Then alice (knowing only her address and password)
discovers her settings through autoconfig and SRV and sends to bob on the other host, who
discovers his and reads it over IMAP with SPF, DKIM and DMARC passing.

The figure printed (and written to $MAILROOM_QUICKSTART_TIMING when set) is the machine's part of
the quickstart: everything but DNS propagation, the provider's PTR form and the typing.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.conftest import start_peer
from tests.quickstart.support import (
    PEERS_STATE,
    Zone,
    check_json,
    discover,
    failing,
    imap_client,
    loopback_net,
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
DIRECTORY = "https://127.0.0.1:14000/dir"


@dataclass
class Site:
    domain: str
    host: str
    ip: str
    address: str
    password: str
    config: Path
    server: RunningServer
    zone: Zone


def _pebble_root(directory: Path) -> Path:
    root_pem = subprocess.run(
        ["curl", "-fsS", "--cacert", str(PEERS_STATE / "tls" / "ca.pem"), "https://127.0.0.1:15000/roots/0"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    path = directory / "pebble-root.pem"
    path.write_bytes(root_pem)  # Pebble makes a new issuing root at each start: fetch the live one
    return path


def _init(root: Path, name: str, user: str, ip: str, reverse_origin: str) -> tuple[Site, Zone]:
    domain = f"{name}{uuid.uuid4().hex[:6]}.test"
    host = f"mail.{domain}"
    config = root / name / "mailroom.toml"
    result = run_cli(
        "init", host, "--domain", domain, "--admin", f"{user}@{domain}", "--public-ip", ip,
        "--config", str(config), "--data-dir", str(root / name / "data"), "--user", "",
        "--nameserver", "127.0.0.1:5353", "--bind", ip,
        # Pebble instead of Let's Encrypt; it validates http-01 on 5002 and tls-alpn-01 on 5001
        "--set", f"tls.acme_directory={DIRECTORY}",
        "--set", f"tls.acme_ca_file={PEERS_STATE / 'tls' / 'ca.pem'}",
        "--set", f'listeners.http=["{ip}:80", "{ip}:5002"]',
        "--set", f'listeners.https=["{ip}:443", "{ip}:5001"]',
        "--set", f"delivery.source_ipv4={ip}",  # connect from the address SPF names
        "--set", "delivery.ipv6=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    forward, reverse = zones_from_snippet(snippet(result.stdout), domain, reverse_origin)
    server = RunningServer(config.parent, config, {"smtp": 25}, host=ip)
    return Site(
        domain, host, ip, f"{user}@{domain}", password(result.stdout), config, server, forward
    ), reverse


def _wait(predicate: object, what: str, timeout: float, logs: list[RunningServer]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s\n" + "\n".join(s.log()[-3000:] for s in logs))


def test_new_user_from_nothing_to_mail_read_on_another_host(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("binds the standard ports on loopback addresses: needs root")
    start_peer("start-dns.sh")
    start_peer("start-pebble.sh")
    pebble_root = _pebble_root(tmp_path)
    prefix, reverse_origin = loopback_net()
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    # 1. mailroom init on each host
    alpha, reverse = _init(tmp_path, "alpha", "alice", f"{prefix}.1", reverse_origin)
    bravo, reverse_b = _init(tmp_path, "bravo", "bob", f"{prefix}.2", reverse_origin)
    reverse.records += reverse_b.records  # the provider sets both PTRs in the same reverse zone
    timings["init (both hosts)"] = time.monotonic() - t0

    # 2. publish exactly what init printed
    t = time.monotonic()
    zones = [alpha.zone, bravo.zone, reverse]
    publish(*zones)
    timings["publish DNS"] = time.monotonic() - t
    sites = [alpha, bravo]
    servers = [s.server for s in sites]
    try:
        # 3. start; the certificate comes from the ACME CA
        t = time.monotonic()
        for site in sites:
            site.server.start()
        timings["start servers"] = time.monotonic() - t
        t = time.monotonic()
        for site in sites:
            _wait(
                lambda site=site: "acme: installed" in site.server.log(),
                f"ACME certificate for {site.host}",
                90,
                servers,
            )
        timings["ACME certificates"] = time.monotonic() - t

        # 4. mailroom check: all green (then MTA-STS goes to enforce)
        t = time.monotonic()
        for site in sites:
            code, report = check_json(site.config, "--ca-file", str(pebble_root))
            assert code == 0 and failing(report) == [], (site.host, failing(report), report)
            assert report["mta_sts"][0]["switched"] is True  # type: ignore[index]
        timings["mailroom check"] = time.monotonic() - t

        # 5. alice discovers her settings and writes to bob; bob discovers his and reads it
        t = time.monotonic()
        ctx = ssl.create_default_context(cafile=str(pebble_root))
        tag = uuid.uuid4().hex
        settings = discover(alpha.address, ctx)
        with smtp_client(settings, ctx) as smtp:
            smtp.login(alpha.address, alpha.password)
            smtp.sendmail(
                alpha.address,
                [bravo.address],
                f"From: Alice <{alpha.address}>\r\nTo: <{bravo.address}>\r\nSubject: hello {tag}\r\n"
                f"Message-ID: <{tag}@{alpha.domain}>\r\n\r\nFirst mail from a new host.\r\n",
            )
        bob = discover(bravo.address, ctx)
        with imap_client(bob, ctx) as imap:
            imap.login(bravo.address, bravo.password)

            def arrived() -> bytes | None:
                imap.select("INBOX")
                _, data = imap.search(None, "SUBJECT", tag)
                return data[0] or None

            numbers = _wait(arrived, "the message in bob's INBOX", 30, servers)
            _, fetched = imap.fetch(numbers.split()[0], "(BODY[])")  # type: ignore[union-attr]
        timings["discover, send, deliver, read"] = time.monotonic() - t
        total = time.monotonic() - t0
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()
        withdraw(*zones)
    message = email.message_from_bytes(fetched[0][1], policy=email.policy.default)
    results = str(message["Authentication-Results"])
    assert "spf=pass" in results and "dkim=pass" in results and "dmarc=pass" in results, results
    assert message["From"].addresses[0].addr_spec == alpha.address
    assert not any("Traceback" in s.log() for s in servers)
    summary = {"total_seconds": round(total, 2), **{k: round(v, 2) for k, v in timings.items()}}
    print("\nquickstart new-user run:", json.dumps(summary))
    if os.environ.get("MAILROOM_QUICKSTART_TIMING"):
        Path(os.environ["MAILROOM_QUICKSTART_TIMING"]).write_text(json.dumps(summary) + "\n")
    assert total < 120
