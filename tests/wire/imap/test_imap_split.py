"""Split-frame tables: every input fed whole, byte by byte, and split at every offset gives the same
events and the same output (Stalwart's split tests; ARCHITECTURE.md habit 3)."""

from __future__ import annotations

from typing import Any

import pytest
from imap_dialog import byte_by_byte, run

from mailroom.wire.imap.states import State

A, SEL, N = State.AUTHENTICATED, State.SELECTED, State.NOT_AUTHENTICATED

# (state, config overrides, client bytes). STARTTLS is left out on purpose: what follows it in the
# same read is dropped by design (tls_started), so its outcome depends on the split.
INPUTS: list[tuple[State, dict[str, Any], bytes]] = [
    (N, {}, b"a1 LOGIN {4}\r\nfred {2}\r\npw\r\na2 NOOP\r\n"),
    (N, {}, b'a1 LOGIN {4+}\r\nfred "pw"\r\na2 CAPABILITY\r\n'),
    (N, {}, b"a1 AUTHENTICATE PLAIN\r\nAGZyZWQAcHc=\r\na2 NOOP\r\n"),
    (N, {}, b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 AUTHENTICATE PLAIN AGEAYg==\r\n\r\n"),
    (N, {}, b'a1 ID ("name" {3}\r\nabc)\r\na2 LOGOUT\r\n'),
    (A, {}, b"a1 APPEND INBOX (\\Seen) {5}\r\nhello\r\na2 NOOP\r\n"),
    (A, {}, b'a1 APPEND {5}\r\nINBOX {3+}\r\nabc (\\Draft) "01-Jan-2020 10:00:00 +0100" {2}\r\nxy\r\n'),
    (A, {}, b"a1 APPEND INBOX UTF8 (~{3}\r\na\x00c)\r\na2 NOOP\r\n"),
    (A, {"append_limit": 4}, b"a1 APPEND INBOX {5}\r\na2 APPEND INBOX {5+}\r\nhello\r\na3 NOOP\r\n"),
    (A, {}, b"a1 APPEND INBOX {3}\r\nabc junk {2+}\r\nxy\r\na2 NOOP\r\n"),
    (A, {}, b'a1 ENABLE UTF8=ACCEPT\r\na2 SELECT "caf\xc3\xa9"\r\na3 IDLE\r\nDONE\r\na4 IDLE\r\nnope\r\n'),
    (A, {}, b'a1 LIST (SUBSCRIBED) "" ("%" {1}\r\n*) RETURN (STATUS (MESSAGES))\r\n'),
    (
        SEL,
        {},
        b"a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From {2}\r\nTo)]<0.10>) (CHANGEDSINCE 5)\r\n",
    ),
    (
        SEL,
        {},
        b"a1 SEARCH CHARSET UTF-8 OR SUBJECT {2}\r\n\xc3\xa9 NOT SEEN\r\na2 UID SEARCH RETURN (MIN) UID 1:*\r\n",
    ),
    (
        SEL,
        {},
        b"a1 STORE 1:3 +FLAGS.SILENT (\\Seen)\r\na2 UID MOVE 1 {5}\r\nTrash\r\na3 CLOSE\r\na4 FETCH 1 FLAGS\r\n",
    ),
    (SEL, {}, b"a1 SEARCH ((((ALL)))\r\na2 FETCH 1 (FLAGS\r\n\r\n(((\r\n* BAD\r\na3 NOOP\r\n"),
    (N, {}, b"a1 XYZZY {11+}\r\na2 LOGOUT\r\n\r\na3 SELECT {3}\r\na4 NOOP\x00\r\n\xff\xfe\r\n"),
    (N, {"max_command_size": 40}, b"a1 NOOP " + b"x" * 100 + b"\r\na2 NOOP\r\n"),
    (N, {"max_command_size": 40}, b"a1 LOGIN " + b"y" * 90 + b" {11+}\r\na2 LOGOUT\r\n\r\na3 NOOP\r\n"),
    (N, {"max_command_size": 40}, b"a1 LOGIN {50}\r\na2 LOGIN {30+}\r\n" + b"z" * 30 + b" p\r\na3 NOOP\r\n"),
    (N, {"literal_plus": False}, b"a1 LOGIN {5000+}\r\n" + b"q" * 5000 + b" p\r\na2 NOOP\r\n"),
    (N, {}, b"a1 LOGIN {99999999999}\r\na2 NOOP\r\na3 LOGIN {99999999999+}\r\nabc\r\n"),
    (N, {"max_errors": 2}, b"x FOO\r\ny BAR\r\nz BAZ\r\nw NOOP\r\n"),
    (A, {}, b"a1 APPEND INBOX {10}\r\nabc"),
    (N, {}, b"a1 LOGIN {5}\r\nab"),
]


@pytest.mark.parametrize(
    ("state", "overrides", "data"), INPUTS, ids=[d[:30].decode("latin-1") for _, _, d in INPUTS]
)
def test_every_split_gives_the_same_result(state: State, overrides: dict[str, Any], data: bytes) -> None:
    whole = run([data], state=state, **overrides)
    assert run(byte_by_byte(data), state=state, **overrides) == whole
    for i in range(1, len(data)):
        assert run([data[:i], data[i:]], state=state, **overrides) == whole, i


@pytest.mark.parametrize(
    ("state", "overrides", "data"), INPUTS[:12], ids=[d[:30].decode("latin-1") for _, _, d in INPUTS[:12]]
)
def test_three_piece_splits(state: State, overrides: dict[str, Any], data: bytes) -> None:
    whole = run([data], state=state, **overrides)
    step = max(1, len(data) // 25)
    for i in range(1, len(data), step):
        for j in range(i + 1, len(data), step):
            assert run([data[:i], data[i:j], data[j:]], state=state, **overrides) == whole, (i, j)


def test_every_input_does_something() -> None:
    # guard against a table entry that silently produces nothing
    for state, overrides, data in INPUTS:
        events, out = run([data], state=state, **overrides)
        assert events and out, data
