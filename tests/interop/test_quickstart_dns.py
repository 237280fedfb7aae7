"""`mailroom init` prints the records, Knot serves exactly them, `mailroom check` finds all right
(through Knot on 127.0.0.1:5353, never the system resolver); then one record at a time is removed or
altered and check names it with its fix.

The zones live in $PEERS_STATE/dns/extra/ (quickNNNN.test and a reverse zone for 127.53.N.0/24),
rewritten and reloaded for each change, removed at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rdatatype
import dns.resolver
import pytest

from tests.interop.conftest import start_peer
from tests.quickstart.support import (
    CA,
    Zone,
    check_json,
    failing,
    finding,
    issue,
    knot_resolver,
    loopback_net,
    make_ca,
    publish,
    rrsets,
    run_cli,
    snippet,
    withdraw,
    zones_from_snippet,
)

pytestmark = pytest.mark.interop


@dataclass
class Quick:
    domain: str
    host: str
    ip: str
    config: Path
    data_dir: Path
    printed: str
    forward: Zone
    reverse: Zone
    ca: CA

    def check(self, *extra: str) -> tuple[int, dict[str, object]]:
        return check_json(self.config, "--ca-file", str(self.ca.path), *extra)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quick]:
    start_peer("start-dns.sh")
    root = tmp_path_factory.mktemp("quickstart-dns")
    prefix, reverse_origin = loopback_net()
    domain = f"quick{uuid.uuid4().hex[:6]}.test"
    host, ip = f"mail.{domain}", f"{prefix}.1"
    ca = make_ca(root / "ca")
    cert, key = issue(ca, [host, f"mta-sts.{domain}", f"autoconfig.{domain}"], root / "tls")
    result = run_cli(
        "init", host, "--domain", domain, "--admin", f"admin@{domain}", "--public-ip", ip,
        "--config", str(root / "mailroom.toml"), "--data-dir", str(root / "data"), "--user", "",
        "--tls", "files", "--cert", str(cert), "--key", str(key),
        "--nameserver", "127.0.0.1:5353", "--bind", ip,
        "--set", 'public.caa_issuers=["letsencrypt.org"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = snippet(result.stdout)
    forward, reverse = zones_from_snippet(printed, domain, reverse_origin)
    publish(forward, reverse)
    try:
        yield Quick(domain, host, ip, root / "mailroom.toml", root / "data", printed, forward, reverse, ca)
    finally:
        withdraw(forward, reverse)


def test_knot_serves_exactly_the_printed_records(quick: Quick) -> None:
    resolver = knot_resolver()
    printed = rrsets(quick.printed)
    assert {dns.rdatatype.to_text(r.rdtype) for r in printed} >= {
        "MX", "TXT", "SRV", "CNAME", "CAA", "A", "PTR"
    }  # fmt: skip
    for rrset in printed:
        answer = resolver.resolve(rrset.name, rrset.rdtype)
        assert set(answer.rrset) == set(rrset), rrset.name  # type: ignore[arg-type]


def test_all_green_then_enforce_then_new_id(quick: Quick) -> None:
    code, report = quick.check()
    assert failing(report) == [] and code == 0, report
    assert {f["check"] for f in report["findings"]} >= {
        "mx", "spf", "spf-helo", "dkim", "dmarc", "mta-sts", "tls-rpt", "srv", "name", "caa", "address", "ptr", "certificate"
    }  # fmt: skip
    assert finding(report, "ptr")["detail"].endswith("resolves back (FCrDNS)")
    (sts,) = report["mta_sts"]  # type: ignore[misc]
    assert sts["mode"] == "enforce" and sts["switched"] is True
    # The served policy changed, so its id did: check now says the TXT record is stale, with the fix.
    code, report = quick.check()
    assert code == 1
    stale = finding(report, "mta-sts")
    assert stale["status"] == "wrong" and sts["record"] in stale["fix"]
    quick.forward.replace(f"_mta-sts.{quick.domain}", "TXT", f'"{sts["record"]}"')
    publish(quick.forward)
    code, report = quick.check()
    assert code == 0 and failing(report) == [], report
    assert report["mta_sts"][0] == {**sts, "switched": False}  # type: ignore[index]


def test_human_output_names_problems(quick: Quick) -> None:
    gone = quick.forward.remove(f"_dmarc.{quick.domain}", "TXT")
    publish(quick.forward)
    try:
        result = run_cli("--config", str(quick.config), "check", "--ca-file", str(quick.ca.path))
    finally:
        quick.forward.records += gone
        publish(quick.forward)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if f"_dmarc.{quick.domain}" in line)
    assert line.split()[:2] == ["MISSING", "TXT"], result.stdout
    assert "\x1b[" not in result.stdout  # no colour when not on a terminal
    assert f'fix: publish: _dmarc.{quick.domain}. 3600 IN TXT "v=DMARC1; p=quarantine' in result.stdout
    assert "1 missing" in result.stdout.splitlines()[-1]


def _first(zone: Zone, rtype: str, contains: str = "") -> str:
    """The name of the first record of ``rtype`` (whose line contains ``contains``) in ``zone``."""
    return next(
        line.split()[0].rstrip(".") for line in zone.records if line.split()[3] == rtype and contains in line
    )


def _rsa_dkim(q: Quick) -> str:
    return _first(q.forward, "TXT", "k=rsa")


CASES: dict[str, tuple[Callable[[Quick], tuple[Zone, str, str, tuple[str, ...]]], str, str]] = {
    # name: (how to break it -> (zone, name, type, new rdata or () to delete), check, status)
    "dkim rsa key removed": (
        lambda q: (q.forward, _rsa_dkim(q), "TXT", ()),
        "dkim",
        "missing",
    ),
    "dkim key from another key pair": (
        lambda q: (
            q.forward,
            _rsa_dkim(q),
            "TXT",
            ('"v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"',),
        ),
        "dkim",
        "wrong",
    ),
    "MX to another host": (lambda q: (q.forward, q.domain, "MX", ("10 mx.elsewhere.test.",)), "mx", "wrong"),
    "SPF without our address": (
        lambda q: (q.forward, q.domain, "TXT", ('"v=spf1 ip4:192.0.2.1 -all"',)),
        "spf",
        "wrong",
    ),
    "SRV imaps on the wrong port": (
        lambda q: (q.forward, f"_imaps._tcp.{q.domain}", "SRV", (f"0 1 1993 {q.host}.",)),
        "srv",
        "wrong",
    ),
    "plaintext imap SRV not '.'": (
        lambda q: (q.forward, f"_imap._tcp.{q.domain}", "SRV", (f"0 1 143 {q.host}.",)),
        "srv",
        "wrong",
    ),
    "autoconfig removed": (lambda q: (q.forward, f"autoconfig.{q.domain}", "CNAME", ()), "name", "missing"),
    "TLS-RPT removed": (lambda q: (q.forward, f"_smtp._tls.{q.domain}", "TXT", ()), "tls-rpt", "missing"),
    "CAA for another CA": (
        lambda q: (q.forward, q.domain, "CAA", ('0 issue "other-ca.example"',)),
        "caa",
        "wrong",
    ),
    "PTR names another host": (
        lambda q: (q.reverse, _first(q.reverse, "PTR"), "PTR", ("mx.peer.test.",)),
        "ptr",
        "wrong",
    ),
    "host A record removed (FCrDNS fails)": (lambda q: (q.forward, q.host, "A", ()), "ptr", "wrong"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_broken_record_is_named_with_its_fix(quick: Quick, case: str) -> None:
    breaker, check, status = CASES[case]
    zone, name, rtype, rdata = breaker(quick)
    original = [
        line for line in zone.records if line.split()[0].rstrip(".") == name and line.split()[3] == rtype
    ]
    assert original, (name, rtype)
    if rdata:
        zone.replace(name, rtype, *rdata)
    else:
        zone.remove(name, rtype)
    publish(zone)
    try:
        code, report = quick.check()
    finally:
        zone.remove(name, rtype)
        zone.records += original
        publish(zone)
    assert code == 1
    bad = [f for f in report["findings"] if f["status"] in ("missing", "wrong", "error")]  # type: ignore[attr-defined]
    assert [(f["check"], f["status"]) for f in bad if f["check"] == check] == [(check, status)], bad
    (target,) = [f for f in bad if f["check"] == check]
    if check == "ptr":
        assert quick.host in target["fix"]
    else:
        # the fix is the exact record init printed
        printed_lines = [
            line.split("  ;")[0].rstrip()
            for line in quick.printed.splitlines()
            if line.startswith(name + ".")
        ]
        printed_lines = [line for line in printed_lines if line.split()[3] == rtype]
        assert printed_lines and all(
            " ".join(p.split()) in " ".join(target["fix"].split()) for p in printed_lines
        ), target
    # nothing else is reported broken, except what follows from it
    others = {(f["check"], f["name"]) for f in bad} - {(check, target["name"])}
    allowed = {("address", quick.host)} if case.startswith("host A") else set()
    if case.startswith("host A"):
        allowed |= {
            ("spf", quick.domain),
            ("spf-helo", quick.host),
            ("name", f"autoconfig.{quick.domain}"),
            ("name", f"mta-sts.{quick.domain}"),
        }
    assert others <= allowed, others
