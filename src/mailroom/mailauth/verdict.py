"""What the MX does with a message, from its SPF, DKIM and DMARC results: a pure function.

Defaults (issue 7), each configurable through :class:`VerdictPolicy`:

=====================================================================  =========================
authenticated submission                                                 accept (no SPF check)
DMARC pass                                                               accept
DMARC fail, disposition reject (p=reject, or sp/np, after pct)           550 5.7.1
DMARC fail, disposition quarantine                                       deliver to Junk
DMARC temperror                                                          451 4.4.3
no usable DMARC policy, SPF temperror / DKIM temperror and no DKIM pass  451 4.4.3 (RFC 7208 §8.6)
no usable DMARC policy, SPF fail, no passing DKIM of that domain         550 5.7.23 (RFC 7372)
no usable DMARC policy, SPF fail, a passing DKIM signature of it         deliver to Junk (RFC 7489 §10.1: forwarding)
anything else                                                            accept
=====================================================================  =========================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.dmarc import DmarcResult, aligned
from mailroom.mailauth.spf import SpfResult

Action = Literal["accept", "junk", "reject", "tempfail"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    code: int = 250
    enhanced: str = ""  # RFC 3463 enhanced status code
    text: str = ""  # the SMTP reply text for reject / tempfail
    reason: str = ""  # one line for the log

    @property
    def reply(self) -> str:
        """``"550 5.7.1 text"``: the whole reply line for a reject or a tempfail."""
        return f"{self.code} {self.enhanced} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class VerdictPolicy:
    dmarc_reject: Action = "reject"
    dmarc_quarantine: Action = "junk"
    dmarc_temperror: Action = "tempfail"
    spf_fail_unsigned: Action = "reject"
    spf_fail_signed: Action = "junk"
    spf_softfail: Action = "accept"
    spf_temperror: Action = "tempfail"
    dkim_temperror: Action = "tempfail"


DEFAULT_POLICY = VerdictPolicy()
ACCEPT = Verdict("accept")


def _reply_text(text: str) -> str:
    """One line of printable ASCII (an SPF explanation is the sender domain's text)."""
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return " ".join(clean.split())[:400] or "Message rejected"


def _verdict(action: Action, reject: tuple[int, str], text: str, reason: str) -> Verdict:
    if action == "reject":
        return Verdict("reject", reject[0], reject[1], _reply_text(text), reason)
    if action == "tempfail":
        # RFC 7208 §8.6 / RFC 3463 4.4.3: a DNS failure the sender should retry after.
        return Verdict(
            "tempfail", 451, "4.4.3", "Temporary DNS failure checking the sender; try again later", reason
        )
    return Verdict(action, 250, "", "", reason)


def decide(
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    dmarc: DmarcResult | None,
    *,
    is_submission: bool,
    policy: VerdictPolicy = DEFAULT_POLICY,
) -> Verdict:
    """The action for one message (``spf`` is the MAIL FROM check, or HELO's for a null sender)."""
    if is_submission:
        return Verdict("accept", reason="authenticated submission")
    if dmarc is not None:
        if dmarc.result == "pass":
            return Verdict("accept", reason=f"dmarc=pass header.from={dmarc.from_domain}")
        if dmarc.result == "fail":
            reason = f"dmarc=fail header.from={dmarc.from_domain} p={dmarc.policy} dis={dmarc.disposition}"
            if dmarc.disposition == "reject":  # RFC 7489 §6.6.4 / §7: reject during the SMTP transaction
                text = f"Message rejected: {dmarc.from_domain} publishes a DMARC reject policy and this mail fails it"
                return _verdict(policy.dmarc_reject, (550, "5.7.1"), text, reason)
            if dmarc.disposition == "quarantine":
                return _verdict(
                    policy.dmarc_quarantine, (550, "5.7.1"), "Message rejected by DMARC policy", reason
                )
            return Verdict("accept", reason=reason)  # p=none: the domain only monitors
        if dmarc.result == "temperror":
            return _verdict(policy.dmarc_temperror, (550, "5.7.1"), "", f"dmarc=temperror: {dmarc.reason}")
    # No usable DMARC policy (none / permerror, RFC 7489 §6.6.3): SPF and DKIM on their own.
    if spf is not None and spf.result == "temperror":
        return _verdict(policy.spf_temperror, (550, "5.7.23"), "", f"spf=temperror: {spf.explanation}")
    passing = [r for r in dkim if r.result == "pass"]
    if not passing and any(r.result == "temperror" for r in dkim):
        domains = ", ".join(r.domain for r in dkim if r.result == "temperror")
        return _verdict(policy.dkim_temperror, (550, "5.7.1"), "", f"dkim=temperror d={domains}")
    if spf is not None and spf.result == "fail":
        reason = f"spf=fail {spf.identity}={spf.sender} ip={spf.client_ip}"
        own = [spf.domain] + ([dmarc.from_domain] if dmarc is not None and dmarc.from_domain else [])
        if any(aligned(r.domain, d, "r") for r in passing for d in own):
            return _verdict(policy.spf_fail_signed, (550, "5.7.23"), "", reason + " (DKIM pass: forwarded?)")
        # RFC 7208 §8.4: reject, with the domain's explanation; RFC 7372 §3.2: 5.7.23.
        text = f"SPF: {spf.client_ip} is not allowed to send mail for {spf.domain}"
        if spf.explanation:
            text += f": {spf.explanation}"
        return _verdict(policy.spf_fail_unsigned, (550, "5.7.23"), text, reason)
    if spf is not None and spf.result == "softfail":
        reason = f"spf=softfail {spf.identity}={spf.sender} ip={spf.client_ip}"
        return _verdict(policy.spf_softfail, (550, "5.7.23"), f"SPF softfail for {spf.domain}", reason)
    return ACCEPT
