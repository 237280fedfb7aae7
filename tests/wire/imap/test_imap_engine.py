"""Engine behaviour: literals, limits, APPEND streaming, IDLE, AUTHENTICATE, STARTTLS, errors."""

from __future__ import annotations

import pytest
from imap_dialog import Session, byte_by_byte, commands, config, engine_in, run

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.imap import commands as c
from mailroom.wire.imap.engine import DEFAULT_EXTENSIONS, IMAPServerConfig, IMAPServerEngine
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
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
from mailroom.wire.imap.responses import (
    Continuation,
    Exists,
    FetchResponse,
    ListResponse,
    StreamedLiteral,
    Tagged,
)
from mailroom.wire.imap.sequence import SequenceSet
from mailroom.wire.imap.states import State

A, SEL = State.AUTHENTICATED, State.SELECTED


def drain(engine: IMAPServerEngine) -> list[Event]:
    out: list[Event] = []
    while (ev := engine.next_event()) is not NEED_DATA and ev is not PAUSED:
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return out


def answers(events: list[Event]) -> list[bytes]:
    return [e.response for e in events if isinstance(e, ProtocolViolation)]


# --- greeting and capabilities ----------------------------------------------------------------------


def test_greeting_and_capabilities_follow_tls_and_state() -> None:
    e = IMAPServerEngine(
        IMAPServerConfig(
            tls_active=False, starttls_available=True, auth_mechanisms=("PLAIN", "scram-sha-256")
        )
    )
    e.greeting("hi")
    out = e.data_to_send()
    assert out.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 STARTTLS LOGINDISABLED LITERAL+ ")
    assert out.endswith(b" APPENDLIMIT=52428800] hi\r\n")
    assert b"AUTH=" not in out
    tls = IMAPServerEngine(IMAPServerConfig(tls_active=True))
    caps = tls.capabilities()
    assert "AUTH=PLAIN" in caps and "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    tls.logged_in()
    after = tls.capabilities()
    assert not any(x.startswith("AUTH=") for x in after)
    assert set(DEFAULT_EXTENSIONS) <= set(after)
    minus = IMAPServerEngine(IMAPServerConfig(literal_plus=False, extensions=("IDLE",)))
    minus.append_limit = 1000
    assert minus.capabilities()[-3:] == ("LITERAL-", "IDLE", "APPENDLIMIT=1000")


def test_preauth_greeting() -> None:
    e = IMAPServerEngine(config())
    e.greeting(preauth=True)
    assert e.data_to_send().startswith(b"* PREAUTH [CAPABILITY IMAP4rev1 ")
    assert e.state is State.AUTHENTICATED


# --- literals ---------------------------------------------------------------------------------------


def test_synchronizing_literal_gets_one_continuation_only_when_announced() -> None:
    e = engine_in(State.NOT_AUTHENTICATED)
    e.receive_data(b"a1 LOGIN {4}")
    assert drain(e) == [] and e.data_to_send() == b""
    e.receive_data(b"\r\n")
    assert drain(e) == []
    assert e.data_to_send() == b"+ Ready for literal data\r\n"
    e.receive_data(b"fr")
    assert drain(e) == [] and e.data_to_send() == b""
    e.receive_data(b"ed {2}\r\n")
    drain(e)
    assert e.data_to_send() == b"+ Ready for literal data\r\n"
    e.receive_data(b"pw\r\n")
    assert drain(e) == [c.Login("a1", "fred", "pw")]


def test_non_synchronizing_literal_has_no_continuation() -> None:
    events, out = run([b"a1 LOGIN {4+}\r\nfred {2+}\r\npw\r\n"])
    assert commands(events) == [c.Login("a1", "fred", "pw")]
    assert out == b"a1 OK LOGIN completed\r\n"


def test_literal_minus_rejects_big_non_sync_literal_and_stays_in_step() -> None:
    data = b"a1 LOGIN {5000+}\r\n" + b"x" * 5000 + b" pw\r\na2 NOOP\r\n"
    events, out = run([data], literal_plus=False)
    assert out == b"a1 BAD [TOOBIG] Non-synchronizing literal over 4096 octets\r\na2 OK NOOP completed\r\n"
    assert commands(events) == [c.Noop("a2")]
    events, out = run([b"a1 LOGIN {4096+}\r\n" + b"u" * 4096 + b" pw\r\n"], literal_plus=False)
    assert commands(events) == [c.Login("a1", "u" * 4096, "pw")]


