"""Property tests: any input only ever yields events and well-formed replies, never an exception."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from smtp_dialog import config

from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BodyAborted,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Hello,
    MailFrom,
    RcptTo,
    StartTLS,
)
from mailroom.wire.smtp.replies import reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine
from mailroom.wire.smtp.state import State

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")

CONFIGS = st.builds(
    config,
    max_message_size=st.integers(min_value=1, max_value=200),
    starttls_available=st.booleans(),
    tls_active=st.booleans(),
    auth_mechanisms=st.sampled_from([(), ("PLAIN",), ("PLAIN", "LOGIN")]),
    auth_requires_tls=st.booleans(),
    auth_required=st.booleans(),
    max_recipients=st.integers(min_value=1, max_value=3),
    max_command_line=st.integers(min_value=32, max_value=200),
    max_errors=st.integers(min_value=0, max_value=30),
    forbid_bare_lf=st.booleans(),
    dsn=st.booleans(),
)

VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "HELP", "VRFY"]
VERBS += ["EXPN", "QUIT", "STARTTLS", "AUTH", "AUTH PLAIN", "AUTH LOGIN", "mail from: ", "rcpt to:"]
ARG_ALPHABET = st.sampled_from(
    [
        *list('<>@:.,"\\[]=+; -aZ09'),
        "IPv6:",
        "::1",
        "SIZE=",
        "BODY=",
        "NOTIFY=",
        "ORCPT=rfc822;",
        "LAST",
        "SMTPUTF8",
        "é",
        "\x00",
        "\r",
        "\n",
        "\t",
        "\x7f",
        "用",
        "AHVzZXIAc2VjcmV0",
        "*",
        "=",
    ]
)
COMMAND_LINE = st.builds(
    lambda verb, args, end: (verb + " " + "".join(args)).encode("utf-8", "surrogatepass") + end,
    st.sampled_from(VERBS),
    st.lists(ARG_ALPHABET, max_size=12),
    st.sampled_from([b"\r\n", b"\n", b"\r\n", b""]),
)
VALID_LINE = st.sampled_from(
    [
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
        b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 4\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<> SMTPUTF8 BODY=BINARYMIME\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"RCPT TO:<Postmaster> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b".\r\n",
        b"..x\r\n",
        b"body\r\n",
        b"body\n.\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
        b"AUTH LOGIN\r\n",
        b"*\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
    ]
)
LINE = st.one_of(VALID_LINE, VALID_LINE, COMMAND_LINE)
CHUNK = st.one_of(st.binary(max_size=64), st.lists(LINE, min_size=1, max_size=8).map(b"".join))


def drive(cfg: ServerConfig, chunks: list[bytes], choices: list[int]) -> tuple[int, int]:
    """Run the engine over ``chunks`` with decisions taken from ``choices``; check invariants."""
    eng = SMTPServerEngine(cfg)
    eng.greeting()
    out = bytearray(eng.data_to_send())
    opened = closed_bodies = 0
    pick = iter(choices * 50)

    def decide(ev: object) -> None:
        c = next(pick, 0)
        if isinstance(ev, (AuthStart, AuthResponse)) and c >= 16:
            eng.auth_challenge(bytes([c]) * (c % 5))
        elif c == 20:
            eng.reject(reply(421, "4.7.0", "closing"))
        elif c >= 14:
            eng.reject(reply(550, "5.7.1", "no"))
        else:
            eng.accept("fine" if c % 2 else None)

    for chunk in [*chunks, b""]:
        eng.receive_data(chunk)  # an empty chunk is an early EOF; the final b"" always closes
        for _ in range(10_000):
            ev = eng.next_event()
            if ev is NEED_DATA:
                break
            if ev is PAUSED:
                if eng.state is State.TLS:
                    eng.tls_started()
                    continue
                raise AssertionError("PAUSED with no decision pending")
            if isinstance(ev, ConnectionClosed):
                break
            if isinstance(ev, DataStart):
                opened += 1
            if isinstance(ev, (BodyEnd, BodyAborted)):
                closed_bodies += 1
            if isinstance(ev, (Hello, MailFrom, RcptTo, BodyEnd, StartTLS, AuthStart, AuthResponse)):
                decide(ev)
        else:
            raise AssertionError("engine made no progress")
        out += eng.data_to_send()
    # Everything written is a sequence of well-formed reply lines (334 included).
    assert REPLY_LINE.sub(b"", bytes(out)) == b"", bytes(out)[-200:]
    assert eng.closed
    # Every body that started was ended exactly once.
    assert opened == closed_bodies
    return opened, out.count(b"\r\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=CONFIGS, chunks=st.lists(CHUNK, max_size=12), choices=st.lists(st.integers(0, 20), min_size=1))
def test_any_input_only_yields_events_and_replies(
    cfg: ServerConfig, chunks: list[bytes], choices: list[int]
) -> None:
    opened, lines = drive(cfg, chunks, choices)
    event(f"bodies={min(opened, 3)} reply-lines={min(lines, 10)}")
    target(float(opened + lines / 10))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), choices=st.lists(st.integers(0, 20), min_size=1))
def test_random_bytes_after_a_valid_prefix(data: bytes, choices: list[int]) -> None:
    prefix = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    for tail in (b"DATA\r\n", b"BDAT 50\r\n", b""):
        drive(config(max_message_size=100), [prefix + tail, data], choices)
