"""parse_command answers FETCH from a cache of item lists (a sync client sends thousands of
FETCH commands that differ only in their tag and sequence set): the answer, or the error, must
be exactly what the full parser gives, for any command."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.wire.imap import parser

ITEMS = [
    b"(BODY.PEEK[])",
    b"(UID FLAGS)",
    b"(FLAGS)",
    b"FLAGS",
    b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM Subject)])",
    b"ALL",
    b"fast",
    b"(BINARY.PEEK[1]<0.100> BINARY.SIZE[2])",
    b"(FLAGS) (CHANGEDSINCE 12)",
    b"(FLAGS) (CHANGEDSINCE 12 VANISHED)",
    b"(BODY[HEADER.FIELDS {7}\r\nSubject])",
    b"(FLAGS",
    b"(FLAGS))",
    b"(NOPE)",
    b"",
    b"(BODY.PEEK[1.MIME] BODY[TEXT]<5.10>)",
]
SEQUENCES = [b"1", b"5000", b"1:*", b"*", b"1,3:5,9:*", b"$", b"0", b"4294967296", b"1:", b"a"]
TAGS = [b"a1", b"x", b"A.B-3", b"+bad", b"t"]


def both(data: bytes, utf8: bool) -> tuple[str, object]:
    """(outcome, value) of the cached path and of the full parser on its own."""

    def run(fn: object) -> tuple[str, object]:
        try:
            return "ok", fn()  # type: ignore[operator]
        except parser.ParseError as exc:
            return "error", (exc.status, exc.message, exc.code)

    cached = run(lambda: parser.parse_command(data, utf8=utf8))

    def full() -> object:
        try:
            return parser._Parser(data, utf8=utf8).command()
        except parser.Incomplete:
            raise parser.ParseError("Literal data missing") from None

    assert cached == run(full), data
    return cached


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(TAGS),
    st.sampled_from([b"FETCH", b"UID FETCH", b"fetch", b"Uid Fetch", b"UID  FETCH"]),
    st.sampled_from(SEQUENCES),
    st.sampled_from(ITEMS),
    st.booleans(),
)
def test_cached_fetch_parse_is_the_full_parse(
    tag: bytes, name: bytes, seq: bytes, items: bytes, utf8: bool
) -> None:
    both(tag + b" " + name + b" " + seq + b" " + items + b"\r\n", utf8)


@pytest.mark.parametrize(
    "data",
    [
        b"a UID FETCH 7 (BODY.PEEK[])\r\n",
        b"b UID FETCH 8 (BODY.PEEK[])\r\n",  # the same items, from the cache
        b"c FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n",
        b"d FETCH 1 FLAGS extra\r\n",
        b"e FETCH 1 FLAGSxx",  # no CRLF (the receiver never hands over such a command)
    ],
)
def test_examples(data: bytes) -> None:
    outcome, value = both(data, False)
    if data.startswith((b"a ", b"b ")):
        assert outcome == "ok" and value.uid and value.tag == data[:1].decode()  # type: ignore[attr-defined]