def test_command_size_limit_on_sync_literal_answers_without_continuation() -> None:
    _events, out = run([b"a1 LOGIN {100000}\r\n", b"a2 NOOP\r\n"], max_command_size=65536)
    assert out == b"a1 BAD [TOOBIG] Command too long\r\na2 OK NOOP completed\r\n"


def test_command_size_limit_on_non_sync_literal_discards_it() -> None:
    data = b"a1 LOGIN {70000+}\r\n" + (b"a9 LOGOUT\r\n" * 7000)[:70000] + b" pw\r\na2 NOOP\r\n"
    events, out = run([data], max_command_size=65536)
    assert out == b"a1 BAD [TOOBIG] Command too long\r\na2 OK NOOP completed\r\n"
    assert commands(events) == [c.Noop("a2")]


@pytest.mark.parametrize("size", [b"99999999999", b"123456789012345678901234567890"])
def test_absurd_sync_literal_is_bad_and_the_next_command_parses(size: bytes) -> None:
    _events, out = run([b"a1 LOGIN {" + size + b"}\r\na2 NOOP\r\n"])
    assert out == b"a1 BAD [TOOBIG] Command too long\r\na2 OK NOOP completed\r\n"


def test_absurd_non_sync_literal_closes_the_connection() -> None:
    events, out = run([b"a1 LOGIN {99999999999+}\r\nabc"])
    assert out == b"a1 BAD [TOOBIG] Command too long\r\n* BYE Literal too large to skip\r\n"
    assert isinstance(events[-1], ConnectionClosed)


def test_too_many_literals() -> None:
    data = b"a1 ID (" + b"{1+}\r\na NIL " * 3 + b")\r\na2 NOOP\r\n"
    _events, out = run([data], max_literals=2)
    assert out == b"a1 BAD [LIMIT] Too many literals\r\na2 OK NOOP completed\r\n"


def test_syntax_error_inside_a_line_with_literals_consumes_them() -> None:
    data = b"a1 LOGIN (bad {3}\r\nabc\r\na2 FETCH x {11+}\r\na3 LOGOUT\r\n FLAGS\r\na4 NOOP\r\n"
    events, out = run([data])
    assert out == (
        b"+ Ready for literal data\r\na1 BAD Expected a string\r\na2 BAD FETCH is not valid in the "
        b"not authenticated state\r\na4 OK NOOP completed\r\n"
    )
    assert commands(events) == [c.Noop("a4")]


def test_unknown_command_with_literal_does_not_inject() -> None:
    events, out = run([b"a1 XYZZY {11+}\r\na2 LOGOUT\r\n\r\na3 NOOP\r\n"])
    assert out == b"a1 BAD Unknown command\r\na3 OK NOOP completed\r\n"
    assert commands(events) == [c.Noop("a3")]


def test_command_in_wrong_state_with_sync_literal_is_refused_before_the_continuation() -> None:
    _events, out = run([b"a1 SELECT {5}\r\n", b"a2 NOOP\r\n"])
    assert out == b"a1 BAD SELECT is not valid in the not authenticated state\r\na2 OK NOOP completed\r\n"


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"(((\r\n", b"* BAD Invalid tag\r\n"),
        (b"+x NOOP\r\n", b"* BAD Invalid tag\r\n"),
        (b" NOOP\r\n", b"* BAD Invalid tag\r\n"),
        (b"a1\r\n", b"a1 BAD Missing command\r\n"),
        (b"a1 \r\n", b"a1 BAD Missing command\r\n"),
        (b"a1 NOOP\x00\r\n", b"a1 BAD Unexpected characters at end of command\r\n"),
        (b"a1 LOGIN \xff\xfe x\r\n", b"a1 BAD Expected a string\r\n"),
        (b"a1 FETCH 1 (FLAGS\r\n", b"a1 BAD FETCH is not valid in the not authenticated state\r\n"),
        (b"\xff\r\n", b"* BAD Invalid tag\r\n"),
    ],
)
def test_bad_lines_then_the_next_command_parses(line: bytes, answer: bytes) -> None:
    events, out = run([line + b"a2 NOOP\r\n"], login_requires_tls=False)
    assert out == answer + b"a2 OK NOOP completed\r\n"
    assert commands(events) == [c.Noop("a2")]


