"""The reply parser and the client engine fed server bytes by hand: odd, hostile and random input."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.smtp import client as C
from mailroom.wire.smtp.replies import Reply

EHLO_OK = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-DSN\r\n250 8BITMIME\r\n"


def drain(c: C.SMTPClientEngine) -> list[C.Event]:
    events: list[C.Event] = []
    while True:
        ev = c.next_event()
        if ev is C.NEED_DATA:
            return events
        assert not isinstance(ev, C.Sentinel)
        events.append(ev)
        if isinstance(ev, C.Closed):
            return events


def ready(ehlo: bytes = EHLO_OK) -> C.SMTPClientEngine:
    c = C.SMTPClientEngine()
    c.receive_data(b"220 mx.example ESMTP\r\n")
    assert [type(e) for e in drain(c)] == [C.Greeting]
    c.ehlo("client.example")
    assert c.data_to_send() == b"EHLO client.example\r\n"
    c.receive_data(ehlo)
    (ev,) = drain(c)
    assert isinstance(ev, C.HelloReply) and ev.capabilities is not None
    return c


def parse_all(data: bytes, **kw: int) -> list[Reply]:
    p = C.ReplyParser(**kw)
    p.feed(data)
    out = []
    while (r := p.next_reply()) is not None:
        out.append(r)
    return out


# --- the parser ---------------------------------------------------------------------------------


def test_multiline_reply_with_enhanced_codes() -> None:
    (r,) = parse_all(b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n")
    assert r == Reply(550, "5.1.1", ("first", "second", "third"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"220\r\n", Reply(220, None, ("",))),  # RFC 5321 §4.2: the text is optional
        (b"250 ok\n", Reply(250, None, ("ok",))),  # a bare LF is tolerated
        (b"550 4.1.1 class mismatch\r\n", Reply(550, None, ("4.1.1 class mismatch",))),
        (b"250 2.0.0\r\n", Reply(250, "2.0.0", ("",))),
        (b"354 2.0.0 go ahead\r\n", Reply(354, None, ("2.0.0 go ahead",))),  # no enhanced codes on 3xx
        (b"451 t\x00e\x1bst\xff\r\n", Reply(451, None, ("t?e?st\ufffd",))),
        (b"250 caf\xc3\xa9\r\n", Reply(250, None, ("café",))),
    ],
)
def test_reply_forms(raw: bytes, expected: Reply) -> None:
    assert parse_all(raw) == [expected]


@pytest.mark.parametrize(
    "raw",
    [
        b"hello\r\n",
        b"2500 too many digits\r\n",
        b"150 preliminary\r\n",  # RFC 5321 §4.2: no 1yz replies in SMTP
        b"650 bad class\r\n",
        b"25 short\r\n",
        b"250-a\r\n251 b\r\n",  # RFC 5321 §4.2.1: one code per reply
        b"250_x\r\n",
    ],
)
def test_malformed_replies(raw: bytes) -> None:
    with pytest.raises(C.ReplyError):
        parse_all(raw)


def test_bounds() -> None:
    with pytest.raises(C.ReplyError, match="too long"):
        parse_all(b"250 " + b"x" * 5000 + b"\r\n")
    with pytest.raises(C.ReplyError, match="lines"):
        parse_all(b"250-x\r\n" * 101 + b"250 x\r\n")
    assert len(parse_all(b"250-x\r\n" * 99 + b"250 x\r\n")[0].lines) == 100
    with pytest.raises(C.ReplyError):
        parse_all(b"250 " + b"x" * 100, max_line=50)  # no line end yet, already too long


reply_codes = st.integers(200, 559).filter(lambda c: c % 100 < 60)
texts = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=30)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    code = draw(reply_codes)
    enhanced = None
    if code // 100 != 3 and draw(st.booleans()):
        enhanced = f"{code // 100}.{draw(st.integers(0, 999))}.{draw(st.integers(0, 999))}"
    lines = draw(st.lists(texts.map(lambda t: t.strip() or "x"), min_size=1, max_size=5))
    if enhanced is None and re.match(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}( |$)", lines[0]):
        lines[0] = "x " + lines[0]  # such text would read as an enhanced code: the wire cannot tell
    return Reply(code, enhanced, tuple(lines))


@settings(max_examples=300, deadline=None)
@given(st.lists(replies(), min_size=1, max_size=4), st.integers(1, 9))
def test_generated_replies_round_trip_whole_and_split(items: list[Reply], step: int) -> None:
    data = b"".join(r.to_bytes() for r in items)
    assert parse_all(data) == items
    p = C.ReplyParser()
    out = []
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
        while (r := p.next_reply()) is not None:
            out.append(r)
    assert out == items


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_replies_or_reply_error(data: bytes) -> None:
    p = C.ReplyParser(max_line=64, max_lines=5)
    p.feed(data)
    try:
        while p.next_reply() is not None:
            pass
    except C.ReplyError:
        pass


# --- the engine against hostile servers --------------------------------------------------------------


def start_transaction(c: C.SMTPClientEngine, *rcpts: str) -> None:
    c.send_mail(C.Envelope("a@a.example", tuple(C.Recipient(r) for r in rcpts)))


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"250 " + b"A" * 5000,
        b"250-x\r\n" * 150,
        b"250-2.1.0 ok\r\n550 5.1.1 no\r\n",
        b"334 unexpected\r\n",
        b"199 x\r\n",
    ],
)
def test_garbage_mid_transaction_settles_everything_temporary(garbage: bytes) -> None:
    c = ready()
    start_transaction(c, "b@b.example", "c@b.example")
    c.data_to_send()
    c.receive_data(garbage)
    events = drain(c)
    assert isinstance(events[0], C.ProtocolFailure)
    done = [e for e in events if isinstance(e, C.TransactionDone)]
    assert len(done) == 1 and isinstance(events[-1], C.Closed)
    assert {(r.outcome, r.synthetic) for r in done[0].result.recipients} == {("temporary", True)}
    assert c.closed and drain(c) == [C.Closed("connection closed")]
    c.receive_data(b"250 late\r\n")  # ignored after close
    assert drain(c) == [C.Closed("connection closed")]


def test_421_at_any_time_closes_and_settles() -> None:
    c = ready()
    start_transaction(c, "b@b.example", "c@b.example")
    c.receive_data(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n421 4.3.2 shutting down\r\n")
    events = drain(c)
    rr = [e for e in events if isinstance(e, C.RecipientReply)]
    assert [e.reply.code for e in rr] == [250, 421]
    (done,) = [e for e in events if isinstance(e, C.TransactionDone)]
    # b was accepted: the pending DATA was settled with the 421; c got the 421 itself.
    assert [(r.reply.code, r.synthetic, r.stage) for r in done.result.recipients] == [
        (421, True, "data"),
        (421, False, "rcpt"),
    ]
    assert events[-1] == C.Closed(
        "the server closed the connection (421)", Reply(421, "4.3.2", ("shutting down",))
    )


def test_unsolicited_421_while_idle_and_unsolicited_other_reply() -> None:
    c = ready()
    c.receive_data(b"421 4.4.2 idle timeout\r\n")
    assert [type(e) for e in drain(c)] == [C.Closed]
    c = ready()
    c.receive_data(b"250 surprise\r\n")
    assert [type(e) for e in drain(c)] == [C.ProtocolFailure, C.Closed]


def test_eof_after_the_body_is_a_temporary_maybe_delivered() -> None:
    c = ready()
    start_transaction(c, "b@b.example")
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert [type(e) for e in drain(c)] == [C.RecipientReply, C.SendBody]
    c.send_body(b"hello")
    c.end_body()
    assert c.data_to_send().endswith(b"DATA\r\nhello\r\n.\r\n")
    c.receive_data(b"")
    events = drain(c)
    (done,) = [e for e in events if isinstance(e, C.TransactionDone)]
    (r,) = done.result.recipients
    assert (r.stage, r.outcome, r.synthetic, r.reply.enhanced) == ("body", "temporary", True, "4.4.2")
    with pytest.raises(LocalProtocolError):
        c.send_body(b"x")  # the caller itself ended the body: misuse


def test_eof_mid_body_then_body_calls_are_ignored() -> None:
    c = ready()
    start_transaction(c, "b@b.example")
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    drain(c)
    c.send_body(b"part")
    assert c.data_to_send().endswith(b"DATA\r\npart")
    c.receive_data(b"")
    events = drain(c)
    assert [type(e) for e in events] == [C.TransactionDone, C.Closed]
    (r,) = events[0].result.recipients  # type: ignore[union-attr]
    assert (r.stage, r.outcome, r.synthetic) == ("body", "temporary", True)
    c.send_body(b"more")
    c.end_body()
    assert c.data_to_send() == b""


def test_data_answered_250_is_a_protocol_failure() -> None:
    c = ready()
    start_transaction(c, "b@b.example")
    c.receive_data(b"250 ok\r\n250 ok\r\n250 what\r\n")
    events = drain(c)
    assert isinstance(events[1], C.ProtocolFailure)


def test_354_with_no_recipient_accepted_sends_an_empty_message() -> None:
    """RFC 2920 §3.1: a server that answers the pipelined DATA with 354 gets "." at once."""
    c = ready()
    start_transaction(c, "b@b.example")
    c.data_to_send()
    c.receive_data(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    events = drain(c)
    assert not any(isinstance(e, C.SendBody) for e in events)
    assert c.data_to_send() == b".\r\n"
    c.receive_data(b"250 2.0.0 queued nothing\r\n")
    (done,) = [e for e in drain(c) if isinstance(e, C.TransactionDone)]
    assert done.result.recipients[0].reply.code == 550
    assert c.data_to_send() == b"RSET\r\n"


def test_starttls_response_injection_is_discarded() -> None:
    c = ready(EHLO_OK.replace(b"250 8BITMIME", b"250-8BITMIME\r\n250 STARTTLS"))
    c.starttls()
    assert c.data_to_send() == b"STARTTLS\r\n"
    c.receive_data(b"220 go ahead\r\n250-evil.example\r\n250 AUTH PLAIN\r\n")
    (ev,) = drain(c)
    assert isinstance(ev, C.StartTLSReply) and ev.discarded == len(b"250-evil.example\r\n250 AUTH PLAIN\r\n")
    c.receive_data(b"more plaintext\r\n")  # still before the handshake: dropped
    assert drain(c) == []
    c.tls_started()
    c.ehlo("client.example")
    c.receive_data(b"250-mx.example\r\n250 SIZE 5\r\n")
    (hello,) = drain(c)
    assert isinstance(hello, C.HelloReply) and hello.capabilities is not None
    assert hello.capabilities.size == 5 and not hello.capabilities.starttls


def test_greeting_refusal_and_quit() -> None:
    c = C.SMTPClientEngine()
    c.receive_data(b"554 5.7.1 no service for you\r\n")
    (g,) = drain(c)
    assert isinstance(g, C.Greeting) and g.reply.code == 554
    with pytest.raises(LocalProtocolError):
        c.ehlo("client.example")
    c.quit()
    assert c.data_to_send() == b"QUIT\r\n"
    c.receive_data(b"221 bye\r\n")
    assert [type(e) for e in drain(c)] == [C.Closed]


def test_capability_parsing() -> None:
    reply = Reply(
        250,
        None,
        (
            "mx",
            "SIZE",
            "AUTH=LOGIN",
            "AUTH PLAIN login",
            "auth cram-md5",
            "8bitmime",
            "X-FOO bar baz",
            "!!bad",
            " ",
        ),
    )
    caps = C.Capabilities.parse(reply)
    assert caps.size == 0 and caps.eightbitmime and caps.auth_mechanisms == ("LOGIN", "PLAIN", "CRAM-MD5")
    assert caps.keywords["X-FOO"] == ("bar", "baz") and "!!BAD" not in caps.keywords
    assert C.Capabilities.parse(Reply(250, None, ("mx", "SIZE 12345678901234567890123"))).size == 0


def test_xtext() -> None:
    assert C.xtext_encode("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+C3+A9"


ACTIONS = st.sampled_from(["ehlo", "mail", "body", "end", "rset", "noop", "quit", "starttls", "tls"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            ACTIONS,
            st.sampled_from(
                [
                    b"220 x\r\n",
                    b"250 ok\r\n",
                    b"250-x\r\n250 PIPELINING\r\n",
                    b"354 go\r\n",
                    b"550 no\r\n",
                    b"421 bye\r\n",
                    b"220 tls\r\n",
                ]
            ),
        ),
        max_size=40,
    )
)
def test_random_server_input_never_raises_and_every_transaction_ends(steps: list[bytes | str]) -> None:
    c = C.SMTPClientEngine(C.ClientConfig(max_line=80, max_lines=5))
    started = finished = 0
    for step in steps:
        if isinstance(step, bytes):
            c.receive_data(step)
        else:
            try:
                if step == "ehlo":
                    c.ehlo("client.example")
                elif step == "mail":
                    c.send_mail(C.Envelope("a@a.example", (C.Recipient("b@b.example"),)))
                    started += 1
                elif step == "body":
                    c.send_body(b"x.\r\n.y")
                elif step == "end":
                    c.end_body()
                elif step == "rset":
                    c.rset()
                elif step == "noop":
                    c.noop()
                elif step == "quit":
                    c.quit()
                elif step == "starttls":
                    c.starttls()
                else:
                    c.tls_started()
            except LocalProtocolError:
                pass
        for ev in drain(c):
            finished += isinstance(ev, C.TransactionDone)
        c.data_to_send()
    c.receive_data(b"")
    for ev in drain(c):
        finished += isinstance(ev, C.TransactionDone)
    assert c.closed
    assert finished == started


def test_pipelining_stops_after_a_group_ending_command() -> None:
    """RFC 2920 §3.1: NOOP (like EHLO, DATA, QUIT) may only be last in a group."""
    c = ready()
    c.noop()
    c.rset()
    c.quit()
    assert c.data_to_send() == b"NOOP\r\n"
    c.receive_data(b"250 2.0.0 ok\r\n")
    assert [type(e) for e in drain(c)] == [C.CommandReply]
    assert c.data_to_send() == b"RSET\r\nQUIT\r\n"  # RSET may be pipelined; QUIT ends the group
