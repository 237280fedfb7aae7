"""Property tests: random input only ever yields events and well-formed OK/NO/BAD/BYE/"+" lines,
and the outcome never depends on how the bytes were split."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imap_dialog import run
from test_imap_parser import CASES

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.events import (
    AppendAborted,
    AppendBegin,
    AppendChunk,
    AppendEnd,
    AuthAborted,
    AuthResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ProtocolViolation,
)
from mailroom.wire.imap.parser import ParseError, parse_command
from mailroom.wire.imap.states import State

RESPONSE_LINE = re.compile(rb"(\* (OK|NO|BAD|BYE|PREAUTH) |\+ |[!#-'+-~]+ (OK|NO|BAD) )[^\r\n]*")
EVENT_TYPES = (
    c.Command,
    AppendBegin,
    AppendChunk,
    AppendEnd,
    AppendAborted,
    IdleDone,
    AuthResponse,
    AuthAborted,
    ProtocolViolation,
    ConnectionClosed,
)

TOKENS = [
    b"a1 ",
    b"b2 ",
    b"NOOP",
    b"LOGIN ",
    b"APPEND ",
    b"INBOX ",
    b"{3}\r\n",
    b"{2+}\r\n",
    b"{0}\r\n",
    b"~{1}\r\n",
    b"{99999999999+}\r\n",
    b"{99999999999}\r\n",
    b"(",
    b")",
    b"\r\n",
    b"\n",
    b" ",
    b'"',
    b"abc",
    b"*",
    b"DONE",
    b"IDLE",
    b"AUTHENTICATE PLAIN",
    b"SELECT ",
    b"FETCH 1 BODY[]",
    b"UID ",
    b"SEARCH ",
    b"NOT ",
    b"\\Seen",
    b"\x00",
    b"\xff",
    b"UTF8 (",
    b"ENABLE UTF8=ACCEPT",
    b"=",
    b"LOGOUT",
    b"CLOSE",
    b"STORE 1 +FLAGS ",
]

VERBS = [b"NOOP", b"LOGIN", b"APPEND", b"SELECT", b"FETCH", b"SEARCH", b"IDLE", b"AUTHENTICATE", b"UID FETCH"]
VERBS += [b"STORE", b"LIST", b"ENABLE", b"LOGOUT", b"CLOSE", b"ID", b"STATUS", b"UID EXPUNGE", b"XYZZY"]
ARGS = [b" INBOX", b" {3}\r\nabc", b" {2+}\r\nxy", b" ~{1}\r\n\x00", b" (\\Seen)", b" 1:*", b" ALL"]
ARGS += [b" BODY[]", b" (FLAGS)", b' "q"', b" {99999999999+}\r\n", b" {5}\r\n", b" PLAIN", b"\r\nDONE"]
ARGS += [
    b"\r\n*",
    b"\r\nAGEAYg==",
    b" UTF8 (~{1}\r\nz)",
    b' "" *',
    b" (MESSAGES)",
    b" NIL",
    b" u p",
    b" +FLAGS",
]
commandish = st.tuples(
    st.sampled_from([b"a1 ", b"b2 ", b"", b"+ "]),
    st.sampled_from(VERBS),
    st.lists(st.sampled_from(ARGS), max_size=5),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
).map(lambda t: t[0] + t[1] + b"".join(t[2]) + t[3])
VALID = [wire + b"\r\n" for wire, _ in CASES]
dialog = st.lists(st.one_of(commandish, st.sampled_from(VALID)), max_size=8).map(b"".join)
soup = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join), dialog)
noise = st.binary(max_size=300)
states = st.sampled_from([State.NOT_AUTHENTICATED, State.SELECTED])
SMALL: dict[str, Any] = {"max_command_size": 64, "append_limit": 8, "max_literals": 3, "max_discard": 100}


def check(events: list[Event], out: bytes) -> None:
    for event in events:
        assert isinstance(event, EVENT_TYPES), event
    assert out == b"" or out.endswith(b"\r\n")
    for line in out.split(b"\r\n")[:-1]:
        assert RESPONSE_LINE.fullmatch(line), line


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(noise, states)
def test_random_bytes(data: bytes, state: State) -> None:
    check(*run([data], state=state))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(soup, states, st.booleans())
def test_token_soup(data: bytes, state: State, small: bool) -> None:
    overrides: dict[str, Any] = SMALL if small else {}
    check(*run([data], state=state, **overrides))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(soup, noise), states, st.lists(st.integers(0, 400), max_size=4), st.booleans())
def test_splits_never_change_the_outcome(data: bytes, state: State, cuts: list[int], small: bool) -> None:
    overrides: dict[str, Any] = SMALL if small else {}
    points = sorted({min(x, len(data)) for x in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    pieces = [p for p in pieces if p]  # b"" would be EOF
    assert run(pieces, state=state, **overrides) == run([data], state=state, **overrides)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_parser_only_raises_parse_error(data: bytes) -> None:
    try:
        parse_command(b"a1 " + data + b"\r\n")
    except ParseError:
        pass


@settings(max_examples=300)
@given(soup)
def test_parser_on_token_soup(data: bytes) -> None:
    for utf8 in (False, True):
        try:
            parse_command(data + b"\r\n", utf8=utf8)
        except ParseError:
            pass