def test_empty_lines_are_ignored() -> None:
    _events, out = run([b"\r\n\n\r\na1 NOOP\r\n"])
    assert out == b"a1 OK NOOP completed\r\n"


def test_bare_lf_is_accepted() -> None:
    events, _out = run([b"a1 LOGIN {4}\nfred pw\na2 NOOP\n"])
    assert commands(events) == [c.Login("a1", "fred", "pw"), c.Noop("a2")]


def test_overlong_line_is_bad_and_resyncs() -> None:
    data = b"a1 NOOP " + b"x" * 200_000 + b"\r\na2 NOOP\r\n"
    for pieces in ([data], [data[i : i + 1000] for i in range(0, len(data), 1000)]):
        _events, out = run(pieces, max_command_size=65536)
        assert out == b"a1 BAD [TOOBIG] Command line too long\r\na2 OK NOOP completed\r\n"


def test_overlong_line_with_non_sync_literal_still_skips_the_literal() -> None:
    data = b"a1 SEARCH " + b"1," * 50_000 + b"1 SUBJECT {11+}\r\na2 LOGOUT\r\n\r\na3 NOOP\r\n"
    for pieces in ([data], [data[i : i + 4096] for i in range(0, len(data), 4096)]):
        events, out = run(pieces, state=SEL, max_command_size=65536)
        assert out == b"a1 BAD [TOOBIG] Command line too long\r\na3 OK NOOP completed\r\n"
        assert commands(events) == [c.Noop("a3")]


def test_overlong_line_with_sync_literal_answers_at_once() -> None:
    data = b"a1 SEARCH " + b"1," * 50_000 + b"1 SUBJECT {11}\r\n"
    _events, out = run([data, b"a3 NOOP\r\n"], state=SEL, max_command_size=65536)
    assert out == b"a1 BAD [TOOBIG] Command line too long\r\na3 OK NOOP completed\r\n"


def test_too_many_errors_closes() -> None:
    events, out = run([b"x FOO\r\n" * 30], max_errors=3)
    assert out == b"x BAD Unknown command\r\n" * 4 + b"* BYE Too many invalid commands\r\n"
    assert events[-1] == ConnectionClosed("Too many invalid commands")


def test_eof() -> None:
    events, _ = run([b"a1 NOOP\r\n"])
    assert events[-1] == ConnectionClosed("EOF")
    events, _ = run([b"a1 NOO"])
    assert events[-1] == ConnectionClosed("EOF in the middle of a command")
    events, _ = run([b"a1 LOGIN {5}\r\nab"])
    assert events[-1] == ConnectionClosed("EOF in the middle of a command")


def test_commands_are_handled_one_at_a_time() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 NOOP\r\na2 FETCH 1 FLAGS\r\na3 CLOSE\r\na4 SEARCH ALL\r\n")
    assert e.next_event() == c.Noop("a1")
    assert e.next_event() is PAUSED
    e.send(Exists(3))
    e.send(Tagged("a1", "OK", "done"))
    assert e.next_event() == c.Fetch("a2", False, c_seq("1"), (c.FetchAttr("FLAGS"),))
    e.send(Tagged("a2", "OK", "done"))
    assert e.next_event() == c.Close("a3")
    e.unselected()
    e.send(Tagged("a3", "OK", "done"))
    # SEARCH is checked against the state in force when it is read: no longer selected
    assert drain(e) == [
        ProtocolViolation(
            b"a4 BAD SEARCH is not valid in the authenticated state\r\n",
            "SEARCH is not valid in the authenticated state",
        )
    ]
    assert (
        e.data_to_send()
        == b"* 3 EXISTS\r\na1 OK done\r\na2 OK done\r\na3 OK done\r\na4 BAD SEARCH is not valid in the authenticated state\r\n"
    )


