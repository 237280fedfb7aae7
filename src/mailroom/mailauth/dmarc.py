"""DMARC (RFC 7489): policy discovery, identifier alignment, p / sp / pct, and RFC 9091's np=.

A small evaluator of our own over SPF and DKIM results we already have: the RFC's logic is a
page of rules, while the libraries that implement it each bring their own DNS (checkdmarc is a
record linter; authheaders' DMARC step parses A-R text and calls a sync ``dnsfunc``). The
organizational domain comes from the Public Suffix List shipped inside the ``publicsuffixlist``
package (updated with each release; nothing is downloaded at run time).
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.resolver import DnsLookup
from mailroom.mailauth.spf import SpfResult

DmarcStatus = Literal["pass", "fail", "none", "temperror", "permerror"]
Policy = Literal["none", "quarantine", "reject"]
POLICIES: tuple[Policy, ...] = ("none", "quarantine", "reject")
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}


# --- organizational domain (RFC 7489 §3.2) ---------------------------------------------------------


@lru_cache(maxsize=1)
def _default_psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list file shipped in the package


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str | None:
    """RFC 7489 §3.2: the public suffix plus one label; None for a public suffix or a bad name."""
    name = domain.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or any(not label for label in name.split(".")):
        return None
    org = (psl or _default_psl()).privatesuffix(name)
    return org.lower() if org else None


def aligned(a: str, b: str, mode: Literal["r", "s"], psl: PublicSuffixList | None = None) -> bool:
    """RFC 7489 §3.1.1 / §3.1.2: strict = identical names; relaxed = same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    if mode == "s":
        return False
    org_a = organizational_domain(a, psl)
    return org_a is not None and org_a == organizational_domain(b, psl)


# --- the record (RFC 7489 §6.3 / §6.4) -------------------------------------------------------------


@dataclass(frozen=True)
class DmarcRecord:
    p: Policy
    sp: Policy | None = None
    np: Policy | None = None  # RFC 9091 §4.1: non-existent subdomains
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    raw: str = field(default="", compare=False)


class RecordError(ValueError):
    """A DMARC record that is present but unusable."""


def _uris(value: str) -> tuple[str, ...]:
    # RFC 7489 §6.4: dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ], comma-separated
    uris = tuple(u.strip() for u in value.split(",") if u.strip())
    return tuple(u for u in uris if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s!]+(![0-9]+[kmgt]?)?", u))


def parse_record(text: str) -> DmarcRecord:
    """Parse ``v=DMARC1; p=...`` (RFC 7489 §6.4). Raises :class:`RecordError`.

    RFC 7489 §6.6.3: without a valid p= the record still counts as p=none when it has a valid
    rua= (a domain that asked for reports); otherwise it is not a DMARC policy at all.
    """
    parts = [part.strip() for part in text.strip().split(";")]
    if parts and not parts[-1]:
        parts.pop()  # a trailing ";" is allowed
    tags: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise RecordError(f"syntax error in DMARC record at {part!r}")
        tags.setdefault(name, value)  # RFC 7489 §6.3 leaves duplicates open: the first wins
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":  # RFC 7489 §6.4: v= first, exactly
        raise RecordError("not a DMARC1 record")

    def policy(name: str) -> Policy | None:
        value = tags.get(name)
        if value is None:
            return None
        if value.lower() not in POLICIES:
            raise RecordError(f"invalid {name}={value}")
        return value.lower()  # type: ignore[return-value]

    def mode(name: str) -> Literal["r", "s"]:
        value = tags.get(name, "r").lower()
        if value not in ("r", "s"):
            raise RecordError(f"invalid {name}={tags[name]}")
        return value  # type: ignore[return-value]

    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise RecordError(f"invalid pct={pct_text}")
    rua, ruf = _uris(tags.get("rua", "")), _uris(tags.get("ruf", ""))
    try:
        p = policy("p")
        sp = policy("sp")
    except RecordError:
        p, sp = None, None
    if p is None:
        if not rua:
            raise RecordError("no valid p= tag")
        p = "none"  # RFC 7489 §6.6.3, the rua= exception
    return DmarcRecord(
        p=p,
        sp=sp,
        np=policy("np"),
        adkim=mode("adkim"),
        aspf=mode("aspf"),
        pct=int(pct_text),
        rua=rua,
        ruf=ruf,
        raw=text,
    )


# --- RFC5322.From (RFC 7489 §6.6.1) -----------------------------------------------------------------


