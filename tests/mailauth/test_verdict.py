"""The MX's default policy (issue 7) as a table, plus configurability."""

from __future__ import annotations

import pytest

from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.dmarc import DmarcRecord, DmarcResult
from mailroom.mailauth.spf import SpfResult
from mailroom.mailauth.verdict import VerdictPolicy, decide


def spf(result: str, domain: str = "example.com", explanation: str = "") -> SpfResult:
    return SpfResult(result, "mailfrom", domain, f"a@{domain}", "192.0.2.1", explanation)  # type: ignore[arg-type]


def dk(result: str, domain: str = "example.com") -> DkimResult:
    return DkimResult(result, domain=domain)  # type: ignore[arg-type]


def dm(
    result: str, policy: str = "none", disposition: str | None = None, domain: str = "example.com"
) -> DmarcResult:
    record = DmarcRecord(policy) if result != "none" else None  # type: ignore[arg-type]
    return DmarcResult(
        result, domain, policy, disposition or (policy if result == "fail" else "none"), record=record
    )  # type: ignore[arg-type]


NO_DMARC = dm("none")

TABLE = [
    # (name, spf, dkim, dmarc, expected action, code, enhanced)
    ("dmarc pass", spf("fail"), [dk("pass")], dm("pass", "reject"), "accept", 250, ""),
    ("p=reject fails", spf("fail"), [], dm("fail", "reject"), "reject", 550, "5.7.1"),
    ("p=reject, pct sampled out", spf("fail"), [], dm("fail", "reject", "quarantine"), "junk", 250, ""),
    ("p=quarantine fails", spf("pass", "other.example"), [], dm("fail", "quarantine"), "junk", 250, ""),
    ("p=none fails", spf("fail"), [], dm("fail", "none"), "accept", 250, ""),
    ("dmarc temperror", spf("temperror"), [], dm("temperror", "reject"), "tempfail", 451, "4.4.3"),
    ("no dmarc, spf fail, unsigned", spf("fail"), [], NO_DMARC, "reject", 550, "5.7.23"),
    (
        "no dmarc, spf fail, foreign dkim",
        spf("fail"),
        [dk("pass", "list.example")],
        NO_DMARC,
        "reject",
        550,
        "5.7.23",
    ),
    (
        "no dmarc, spf fail, own dkim (forwarded)",
        spf("fail"),
        [dk("pass", "mail.example.com")],
        NO_DMARC,
        "junk",
        250,
        "",
    ),
    ("dmarc permerror counts as none", spf("fail"), [], dm("permerror"), "reject", 550, "5.7.23"),
    ("no dmarc, spf temperror", spf("temperror"), [dk("pass")], NO_DMARC, "tempfail", 451, "4.4.3"),
    ("no dmarc, dkim temperror", spf("pass"), [dk("temperror")], NO_DMARC, "tempfail", 451, "4.4.3"),
    (
        "no dmarc, dkim temperror beside a pass",
        spf("pass"),
        [dk("temperror"), dk("pass", "x.example")],
        NO_DMARC,
        "accept",
        250,
        "",
    ),
    ("no dmarc, softfail", spf("softfail"), [], NO_DMARC, "accept", 250, ""),
    ("no dmarc, spf permerror", spf("permerror"), [], NO_DMARC, "accept", 250, ""),
    ("no dmarc, spf none", spf("none"), [], NO_DMARC, "accept", 250, ""),
    ("nothing checked", None, [], None, "accept", 250, ""),
]


@pytest.mark.parametrize(
    ("name", "s", "d", "m", "action", "code", "enhanced"), TABLE, ids=[t[0] for t in TABLE]
)
def test_default_policy(
    name: str,
    s: SpfResult | None,
    d: list[DkimResult],
    m: DmarcResult | None,
    action: str,
    code: int,
    enhanced: str,
) -> None:
    verdict = decide(s, d, m, is_submission=False)
    assert (verdict.action, verdict.code, verdict.enhanced) == (action, code, enhanced), verdict
    if action in ("reject", "tempfail"):
        assert verdict.reply.startswith(f"{code} {enhanced} ") and verdict.text


def test_submission_is_never_checked() -> None:
    assert decide(spf("fail"), [], dm("fail", "reject"), is_submission=True).action == "accept"


def test_spf_reply_carries_a_clean_explanation() -> None:
    verdict = decide(
        spf("fail", explanation="Go away\r\nInjected: yes \x00"), [], NO_DMARC, is_submission=False
    )
    assert (
        verdict.reply
        == "550 5.7.23 SPF: 192.0.2.1 is not allowed to send mail for example.com: Go away Injected: yes"
    )


def test_configurable() -> None:
    lenient = VerdictPolicy(
        spf_fail_unsigned="junk", dmarc_reject="junk", spf_softfail="junk", dkim_temperror="accept"
    )
    assert decide(spf("fail"), [], NO_DMARC, is_submission=False, policy=lenient).action == "junk"
    assert decide(spf("fail"), [], dm("fail", "reject"), is_submission=False, policy=lenient).action == "junk"
    assert decide(spf("softfail"), [], NO_DMARC, is_submission=False, policy=lenient).action == "junk"
    assert (
        decide(spf("pass"), [dk("temperror")], NO_DMARC, is_submission=False, policy=lenient).action
        == "accept"
    )