def c_seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


# --- LOGINDISABLED and STARTTLS -----------------------------------------------------------------------


def test_login_before_tls_is_privacyrequired_without_asking_for_the_password() -> None:
    events, out = run(
        [b"a1 LOGIN fred {6}\r\n", b"a2 AUTHENTICATE PLAIN\r\n"], tls_active=False, starttls_available=True
    )
    assert out == (
        b"a1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\na2 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"
    )
    assert commands(events) == []


def test_starttls_drops_pipelined_plaintext() -> None:
    e = IMAPServerEngine(IMAPServerConfig(tls_active=False, starttls_available=True))
    e.receive_data(b"a1 STARTTLS\r\na2 LOGIN evil pw\r\n")
    assert e.next_event() == c.StartTLS("a1")
    e.send(Tagged("a1", "OK", "Begin TLS negotiation now"))
    assert e.next_event() is PAUSED  # never reads the injected LOGIN as plaintext
    e.receive_data(b"a3 NOOP")  # more plaintext before the handshake completes
    assert e.next_event() is PAUSED
    e.tls_started()
    assert e.tls_active
    assert e.next_event() is NEED_DATA
    e.receive_data(b"a4 LOGIN fred pw\r\n")
    assert e.next_event() == c.Login("a4", "fred", "pw")
    assert e.data_to_send() == b"a1 OK Begin TLS negotiation now\r\n"


def test_refused_starttls_does_not_pause() -> None:
    e = IMAPServerEngine(IMAPServerConfig(tls_active=False, starttls_available=True))
    e.receive_data(b"a1 STARTTLS\r\na2 NOOP\r\n")
    assert e.next_event() == c.StartTLS("a1")
    e.send(Tagged("a1", "NO", "TLS unavailable"))
    assert e.next_event() == c.Noop("a2")
    with pytest.raises(LocalProtocolError):
        e.tls_started()


def test_starttls_when_not_offered_or_already_on() -> None:
    _, out = run([b"a1 STARTTLS\r\n"], tls_active=True)
    assert out == b"a1 BAD STARTTLS is not available\r\n"
    _, out = run([b"a1 STARTTLS\r\n"], tls_active=False, starttls_available=False)
    assert out == b"a1 BAD STARTTLS is not available\r\n"


# --- AUTHENTICATE -----------------------------------------------------------------------------------


def test_authenticate_exchange() -> None:
    e = engine_in(State.NOT_AUTHENTICATED)
    e.receive_data(b"a1 AUTHENTICATE PLAIN\r\n")
    assert e.next_event() == c.Authenticate("a1", "PLAIN", None)
    e.auth_challenge(b"")
    assert e.data_to_send() == b"+ \r\n"
    assert e.next_event() is NEED_DATA
    e.receive_data(b"AGZyZWQAcHc=\r\n")
    assert e.next_event() == AuthResponse("a1", b"\0fred\0pw")
    e.auth_challenge(b"more?")
    assert e.data_to_send() == b"+ bW9yZT8=\r\n"
    e.receive_data(b"\r\n")
    assert e.next_event() == AuthResponse("a1", b"")
    e.logged_in()
    e.send(Tagged("a1", "OK", "done"))
    assert e.state is State.AUTHENTICATED


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"*", "AUTHENTICATE cancelled"),
        (b"AB=C", "Invalid base64"),
        (b"abc", "Invalid base64"),
        (b"x {3+}", "Invalid AUTHENTICATE response"),
    ],
)
def test_authenticate_cancel_and_invalid_base64(line: bytes, reason: str) -> None:
    e = engine_in(State.NOT_AUTHENTICATED)
    e.receive_data(b"a1 AUTHENTICATE PLAIN\r\n")
    assert e.next_event() == c.Authenticate("a1", "PLAIN", None)
    e.auth_challenge()
    e.data_to_send()
    e.receive_data(line + b"\r\n" + (b"abc" if line.endswith(b"+}") else b"") + b"a2 NOOP\r\n")
    assert e.next_event() == AuthAborted("a1", reason)
    assert isinstance(e.next_event(), ProtocolViolation)
    assert e.next_event() == c.Noop("a2")
    assert e.data_to_send() == b"a1 BAD " + reason.encode() + b"\r\n"


