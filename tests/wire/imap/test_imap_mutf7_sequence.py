"""Modified UTF-7 (RFC 3501 §5.1.3) and sequence sets (RFC 9051 §9)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailroom.wire.imap import mutf7
from mailroom.wire.imap.sequence import (
    SequenceSet,
    SequenceSetError,
    compress,
    compress_ranges,
    difference,
    intersection,
    merge_ranges,
    ranges_from_numbers,
    union,
)

# --- modified UTF-7 ---------------------------------------------------------------------------------

VECTORS = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("a&b", "a&-b"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
    ("Entwürfe", "Entw&APw-rfe"),
    ("été", "&AOk-t&AOk-"),
    ("😀", "&2D3eAA-"),  # a surrogate pair
    ("tab\there", "tab&AAk-here"),  # controls are encoded too
    ("é&", "&AOk-&-"),
]


@pytest.mark.parametrize(("text", "wire"), VECTORS)
def test_mutf7_vectors(text: str, wire: str) -> None:
    assert mutf7.encode(text) == wire
    assert mutf7.decode(wire) == text
    assert mutf7.decode(wire.encode("ascii")) == text


@pytest.mark.parametrize(
    "bad",
    [
        "&",  # unterminated
        "&AOk",  # no "-"
        "&AOk!-",  # not the alphabet
        "&AGE-",  # printable ASCII "a" hidden in base64
        "&AOk-&AOk-",  # adjacent runs: a null shift
        "&AOl-",  # non-zero padding bits
        "&AA-",  # odd number of UTF-16 octets
        "&2D0-",  # unpaired high surrogate
        "&3gA-",  # lone low surrogate
        "&A-",  # truncated
        "caf\xe9",  # 8-bit
        "a\x7fb",  # DEL
        "a\tb",  # control
        "&AOk/-",  # "/" is not modified BASE64
    ],
)
def test_mutf7_is_strict(bad: str) -> None:
    with pytest.raises(mutf7.MUTF7Error):
        mutf7.decode(bad)


@given(st.text())
def test_mutf7_round_trip(text: str) -> None:
    try:
        text.encode("utf-16-be")
    except UnicodeEncodeError:
        return  # lone surrogates in a Python str are not Unicode text
    wire = mutf7.encode(text)
    assert all(0x20 <= ord(ch) <= 0x7E for ch in wire)
    assert mutf7.decode(wire) == text


# --- sequence sets ----------------------------------------------------------------------------------


def test_parse_and_str() -> None:
    s = SequenceSet.parse("1:5,7,*,10:*,3:2")
    assert s.ranges == ((1, 5), (7, 7), (None, None), (10, None), (3, 2))
    assert str(s) == "1:5,7,*,10:*,3:2"
    assert SequenceSet.parse(b"$").saved
    assert str(SequenceSet.parse("$")) == "$"


@pytest.mark.parametrize(
    "bad", ["", "0", "1:0", "a", "1,,2", "1:", ":1", "1:2:3", "$,1", "4294967296", "01x", " 1"]
)
def test_parse_errors(bad: str) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(bad)


def test_star_and_saved_restrictions() -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse("1:*", allow_star=False)
    with pytest.raises(SequenceSetError):
        SequenceSet.parse("$", allow_saved=False)
    with pytest.raises(SequenceSetError):
        SequenceSet.parse("$").resolve(5)


def test_resolve() -> None:
    assert SequenceSet.parse("1:*").resolve(5) == ((1, 5),)
    assert SequenceSet.parse("10:*").resolve(5) == ((5, 10),)  # RFC 9051 §9: ranges are unordered
    assert SequenceSet.parse("10:*").clamp(5) == ((5, 5),)
    assert SequenceSet.parse("*").resolve(0) == ()  # "*" in an empty mailbox
    assert SequenceSet.parse("3,1:2,8:6,4").resolve(100) == ((1, 4), (6, 8))
    assert SequenceSet.parse("2,4:*").contains(7, 9)
    assert not SequenceSet.parse("2,4:6").contains(3, 9)
    assert list(SequenceSet.parse("5:3,*").numbers(9)) == [3, 4, 5, 9]
    assert SequenceSet.parse("1:*").has_star and not SequenceSet.parse("1:2").has_star


def test_compress() -> None:
    assert compress([1, 2, 3, 4, 5, 7]) == "1:5,7"
    assert compress([7, 5, 3, 4, 1, 2, 2]) == "1:5,7"
    assert compress([]) == ""
    assert compress([5, 6, 1, 2], sort=False) == "5:6,1:2"  # COPYUID keeps order
    assert compress_ranges([(7, 7), (1, 3), (4, 5)]) == "1:5,7"
    assert str(SequenceSet.from_numbers([3, 1, 2, 9])) == "1:3,9"
    assert str(SequenceSet.from_ranges([(1, 3), (9, 9)])) == "1:3,9"


def test_algebra() -> None:
    a = ((1, 10), (20, 30))
    b = ((5, 25),)
    assert union(a, b) == ((1, 30),)
    assert intersection(a, b) == ((5, 10), (20, 25))
    assert difference(a, b) == ((1, 4), (26, 30))
    assert difference(b, a) == ((11, 19),)
    assert merge_ranges([(5, 1), (6, 6), (9, 8)]) == ((1, 6), (8, 9))


_nums = st.sets(st.integers(1, 60), max_size=40)


@given(_nums, _nums)
def test_algebra_matches_python_sets(x: set[int], y: set[int]) -> None:
    a, b = ranges_from_numbers(x), ranges_from_numbers(y)

    def flat(r: tuple[tuple[int, int], ...]) -> set[int]:
        return {n for lo, hi in r for n in range(lo, hi + 1)}

    assert flat(a) == x
    assert flat(union(a, b)) == x | y
    assert flat(intersection(a, b)) == x & y
    assert flat(difference(a, b)) == x - y
    assert set(SequenceSet.parse(compress(x) or "1").numbers(60)) == (x or {1})


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(1, 50)), st.one_of(st.none(), st.integers(1, 50))),
        min_size=1,
    ),
    st.integers(0, 60),
)
def test_resolve_matches_a_model(ranges: list[tuple[int | None, int | None]], largest: int) -> None:
    s = SequenceSet.parse(
        ",".join(("*" if a is None else str(a)) + ":" + ("*" if b is None else str(b)) for a, b in ranges)
    )
    want: set[int] = set()
    for a, b in ranges:
        lo, hi = (largest if a is None else a), (largest if b is None else b)
        lo, hi = min(lo, hi), max(lo, hi)
        want |= set(range(max(lo, 1), hi + 1))
    assert set(s.numbers(largest)) == want
