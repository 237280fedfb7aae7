"""Mail addresses as mailroom compares them.

Local parts match after Unicode NFC normalisation and case folding (RFC 6531 allows UTF-8 local
parts; RFC 5321 §2.4 lets the receiving host decide case sensitivity, and every peer server treats
them case-insensitively). Domains are compared as lower-case IDNA A-labels (RFC 5890).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 §3.2.3 atext, plus UTF-8 (RFC 6532 §3.2)
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]+$")


class AddressError(ValueError):
    """An address that cannot be used; ``str()`` says why."""


@dataclass(frozen=True, order=True)
class Address:
    """A parsed address: ``local`` as written, ``domain`` as an A-label; ``key`` is the match form."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def local_key(self) -> str:
        return normalize_local(self.local)

    @property
    def key(self) -> str:
        return f"{self.local_key}@{self.domain}"


def normalize_local(local: str) -> str:
    return unicodedata.normalize("NFC", local).casefold()


def normalize_domain(domain: str) -> str:
    """Lower-case A-label form, or AddressError."""
    text = domain.strip().rstrip(".")
    if not text:
        raise AddressError("empty domain")
    try:
        # RFC 5891 via the stdlib codec (IDNA 2003); plain ASCII names pass through unchanged
        ascii_name = text.lower() if text.isascii() else text.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressError(f"invalid internationalised domain {domain!r}: {exc}") from None
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError(f"domain longer than {MAX_DOMAIN} octets")
    labels = ascii_name.split(".")
    if len(labels) < 1 or not all(_LABEL_RE.match(label) for label in labels):
        raise AddressError(f"invalid domain {domain!r}")
    return ascii_name


def validate_local(local: str) -> str:
    if not local:
        raise AddressError("empty local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"local part longer than {MAX_LOCAL_PART} octets")
    # dot-atom only (RFC 5322 §3.4.1): no leading, trailing or double dots; quoted local parts
    # are legal on the wire but are not something we create accounts for
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"invalid local part {local!r} (misplaced dot)")
    if not all(_ATEXT.match(atom) for atom in local.split(".")):
        raise AddressError(f"invalid local part {local!r}")
    return local


def parse_address(text: str) -> Address:
    """Parse ``local@domain`` as an administrator types it (for accounts and aliases)."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, sep, domain = text.rpartition("@")
    if not sep:
        raise AddressError(f"{text!r} is not an address (no @)")
    return Address(validate_local(local), normalize_domain(domain))


def split_tag(local: str, separator: str = "+") -> str | None:
    """``user+tag`` -> ``user``; None when there is no tag to strip."""
    base, sep, _tag = local.partition(separator)
    return base if sep and base else None
