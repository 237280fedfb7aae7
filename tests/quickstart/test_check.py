"""`mailroom check` against the in-package FakeResolver: all right, then one thing wrong at a time."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailroom import config as configmod
from mailroom.config import Config
from mailroom.dns import FakeResolver
from mailroom.mailauth import dkim
from mailroom.quickstart import check, mtasts
from mailroom.quickstart.records import Record, plan
from tests.quickstart.support import CA, issue, make_ca, run_cli

HOST, DOMAIN = "mail.example.org", "example.org"
IP4, IP6 = "203.0.113.7", "2001:db8::7"


@dataclass
class World:
    cfg: Config
    records: list[Record]
    fake: FakeResolver
    ca: CA
    tmp: Path

    def run(self, **kwargs: Any) -> list[check.Finding]:
        ctx = check.Context(self.cfg, self.fake, ca_files=[self.ca.path], system_cas=self.ca.path)
        names = check.certificate_names(self.cfg, [DOMAIN], {DOMAIN: "testing"})
        return asyncio.run(check.run_checks(ctx, self.records, names, **kwargs))

    def record(self, kind: str, name: str | None = None) -> Record:
        return next(r for r in self.records if r.kind == kind and (name is None or r.name == name))


def make_cfg(tmp: Path, cert: Path, key: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, dict[str, Any]] = {
        "server": {"hostname": HOST, "data_dir": str(tmp / "data")},
        "tls": {"mode": "files", "cert": str(cert), "key": str(key)},
        "public": {"addresses": [IP4, IP6], "caa_issuers": ["letsencrypt.org"]},
        "dns": {"nameservers": ["127.0.0.1:5353"]},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return configmod.from_dict(raw)


def publish_all(records: list[Record]) -> FakeResolver:
    fake = FakeResolver()
    for r in records:
        fake.add(r.name, r.rtype, r.value)
    return fake


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ca = make_ca(tmp_path / "ca")
    cert, key = issue(ca, [HOST, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}"], tmp_path / "tls")
    cfg = make_cfg(tmp_path, cert, key)
    (tmp_path / "data").mkdir()
    keys = [
        dkim.generate_key(cfg.data_path, DOMAIN, "s1r", "rsa"),
        dkim.generate_key(cfg.data_path, DOMAIN, "s1e", "ed25519"),
    ]
    records = plan(cfg, [DOMAIN], {DOMAIN: keys}, {DOMAIN: "testing"})
    yield World(cfg, records, publish_all(records), ca, tmp_path)


def failing(findings: list[check.Finding]) -> list[tuple[str, str, str]]:
    return [(f.check, f.name, f.status) for f in findings if f.failing]


def test_everything_published_is_all_green(world: World) -> None:
    findings = world.run()
    assert failing(findings) == []
    assert check.ready_for_enforce(findings)
    kinds = {f.check for f in findings}
    assert kinds >= {
        "mx",
        "spf",
        "spf-helo",
        "dkim",
        "dmarc",
        "mta-sts",
        "tls-rpt",
        "srv",
        "name",
        "caa",
        "address",
        "ptr",
        "certificate",
    }
    assert len([f for f in findings if f.check == "ptr"]) == 2  # IPv4 and IPv6
    assert len([f for f in findings if f.check == "dkim"]) == 2


Change = Callable[[World], None]


def _remove(kind: str, name: Callable[[World], str] | None = None, rtype: str | None = None) -> Change:
    def change(w: World) -> None:
        record = w.record(kind, name(w) if name else None)
        w.fake.remove(record.name, rtype or record.rtype)

    return change


def _set(name: str, rtype: str, *values: str) -> Change:
    def change(w: World) -> None:
        w.fake.remove(name, rtype)
        for value in values:
            w.fake.add(name, rtype, value)

    return change


def _add(name: str, rtype: str, value: str) -> Change:
    return lambda w: w.fake.add(name, rtype, value)


SPF = f"v=spf1 ip4:{IP4} ip6:{IP6} a:{HOST} -all"
CASES: dict[str, tuple[Change, str, str, str]] = {
    # case: (change, check, name, status)
    "MX missing": (_remove("mx"), "mx", DOMAIN, "missing"),
    "MX elsewhere": (_set(DOMAIN, "MX", "10 mx.other.example"), "mx", DOMAIN, "wrong"),
    "MX: a backup preferred": (_add(DOMAIN, "MX", "5 backup.other.example"), "mx", DOMAIN, "wrong"),
    "two SPF records": (_add(DOMAIN, "TXT", "v=spf1 -all"), "spf", DOMAIN, "wrong"),
    "SPF fails for us": (_set(DOMAIN, "TXT", "v=spf1 ip4:192.0.2.1 -all"), "spf", DOMAIN, "wrong"),
    "no SPF among TXT": (_set(DOMAIN, "TXT", "google-site-verification=x"), "spf", DOMAIN, "missing"),
    "HELO SPF missing": (_remove("spf-helo"), "spf-helo", HOST, "missing"),
    "DKIM missing": (
        _remove("dkim", lambda w: f"s1r._domainkey.{DOMAIN}"),
        "dkim",
        f"s1r._domainkey.{DOMAIN}",
        "missing",
    ),
    "DKIM another key": (
        _set(
            f"s1e._domainkey.{DOMAIN}",
            "TXT",
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        ),
        "dkim",
        f"s1e._domainkey.{DOMAIN}",
        "wrong",
    ),
    "DMARC missing": (_remove("dmarc"), "dmarc", f"_dmarc.{DOMAIN}", "missing"),
    "DMARC twice": (
        _add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none"),
        "dmarc",
        f"_dmarc.{DOMAIN}",
        "wrong",
    ),
    "DMARC bad p=": (
        _set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=maybe"),
        "dmarc",
        f"_dmarc.{DOMAIN}",
        "wrong",
    ),
    "MTA-STS stale id": (
        _set(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=old1"),
        "mta-sts",
        f"_mta-sts.{DOMAIN}",
        "wrong",
    ),
    "MTA-STS missing": (_remove("mta-sts"), "mta-sts", f"_mta-sts.{DOMAIN}", "missing"),
    "mta-sts name elsewhere": (
        _set(f"mta-sts.{DOMAIN}", "CNAME", "web.other.example"),
        "name",
        f"mta-sts.{DOMAIN}",
        "wrong",
    ),
    "TLS-RPT without rua": (
        _set(f"_smtp._tls.{DOMAIN}", "TXT", "v=TLSRPTv1;"),
        "tls-rpt",
        f"_smtp._tls.{DOMAIN}",
        "wrong",
    ),
    "SRV wrong port": (
        _set(f"_submissions._tcp.{DOMAIN}", "SRV", f"0 1 4650 {HOST}."),
        "srv",
        f"_submissions._tcp.{DOMAIN}",
        "wrong",
    ),
    "SRV plaintext offered": (
        _set(f"_pop3._tcp.{DOMAIN}", "SRV", f"0 1 110 {HOST}."),
        "srv",
        f"_pop3._tcp.{DOMAIN}",
        "wrong",
    ),
    "SRV missing": (
        _remove("srv", lambda w: f"_imaps._tcp.{DOMAIN}"),
        "srv",
        f"_imaps._tcp.{DOMAIN}",
        "missing",
    ),
    "autoconfig missing": (
        _remove("name", lambda w: f"autoconfig.{DOMAIN}"),
        "name",
        f"autoconfig.{DOMAIN}",
        "missing",
    ),
    "CAA missing": (_remove("caa"), "caa", DOMAIN, "missing"),
    "CAA forbids LE": (_set(DOMAIN, "CAA", '0 issue "pki.goog"'), "caa", DOMAIN, "wrong"),
    "AAAA elsewhere": (_set(HOST, "AAAA", "2001:db8::99"), "address", HOST, "wrong"),
    "PTR missing": (lambda w: w.fake.remove("7.113.0.203.in-addr.arpa"), "ptr", IP4, "missing"),
    "PTR other name": (_set("7.113.0.203.in-addr.arpa", "PTR", "host.isp.example"), "ptr", IP4, "wrong"),
    "DNS failure": (lambda w: w.fake.fail(f"_dmarc.{DOMAIN}"), "dmarc", f"_dmarc.{DOMAIN}", "error"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_thing_wrong_is_named_with_its_fix(world: World, case: str) -> None:
    change, kind, name, status = CASES[case]
    change(world)
    findings = world.run()
    bad = [f for f in findings if f.failing]
    named = [f for f in bad if (f.check, f.name) == (kind, name)]
    assert [f.status for f in named] == [status], failing(findings)
    assert not check.ready_for_enforce(findings)
    finding = named[0]
    if status in ("missing", "wrong") and kind not in ("ptr", "address"):
        expected = [r for r in world.records if r.name == name and r.kind == kind]
        for r in expected:  # the fix is the exact record to publish
            assert r.zone_line(comment=False).split(None, 4)[4] in finding.fix
        assert finding.fix.startswith(
            "publish: " if status == "missing" else f"replace the {expected[0].rtype} record(s)"
        )
    elif kind == "ptr":
        assert "hosting provider" in finding.fix and HOST in finding.fix
    # nothing else is reported, except what follows: the host no longer resolves back to its IPv6 address
    follows = {("ptr", IP6)} if case == "AAAA elsewhere" else set()
    assert {(f.check, f.name) for f in bad} - {(kind, name)} == follows


def test_semantic_checks_accept_equivalent_records(world: World) -> None:
    # an SPF record extended with include: still passes for our addresses
    world.fake.remove(DOMAIN, "TXT")
    world.fake.add(DOMAIN, "TXT", f"v=spf1 include:_spf.provider.example ip4:{IP4} ip6:{IP6} ~all")
    world.fake.add("_spf.provider.example", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    # A/AAAA records instead of a CNAME, with the host's addresses
    world.fake.remove(f"autoconfig.{DOMAIN}")
    world.fake.add(f"autoconfig.{DOMAIN}", "A", IP4)
    world.fake.add(f"autoconfig.{DOMAIN}", "AAAA", IP6)
    # more CAA than ours, and DMARC with p=reject and more tags
    world.fake.add(DOMAIN, "CAA", '0 issue "pki.goog"')
    world.fake.add(DOMAIN, "CAA", '0 iodef "mailto:sec@example.org"')
    world.fake.remove(f"_dmarc.{DOMAIN}")
    world.fake.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject; adkim=s; rua=mailto:d@example.org")
    findings = world.run()
    assert failing(findings) == []
    assert (
        next(f for f in findings if f.check == "dmarc").detail == "p=reject, reports to mailto:d@example.org"
    )


def test_fcrdns_needs_the_host_to_resolve_back(world: World) -> None:
    world.fake.remove(HOST, "AAAA")
    findings = world.run()
    ptr6 = next(f for f in findings if f.check == "ptr" and f.name == IP6)
    assert ptr6.status == "wrong" and "does not resolve back" in ptr6.detail
    assert ptr6.fix == f"publish {HOST}. AAAA {IP6}"


def test_without_public_addresses(world: World, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, Path(world.cfg.tls.cert), Path(world.cfg.tls.key), public={"addresses": []})
    records = plan(cfg, [DOMAIN], {DOMAIN: dkim.load_keys(cfg.data_path, DOMAIN)}, {DOMAIN: "testing"})
    assert not [r for r in records if r.rtype in ("A", "AAAA", "PTR")]
    world.cfg, world.records = cfg, records
    world.fake.remove(DOMAIN, "TXT")
    world.fake.add(DOMAIN, "TXT", f"v=spf1 a:{HOST} -all")
    findings = world.run()
    assert failing(findings) == []
    assert [(f.check, f.status) for f in findings if f.check in ("address", "ptr")] == [
        ("address", "ok"),
        ("ptr", "skipped"),
    ]
    world.fake.remove(HOST)
    bad = failing(world.run())
    assert ("address", HOST, "missing") in bad


# --- the certificate --------------------------------------------------------------------------------


def _cert_finding(world: World, cert: Path, key: Path, **tls: Any) -> check.Finding:
    cfg = make_cfg(world.tmp, cert, key, tls=tls)
    ctx = check.Context(cfg, world.fake, ca_files=[world.ca.path], system_cas=world.ca.path)
    return check.check_certificate(ctx, check.certificate_names(cfg, [DOMAIN], {DOMAIN: "testing"}))


def test_certificate_problems(world: World) -> None:
    ok = _cert_finding(world, Path(world.cfg.tls.cert), Path(world.cfg.tls.key))
    assert ok.status == "ok" and "trusted" in ok.detail
    cert, key = issue(world.ca, [HOST], world.tmp / "short")
    bad = _cert_finding(world, cert, key)
    assert bad.status == "wrong" and bad.detail == f"does not cover mta-sts.{DOMAIN}, autoconfig.{DOMAIN}"
    cert, key = issue(world.ca, [HOST, f"*.{DOMAIN}"], world.tmp / "wild")
    assert _cert_finding(world, cert, key).status == "ok"
    cert, key = issue(world.ca, [HOST, f"*.{DOMAIN}"], world.tmp / "soon", days=5)
    soon = _cert_finding(world, cert, key)
    assert soon.status == "wrong" and "expires in 4 days" in soon.detail
    other = make_ca(world.tmp / "other", "someone else")
    cert, key = issue(other, [HOST, f"*.{DOMAIN}"], world.tmp / "untrusted")
    untrusted = _cert_finding(world, cert, key)
    assert untrusted.status == "wrong" and "not trusted: issued by CN=someone else" in untrusted.detail
    missing = _cert_finding(world, world.tmp / "nope.pem", key)
    assert missing.status == "missing"


def test_self_signed_and_acme_before_issuance(world: World, tmp_path: Path) -> None:
    from mailroom.acme.selfsigned import ensure_self_signed

    cfg = configmod.from_dict(
        {
            "server": {"hostname": HOST, "data_dir": str(tmp_path / "data")},
            "tls": {"mode": "acme", "acme_email": "a@example.org"},
        }
    )
    ctx = check.Context(cfg, world.fake, system_cas=world.ca.path)
    assert check.check_certificate(ctx, [HOST]).status == "missing"
    ensure_self_signed(tmp_path / "data" / "tls", HOST)
    finding = check.check_certificate(ctx, [HOST])
    assert finding.status == "wrong" and finding.detail.startswith("self-signed")
    assert "`mailroom cert status`" in finding.fix


def test_expired(world: World) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=40)
    ctx = check.Context(world.cfg, world.fake, ca_files=[world.ca.path], system_cas=world.ca.path, now=later)
    finding = check.check_certificate(ctx, [HOST])
    assert finding.status == "wrong" and finding.detail.startswith("expired on")


# --- outbound port 25 -------------------------------------------------------------------------------


async def _greeter(greeting: bytes | None) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting is not None:
            writer.write(greeting)
            await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_smtp_out(world: World) -> None:
    async def scenario() -> list[check.Finding]:
        ctx = check.Context(world.cfg, world.fake)
        good, good_port = await _greeter(b"220 mx.example ESMTP\r\n")
        silent, silent_port = await _greeter(None)
        async with good, silent:
            return [
                await check.check_smtp_out(ctx, f"127.0.0.1:{good_port}"),
                await check.check_smtp_out(ctx, f"127.0.0.1:{silent_port}", timeout=0.3),
                await check.check_smtp_out(ctx, "127.0.0.1:1", timeout=0.3),
                await check.check_smtp_out(ctx, None),  # gmail.com's MX: not in this DNS
            ]

    ok, silent, refused, unresolved = asyncio.run(scenario())
    assert ok.status == "ok" and "greets: 220 mx.example" in ok.detail
    assert silent.status == "wrong" and "no answer" in silent.detail and "smarthost" in silent.fix
    assert refused.status == "wrong" and "cannot connect" in refused.detail
    assert unresolved.status == "error" and "--smtp-out-target" in unresolved.fix


def test_smtp_out_tries_the_smarthost_when_there_is_one(world: World) -> None:
    cfg = make_cfg(
        world.tmp, Path(world.cfg.tls.cert), Path(world.cfg.tls.key), delivery={"smarthost": "127.0.0.1:1"}
    )
    finding = asyncio.run(check.check_smtp_out(check.Context(cfg, world.fake), None, timeout=0.3))
    assert (
        finding.status == "wrong"
        and finding.detail.startswith("the smarthost")
        and "[delivery] smarthost" in finding.fix
    )


# --- the command --------------------------------------------------------------------------------------


def test_check_command_without_dns_and_records_listing(tmp_path: Path) -> None:
    result = run_cli(
        "init", HOST, "--domain", DOMAIN, "--admin", f"me@{DOMAIN}", "--config", str(tmp_path / "m.toml"),
        "--data-dir", str(tmp_path / "data"), "--user", "", "--tls", "self-signed", "--set", "dns.nameservers=[]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = run_cli("--config", str(tmp_path / "m.toml"), "check", "--records")
    assert listed.returncode == 0 and "NAME" in listed.stdout
    assert re.search(rf"^_dmarc\.{DOMAIN}\.\s+3600 IN TXT", listed.stdout, re.M)
    checked = run_cli("--config", str(tmp_path / "m.toml"), "check")
    assert checked.returncode == 2 and "DNS lookups are off" in checked.stderr
    assert mtasts.read_state(tmp_path / "data") == {DOMAIN: "testing"}


def test_check_command_needs_a_config(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2 and "needs the config" in result.stderr


def test_colour_only_when_asked(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from mailroom.cli_quickstart import _print_findings

    world.fake.remove(f"_dmarc.{DOMAIN}")
    findings = world.run()
    _print_findings(findings, "header", HOST, True)
    coloured = capsys.readouterr().out
    assert "\x1b[32mok      \x1b[0m" in coloured and "\x1b[31mMISSING \x1b[0m" in coloured
    _print_findings(findings, "header", HOST, False)
    plain = capsys.readouterr().out
    assert "\x1b" not in plain and f"host {HOST}" in plain and "  MISSING  TXT" in plain