# --- IDLE ------------------------------------------------------------------------------------------


def test_idle_done() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 IDLE\r\n")
    assert e.next_event() == c.Idle("a1")
    e.accept_idle()
    assert e.data_to_send() == b"+ idling\r\n"
    assert e.next_event() is NEED_DATA
    e.send(Exists(4))  # untagged data while idling
    e.receive_data(b"done\r\na2 NOOP\r\n")
    assert e.next_event() == IdleDone("a1", ok=True)
    assert e.next_event() is PAUSED
    e.send(Tagged("a1", "OK", "IDLE terminated"))
    assert e.next_event() == c.Noop("a2")
    assert e.data_to_send() == b"* 4 EXISTS\r\na1 OK IDLE terminated\r\n"


def test_idle_anything_but_done_is_bad_and_ends_idle() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 IDLE\r\n")
    e.next_event()
    e.accept_idle()
    e.receive_data(b"a2 NOOP\r\na3 NOOP\r\n")
    assert e.next_event() == IdleDone("a1", ok=False)
    assert isinstance(e.next_event(), ProtocolViolation)
    assert e.next_event() == c.Noop("a3")
    assert e.data_to_send() == b"+ idling\r\na1 BAD Expected DONE\r\n"


def test_idle_refused_by_the_session() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 IDLE\r\nDONE\r\n")
    e.next_event()
    e.send(Tagged("a1", "NO", "not now"))
    assert drain(e)[-1] == ProtocolViolation(b"DONE BAD Missing command\r\n", "Missing command")


# --- APPEND ----------------------------------------------------------------------------------------


def test_append_sync_literal() -> None:
    e = engine_in(A)
    e.receive_data(b'a1 APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {5}\r\n')
    ev = drain(e)
    assert len(ev) == 1 and isinstance(ev[0], AppendBegin)
    assert (ev[0].tag, ev[0].mailbox, ev[0].flags, ev[0].size) == ("a1", "saved-messages", ("\\Seen",), 5)
    assert ev[0].date is not None and ev[0].date.utcoffset() is not None
    assert e.data_to_send() == b"+ Ready for message data\r\n"
    e.receive_data(b"hel")
    assert drain(e) == [AppendChunk(b"hel")]
    with pytest.raises(LocalProtocolError):
        e.send(Tagged("a1", "OK", "too early"))
    e.receive_data(b"lo\r\na2 NOOP\r\n")
    assert drain(e) == [AppendChunk(b"lo"), AppendEnd("a1", last=True)]
    e.send(Tagged("a1", "OK", "APPEND completed"))
    assert drain(e) == [c.Noop("a2")]


