"""Chasquid-style dialogs against the in-memory engine with an auto-deciding fake session."""

from __future__ import annotations

from smtp_dialog import EHLO_LINES, b64, config, run_transcript

from mailroom.wire.smtp.events import (
    AuthResponse,
    AuthStart,
    BodyAborted,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Hello,
    MailFrom,
    MailParams,
    ProtocolViolation,
    Quit,
    RcptParams,
    RcptTo,
    Reset,
    StartTLS,
)
from mailroom.wire.smtp.replies import reply
from mailroom.wire.smtp.server import SMTPServerEngine

EHLO = "\n".join(f"S: {line}" for line in EHLO_LINES)


def test_basic_delivery() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO client.example
        {EHLO}
        C: MAIL FROM:<alice@example.org>
        S: 250 2.1.0 Ok
        C: RCPT TO:<bob@mx.example>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 Ok: queued
        C: QUIT
        S: 221 2.0.0 Bye
    """)
    assert sess.events == [
        Hello("EHLO", "client.example"),
        MailFrom("alice@example.org", MailParams()),
        RcptTo("bob@mx.example", RcptParams()),
        DataStart(chunking=False),
        BodyChunk(b"Subject: hi\r\n\r\n.leading dot\r\n"),
        BodyEnd(),
        Quit(),
        ConnectionClosed(),
    ]
    assert sess.engine.closed


def test_helo_has_no_extensions_and_still_works() -> None:
    run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: HELO client.example
        S: 250 mx.example
        C: MAIL FROM:<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<postmaster@mx.example>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued
    """)


def test_pipelined_batch_answered_in_one_write_with_rejections() -> None:
    sess = run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<reject1@b.example>
        C: RCPT TO:<ok@b.example>
        C: RCPT TO:<reject2@b.example>
        C: DATA
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250 DSN
        S: 250 2.1.0 Ok
        S: 550 5.1.1 No such user
        S: 250 2.1.5 Ok
        S: 550 5.1.1 No such user
        S: 354 End data with <CR><LF>.<CR><LF>
        C: body
        C: .
        C: NOOP
        S: 250 2.0.0 Ok: queued
        S: 250 2.0.0 Ok
    """)
    assert sess.engine.recipient_count == 0  # transaction over
    rcpts = [e for e in sess.events if isinstance(e, RcptTo)]
    assert len(rcpts) == 3


def test_all_recipients_rejected_then_data_gets_554_and_body_lines_are_commands() -> None:
    # RFC 2920 §3.1: a pipelining client sends DATA and waits; with no recipient, 554.
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<reject@b.example>
        C: DATA
        {ehlo}
        S: 250 2.1.0 Ok
        S: 550 5.1.1 No such user
        S: 554 5.5.1 No valid recipients
        C: RSET
        S: 250 2.0.0 Ok
    """.replace("{ehlo}", EHLO)
    )


def test_rejected_sender_and_body() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<bad@spam.example>
        S: 550 5.7.1 Sender rejected
        C: RCPT TO:<x@y.example>
        S: 503 5.5.1 Need MAIL command first
        C: MAIL FROM:<good@y.example>
        S: 250 2.1.0 Ok
        C: RCPT TO:<x@y.example>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: REJECT-ME
        C: .
        S: 554 5.7.1 Content rejected
        C: DATA
        S: 503 5.5.1 Need MAIL command first
    """)


def test_rejected_ehlo_leaves_session_ungreeted() -> None:
    run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: EHLO bad.example
        S: 550 5.7.1 Go away
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Send EHLO or HELO first
    """)


def test_sequence_errors() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Send EHLO or HELO first
        C: DATA
        S: 503 5.5.1 Send EHLO or HELO first
        C: EHLO c
        {EHLO}
        C: RCPT TO:<a@b.example>
        S: 503 5.5.1 Need MAIL command first
        C: DATA
        S: 503 5.5.1 Need MAIL command first
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Nested MAIL command
        C: DATA
        S: 554 5.5.1 No valid recipients
    """)


def test_engine_answers_by_itself() -> None:
    sess = run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: NOOP
        S: 250 2.0.0 Ok
        C: NOOP anything at all
        S: 250 2.0.0 Ok
        C: HELP
        S: 214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321
        C: VRFY root
        S: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY <address>
        C: EXPN staff
        S: 502 5.5.1 EXPN not available
        C: RSET
        S: 250 2.0.0 Ok
        C: RSET now
        S: 501 5.5.4 Syntax: RSET
        C: FOO bar
        S: 500 5.5.2 Command not recognized
        C:
        S: 500 5.5.2 Command not recognized
        C: QUIT please
        S: 501 5.5.4 Syntax: QUIT
        C: quit
        S: 221 2.0.0 Bye
        C: NOOP
    """)
    assert isinstance(sess.events[-1], ConnectionClosed)
    assert sum(isinstance(e, Reset) for e in sess.events) == 1
    assert sum(isinstance(e, ProtocolViolation) for e in sess.events) == 5


