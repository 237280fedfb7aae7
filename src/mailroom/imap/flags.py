"""IMAP flags as the store keeps them: system flags as bits, keywords as a space-separated text.

RFC 9051 §2.3.2: system flags start with a backslash; keywords are atoms; both compare
case-insensitively. ``\\Recent`` is session state (RFC 3501 §2.3.2), never stored.
"""

from __future__ import annotations

from collections.abc import Iterable

SEEN = 1
ANSWERED = 2
FLAGGED = 4
DELETED = 8
DRAFT = 16

# Order of FLAGS in responses (Dovecot's order)
SYSTEM_FLAGS: tuple[tuple[str, int], ...] = (
    ("\\Answered", ANSWERED),
    ("\\Flagged", FLAGGED),
    ("\\Deleted", DELETED),
    ("\\Seen", SEEN),
    ("\\Draft", DRAFT),
)
_BY_NAME = {name.upper(): bit for name, bit in SYSTEM_FLAGS}
MAX_KEYWORDS = 200  # per mailbox is unbounded in the RFC; per message we cap what a client can add
MAX_KEYWORD_LENGTH = 100


def split_flags(names: Iterable[str]) -> tuple[int, list[str]]:
    """(system-flag bits, keywords) from a flag list; ``\\Recent`` and other unknown
    backslash flags are dropped (RFC 9051 §6.4.6: the server ignores what it cannot store)."""
    bits = 0
    keywords: list[str] = []
    seen: set[str] = set()
    for name in names:
        upper = name.upper()
        if upper.startswith("\\"):
            bits |= _BY_NAME.get(upper, 0)
        elif upper not in seen and 0 < len(name) <= MAX_KEYWORD_LENGTH:
            seen.add(upper)
            keywords.append(name)
    return bits, keywords


def parse_keywords(text: str) -> list[str]:
    return text.split() if text else []


def join_keywords(keywords: Iterable[str]) -> str:
    return " ".join(keywords)


def merge_keywords(current: list[str], change: list[str], mode: str) -> list[str]:
    """Apply +FLAGS / -FLAGS / FLAGS to a keyword list, keeping the first spelling of each."""
    if mode == "replace":
        return list(change)
    upper_current = {k.upper() for k in current}
    if mode == "add":
        out = list(current)
        for k in change:
            if k.upper() not in upper_current:
                upper_current.add(k.upper())
                out.append(k)
        return out
    remove = {k.upper() for k in change}
    return [k for k in current if k.upper() not in remove]


def flag_names(bits: int, keywords: str, recent: bool = False) -> list[str]:
    """The FLAGS list of a message."""
    out = [name for name, bit in SYSTEM_FLAGS if bits & bit]
    if recent:
        out.append("\\Recent")
    if keywords:
        out.extend(keywords.split())
    return out


def flag_list_bytes(bits: int, keywords: str, recent: bool = False) -> bytes:
    """``(\\Seen kw)``: the fast path for FETCH FLAGS of many messages."""
    return b"(" + " ".join(flag_names(bits, keywords, recent)).encode("utf-8") + b")"
