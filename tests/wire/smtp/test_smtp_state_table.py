"""Walk every (state, command) pair of the state table, plus the non-command states."""

from __future__ import annotations

import pytest
from smtp_dialog import b64, config, new_session

from mailroom.wire.smtp.events import NEED_DATA, PAUSED, AuthResponse, BodyChunk, ConnectionClosed
from mailroom.wire.smtp.state import COMMAND_STATES, SEQUENCE, VERBS, State

CFG = config(starttls_available=True, auth_mechanisms=("PLAIN",), auth_requires_tls=False)

PREFIX = {
    State.INITIAL: b"",
    State.READY: b"EHLO c\r\n",
    State.MAIL: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n",
    State.RCPT: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
    State.CHUNKING: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 2\r\nab",
}

SAMPLE = {
    "EHLO": "EHLO x",
    "HELO": "HELO x",
    "MAIL": "MAIL FROM:<m@b.example>",
    "RCPT": "RCPT TO:<x@y.example>",
    "DATA": "DATA",
    "BDAT": "BDAT 0",
    "RSET": "RSET",
    "NOOP": "NOOP",
    "HELP": "HELP",
    "VRFY": "VRFY x",
    "EXPN": "EXPN x",
    "QUIT": "QUIT",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH PLAIN " + b64(b"\0user\0secret"),
}

IN, RD, M, RC, C, D, T, X = (
    State.INITIAL,
    State.READY,
    State.MAIL,
    State.RCPT,
    State.CHUNKING,
    State.DATA,
    State.TLS,
    State.CLOSED,
)
NEED_HELLO = "503 5.5.1 Send EHLO or HELO first"
NEED_MAIL = "503 5.5.1 Need MAIL command first"
NESTED = "503 5.5.1 Nested MAIL command"
NOT_BDAT = "503 5.5.1 Command not allowed during BDAT transfer"
IN_TX = "503 5.5.1 Not allowed during a mail transaction"

# verb: per state (INITIAL, READY, MAIL, RCPT, CHUNKING): (start of the first reply line, next state)
EXPECTED: dict[str, tuple[tuple[str, State], ...]] = {
    "EHLO": (("250-mx", RD), ("250-mx", RD), ("250-mx", RD), ("250-mx", RD), ("250-mx", RD)),
    "HELO": (("250 mx", RD), ("250 mx", RD), ("250 mx", RD), ("250 mx", RD), ("250 mx", RD)),
    "MAIL": ((NEED_HELLO, IN), ("250 2.1.0", M), (NESTED, M), (NESTED, RC), (NESTED, C)),
    "RCPT": ((NEED_HELLO, IN), (NEED_MAIL, RD), ("250 2.1.5", RC), ("250 2.1.5", RC), (NOT_BDAT, C)),
    "DATA": (
        (NEED_HELLO, IN),
        (NEED_MAIL, RD),
        ("554 5.5.1 No valid recipients", M),
        ("354 ", D),
        (NOT_BDAT, C),
    ),
    "BDAT": (
        (NEED_HELLO, IN),
        (NEED_MAIL, RD),
        ("503 5.5.1 No valid recipients", M),
        ("250 2.0.0 0 octets", C),
        ("250 2.0.0 0 octets", C),
    ),
    "RSET": (("250 2.0.0", IN), ("250 2.0.0", RD), ("250 2.0.0", RD), ("250 2.0.0", RD), ("250 2.0.0", RD)),
    "NOOP": (("250 2.0.0", IN), ("250 2.0.0", RD), ("250 2.0.0", M), ("250 2.0.0", RC), ("250 2.0.0", C)),
    "HELP": (("214 2.0.0", IN), ("214 2.0.0", RD), ("214 2.0.0", M), ("214 2.0.0", RC), ("214 2.0.0", C)),
    "VRFY": (("252 2.5.0", IN), ("252 2.5.0", RD), ("252 2.5.0", M), ("252 2.5.0", RC), ("252 2.5.0", C)),
    "EXPN": (("502 5.5.1", IN), ("502 5.5.1", RD), ("502 5.5.1", M), ("502 5.5.1", RC), ("502 5.5.1", C)),
    "QUIT": (("221 2.0.0", X), ("221 2.0.0", X), ("221 2.0.0", X), ("221 2.0.0", X), ("221 2.0.0", X)),
    "STARTTLS": ((NEED_HELLO, IN), ("220 2.0.0", T), (IN_TX, M), (IN_TX, RC), (IN_TX, C)),
    "AUTH": ((NEED_HELLO, IN), ("235 2.7.0", RD), (IN_TX, M), (IN_TX, RC), (IN_TX, C)),
}