def test_lenient_forms_real_mtas_use() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: ehlo c
        {EHLO}
        C: mail from: <a@b.example>
        S: 250 2.1.0 Ok
        C: Rcpt To:<@relay1.example,@relay2.example:bob@c.example>
        S: 250 2.1.5 Ok
        C: RCPT TO:<POSTMASTER>
        S: 250 2.1.5 Ok
        C: RCPT TO:<"john doe"@c.example> NOTIFY=success,failure ORCPT=rfc822;john+2Bdoe@c.example
        S: 250 2.1.5 Ok
        C: RCPT TO:<"plain"@[192.0.2.1]>
        S: 250 2.1.5 Ok
        C: RCPT TO:<x@[IPv6:2001:db8::1]>
        S: 250 2.1.5 Ok
    """)
    rcpts = [e for e in sess.events if isinstance(e, RcptTo)]
    assert [r.address for r in rcpts] == [
        "bob@c.example",
        "POSTMASTER",
        '"john doe"@c.example',
        "plain@[192.0.2.1]",
        "x@[IPv6:2001:db8::1]",
    ]
    assert rcpts[2].params == RcptParams(notify=("SUCCESS", "FAILURE"), orcpt="rfc822;john+doe@c.example")


def test_mail_parameters() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example> SIZE=500 BODY=8bitmime RET=HDRS ENVID=QQ+2B1
        S: 250 2.1.0 Ok
        C: RSET
        S: 250 2.0.0 Ok
        C: MAIL FROM:<a@b.example> SIZE=10001
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@b.example> FOO=bar
        S: 555 5.5.4 Unsupported parameter FOO
        C: MAIL FROM:<a@b.example> AUTH=<>
        S: 555 5.5.4 Unsupported parameter AUTH
        C: MAIL FROM:<a@b.example> SIZE=1 SIZE=2
        S: 501 5.5.4 Duplicate parameter SIZE
        C: MAIL FROM:<a@b.example> BODY=9BIT
        S: 501 5.5.4 Syntax: BODY=7BIT|8BITMIME|BINARYMIME
        C: MAIL FROM:<a@b.example>SIZE=1
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [parameters]
        C: MAIL FROM:<pelé@b.example>
        S: 553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter
        C: MAIL FROM:<pelé@b.example> SMTPUTF8
        S: 250 2.1.0 Ok
        C: RCPT TO:<用户@例子.广告>
        S: 250 2.1.5 Ok
    """)
    mails = [e for e in sess.events if isinstance(e, MailFrom)]
    assert mails[0].params == MailParams(size=500, body="8BITMIME", ret="HDRS", envid="QQ+1")
    assert mails[1] == MailFrom("pelé@b.example", MailParams(smtputf8=True))
    assert [e for e in sess.events if isinstance(e, RcptTo)] == [RcptTo("用户@例子.广告", RcptParams())]


def test_non_ascii_recipient_without_smtputf8() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: RCPT TO:<pelé@b.example>
        S: 553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter
    """)


def test_address_syntax_errors() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:a@b.example
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [parameters]
        C: MAIL FROM:<a@@b.example>
        S: 501 5.1.7 Bad sender address syntax
        C: MAIL
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [parameters]
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: RCPT TO:<>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<a..b@c.example>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<a@-c.example>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<a@[300.1.1.1]>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<postmaster>
        S: 250 2.1.5 Ok
        C: RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS
        S: 501 5.5.4 Syntax: NOTIFY=NEVER|SUCCESS,FAILURE,DELAY
        C: RCPT TO <a@b.example>
        S: 501 5.5.4 Syntax: RCPT TO:<address> [parameters]
    """)


def test_dsn_parameters_unknown_when_dsn_off() -> None:
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        S: 250 mx.example
        C: MAIL FROM:<a@b.example> RET=FULL
        S: 555 5.5.4 Unsupported parameter RET
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Ok
        C: RCPT TO:<a@b.example> NOTIFY=NEVER
        S: 555 5.5.4 Unsupported parameter NOTIFY
    """,
        config(dsn=False),
    )


def test_too_many_recipients() -> None:
    sess = run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<r1@b.example>
        C: RCPT TO:<reject@b.example>
        C: RCPT TO:<r2@b.example>
        C: RCPT TO:<r3@b.example>
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 550 5.1.1 No such user
        S: 250 2.1.5 Ok
        S: 452 4.5.3 Too many recipients
    """,
        config(max_recipients=2),
    )
    assert sess.engine.recipient_count == 2


