"""Caps on what a peer can make the engine do without sending mail."""

from __future__ import annotations

from mailroom.wire.smtp import events as ev
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine


def drain(engine: SMTPServerEngine) -> list[object]:
    out = []
    while True:
        event = engine.next_event()
        if event is ev.NEED_DATA or isinstance(event, ev.ConnectionClosed):
            return out
        if isinstance(event, ev.Hello):
            engine.accept()
        out.append(event)


def test_junk_commands_eventually_close() -> None:
    engine = SMTPServerEngine(
        ServerConfig(hostname="mx.test", max_message_size=1000, max_junk_commands=5, max_errors=3)
    )
    engine.greeting()
    engine.receive_data(b"EHLO c\r\n" + b"NOOP\r\n" * 5)
    drain(engine)
    assert engine.data_to_send().count(b"250 2.0.0 Ok\r\n") == 5
    assert not engine.closed
    engine.receive_data(b"NOOP\r\nVRFY x\r\nRSET\r\n")  # over the junk limit: errors 1..3, still answered
    drain(engine)
    assert engine.data_to_send() == (
        b"250 2.0.0 Ok\r\n252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n250 2.0.0 Ok\r\n"
    )
    assert not engine.closed
    engine.receive_data(b"HELP\r\nNOOP\r\n")  # the 4th error closes
    drain(engine)
    out = engine.data_to_send()
    assert (
        out == b"421 4.7.0 Too many errors, closing connection\r\n"
    )  # the 4th error closes instead of answering
    assert engine.closed