def from_domains(message: bytes) -> list[str]:
    """The domains of every address in every From field of the header section ([] if none usable)."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", head)  # RFC 5322 §2.2.3
    values = []
    for line in re.split(rb"\r?\n", unfolded):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"from":
            values.append(value.decode("utf-8", "replace"))  # RFC 6532: UTF-8 header values
    domains: list[str] = []
    for _name, address in email.utils.getaddresses(values):
        local, at, domain = address.rpartition("@")
        domain = domain.strip().rstrip(".").lower()
        if at and local and domain and "." in domain and domain not in domains:
            domains.append(domain)
        elif address:
            return []  # an address without a usable domain: nothing to align with
    return domains


# --- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcResult:
    result: DmarcStatus
    from_domain: str = ""  # A-R header.from
    policy: Policy = "none"  # the policy published for this From domain (p, sp or np)
    disposition: Policy = "none"  # what to do: policy after pct sampling; "none" unless result is fail
    record_domain: str = ""  # where the record was found: the From domain or its org domain
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""
    record: DmarcRecord | None = None


async def _discover(
    lookup: DnsLookup, domain: str, psl: PublicSuffixList | None
) -> tuple[DmarcRecord | None, str, DmarcResult | None]:
    """RFC 7489 §6.6.3: (record, the domain it was found at, or the result that ends evaluation)."""
    org = organizational_domain(domain, psl)
    for candidate in [domain] + ([org] if org and org != domain else []):
        answer = await lookup(f"_dmarc.{candidate}", "TXT")
        if answer.temporary:
            return None, candidate, DmarcResult("temperror", domain, reason=f"DMARC lookup: {answer.error}")
        records = [r for r in answer.records if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", r, re.IGNORECASE)]
        if len(records) > 1:  # §6.6.3 step 2: several records: no DMARC processing
            return (
                None,
                candidate,
                DmarcResult("none", domain, reason=f"several DMARC records at {candidate}"),
            )
        if records:
            try:
                return parse_record(records[0]), candidate, None
            except RecordError as exc:
                if str(exc) == "no valid p= tag":  # §6.6.3: "applies no DMARC processing"
                    return None, candidate, DmarcResult("none", domain, reason=str(exc))
                return (
                    None,
                    candidate,
                    DmarcResult("permerror", domain, reason=str(exc), record_domain=candidate),
                )
    return None, "", DmarcResult("none", domain, reason="no DMARC record")


async def _exists(lookup: DnsLookup, domain: str) -> bool:
    """RFC 9091 §2.7: a domain "exists" unless A, AAAA and MX all answer NXDOMAIN or NODATA."""
    for rdtype in ("A", "AAAA", "MX"):
        answer = await lookup(domain, rdtype)
        if not answer.missing:
            return True
    return False


async def evaluate_domain(
    lookup: DnsLookup,
    from_domain: str,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    *,
    psl: PublicSuffixList | None = None,
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """DMARC for one RFC5322.From domain."""
    record, record_domain, early = await _discover(lookup, from_domain, psl)
    if record is None:
        assert early is not None
        return early
    # §3.1.2: SPF-authenticated identifier: MAIL FROM domain (HELO when the reverse-path was null).
    spf_aligned = (
        spf is not None and spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf, psl)
    )
    # §3.1.1: any passing signature whose d= aligns.
    dkim_aligned = any(r.result == "pass" and aligned(r.domain, from_domain, record.adkim, psl) for r in dkim)
    if record_domain == from_domain:
        policy = record.p
    elif record.np is not None and not await _exists(lookup, from_domain):
        policy = record.np  # RFC 9091 §4.1
    else:
        policy = record.sp or record.p  # RFC 7489 §6.3 sp=: subdomains of the org domain
    base = DmarcResult(
        "pass",
        from_domain,
        policy,
        "none",
        record_domain,
        spf_aligned,
        dkim_aligned,
        "",
        record,
    )
    if spf_aligned or dkim_aligned:  # §4.2: pass when either aligned identifier passes
        return base
    # A temporary failure of an identifier that would align leaves the outcome open: let the sender retry.
    temporary = [
        f"SPF {spf.result}"
        for spf in [spf]
        if spf is not None
        and spf.result == "temperror"
        and aligned(spf.domain, from_domain, record.aspf, psl)
    ] + [
        f"DKIM {r.domain} temperror"
        for r in dkim
        if r.result == "temperror" and aligned(r.domain, from_domain, record.adkim, psl)
    ]
    if temporary:
        return DmarcResult(
            "temperror",
            from_domain,
            policy,
            "none",
            record_domain,
            reason="; ".join(temporary),
            record=record,
        )
    disposition: Policy = policy
    if record.pct < 100 and rand() * 100 >= record.pct:
        # RFC 7489 §6.6.4: not sampled: the next less strict policy applies.
        disposition = {"reject": "quarantine", "quarantine": "none", "none": "none"}[policy]  # type: ignore[assignment]
    return DmarcResult(
        "fail",
        from_domain,
        policy,
        disposition,
        record_domain,
        reason="no aligned SPF or DKIM pass",
        record=record,
    )


async def evaluate(
    lookup: DnsLookup,
    message: bytes,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    *,
    psl: PublicSuffixList | None = None,
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """DMARC for a message's From domain(s). Several From domains (RFC 7489 §6.6.1): each is
    evaluated and the failing one with the strictest policy is the result."""
    domains = from_domains(message)
    if not domains:
        return DmarcResult("permerror", reason="no usable RFC5322.From address")
    results = [await evaluate_domain(lookup, d, spf, dkim, psl=psl, rand=rand) for d in domains]
    if len(results) == 1:
        return results[0]
    for status in ("fail", "temperror", "permerror"):
        bad = [r for r in results if r.result == status]
        if bad:
            return max(bad, key=lambda r: (_STRICTNESS[r.policy], _STRICTNESS[r.disposition]))
    return next((r for r in results if r.result == "pass"), results[0])