def test_line_too_long_and_resync() -> None:
    long = "NOOP " + "x" * 600
    run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: {long}
        C: NOOP
        S: 500 5.5.2 Line too long
        S: 250 2.0.0 Ok
    """,
        config(max_command_line=512),
    )


def test_nul_and_control_characters() -> None:
    sess = run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: NO\0OP
        S: 500 5.5.2 NUL byte in command
        C: HELO a\0b
        S: 500 5.5.2 NUL byte in command
        C: HELO a\x01b
        S: 500 5.5.2 Invalid character in command
    """)
    assert all(isinstance(e, ProtocolViolation) for e in sess.events)
    # A bare CR inside a command line is not a line ending, and not allowed either.
    eng = SMTPServerEngine(config())
    eng.receive_data(b"HELO a\rNOOP\r\n")
    assert isinstance(eng.next_event(), ProtocolViolation)
    assert eng.data_to_send() == b"500 5.5.2 Invalid character in command\r\n"


def test_too_many_errors_closes() -> None:
    sess = run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: X1
        C: X2
        C: X3
        C: NOOP
        S: 500 5.5.2 Command not recognized
        S: 500 5.5.2 Command not recognized
        S: 421 4.7.0 Too many errors, closing connection
    """,
        config(max_errors=2),
    )
    assert sess.engine.closed
    assert isinstance(sess.events[-1], ConnectionClosed)


def test_policy_replies_do_not_count_as_errors() -> None:
    run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example> SIZE=99999
        C: MAIL FROM:<a@b.example> SIZE=99999
        C: EXPN x
        C: MAIL FROM:<a@b.example>
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 502 5.5.1 EXPN not available
        S: 250 2.1.0 Ok
    """,
        config(max_errors=1),
    )


def test_size_exceeded_in_data_keeps_session_in_sync() -> None:
    body = "\n".join(["C: " + "y" * 70] * 20)  # 20 * 72 = 1440 octets > 1000
    sess = run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        S: 250 mx.example
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        {body}
        C: .
        C: MAIL FROM:<a@b.example>
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 250 2.1.0 Ok
    """,
        config(max_message_size=1000),
    )
    aborted = [e for e in sess.events if isinstance(e, BodyAborted)]
    assert len(aborted) == 1 and aborted[0].reply is not None and aborted[0].reply.code == 552
    assert not any(isinstance(e, BodyEnd) for e in sess.events)
    assert sum(len(e.data) for e in sess.events if isinstance(e, BodyChunk)) <= 1000


def test_data_exactly_at_size_limit_is_accepted() -> None:
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: DATA
        S: 250 mx.example
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: 12345678
        C: .
        S: 250 2.0.0 Ok: queued
    """,
        config(max_message_size=10),
    )


def test_binarymime_requires_bdat() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example> BODY=BINARYMIME
        C: RCPT TO:<c@d.example>
        C: DATA
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 503 5.5.1 BODY=BINARYMIME requires BDAT
        C: BDAT 4 LAST
        C: ab
        S: 250 2.0.0 Ok: queued
    """)


def test_bdat_dialog() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example> BODY=BINARYMIME
        C: RCPT TO:<c@d.example>
        C: BDAT 5
        C: abc
        C: BDAT 0
        C: BDAT 3 LAST
        C: x
        C: NOOP
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 5 octets received
        S: 250 2.0.0 0 octets received
        S: 250 2.0.0 Ok: queued
        S: 250 2.0.0 Ok
    """)
    chunks = b"".join(e.data for e in sess.events if isinstance(e, BodyChunk))
    assert chunks == b"abc\r\nx\r\n"
    assert [e for e in sess.events if isinstance(e, DataStart)] == [DataStart(chunking=True)]


def test_bdat_zero_last_and_mixing_rules() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: BDAT 0 LAST
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 Ok: queued
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: BDAT 3
        C: x
        C: DATA
        C: RCPT TO:<e@d.example>
        C: BDAT 0 last
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 3 octets received
        S: 503 5.5.1 Command not allowed during BDAT transfer
        S: 503 5.5.1 Command not allowed during BDAT transfer
        S: 250 2.0.0 Ok: queued
        C: BDAT 3 LAST
        C: x
        S: 503 5.5.1 Need MAIL command first
        C: BDAT x
        S: 501 5.5.4 Syntax: BDAT <size> [LAST]
        C: BDAT 1 FIRST
        S: 501 5.5.4 Syntax: BDAT <size> [LAST]
    """)


def test_bdat_without_recipients_consumes_octets() -> None:
    run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<reject@d.example>
        C: BDAT 10 LAST
        C: QUIT1234
        C: NOOP
        S: 250 2.1.0 Ok
        S: 550 5.1.1 No such user
        S: 503 5.5.1 No valid recipients
        S: 250 2.0.0 Ok
    """)


