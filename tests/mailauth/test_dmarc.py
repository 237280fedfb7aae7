"""DMARC: the authheaders-derived cases, the PSL test vectors, record parsing, alignment, pct, np=."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import yaml
from publicsuffixlist import PublicSuffixList
from tests.conftest import TESTDATA, require_path

from mailroom.mailauth import dkim, dmarc
from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.resolver import StaticLookup
from mailroom.mailauth.spf import SpfResult

CASES_DIR = TESTDATA / "dmarc" / "authheaders"
PSL_DIR = TESTDATA / "dmarc" / "psl"


def _cases() -> list[Any]:
    path = CASES_DIR / "cases.yaml"
    if not path.exists():
        return [pytest.param(None, id="cases-missing")]
    return [pytest.param(case, id=case["name"]) for case in yaml.safe_load(path.read_text())["cases"]]


def _lookup(spec: dict[str, Any]) -> StaticLookup:
    records: dict[str, dict[str, list[str]]] = {}
    for name, value in spec["dns_txt"].items():
        if value.startswith("@file "):
            value = (CASES_DIR / value.split()[1]).read_text().strip()
        if value:  # "" means: no record
            records.setdefault(name, {}).setdefault("TXT", []).append(value)
    for name, exists in spec.get("dns_exists", {}).items():
        if exists:
            records.setdefault(name, {})["A"] = ["192.0.2.1"]
    return StaticLookup(records)


def _auth(text: str) -> list[DkimResult]:
    """ "dkim=fail header.d=example.com; dkim=pass header.d=example.org" -> results."""
    out = []
    for part in text.split(";"):
        m = re.fullmatch(r"\s*dkim=(\w+) header\.d=(\S+)\s*", part)
        assert m, part
        out.append(DkimResult(m.group(1), domain=m.group(2)))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("case", _cases())
def test_authheaders_cases(case: Any) -> None:
    spec = yaml.safe_load((require_path(CASES_DIR, "DMARC cases") / "cases.yaml").read_text())
    lookup = _lookup(spec)
    message = (CASES_DIR / case["message"]).read_bytes()

    async def run() -> dmarc.DmarcResult:
        if case["auth"] == "verify":
            results = await dkim.verify(lookup, message)
            assert [r.result for r in results] == ["pass"]
        else:
            results = [] if case["auth"] == "none" else _auth(case["auth"])
        return await dmarc.evaluate(lookup, message, None, results)

    result = asyncio.run(run())
    expect = case["expect"]
    if case.get("dmarcbis"):
        # DMARCbis' PSD tree walk finds _dmarc.gov; RFC 7489 stops at the organizational domain
        # example.gov (gov is a public suffix), which has no record.
        assert (result.result, result.from_domain) == ("none", "example.gov")
        return
    assert result.result == expect["dmarc"], result
    if "header.from" in expect:
        assert (result.from_domain or "none") == expect["header.from"]
    if "policy" in expect:
        assert result.policy == expect["policy"]
    if "record" in expect:
        origin = "from-domain" if result.record_domain == result.from_domain else "org-domain"
        assert origin == expect["record"]


def _psl_vectors() -> list[tuple[str, str | None]]:
    path = require_path(PSL_DIR / "test_psl.txt", "PSL test vectors")
    vectors = []
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);", line.strip())
        if m:
            domain, expected = (None if g == "null" else g[1:-1] for g in m.groups())
            if domain is not None:
                vectors.append((domain, expected))
    assert len(vectors) > 60
    return vectors


@pytest.mark.parametrize("source", ["shipped", "testdata"])
def test_psl_vectors(source: str) -> None:
    vectors = _psl_vectors()
    psl = None if source == "shipped" else PublicSuffixList((PSL_DIR / "public_suffix_list.dat").read_text())
    wrong = [
        (d, e, got)
        for d, e in vectors
        if (got := dmarc.organizational_domain(d, psl)) != (e.lower() if e else e)
    ]
    assert wrong == []


# --- records ----------------------------------------------------------------------------------------


def test_parse_record() -> None:
    rec = dmarc.parse_record(
        "v=DMARC1; p=reject; sp=none; adkim=s; pct=20; rua=mailto:a@example.org,mailto:b@x.example!10m;"
    )
    assert (rec.p, rec.sp, rec.adkim, rec.aspf, rec.pct) == ("reject", "none", "s", "r", 20)
    assert rec.rua == ("mailto:a@example.org", "mailto:b@x.example!10m")
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:a@example.org").p == "none"  # §6.6.3
    for bad in ("v=DMARC1; p=none; reject", "p=none; v=DMARC1", "v=DMARC1; p=none; pct=101", "v=DMARC1"):
        with pytest.raises(dmarc.RecordError):
            dmarc.parse_record(bad)


def test_alignment_modes() -> None:
    assert dmarc.aligned("mail.example.com", "example.com", "r")
    assert not dmarc.aligned("mail.example.com", "example.com", "s")
    assert dmarc.aligned("EXAMPLE.com", "example.com.", "s")
    assert not dmarc.aligned("example.co.uk", "other.co.uk", "r")
    assert not dmarc.aligned("a.co.uk", "co.uk", "r")


def _msg(sender: str) -> bytes:
    return f"From: X <{sender}>\r\nTo: y@example.net\r\nSubject: s\r\n\r\nbody\r\n".encode()


def _spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "mailfrom", domain, f"bounce@{domain}", "192.0.2.1")  # type: ignore[arg-type]


def _run(
    lookup: StaticLookup, message: bytes, spf: SpfResult | None, sigs: list[DkimResult], **kw: Any
) -> dmarc.DmarcResult:
    return asyncio.run(dmarc.evaluate(lookup, message, spf, sigs, **kw))


ORG = StaticLookup(
    {
        "_dmarc.example.com": {"TXT": "v=DMARC1; p=reject; aspf=s"},
        "_dmarc.half.example": {"TXT": "v=DMARC1; p=reject; pct=50"},
        "_dmarc.broken.example": {"TXT": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]},
    }
)


def test_spf_alignment_strict_and_relaxed_dkim() -> None:
    message = _msg("a@example.com")
    assert _run(ORG, message, _spf("pass", "example.com"), []).result == "pass"
    strict = _run(ORG, message, _spf("pass", "bounces.example.com"), [])  # aspf=s
    assert (strict.result, strict.policy, strict.disposition) == ("fail", "reject", "reject")
    relaxed = _run(ORG, message, _spf("fail", "x.example"), [DkimResult("pass", domain="mail.example.com")])
    assert relaxed.result == "pass" and relaxed.dkim_aligned and not relaxed.spf_aligned
    unrelated = _run(ORG, message, None, [DkimResult("pass", domain="example.net")])
    assert unrelated.result == "fail"


def test_pct_sampling() -> None:
    message = _msg("a@half.example")
    assert _run(ORG, message, None, [], rand=lambda: 0.2).disposition == "reject"
    out = _run(ORG, message, None, [], rand=lambda: 0.7)
    assert (out.result, out.policy, out.disposition) == ("fail", "reject", "quarantine")  # §6.6.4


def test_temperror_and_none() -> None:
    message = _msg("a@example.com")
    temp = _run(ORG, message, _spf("temperror", "example.com"), [])
    assert temp.result == "temperror"
    down = StaticLookup(tempfail=["_dmarc.example.com"])
    assert _run(down, message, None, []).result == "temperror"
    assert _run(ORG, _msg("a@nodmarc.example"), None, []).result == "none"
    assert _run(ORG, _msg("a@broken.example"), None, []).result == "none"  # §6.6.3: several records


def test_from_domains() -> None:
    assert dmarc.from_domains(b'From: "A, B" <a@Example.COM>\r\n\r\n') == ["example.com"]
    assert dmarc.from_domains(b"From: a@x.example,\r\n b@y.example\r\nTo: z\r\n\r\n") == [
        "x.example",
        "y.example",
    ]
    assert dmarc.from_domains(b"To: z@example.org\r\n\r\nFrom: a@x.example\r\n") == []
    assert dmarc.from_domains(b"From: undisclosed\r\n\r\n") == []


def test_internationalised_from_domain() -> None:
    message = "From: Ö <ö@bücher.example>\r\nTo: y@example.net\r\n\r\nbody\r\n".encode()
    assert dmarc.from_domains(message) == ["bücher.example"]