def test_append_streams_a_large_message_in_pieces() -> None:
    size = 50 * 1024 * 1024
    e = engine_in(A)
    e.receive_data(b"a1 APPEND INBOX {%d+}\r\n" % size)
    assert isinstance(drain(e)[0], AppendBegin)
    piece = b"x" * 65536
    received = 0
    for _ in range(size // len(piece)):
        e.receive_data(piece)
        chunks = drain(e)
        assert chunks == [AppendChunk(piece)]  # handed on at once, never accumulated
        received += len(piece)
        assert len(e._rx) == 0
    e.receive_data(b"\r\n")
    assert drain(e) == [AppendEnd("a1")]
    assert received == size


@pytest.mark.parametrize("sync", [True, False])
def test_append_over_the_limit(sync: bool) -> None:
    marker = b"{2000}" if sync else b"{2000+}"
    data = (
        b"a1 APPEND INBOX "
        + marker
        + b"\r\n"
        + (b"" if sync else b"a9 LOGOUT\r\n" * 181 + b"x" * 9)
        + b"\r\n" * (not sync)
        + b"a2 NOOP\r\n"
    )
    events, out = run([data], state=A, append_limit=1000)
    assert out == b"a1 NO [TOOBIG] Message larger than 1000 octets\r\na2 OK NOOP completed\r\n"
    assert not [x for x in events if isinstance(x, AppendBegin | AppendChunk)]
    assert commands(events) == [c.Noop("a2")]


def test_append_limit_is_per_engine() -> None:
    e = engine_in(A)
    e.append_limit = 3
    e.receive_data(b"a1 APPEND INBOX {4}\r\n")
    drain(e)
    assert e.data_to_send() == b"a1 NO [TOOBIG] Message larger than 3 octets\r\n"


def test_append_mailbox_as_literal() -> None:
    events, out = run([b"a1 APPEND {5}\r\nINBOX {3}\r\nabc\r\n"], state=A)
    assert out == b"+ Ready for literal data\r\n+ Ready for message data\r\na1 OK APPEND completed\r\n"
    assert events == [
        AppendBegin("a1", "INBOX", (), None, 3),
        AppendChunk(b"abc"),
        AppendEnd("a1"),
        ConnectionClosed("EOF"),
    ]


def test_multiappend() -> None:
    data = b"a1 APPEND INBOX (\\Seen) {3}\r\nabc (\\Draft) {0}\r\n {2+}\r\nxy\r\n"
    events, out = run([data], state=A)
    assert events == [
        AppendBegin("a1", "INBOX", ("\\Seen",), None, 3),
        AppendChunk(b"abc"),
        AppendEnd("a1", last=False),
        AppendBegin("a1", "INBOX", ("\\Draft",), None, 0),
        AppendEnd("a1", last=False),
        AppendBegin("a1", "INBOX", (), None, 2),
        AppendChunk(b"xy"),
        AppendEnd("a1", last=True),
        ConnectionClosed("EOF"),
    ]
    assert out == b"+ Ready for message data\r\n+ Ready for message data\r\na1 OK APPEND completed\r\n"


def test_multiappend_second_message_too_big_aborts_the_whole() -> None:
    events, out = run([b"a1 APPEND INBOX {3}\r\nabc {3000}\r\n", b"a2 NOOP\r\n"], state=A, append_limit=1000)
    assert [x for x in events if not isinstance(x, ProtocolViolation)] == [
        AppendBegin("a1", "INBOX", (), None, 3),
        AppendChunk(b"abc"),
        AppendEnd("a1", last=False),
        AppendAborted("a1", "Message larger than 1000 octets"),
        c.Noop("a2"),
        ConnectionClosed("EOF"),
    ]
    assert (
        out
        == b"+ Ready for message data\r\na1 NO [TOOBIG] Message larger than 1000 octets\r\na2 OK NOOP completed\r\n"
    )


def test_multiappend_not_offered() -> None:
    ext = tuple(x for x in DEFAULT_EXTENSIONS if x != "MULTIAPPEND")
    events, out = run([b"a1 APPEND INBOX {1+}\r\na {1+}\r\nb\r\na2 NOOP\r\n"], state=A, extensions=ext)
    assert AppendAborted("a1", "MULTIAPPEND is not supported") in events
    assert out == b"a1 BAD MULTIAPPEND is not supported\r\na2 OK NOOP completed\r\n"


def test_append_utf8_and_binary_forms() -> None:
    events, _ = run([b"a1 APPEND INBOX UTF8 (~{3}\r\na\x00c)\r\n"], state=A)
    assert events[:3] == [
        AppendBegin("a1", "INBOX", (), None, 3, binary=True, utf8=True),
        AppendChunk(b"a\x00c"),
        AppendEnd("a1"),
    ]
    events, _ = run([b"a1 APPEND INBOX ~{2+}\r\n\x00\x01\r\n"], state=A)
    assert events[0] == AppendBegin("a1", "INBOX", (), None, 2, binary=True)
    _, out = run([b"a1 APPEND INBOX UTF8 ({3+}\r\nabc)\r\na2 NOOP\r\n"], state=A)
    assert out == b"a1 BAD UTF8 APPEND data must be a literal8\r\na2 OK NOOP completed\r\n"


def test_append_syntax_error_after_the_data() -> None:
    events, out = run([b"a1 APPEND INBOX {3}\r\nabc junk\r\na2 NOOP\r\n"], state=A)
    assert (
        AppendAborted("a1", "Expected a space") in events
        or AppendAborted("a1", "Expected the message literal") in events
    )
    assert out.startswith(b"+ Ready for message data\r\na1 BAD ")
    assert out.endswith(b"a2 OK NOOP completed\r\n")
    assert AppendEnd("a1") not in events


def test_append_syntax_error_before_the_literal() -> None:
    _, out = run([b"a1 APPEND INBOX (\\Seen {3}\r\n", b"a2 NOOP\r\n"], state=A)
    assert out == b"a1 BAD Expected an atom\r\na2 OK NOOP completed\r\n"
    _, out = run([b'a1 APPEND INBOX "31-Feb-2020 00:00:00 +0000" {3+}\r\nabc\r\na2 NOOP\r\n'], state=A)
    assert out == b"a1 BAD Invalid date-time\r\na2 OK NOOP completed\r\n"


def test_append_wrong_state() -> None:
    _, out = run([b"a1 APPEND INBOX {3}\r\n", b"a2 NOOP\r\n"])
    assert out == b"a1 BAD APPEND is not valid in the not authenticated state\r\na2 OK NOOP completed\r\n"


def test_append_eof_mid_message() -> None:
    events, _ = run([b"a1 APPEND INBOX {10}\r\nabc"], state=A)
    assert events[-2:] == [
        AppendAborted("a1", "connection closed"),
        ConnectionClosed("EOF in the middle of a command"),
    ]


def test_append_without_literal() -> None:
    _, out = run([b"a1 APPEND INBOX\r\n"], state=A)
    assert out == b"a1 BAD APPEND needs a message literal\r\n"


# --- ENABLE, UTF-8 and misc --------------------------------------------------------------------------


def test_enable_switches_mailbox_encoding() -> None:
    e = engine_in(A)
    e.receive_data(b"a1 ENABLE UTF8=ACCEPT QRESYNC X-UNKNOWN\r\n")
    cmd = e.next_event()
    assert cmd == c.Enable("a1", ("UTF8=ACCEPT", "QRESYNC", "X-UNKNOWN"))
    assert isinstance(cmd, c.Enable)
    assert e.enable(cmd.capabilities) == ("UTF8=ACCEPT", "QRESYNC")
    assert e.enabled == {"UTF8=ACCEPT", "QRESYNC", "CONDSTORE"}
    assert e.enable(["utf8=accept"]) == ()
    e.send(Tagged("a1", "OK", "done"))
    e.receive_data(b'a2 SELECT "Entw\xc3\xbcrfe"\r\n')
    assert e.next_event() == c.Select("a2", "Entwürfe")
    e.send(ListResponse("Entwürfe", "/", []))
    assert e.data_to_send().endswith('* LIST () "/" "Entwürfe"\r\n'.encode())


def test_logout_closes() -> None:
    events, out = run([b"a1 LOGOUT\r\na2 NOOP\r\n"])
    assert out == b"* BYE bye\r\na1 OK LOGOUT completed\r\n"
    assert events == [c.Logout("a1"), ConnectionClosed("logout")]


def test_state_changes() -> None:
    e = engine_in(State.NOT_AUTHENTICATED)
    with pytest.raises(LocalProtocolError):
        e.selected()
    e.logged_in()
    with pytest.raises(LocalProtocolError):
        e.logged_in()
    e.selected(read_only=True)
    assert e.state is SEL and e.read_only
    e.selected()
    assert not e.read_only
    e.unselected()
    assert e.state is A
    e.logout()
    assert e.state is State.LOGOUT and e.closed


def test_misuse_raises_local_protocol_error() -> None:
    e = engine_in(SEL)
    with pytest.raises(LocalProtocolError):
        e.send(Tagged("x", "OK", "nothing pending"))
    with pytest.raises(LocalProtocolError):
        e.accept_idle()
    with pytest.raises(LocalProtocolError):
        e.auth_challenge()
    with pytest.raises(LocalProtocolError):
        e.send(Continuation("no"))
    with pytest.raises(LocalProtocolError):
        e.send_literal_data(b"x")
    e.receive_data(b"a1 NOOP\r\n")
    e.next_event()
    with pytest.raises(LocalProtocolError):
        e.send(Tagged("a2", "OK", "wrong tag"))
    with pytest.raises(LocalProtocolError):
        e.accept_idle()


def test_streamed_fetch_literal() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 FETCH 1 BODY[]\r\n")
    e.next_event()
    e.send(FetchResponse(1, [("UID", 7), ("BODY[]", StreamedLiteral(10))]))
    with pytest.raises(LocalProtocolError):
        e.send(Tagged("a1", "OK", "not yet"))
    e.send_literal_data(b"01234")
    with pytest.raises(LocalProtocolError):
        e.send_literal_data(b"567890")
    e.send_literal_data(b"56789")
    e.send(FetchResponse(2, [("BODY[]", StreamedLiteral(0))]))
    e.send(Tagged("a1", "OK", "done"))
    assert e.data_to_send() == (
        b"* 1 FETCH (UID 7 BODY[] {10}\r\n0123456789)\r\n* 2 FETCH (BODY[] {0}\r\n)\r\na1 OK done\r\n"
    )


def test_session_responses_after_the_engine_closed_are_dropped() -> None:
    e = engine_in(SEL)
    e.receive_data(b"a1 NOOP\r\n")
    e.next_event()
    e.receive_data(b"")
    e.send(Tagged("a1", "OK", "done"))
    assert drain(e) == [ConnectionClosed("EOF")]
    e.receive_data(b"a2 NOOP\r\n")
    assert drain(e) == [ConnectionClosed("EOF")]


def test_byte_by_byte_dialog_matches_one_piece() -> None:
    data = (
        b"a1 LOGIN {4}\r\nfred pw\r\na2 SELECT INBOX\r\na3 APPEND INBOX {5}\r\nhello\r\n"
        b"a4 IDLE\r\nDONE\r\na5 FETCH 1:* (FLAGS BODY.PEEK[])\r\na6 LOGOUT\r\n"
    )
    whole = run([data], login_requires_tls=False)
    assert run(byte_by_byte(data), login_requires_tls=False) == whole
    assert [type(x).__name__ for x in whole[0]] == [
        "Login",
        "Select",
        "AppendBegin",
        "AppendChunk",
        "AppendEnd",
        "Idle",
        "IdleDone",
        "Fetch",
        "Logout",
        "ConnectionClosed",
    ]
    assert whole[0][-1] == ConnectionClosed("logout")


def test_session_helper_handles_authenticate() -> None:
    e = engine_in(State.NOT_AUTHENTICATED)
    s = Session(e)
    e.receive_data(b"a1 AUTHENTICATE PLAIN\r\nAGEAYg==\r\n")
    s.drain()
    assert s.events == [c.Authenticate("a1", "PLAIN", None), AuthResponse("a1", b"\0a\0b")]
    assert e.state is State.AUTHENTICATED


@pytest.mark.parametrize(
    "hostile",
    [
        b"a1 SEARCH ((ALL\r\n",
        b"a1 SEARCH ALL))\r\n",
        b"a1 SEARCH " + b"(" * 10_000 + b"ALL" + b")" * 10_000 + b"\r\n",
        b"a1 SEARCH " + b"(" * 10_000 + b"\r\n",
        b"a1 SEARCH SUBJECT {5}\r\na\x00b\x00c\r\n",
        b"a1 SEARCH SUBJECT \x00\r\n",
        b"a1 SEARCH \xc3\xa9\xff\r\n",
        b"a1 FETCH 1 (" + b"FLAGS " * 5000 + b"\r\n",
        b"a1 SEARCH SUBJECT {99999999999}\r\n",
        b"a1 STORE 1 +FLAGS (((((\\Seen\r\n",
    ],
)
def test_hostile_input_is_bad_and_the_next_command_parses(hostile: bytes) -> None:
    events, out = run([hostile, b"a2 NOOP\r\n"], state=SEL)
    lines = out.split(b"\r\n")
    assert next(x for x in lines if x.startswith(b"a1 ")).startswith(b"a1 BAD ")
    assert out.endswith(b"a2 OK NOOP completed\r\n")
    assert commands(events) == [c.Noop("a2")]