def test_bdat_size_exceeded_mid_transfer_consumes_the_rest() -> None:
    sess = run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: BDAT 8
        C: 123456
        C: BDAT 8
        C: 123456
        C: BDAT 8 LAST
        C: 123456
        C: NOOP
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-SIZE 10
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250 DSN
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 8 octets received
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 503 5.5.1 Need MAIL command first
        S: 250 2.0.0 Ok
    """,
        config(max_message_size=10),
    )
    assert [type(e).__name__ for e in sess.events if not isinstance(e, (MailFrom, RcptTo, Hello))] == [
        "DataStart",
        "BodyChunk",
        "BodyChunk",
        "BodyAborted",
        "ProtocolViolation",
    ]
    # Emission stops exactly at the limit.
    assert b"".join(e.data for e in sess.events if isinstance(e, BodyChunk)) == b"123456\r\n12"


def test_rset_during_bdat_aborts_body() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: BDAT 3
        C: x
        C: RSET
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 250 2.0.0 3 octets received
        S: 250 2.0.0 Ok
    """)
    tail = sess.events[-2:]
    assert tail == [BodyAborted("transaction reset by RSET"), Reset()]


def test_ehlo_mid_transaction_resets() -> None:
    sess = run_transcript(f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: EHLO c
        C: RCPT TO:<c@d.example>
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        {EHLO}
        S: 503 5.5.1 Need MAIL command first
    """)
    assert sess.engine.recipient_count == 0


def test_starttls_dialog_discards_pipelined_plaintext() -> None:
    sess = run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250-DSN
        S: 250 STARTTLS
        # CVE-2011-0411: the injected MAIL must never be answered.
        C: STARTTLS
        C: MAIL FROM:<injected@evil.example>
        S: 220 2.0.0 Ready to start TLS
        TLS
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Send EHLO or HELO first
        C: EHLO c
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250-DSN
        S: 250 AUTH PLAIN LOGIN
        C: STARTTLS
        S: 503 5.5.1 TLS already active
    """,
        config(starttls_available=True, auth_mechanisms=("PLAIN", "LOGIN")),
    )
    assert sess.engine.tls_active
    assert not any(isinstance(e, MailFrom) for e in sess.events)
    assert StartTLS() in sess.events


def test_starttls_rules() -> None:
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: STARTTLS
        S: 503 5.5.1 Send EHLO or HELO first
        C: HELO c
        S: 250 mx.example
        C: STARTTLS now
        S: 501 5.5.4 Syntax error (no parameters allowed)
        C: MAIL FROM:<a@b.example>
        C: STARTTLS
        S: 250 2.1.0 Ok
        S: 503 5.5.1 Not allowed during a mail transaction
        C: RSET
        C: STARTTLS
        S: 250 2.0.0 Ok
        S: 454 4.7.0 TLS not available
    """,
        config(starttls_available=True),
        tls_fails=True,
    )
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {ehlo}
        C: STARTTLS
        S: 502 5.5.1 Command not implemented
    """.replace("{ehlo}", EHLO)
    )


def test_implicit_tls_never_offers_starttls_and_offers_auth() -> None:
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        S: 250-mx.example
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-BINARYMIME
        S: 250-DSN
        S: 250 AUTH PLAIN
    """,
        config(tls_active=True, starttls_available=True, auth_mechanisms=("plain",)),
    )


SUBMISSION = config(
    tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"), auth_required=True, starttls_available=True
)
SUBMISSION_EHLO = "\n".join(f"S: {line}" for line in [*EHLO_LINES[:-1], "250-DSN", "250 AUTH PLAIN LOGIN"])
PLAIN_OK = b64(b"\0user\0secret")
PLAIN_BAD = b64(b"\0user\0wrong")


def test_auth_plain_initial_response() -> None:
    sess = run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {SUBMISSION_EHLO}
        C: MAIL FROM:<user@mx.example>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {PLAIN_BAD}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN {PLAIN_OK}
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN {PLAIN_OK}
        S: 503 5.5.1 Already authenticated
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<user@mx.example> AUTH=user+2Bx@mx.example
        S: 250 2.1.0 Ok
        C: AUTH PLAIN
        S: 503 5.5.1 Already authenticated
    """,
        SUBMISSION,
    )
    assert sess.engine.authenticated
    assert AuthStart("PLAIN", b"\0user\0secret") in sess.events
    mails = [e for e in sess.events if isinstance(e, MailFrom)]
    assert mails[0].params.auth == "user+x@mx.example"


