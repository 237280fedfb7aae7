"""The MX's whole check of one message: SPF and DKIM together, then DMARC, the A-R header, a verdict."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailroom.mailauth import dkim as dkimmod
from mailroom.mailauth import dmarc as dmarcmod
from mailroom.mailauth import results
from mailroom.mailauth import spf as spfmod
from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.dmarc import DmarcResult
from mailroom.mailauth.resolver import DnsLookup
from mailroom.mailauth.spf import SpfResult
from mailroom.mailauth.verdict import DEFAULT_POLICY, Verdict, VerdictPolicy, decide


@dataclass(frozen=True)
class InboundAuth:
    spf: SpfResult | None
    dkim: list[DkimResult]
    dmarc: DmarcResult | None
    header: str  # the Authentication-Results field to prepend (ends in CRLF)
    verdict: Verdict


async def authenticate(
    lookup: DnsLookup,
    message: bytes,
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    is_submission: bool = False,
    policy: VerdictPolicy = DEFAULT_POLICY,
    psl: PublicSuffixList | None = None,
    rand: Callable[[], float] = random.random,
) -> InboundAuth:
    """SPF (MAIL FROM, or HELO for a null sender) and DKIM concurrently, then DMARC.

    An authenticated submission gets no checks and no header (the issue: "authenticated
    submissions are not SPF-checked"; our own users' mail is signed, not verified).
    """
    if is_submission:
        return InboundAuth(None, [], None, "", decide(None, [], None, is_submission=True, policy=policy))
    spf_result, dkim_results = await asyncio.gather(
        spfmod.check_mail_from(lookup, client_ip, mail_from, helo), dkimmod.verify(lookup, message)
    )
    dmarc_result = await dmarcmod.evaluate(lookup, message, spf_result, dkim_results, psl=psl, rand=rand)
    header = results.build(authserv_id, spf=[spf_result], dkim=dkim_results, dmarc=dmarc_result)
    verdict = decide(spf_result, dkim_results, dmarc_result, is_submission=False, policy=policy)
    return InboundAuth(spf_result, dkim_results, dmarc_result, header, verdict)


def stamp(message: bytes, header: str, authserv_id: str) -> bytes:
    """Remove A-R fields claiming ``authserv_id`` (RFC 8601 §5), then prepend ``header``."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = message.partition(b"\n\n")
    cleaned, _removed = results.remove_ours(head + sep[: len(sep) // 2], authserv_id)
    return header.encode("utf-8") + cleaned + sep[len(sep) // 2 :] + body
