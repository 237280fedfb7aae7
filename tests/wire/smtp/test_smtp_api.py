"""The engine's contract with its session: pausing, decisions, misuse, capabilities, TLS."""

from __future__ import annotations

import pytest
from smtp_dialog import config

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.smtp import replies as R
from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthStart,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Hello,
    MailFrom,
    RcptTo,
    StartTLS,
)
from mailroom.wire.smtp.server import SMTPServerEngine, State


def test_paused_until_decided_and_pipelined_commands_wait() -> None:
    eng = SMTPServerEngine(config())
    eng.receive_data(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\n")
    assert eng.next_event() == Hello("EHLO", "c")
    assert eng.next_event() is PAUSED
    assert eng.next_event() is PAUSED
    assert eng.data_to_send() == b""  # nothing answered out of order
    eng.accept("hello c")
    assert eng.data_to_send().startswith(b"250-mx.example hello c\r\n250-PIPELINING\r\n")
    assert isinstance(eng.next_event(), MailFrom)
    assert eng.next_event() is PAUSED
    eng.reject(R.SENDER_REJECTED)
    assert eng.next_event() is NEED_DATA
    assert eng.data_to_send() == b"550 5.7.1 Sender rejected\r\n250 2.0.0 Ok\r\n"


def test_accept_texts() -> None:
    eng = SMTPServerEngine(config())
    eng.receive_data(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n")
    for text in ("hi c", "sender ok", "recipient ok"):
        eng.next_event()
        eng.accept(text)
    assert eng.next_event() == DataStart()
    eng.next_event()  # BodyChunk
    assert eng.next_event() == BodyEnd()
    eng.accept("Ok: queued as 42")
    assert eng.data_to_send() == (
        b"250 mx.example hi c\r\n250 2.1.0 sender ok\r\n250 2.1.5 recipient ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 42\r\n"
    )
    assert eng.state is State.READY and eng.recipient_count == 0 and eng.mail_params is None


def test_misuse_raises_local_protocol_error() -> None:
    eng = SMTPServerEngine(config())
    with pytest.raises(LocalProtocolError):
        eng.accept()
    with pytest.raises(LocalProtocolError):
        eng.reject(R.MAILBOX_UNAVAILABLE)
    with pytest.raises(LocalProtocolError):
        eng.auth_challenge(b"")
    with pytest.raises(LocalProtocolError):
        eng.tls_started()
    eng.receive_data(b"HELO c\r\n")
    eng.next_event()
    with pytest.raises(LocalProtocolError):
        eng.reject(R.OK)  # a positive reply is not a rejection
    with pytest.raises(LocalProtocolError):
        eng.auth_challenge(b"")  # not an AUTH decision
    with pytest.raises(LocalProtocolError):
        eng.accept("two\r\nlines")
    assert eng.next_event() is PAUSED  # the decision is still open after each misuse
    eng.accept()
    assert eng.data_to_send() == b"250 mx.example\r\n"


def test_greeting_and_capabilities() -> None:
    eng = SMTPServerEngine(config(dsn=False))
    eng.greeting()
    assert eng.data_to_send() == b"220 mx.example ESMTP mailroom\r\n"
    assert eng.capabilities() == [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
    ]
    plain = SMTPServerEngine(config(starttls_available=True, auth_mechanisms=("PLAIN", "LOGIN")))
    assert plain.capabilities()[-2:] == ["DSN", "STARTTLS"]  # AUTH needs TLS first
    lax = SMTPServerEngine(config(auth_mechanisms=("PLAIN",), auth_requires_tls=False))
    assert lax.capabilities()[-1] == "AUTH PLAIN"
    lax.authenticated = True
    assert "AUTH PLAIN" not in lax.capabilities()


def test_tls_started_discards_plaintext_fed_after_accept() -> None:
    eng = SMTPServerEngine(config(starttls_available=True, auth_mechanisms=("PLAIN",)))
    eng.receive_data(b"EHLO c\r\nSTARTTLS\r\n")
    eng.next_event()
    eng.accept()
    assert eng.next_event() == StartTLS()
    eng.accept()
    eng.receive_data(b"MAIL FROM:<injected@evil.example>\r\n")  # arrived before the handshake
    assert eng.next_event() is PAUSED
    eng.tls_started()
    assert eng.tls_active and eng.state is State.INITIAL
    assert eng.next_event() is NEED_DATA
    assert eng.data_to_send().endswith(b"220 2.0.0 Ready to start TLS\r\n")
    assert eng.capabilities()[-1] == "AUTH PLAIN"
    assert "STARTTLS" not in eng.capabilities()


def test_tls_started_forgets_ehlo_transaction_and_auth() -> None:
    eng = SMTPServerEngine(config(starttls_available=True))
    eng.receive_data(b"EHLO c\r\nSTARTTLS\r\n")
    eng.next_event()
    eng.accept()
    eng.next_event()
    eng.accept()
    eng.tls_started()
    eng.data_to_send()
    eng.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    eng.next_event()
    assert eng.data_to_send() == b"503 5.5.1 Send EHLO or HELO first\r\n"


def test_eof_while_waiting_for_tls_closes() -> None:
    eng = SMTPServerEngine(config(starttls_available=True))
    eng.receive_data(b"HELO c\r\nSTARTTLS\r\n")
    eng.next_event()
    eng.accept()
    eng.next_event()
    eng.accept()
    eng.receive_data(b"")
    assert isinstance(eng.next_event(), ConnectionClosed)


def test_auth_challenge_bytes() -> None:
    eng = SMTPServerEngine(config(tls_active=True, auth_mechanisms=("LOGIN",)))
    eng.receive_data(b"EHLO c\r\nAUTH LOGIN\r\n")
    eng.next_event()
    eng.accept()
    eng.data_to_send()
    assert eng.next_event() == AuthStart("LOGIN", None)
    eng.auth_challenge(b"Username:")
    assert eng.data_to_send() == b"334 VXNlcm5hbWU6\r\n"
    assert eng.state is State.AUTH
    assert eng.next_event() is NEED_DATA


def test_decision_events_are_not_repeated() -> None:
    eng = SMTPServerEngine(config())
    eng.receive_data(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    seen = []
    while (ev := eng.next_event()) is not NEED_DATA:
        if ev is PAUSED:
            eng.accept()
        else:
            seen.append(ev)
    assert [type(e) for e in seen] == [Hello, MailFrom, RcptTo]