def test_auth_with_challenges_and_cancel() -> None:
    sess = run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {SUBMISSION_EHLO}
        C: AUTH PLAIN
        S: 334 $
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: {b64(b"user")}
        S: 334 UGFzc3dvcmQ6
        C: not base64!
        S: 501 5.5.2 Invalid base64 data
        C: auth login {b64(b"user")}
        S: 334 UGFzc3dvcmQ6
        C: {b64(b"secret")}
        S: 235 2.7.0 Authentication successful
    """,
        SUBMISSION,
    )
    assert AuthResponse(b"secret") in sess.events
    assert AuthStart("LOGIN", b"user") in sess.events


def test_auth_plain_empty_initial_response_and_unknown_mechanism() -> None:
    sess = run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {SUBMISSION_EHLO}
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication mechanism
        C: AUTH PLAIN =
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN !!!
        S: 501 5.5.2 Invalid base64 data
        C: AUTH
        S: 501 5.5.4 Syntax: AUTH <mechanism> [initial-response]
        C: MAIL FROM:<a@b.example>
        S: 530 5.7.0 Authentication required
    """,
        SUBMISSION,
    )
    assert AuthStart("PLAIN", b"") in sess.events


def test_auth_requires_tls_and_sequence() -> None:
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: AUTH PLAIN AHVzZXIAc2VjcmV0
        S: 503 5.5.1 Send EHLO or HELO first
        C: HELO c
        S: 250 mx.example
        C: AUTH PLAIN AHVzZXIAc2VjcmV0
        S: 538 5.7.11 Encryption required for requested authentication mechanism
    """,
        config(starttls_available=True, auth_mechanisms=("PLAIN",)),
    )
    run_transcript(
        """
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        C: MAIL FROM:<a@b.example>
        C: AUTH PLAIN AHVzZXIAc2VjcmV0
        S: 250 mx.example
        S: 250 2.1.0 Ok
        S: 503 5.5.1 Not allowed during a mail transaction
    """,
        config(auth_mechanisms=("PLAIN",), auth_requires_tls=False),
    )
    run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        C: AUTH PLAIN AHVzZXIAc2VjcmV0
        S: 250 mx.example
        S: 502 5.5.1 Command not implemented
    """)


def test_auth_line_longer_than_command_limit_is_allowed() -> None:
    # RFC 4954 §4: AUTH lines up to 12288 octets even when commands are capped lower.
    blob = b64(b"\0user\0" + b"s" * 6000)
    ehlo = EHLO.replace("S: 250 DSN", "S: 250-DSN\nS: 250 AUTH PLAIN")
    run_transcript(
        f"""
        S: 220 mx.example ESMTP mailroom
        C: EHLO c
        {ehlo}
        C: AUTH PLAIN {blob}
        S: 535 5.7.8 Authentication credentials invalid
        C: NOOP {"x" * 600}
        S: 500 5.5.2 Line too long
        C: AUTH PLAIN
        S: 334 $
        C: {b64(b"x" * 9300)}
        S: 500 5.5.6 Authentication exchange line is too long
    """,
        config(tls_active=True, auth_mechanisms=("PLAIN",), max_command_line=512),
    )


def test_eof_mid_data_aborts_body_and_closes() -> None:
    sess = run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: HELO c
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<c@d.example>
        C: DATA
        C: partial
        S: 250 mx.example
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: <EOF>
    """)
    assert sess.events[-2:] == [BodyAborted("connection closed by peer"), ConnectionClosed()]


def test_commands_before_eof_are_answered() -> None:
    sess = run_transcript("""
        S: 220 mx.example ESMTP mailroom
        C: NOOP
        C: <EOF>
        S: 250 2.0.0 Ok
    """)
    assert sess.events == [ConnectionClosed()]


def test_reject_with_421_closes() -> None:
    eng = SMTPServerEngine(config())
    eng.receive_data(b"EHLO x\r\nNOOP\r\n")
    assert isinstance(eng.next_event(), Hello)
    eng.reject(reply(421, "4.3.2", "Shutting down"))
    assert eng.data_to_send() == b"421 4.3.2 Shutting down\r\n"
    assert eng.closed
    assert isinstance(eng.next_event(), ConnectionClosed)
