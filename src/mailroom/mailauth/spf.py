"""SPF (RFC 7208) check_host() for MAIL FROM and HELO, on pyspf, over our DNS only.

pyspf is synchronous and evaluates mechanisms one lookup at a time, so it runs in a worker thread
and each of its lookups is sent back to the event loop (``asyncio.run_coroutine_threadsafe``) to
our :class:`~mailroom.mailauth.resolver.DnsLookup`. pyspf's module-level ``DNSLookup`` (which
would use dnspython's system resolver) is replaced at import by a dispatcher that only knows the
lookup bound to the current worker thread; with none bound it answers TempError. So no SPF lookup
ever reaches the system resolver.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mailroom.mailauth.resolver import RR_TYPES, DnsLookup

SpfStatus = Literal["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"]
Identity = Literal["mailfrom", "helo"]

# RFC 7208 §4.6.4: "at least 20 seconds" for the whole evaluation before temperror.
DEFAULT_TIMEOUT = 20.0
_WORKERS = 16  # SPF threads mostly wait for DNS; a pool of their own keeps them off DKIM's.


@dataclass(frozen=True, slots=True)
class SpfResult:
    """One check_host() outcome (RFC 7208 §2.6)."""

    result: SpfStatus
    identity: Identity  # RFC 7208 §2.3 (helo) / §2.4 (mailfrom)
    domain: str  # the <domain> check_host() was applied to ("" when there was none)
    sender: str  # the <sender>: MAIL FROM, or postmaster@<helo> (RFC 7208 §2.4)
    client_ip: str
    explanation: str = ""  # RFC 7208 §6.2 for "fail"; otherwise a short diagnostic


_bound = threading.local()


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: float = 30.0) -> list[Any]:
    """pyspf's DNSLookup(name, qtype, strict, timeout) -> [((name, type), value), ...]."""
    bridge: Callable[[str, str, float], list[Any]] | None = getattr(_bound, "bridge", None)
    if bridge is None:
        raise _pyspf().TempError("DNS: no resolver bound (mailroom never uses the system resolver)")
    return bridge(name, qtype, timeout)


def _pyspf() -> Any:  # pyspf has no type hints
    """pyspf, imported at the first check (not by an idle server) with its DNS routed through us."""
    import spf

    spf.DNSLookup = _dispatch  # pyspf.query.dns() looks this global up at call time
    return spf


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="spf")
        return _executor


def _bridge(lookup: DnsLookup, loop: asyncio.AbstractEventLoop) -> Callable[[str, str, float], list[Any]]:
    pyspf = _pyspf()

    def run(name: str, qtype: str, timeout: float) -> list[Any]:
        if qtype not in RR_TYPES:
            return []  # RFC 7208 §3.1 / §14.1: type SPF (99) is never queried
        future = asyncio.run_coroutine_threadsafe(lookup(name, qtype), loop)
        try:
            answer = future.result(timeout=max(timeout, 0.01))
        except TimeoutError:
            future.cancel()
            raise pyspf.TempError(f"DNS timeout looking up {name} {qtype}") from None
        if answer.temporary:
            # RFC 7208 §2.6.6 / §5: a lookup error other than "no such name" is temperror.
            raise pyspf.TempError(f"DNS error for {name} {qtype}: {answer.error}")
        if not answer.ok:
            return []  # NXDOMAIN and NODATA are both void lookups (RFC 7208 §4.6.4)
        key = (name, qtype)
        if qtype == "TXT":
            # pyspf wants the record's strings as bytes; ours are already joined (§3.3).
            return [(key, (text.encode("utf-8", "surrogateescape"),)) for text in answer.records]
        if qtype == "MX":
            out = []
            for record in answer.records:
                pref, _, host = record.partition(" ")
                out.append((key, (int(pref), host)))
            return out
        return [(key, value) for value in answer.records]

    return run


def _evaluate(
    bridge: Callable[[str, str, float], list[Any]],
    ip: str,
    sender: str,
    helo: str,
    timeout: float,
    default_explanation: str | None,
) -> tuple[str, str]:
    pyspf = _pyspf()
    _bound.bridge = bridge
    try:
        try:
            query = pyspf.query(i=ip, s=sender, h=helo, querytime=timeout)
        except pyspf.PermError as exc:  # an unusable client address
            return "permerror", str(exc)
        if default_explanation is not None:
            query.set_default_explanation(default_explanation)
        result, _code, explanation = query.check()
        return str(result), str(explanation)
    finally:
        _bound.bridge = None


async def check_host(
    lookup: DnsLookup,
    ip: str,
    sender: str,
    helo: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    default_explanation: str | None = None,
) -> SpfResult:
    """RFC 7208 §4: check_host(<ip>, <domain of sender>, <sender>) with ``helo`` for %{h}.

    An empty ``sender`` means the null reverse-path: the HELO identity is checked as
    ``postmaster@<helo>`` (RFC 7208 §2.4). A HELO that is not a domain name gives ``none``
    (RFC 7208 §4.3). Never raises: every failure is a result value.
    """
    identity: Identity = "mailfrom" if sender else "helo"
    checked = sender if sender else (f"postmaster@{helo}" if helo else "")
    domain = checked.rpartition("@")[2] if "@" in checked else helo
    if not checked:  # no MAIL FROM and no HELO name: there is no identity to check (RFC 7208 §4.3)
        return SpfResult("none", identity, "", "", ip, "no identity to check")
    loop = asyncio.get_running_loop()
    try:
        result, explanation = await loop.run_in_executor(
            _pool(), _evaluate, _bridge(lookup, loop), ip, sender, helo, timeout, default_explanation
        )
    except Exception as exc:  # a pyspf bug must not take the SMTP session down
        result, explanation = "permerror", f"SPF evaluation failed: {type(exc).__name__}: {exc}"
    if result not in ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"):
        result, explanation = "permerror", f"unexpected SPF result {result!r}: {explanation}"
    return SpfResult(result, identity, domain.lower(), checked, ip, explanation)  # type: ignore[arg-type]


async def check_mail_from(lookup: DnsLookup, ip: str, mail_from: str, helo: str, **kw: Any) -> SpfResult:
    """RFC 7208 §2.4: the MAIL FROM identity (the HELO identity when the reverse-path is null)."""
    return await check_host(lookup, ip, mail_from, helo, **kw)


async def check_helo(lookup: DnsLookup, ip: str, helo: str, **kw: Any) -> SpfResult:
    """RFC 7208 §2.3: the HELO identity, checked with <sender> = postmaster@<helo>."""
    return await check_host(lookup, ip, "", helo, **kw)