def test_expectations_cover_the_table() -> None:
    assert set(EXPECTED) == set(VERBS)
    assert len(SEQUENCE) == len(COMMAND_STATES) * len(VERBS)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("state", COMMAND_STATES, ids=lambda s: s.value)
def test_state_command_pair(state: State, verb: str) -> None:
    sess = new_session(CFG)
    eng = sess.engine
    if PREFIX[state]:  # b"" would mean EOF
        eng.receive_data(PREFIX[state])
    sess.pump()
    assert eng.state is state
    eng.data_to_send()
    eng.receive_data(SAMPLE[verb].encode() + b"\r\n")
    sess.pump()
    reply_start, next_state = EXPECTED[verb][COMMAND_STATES.index(state)]
    assert eng.data_to_send().decode().startswith(reply_start)
    assert eng.state is next_state
    # The engine's own table agrees on which pairs are sequence errors.
    assert (SEQUENCE[(state, verb)] is None) == (not reply_start.startswith(("503", "554")))


def test_lines_in_data_state_are_body() -> None:
    sess = new_session(CFG)
    sess.engine.receive_data(PREFIX[State.RCPT] + b"DATA\r\nQUIT\r\nRSET\r\n")
    sess.pump()
    assert sess.engine.state is State.DATA
    assert [e for e in sess.events if isinstance(e, BodyChunk)] == [BodyChunk(b"QUIT\r\nRSET\r\n")]


def test_octets_in_bdat_state_are_body() -> None:
    sess = new_session(CFG)
    sess.engine.receive_data(PREFIX[State.RCPT] + b"BDAT 100\r\nQUIT\r\n")
    sess.pump()
    assert sess.engine.state is State.BDAT
    assert BodyChunk(b"QUIT\r\n") in sess.events


def test_line_in_auth_state_is_a_response() -> None:
    eng = new_session(CFG).engine
    eng.receive_data(b"EHLO c\r\nAUTH PLAIN\r\nQUIT\r\n")
    eng.next_event()
    eng.accept()
    eng.next_event()
    eng.auth_challenge(b"")
    assert eng.state is State.AUTH
    assert eng.next_event() == AuthResponse(b"AB\x13")  # "QUIT" decoded, not a command
    assert not eng.closed


def test_nothing_is_processed_while_tls_pending() -> None:
    eng = new_session(CFG).engine
    eng.receive_data(b"EHLO c\r\nSTARTTLS\r\nQUIT\r\n")
    eng.next_event()
    eng.accept()
    eng.next_event()
    eng.accept()
    assert eng.state is State.TLS
    assert eng.next_event() is PAUSED
    eng.tls_started()
    assert eng.state is State.INITIAL
    assert eng.next_event() is NEED_DATA  # the pipelined QUIT was discarded


def test_closed_state_ignores_input() -> None:
    eng = new_session(CFG).engine
    eng.receive_data(b"QUIT\r\n")
    eng.next_event()
    eng.data_to_send()
    eng.receive_data(b"NOOP\r\n")
    assert isinstance(eng.next_event(), ConnectionClosed)
    assert isinstance(eng.next_event(), ConnectionClosed)
    assert eng.data_to_send() == b""
