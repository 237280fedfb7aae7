"""Sequence sets and UID sets: parsing, "*" resolution, set algebra and compact output.

RFC 9051 §9 (RFC 3501 §9 without "$"):

    sequence-set     = (seq-number / seq-range) ["," sequence-set]
                       ; set of seq-number values, regardless of order.
                       ; Servers MAY coalesce overlaps and/or execute the
                       ; sequence in any order.
    sequence-set     =/ seq-last-command
                       ; Allow for "result of the last command" indicator.
    seq-last-command = "$"
    seq-range        = seq-number ":" seq-number
                       ; two seq-number values and all values between
                       ; these two regardless of order.
    seq-number       = nz-number / "*"
                       ; message sequence number (COPY, FETCH, STORE
                       ; commands) or unique identifier (UID COPY,
                       ; UID FETCH, UID STORE commands).
                       ; * represents the largest number in use.
    nz-number        = digit-nz *DIGIT
                       ; Non-zero unsigned 32-bit integer
                       ; (0 < n < 4,294,967,296)

"$" is the SEARCHRES saved result (RFC 5182). Ranges are kept as written, with ``None`` for "*";
:meth:`SequenceSet.resolve` turns them into sorted, merged, inclusive integer ranges once the
caller knows the largest number in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_NZ_NUMBER",
    "Ranges",
    "SequenceSet",
    "SequenceSetError",
    "compress",
    "compress_ranges",
    "difference",
    "intersection",
    "merge_ranges",
    "ranges_from_numbers",
    "union",
]

MAX_NZ_NUMBER = 4_294_967_295  # RFC 9051 §9: nz-number is a non-zero unsigned 32-bit integer

Ranges = tuple[tuple[int, int], ...]
"""Sorted, disjoint, non-adjacent inclusive ranges: ``((1, 5), (7, 7))``."""

_SEQ_NUMBER = re.compile(rb"\*|[1-9][0-9]*")


class SequenceSetError(ValueError):
    """Text that is not a sequence-set."""


def _number(token: bytes) -> int | None:
    if token == b"*":
        return None
    if not _SEQ_NUMBER.fullmatch(token) or len(token) > 10:
        raise SequenceSetError(f"invalid seq-number {token!r}")
    value = int(token)
    if value > MAX_NZ_NUMBER:
        raise SequenceSetError(f"seq-number {value} out of range")
    return value


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence-set. ``ranges`` keeps the client's order; ``None`` stands for "*"."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False  # "$": the saved search result (RFC 5182 / RFC 9051 §6.4.4)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | bytes, *, allow_star: bool = True, allow_saved: bool = True) -> SequenceSet:
        """Parse the ABNF above. ``allow_star=False`` for known-uids (RFC 7162)."""
        data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        if data == b"$":
            if not allow_saved:
                raise SequenceSetError('"$" is not allowed here')
            return cls((), saved=True)
        if not data:
            raise SequenceSetError("empty sequence-set")
        if data.isdigit() and len(data) <= 10 and data[:1] != b"0":  # one number: the common case
            value = int(data)
            if value > MAX_NZ_NUMBER:
                raise SequenceSetError(f"seq-number {value} out of range")
            return cls(((value, value),))
        out: list[tuple[int | None, int | None]] = []
        for item in data.split(b","):
            lo_text, colon, hi_text = item.partition(b":")
            lo = _number(lo_text)
            hi = _number(hi_text) if colon else lo
            if not allow_star and (lo is None or hi is None):
                raise SequenceSetError('"*" is not allowed here')
            out.append((lo, hi))
        return cls(tuple(out))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int], *, sort: bool = True) -> SequenceSet:
        """Compact ascending runs: ``[1, 2, 3, 5]`` -> ``1:3,5`` (``sort=False`` keeps order)."""
        runs = _runs(numbers, sort=sort)
        return cls(tuple((a, b) for a, b in runs))

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> SequenceSet:
        return cls(tuple((a, b) for a, b in ranges))

    # --- use ------------------------------------------------------------------------------------

    def resolve(self, largest: int) -> Ranges:
        """Sorted, merged ranges with "*" replaced by ``largest`` (RFC 9051 §9: a range is
        unordered, so ``10:*`` with largest 5 means ``5:10``). Ranges entirely above ``largest``
        remain (a UID that no longer exists simply matches nothing); use :meth:`clamp` to drop them.
        The saved result "$" cannot be resolved here: the session substitutes its own set.
        """
        if self.saved:
            raise SequenceSetError('"$" must be replaced by the saved search result')
        if len(self.ranges) == 1:  # one range needs no sorting or merging
            lo, hi = self.ranges[0]
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            return ((max(a, 1), b),) if b >= 1 else ()
        spans: list[tuple[int, int]] = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            if b < 1:
                continue  # "*" in an empty mailbox
            spans.append((max(a, 1), b))
        return merge_ranges(spans)

    def clamp(self, largest: int) -> Ranges:
        """Like :meth:`resolve`, limited to ``1..largest`` (message sequence numbers)."""
        return intersection(self.resolve(largest), ((1, largest),) if largest >= 1 else ())

    def contains(self, number: int, largest: int) -> bool:
        return any(a <= number <= b for a, b in self.resolve(largest))

    def numbers(self, largest: int) -> Iterator[int]:
        for a, b in self.resolve(largest):
            yield from range(a, b + 1)

    @property
    def has_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.ranges)

    def to_bytes(self) -> bytes:
        return str(self).encode("ascii")

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for lo, hi in self.ranges:
            a = "*" if lo is None else str(lo)
            b = "*" if hi is None else str(hi)
            parts.append(a if lo == hi else f"{a}:{b}")
        return ",".join(parts)


# --- range algebra (UID sets) ---------------------------------------------------------------------


def merge_ranges(spans: Iterable[tuple[int, int]]) -> Ranges:
    """Sort and coalesce overlapping or adjacent inclusive ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((min(x, y), max(x, y)) for x, y in spans):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def ranges_from_numbers(numbers: Iterable[int]) -> Ranges:
    return merge_ranges((n, n) for n in numbers)


def union(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> Ranges:
    return merge_ranges([*a, *b])


def intersection(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> Ranges:
    a, b = merge_ranges(a), merge_ranges(b)
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def difference(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> Ranges:
    """Numbers in ``a`` and not in ``b``."""
    out: list[tuple[int, int]] = []
    b = merge_ranges(b)
    for lo, hi in merge_ranges(a):
        cur = lo
        for blo, bhi in b:
            if bhi < cur or blo > hi:
                continue
            if blo > cur:
                out.append((cur, blo - 1))
            cur = bhi + 1
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _runs(numbers: Iterable[int], *, sort: bool) -> list[tuple[int, int]]:
    if sort:
        return list(ranges_from_numbers(numbers))
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def compress(numbers: Iterable[int], *, sort: bool = True) -> str:
    """Wire form of a set of numbers: ``[1, 2, 3, 4, 5, 7]`` -> ``"1:5,7"``.

    ``sort=False`` keeps the given order and only joins ascending runs, as COPYUID needs
    (RFC 4315: the source and destination UID sets pair up in order).
    """
    return compress_ranges(_runs(numbers, sort=sort), sort=False)


def compress_ranges(ranges: Iterable[tuple[int, int]], *, sort: bool = True) -> str:
    """Wire form of inclusive ranges: ``((1, 5), (7, 7))`` -> ``"1:5,7"``."""
    runs = merge_ranges(ranges) if sort else tuple(ranges)
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)
