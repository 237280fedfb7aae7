"""Authentication-Results (RFC 8601): build ours, remove forged ones that claim our authserv-id.

What :func:`build` makes (one result per folded line)::

    Authentication-Results: mx.example.org;
    \tspf=pass smtp.mailfrom=alice@example.com;
    \tdkim=pass header.d=example.com header.s=2026r header.a=rsa-sha256 header.b="abcdEFGH1234";
    \tdmarc=pass (p=reject dis=none) header.from=example.com
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.dmarc import DmarcResult
from mailroom.mailauth.spf import SpfResult

HEADER = "Authentication-Results"

# RFC 2045 §5.1 token: any CHAR except SPACE, CTLs and tspecials.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")
# RFC 8601 §2.2 pvalue: [ [ local-part ] "@" ] domain-name (a dot-atom local-part here)
_ADDRESS = re.compile(r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+)?@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _value(text: str) -> str:
    """RFC 8601 §2.2: a pvalue as it is, or as an RFC 2045 quoted-string."""
    if _TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text):
        return text
    return '"' + re.sub(r'(["\\])', r"\\\1", re.sub(r"[\r\n]+", " ", text)) + '"'


def _reason(text: str) -> str:
    return f" reason={_value(text[:200])}" if text else ""  # RFC 8601 §2.7


def spf_resinfo(result: SpfResult) -> str:
    """RFC 8601 §2.7.2 / RFC 7208 §9.1: ``spf=<result> smtp.mailfrom=...`` or ``smtp.helo=...``."""
    if result.identity == "mailfrom":
        prop = f"smtp.mailfrom={_value(result.sender)}"
    else:
        helo = result.sender.rpartition("@")[2] if result.sender else result.domain
        prop = f"smtp.helo={_value(helo or 'unknown')}"
    reason = _reason(result.explanation) if result.result in ("temperror", "permerror") else ""
    return f"spf={result.result}{reason} {prop}"


def dkim_resinfo(result: DkimResult) -> str:
    """RFC 8601 §2.7.1 (+ RFC 6008 header.b, RFC 8616 header.a)."""
    parts = [f"dkim={result.result}{_reason(result.reason)}"]
    if result.domain:
        parts.append(f"header.d={_value(result.domain)}")
    if result.identity:
        parts.append(f"header.i={_value(result.identity)}")
    if result.selector:
        parts.append(f"header.s={_value(result.selector)}")
    if result.algorithm:
        parts.append(f"header.a={_value(result.algorithm)}")
    if result.header_b:
        parts.append(f"header.b={_value(result.header_b)}")
    return " ".join(parts)


def dmarc_resinfo(result: DmarcResult) -> str:
    """RFC 7489 §11.2: ``dmarc=<result> header.from=<domain>`` (policy and disposition in a comment)."""
    comment = f" (p={result.policy} dis={result.disposition})" if result.record is not None else ""
    reason = _reason(result.reason) if result.result != "pass" else ""
    return f"dmarc={result.result}{reason}{comment} header.from={_value(result.from_domain or 'unknown')}"


def build(
    authserv_id: str,
    *,
    spf: Sequence[SpfResult] = (),
    dkim: Sequence[DkimResult] | None = None,
    dmarc: DmarcResult | None = None,
    linesep: str = "\r\n",
) -> str:
    """The whole header field, folded one result per line and ending in ``linesep``.

    ``dkim=None`` means DKIM was not checked (nothing is said); ``[]`` means checked and unsigned
    (``dkim=none``). With no result at all the header says ``none`` (RFC 8601 §2.2).
    """
    resinfos = [spf_resinfo(r) for r in spf]
    if dkim is not None:
        resinfos += [dkim_resinfo(r) for r in dkim] if dkim else ["dkim=none"]
    if dmarc is not None:
        resinfos.append(dmarc_resinfo(dmarc))
    if not resinfos:
        return f"{HEADER}: {authserv_id}; none{linesep}"
    return f"{HEADER}: {authserv_id};" + ";".join(f"{linesep}\t{r}" for r in resinfos) + linesep


# --- removing forged headers (RFC 8601 §5) -------------------------------------------------------------


def _skip_cfws(text: str, pos: int) -> int:
    """Skip folding whitespace and (nested) comments (RFC 5322 §3.2.2)."""
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and depth:
            pos += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch not in " \t\r\n":
            break
        pos += 1
    return pos


def authserv_id(value: str) -> str | None:
    """The authserv-id of an A-R field value (RFC 8601 §2.2: ``[CFWS] authserv-id ...``), lower-cased."""
    pos = _skip_cfws(value, 0)
    if pos < len(value) and value[pos] == '"':  # a quoted-string value
        m = re.match(r'"((?:[^"\\]|\\.)*)"', value[pos:])
        return re.sub(r"\\(.)", r"\1", m.group(1)).lower() if m else None
    m = re.match(r"[^\s;()\"]+", value[pos:])
    return m.group(0).lower().rstrip(".") if m else None


def remove_ours(header_block: bytes, our_id: str) -> tuple[bytes, int]:
    """Drop every Authentication-Results field whose authserv-id is ``our_id`` (case-insensitive).

    RFC 8601 §5: a border MTA MUST remove (or rename) A-R fields that claim its authserv-id
    before adding its own, or forged results would be trusted. ``header_block`` is the header
    section (with or without the empty line that ends it); folded fields are handled; every other
    byte is kept as it was. Returns (the new block, how many fields were removed).
    """
    ours = our_id.lower().rstrip(".")
    lines = re.split(rb"(?<=\n)", header_block)
    out: list[bytes] = []
    removed = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip(b"\r\n"):  # the empty line: the body follows, keep it as it is
            out.extend(lines[index:])
            break
        end = index + 1
        if line[:1] not in (b" ", b"\t"):  # a field, with its continuation lines
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1
        field = b"".join(lines[index:end])
        name, sep, value = field.partition(b":")
        if sep and name.strip().lower() == HEADER.lower().encode():
            found = authserv_id(value.decode("utf-8", "replace"))
            if found == ours:
                removed += 1
                index = end
                continue
        out.append(field)
        index = end
    return b"".join(out), removed
