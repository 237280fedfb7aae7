"""Sender Rewriting Scheme, byte-compatible with libsrs2 / postsrsd (SRS0 and SRS1, "=" separator).

When mail for a local alias is forwarded to another domain, the envelope sender is rewritten into
our domain so SPF at the destination checks our addresses; bounces to the rewritten address are
decoded back to the original sender.

    srs = SRS([b"secret key", b"previous key"])       # the first key signs; all keys verify
    srs.forward("alice@example.org", "fwd.example", now)
        -> "SRS0=HHHH=TT=example.org=alice@fwd.example"
    srs.reverse("SRS0=HHHH=TT=example.org=alice@fwd.example", now)
        -> "alice@example.org"   or   SRSInvalid(reason, detail)

Format (libsrs2 ``srs_compile_shortcut`` / ``srs_compile_guarded``):

- ``SRS0=HHHH=TT=orig-domain=orig-local@ours``: ``TT`` is the day number modulo 1024 in two base32
  characters (``A-Z2-7``, 5 bits each); ``HHHH`` is the first 4 characters of the standard base64 of
  HMAC-SHA1(key, lower(TT + orig-domain + orig-local)).
- Re-forwarding an SRS0 address made by another forwarder ``hop``: ``SRS1=HHHH=hop==HHHH=TT=...@ours``
  with the hash over lower(hop + "=HHHH=TT=..."); an SRS1 is re-signed keeping the first hop.
- Reversal compares hashes case-insensitively (mail systems may change case) and accepts a
  timestamp up to ``max_age_days`` (21) old; SRS1 reverses to the SRS0 address at the first hop.
- Senders in ``our_domain`` and the null sender are not rewritten. The separator after SRS0/SRS1
  may be "=", "+" or "-" on input (libsrs2 accepts all three); "=" is written.

Key management is the caller's: keys are bytes, rotated by putting the new key first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["SRS", "SRSInvalid", "is_srs"]

_TIME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # libsrs2 SRS_TIME_BASECHARS
_TIME_BITS = 5
_TIME_SLOTS = 1 << (2 * _TIME_BITS)  # two characters: 1024 days
_DAY = 86400
_SEPARATORS = "=+-"
_HASH_LENGTH = 4

Reason = Literal["not-srs", "malformed", "bad-hash", "expired"]


@dataclass(frozen=True)
class SRSInvalid:
    """Why an address could not be reversed. ``not-srs``: not an SRS address at all."""

    reason: Reason
    detail: str


def is_srs(address: str) -> bool:
    local = address.rpartition("@")[0] if "@" in address else address
    return len(local) > 4 and local[:4].upper() in ("SRS0", "SRS1") and local[4] in _SEPARATORS


def _timestamp(now: float) -> str:
    days = int(now // _DAY)
    return _TIME_CHARS[(days >> _TIME_BITS) & 31] + _TIME_CHARS[days & 31]


class SRS:
    def __init__(
        self, keys: Sequence[bytes], *, max_age_days: int = 21, hash_length: int = _HASH_LENGTH
    ) -> None:
        if not keys or not all(keys):
            raise ValueError("SRS needs at least one non-empty key")
        if not 4 <= hash_length <= 27:
            raise ValueError("hash_length must be between 4 and 27")
        self._keys = tuple(keys)
        self.max_age_days = max_age_days
        self.hash_length = hash_length

    def _hash(self, key: bytes, *parts: str) -> str:
        # libsrs2 srs_hash_create_v: HMAC-SHA1 over the lower-cased parts, base64, truncated.
        mac = hmac.new(key, b"".join(p.lower().encode("utf-8") for p in parts), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode("ascii")[: self.hash_length]

    def _check(self, given: str, *parts: str) -> bool:
        # libsrs2 srs_hash_check: any key, the first hash_length characters, and a case-smashed
        # hash is accepted too.
        if len(given) < self.hash_length:
            return False
        given = given[: self.hash_length].lower()
        return any(hmac.compare_digest(given, self._hash(k, *parts).lower()) for k in self._keys)

    def forward(self, sender: str, our_domain: str, now: float) -> str:
        """The address to use as envelope sender when forwarding mail from ``sender``.

        Raises ValueError for a sender without a domain.
        """
        if not sender:
            return sender  # the null sender (a bounce) stays null
        local, at, domain = sender.rpartition("@")
        if not at or not local or not domain:
            raise ValueError(f"cannot rewrite a sender without a domain: {sender!r}")
        if domain.lower() == our_domain.lower():
            return sender  # libsrs2 without alwaysrewrite: already ours
        key = self._keys[0]
        tag = local[:4].upper()
        if tag == "SRS1" and len(local) > 4 and local[4] in _SEPARATORS:
            # libsrs2 srs_compile_guarded: keep the first hop and its SRS0 part, re-sign.
            _, sep1, rest = local[5:].partition("=")
            hop, sep2, srs0_part = rest.partition("=")
            if sep1 and sep2 and hop and srs0_part:
                return f"SRS1={self._hash(key, hop, srs0_part)}={hop}={srs0_part}@{our_domain}"
        elif tag == "SRS0" and len(local) > 4 and local[4] in _SEPARATORS:
            # libsrs2 srs_compile_guarded: SRS1=HHHH=<hop>=<SRS0 local without "SRS0">.
            srs0_part = local[4:]
            return f"SRS1={self._hash(key, domain, srs0_part)}={domain}={srs0_part}@{our_domain}"
        stamp = _timestamp(now)
        return f"SRS0={self._hash(key, stamp, domain, local)}={stamp}={domain}={local}@{our_domain}"

    def reverse(self, address: str, now: float) -> str | SRSInvalid:
        """The original sender encoded in ``address``, or why it cannot be trusted."""
        local = address.rpartition("@")[0] if "@" in address else address
        if not is_srs(local):
            return SRSInvalid("not-srs", "not an SRS0/SRS1 address")
        body = local[5:]
        if local[:4].upper() == "SRS1":
            # libsrs2 srs_parse_guarded: SRS1=HHHH=hop=<SRS0 part>; returns SRS0<part>@hop.
            given, sep1, rest = body.partition("=")
            hop, sep2, srs0_part = rest.partition("=")
            if not (sep1 and sep2 and given and hop and srs0_part):
                return SRSInvalid("malformed", "SRS1 address needs hash, host and user parts")
            if not self._check(given, hop, srs0_part):
                return SRSInvalid("bad-hash", "SRS1 hash does not match")
            return f"SRS0{srs0_part}@{hop}"
        # libsrs2 srs_parse_shortcut: SRS0=HHHH=TT=domain=local
        given, sep1, rest = body.partition("=")
        stamp, sep2, rest = rest.partition("=")
        domain, sep3, orig_local = rest.partition("=")
        if not (sep1 and sep2 and sep3 and given and stamp and domain and orig_local):
            return SRSInvalid("malformed", "SRS0 address needs hash, timestamp, domain and user parts")
        expired = self._expired(stamp, now)
        if expired is not None:
            return expired
        if not self._check(given, stamp, domain, orig_local):
            return SRSInvalid("bad-hash", "SRS0 hash does not match")
        return f"{orig_local}@{domain}"

    def _expired(self, stamp: str, now: float) -> SRSInvalid | None:
        # libsrs2 srs_timestamp_check: base32 digits, case-insensitive; a stamp "in the future"
        # wraps around the 1024-day cycle and so looks very old.
        then = 0
        for ch in stamp:
            value = _TIME_CHARS.find(ch.upper())
            if value < 0:
                return SRSInvalid("malformed", f"bad timestamp character {ch!r}")
            then = (then << _TIME_BITS) | value
        if len(stamp) != 2:
            return SRSInvalid("malformed", "timestamp must be 2 characters")
        today = int(now // _DAY) % _TIME_SLOTS
        while today < then:
            today += _TIME_SLOTS
        if today > then + self.max_age_days:
            return SRSInvalid("expired", f"SRS address is {today - then} days old")
        return None
