"""The client engine against the finished server engine, in memory: real transcripts."""

from __future__ import annotations

import pytest
from smtp_client_pump import PASSWORD, USER, Harness, server_config

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.smtp import client as C

ALICE = "alice@a.example"


def env(*rcpts: str | C.Recipient, **kw: object) -> C.Envelope:
    recipients = tuple(r if isinstance(r, C.Recipient) else C.Recipient(r) for r in rcpts)
    return C.Envelope(ALICE, recipients, **kw)  # type: ignore[arg-type]


def without(h: Harness, *keywords: str) -> None:
    """Make the in-memory server stop advertising some extensions."""
    original = h.server.capabilities
    h.server.capabilities = lambda: [c for c in original() if c.split()[0] not in keywords]  # type: ignore[method-assign]


def kinds(events: list[C.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_full_transcript_pipelined_with_dsn_params() -> None:
    h = Harness()
    caps = h.hello()
    assert caps.pipelining and caps.dsn and caps.size == 100_000 and caps.chunking
    envelope = env(
        C.Recipient("bob@b.example", ("SUCCESS", "FAILURE"), "rfc822;Bob+x=y@b.example"),
        "reject@b.example",
        C.Recipient("later@b.example", ("NEVER",)),
        size=40,
        body="8BITMIME",
        envid="id+1=2 x",
        ret="HDRS",
    )
    events, result = h.deliver(envelope, [b"Subject: hi\r\n\r\nbody\r\n"])
    # RFC 2920: MAIL, every RCPT and DATA went out in one write.
    assert h.writes[1] == (
        b"MAIL FROM:<alice@a.example> SIZE=40 BODY=8BITMIME RET=HDRS ENVID=id+2B1+3D2+20x\r\n"
        b"RCPT TO:<bob@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx+3Dy@b.example\r\n"
        b"RCPT TO:<reject@b.example>\r\n"
        b"RCPT TO:<later@b.example> NOTIFY=NEVER\r\n"
        b"DATA\r\n"
    )
    assert kinds(events) == ["RecipientReply"] * 3 + ["SendBody", "TransactionDone"]
    # The server decoded exactly what we meant.
    assert h.mails[0].params.envid == "id+1=2 x" and h.mails[0].params.ret == "HDRS"
    assert h.rcpts[0].params.orcpt == "rfc822;Bob+x=y@b.example"
    assert h.rcpts[2].params.notify == ("NEVER",)
    assert [(r.outcome, r.stage, r.reply.code, r.reply.enhanced) for r in result.recipients] == [
        ("delivered", "body", 250, "2.0.0"),
        ("permanent", "rcpt", 550, "5.1.1"),
        ("temporary", "rcpt", 451, "4.2.0"),
    ]
    assert h.bodies == [b"Subject: hi\r\n\r\nbody\r\n"]
    h.client.quit()
    assert kinds(h.exchange()) == ["Closed"]
    assert h.client.closed and h.server.closed


def test_no_pipelining_sends_one_command_at_a_time() -> None:
    h = Harness()
    without(h, "PIPELINING")
    assert not h.hello().pipelining
    _, result = h.deliver(env("bob@b.example", "carol@b.example"), [b"x\r\n"])
    assert h.writes[1:5] == [
        b"MAIL FROM:<alice@a.example>\r\n",
        b"RCPT TO:<bob@b.example>\r\n",
        b"RCPT TO:<carol@b.example>\r\n",
        b"DATA\r\n",
    ]
    assert all(r.delivered for r in result.recipients)


def test_no_pipelining_all_rejected_skips_data_and_resets() -> None:
    h = Harness()
    without(h, "PIPELINING")
    h.hello()
    _, result = h.deliver(env("reject1@b.example", "later@b.example"), [])
    assert b"DATA\r\n" not in b"".join(h.writes)
    assert [r.stage for r in result.recipients] == ["rcpt", "rcpt"]
    assert h.writes[-1] == b"RSET\r\n"  # the server still holds MAIL: reset before reuse
    _, second = h.deliver(env("bob@b.example"), [b"ok\r\n"])
    assert second.recipients[0].delivered


def test_pipelined_all_rejected_data_refused_then_reset_and_reuse() -> None:
    h = Harness()
    h.hello()
    events, result = h.deliver(env("reject@b.example"), [])
    assert kinds(events) == ["RecipientReply", "TransactionDone"]
    assert result.recipients[0].reply.code == 550 and result.recipients[0].stage == "rcpt"
    # The pipelined DATA was answered 554 by the server; the engine then sent RSET on its own.
    assert h.writes[-1] == b"RSET\r\n"
    _, second = h.deliver(env("bob@b.example"), [b"ok\r\n"])
    assert second.recipients[0].delivered
    assert b"MAIL FROM" in h.writes[-3] and h.writes[-3].startswith(b"MAIL")


def test_mail_refused_is_every_recipients_reason() -> None:
    h = Harness()
    h.hello()
    envelope = C.Envelope("badsender@a.example", (C.Recipient("bob@b.example"), C.Recipient("c@b.example")))
    _, result = h.deliver(envelope, [])
    assert {(r.stage, r.reply.code, r.reply.enhanced) for r in result.recipients} == {("mail", 553, "5.7.1")}
    assert result.mail_reply is not None and result.mail_reply.code == 553
    # No RSET: the server has no transaction after a refused MAIL.
    assert not any(w == b"RSET\r\n" for w in h.writes)
    _, second = h.deliver(env("bob@b.example"), [b"ok\r\n"])
    assert second.recipients[0].delivered


def test_body_refused_applies_to_accepted_recipients_only() -> None:
    h = Harness()
    h.hello()
    _, result = h.deliver(env("bob@b.example", "reject@b.example"), [b"REJECT-BODY\r\n"])
    assert [(r.stage, r.reply.code) for r in result.recipients] == [("body", 554), ("rcpt", 550)]
    assert result.final_reply is not None and result.final_reply.code == 554
    assert not any(w == b"RSET\r\n" for w in h.writes)  # the final reply ended the transaction


DOT_CHUNKS = [
    [b".", b"\r\n.", b"\r", b"\n", b".", b"\r\n"],
    [b"a\r", b"\n.", b".\r\n", b"end"],
    [b"x\n.\n", b".\r", b"\r.", b"\n"],
    [b""],
    [b"\r\n.\r\n"],
    [b"line\r\n", b".", b""],
]


@pytest.mark.parametrize("split", [0, 1, 3])
@pytest.mark.parametrize("chunks", DOT_CHUNKS)
def test_dot_stuffing_across_chunk_boundaries(chunks: list[bytes], split: int) -> None:
    h = Harness(split=split)
    h.hello()
    _, result = h.deliver(env("bob@b.example"), chunks)
    assert result.recipients[0].delivered, result
    # RFC 5321 §4.5.2 round trip; bare CR and LF arrive as CRLF; a missing final CRLF is added.
    expected = C._EOL.sub(b"\r\n", b"".join(chunks))
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert h.bodies == [expected]


def test_the_terminator_never_appears_early_on_the_wire() -> None:
    h = Harness()
    h.hello()
    hostile = [b"a\n.\nMAIL FROM:<x@y>\r\n", b"\r\n.", b"\r\n"]
    h.deliver(env("bob@b.example"), hostile)
    wire = b"".join(h.writes[2:])
    assert wire.count(b"\r\n.\r\n") == 1 and wire.endswith(b"\r\n.\r\n")
    assert b"\n.\n" not in wire and len(h.mails) == 1


def transcript(split: int) -> tuple[list[C.Event], list[bytes]]:
    h = Harness(split=split, server_cfg=server_config(starttls_available=True, auth_mechanisms=("PLAIN",)))
    events = h.exchange()
    h.client.ehlo("client.example")
    events += h.exchange()
    h.client.starttls()
    events += h.exchange()
    h.client.ehlo("client.example")
    events += h.exchange()
    h.client.auth(USER, PASSWORD)
    events += h.exchange()
    more, _ = h.deliver(env("bob@b.example", "reject@b.example"), [b"Subject: s\r\n\r\n.dot\r\n"])
    events += more
    more, _ = h.deliver(env("later@b.example"), [])
    events += more
    h.client.noop()
    events += h.exchange()
    h.client.quit()
    events += h.exchange()
    return events, h.bodies


def test_byte_by_byte_splits_give_the_same_events() -> None:
    whole = transcript(0)
    assert whole == transcript(1)
    assert whole == transcript(7)
    names = kinds(whole[0])
    assert names[:5] == ["Greeting", "HelloReply", "StartTLSReply", "HelloReply", "AuthReply"]
    assert names[-2:] == ["CommandReply", "Closed"]


def test_starttls_then_ehlo_again() -> None:
    h = Harness(server_cfg=server_config(starttls_available=True))
    caps = h.hello()
    assert caps.starttls
    h.client.starttls()
    (ev,) = h.exchange()
    assert isinstance(ev, C.StartTLSReply) and ev.reply.code == 220
    assert h.client.tls_active and h.client.state is C.ClientState.CONNECTED
    with pytest.raises(LocalProtocolError):
        h.client.send_mail(env("bob@b.example"))  # EHLO first (RFC 3207 §4.2)
    h.client.ehlo("client.example")
    (hello,) = h.exchange()
    assert isinstance(hello, C.HelloReply) and hello.capabilities and not hello.capabilities.starttls


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms(mechanism: str) -> None:
    cfg = server_config(tls_active=True, auth_mechanisms=("PLAIN", "LOGIN"))
    h = Harness(server_cfg=cfg, client_cfg=C.ClientConfig(tls_active=True))
    assert h.hello().auth_mechanisms == ("PLAIN", "LOGIN")
    h.client.auth(USER, PASSWORD, mechanism)
    (ev,) = h.exchange()
    assert isinstance(ev, C.AuthReply) and ev.reply.code == 235 and h.client.authenticated


def test_auth_wrong_password_and_no_mechanism() -> None:
    cfg = server_config(tls_active=True, auth_mechanisms=("LOGIN",))
    h = Harness(server_cfg=cfg, client_cfg=C.ClientConfig(tls_active=True))
    h.hello()
    h.client.auth(USER, "wrong")
    (ev,) = h.exchange()
    assert isinstance(ev, C.AuthReply) and ev.reply.code == 535 and not h.client.authenticated
    h.client.auth(USER, PASSWORD, "CRAM-MD5")
    (ev,) = h.exchange()
    assert isinstance(ev, C.AuthReply) and ev.synthetic and ev.reply.code == 504


def test_auth_refused_without_tls() -> None:
    h = Harness(server_cfg=server_config(auth_requires_tls=False, auth_mechanisms=("PLAIN",)))
    h.hello()
    with pytest.raises(LocalProtocolError):
        h.client.auth(USER, PASSWORD)
    h.client.auth(USER, PASSWORD, allow_plaintext=True)
    (ev,) = h.exchange()
    assert isinstance(ev, C.AuthReply) and ev.reply.code == 235


@pytest.mark.parametrize("chunks", [[b"a" * 10, b"\x00binary\r\n.\r\n"], []])
def test_bdat_chunks(chunks: list[bytes]) -> None:
    h = Harness(client_cfg=C.ClientConfig(prefer_chunking=True))
    h.hello()
    events, result = h.deliver(env("bob@b.example", "reject@b.example", body="BINARYMIME"), chunks)
    assert [e for e in events if isinstance(e, C.SendBody)] == [C.SendBody(chunking=True)]
    assert b"DATA\r\n" not in b"".join(h.writes)
    assert h.writes[-1] == b"BDAT 0 LAST\r\n"
    assert h.bodies == [b"".join(chunks)]  # BDAT octets are sent unchanged
    assert [r.outcome for r in result.recipients] == ["delivered", "permanent"]


def test_bdat_refused_chunk_ends_transaction_and_later_chunks_are_ignored() -> None:
    h = Harness(
        client_cfg=C.ClientConfig(prefer_chunking=True), server_cfg=server_config(max_message_size=10)
    )
    h.hello()
    h.client.send_mail(env("bob@b.example"))
    assert kinds(h.exchange()) == ["RecipientReply", "SendBody"]
    h.client.send_body(b"x" * 20)  # the server's limit is 10: its BDAT is refused with 552
    h.client.send_body(b"more")
    events = h.exchange()
    h.client.send_body(b"ignored")
    h.client.end_body()
    events += h.exchange()
    done = [e for e in events if isinstance(e, C.TransactionDone)]
    assert len(done) == 1 and done[0].result.recipients[0].reply.code == 552
    assert not any(b"LAST" in w or b"ignored" in w for w in h.writes)
    _, second = h.deliver(env("bob@b.example"), [b"ok"])
    assert second.recipients[0].delivered


def test_requirements_the_server_cannot_meet_fail_locally() -> None:
    h = Harness(server_cfg=server_config(max_message_size=1000))
    without(h, "8BITMIME", "SMTPUTF8", "BINARYMIME")
    h.hello()
    sent = len(h.writes)
    cases = [
        (env("bob@b.example", size=5000), 552, "5.3.4"),
        (env("bob@b.example", body="8BITMIME"), 554, "5.6.3"),
        (env("bob@b.example", body="BINARYMIME"), 554, "5.6.3"),
        (env("bøb@b.example", smtputf8=True), 553, "5.6.7"),
        (env("bob@b.example", smtputf8=True), 554, "5.6.9"),
        (C.Envelope("bad address@a.example", (C.Recipient("bob@b.example"),)), 553, "5.1.7"),
        (env("not an address"), 553, "5.1.3"),
    ]
    for envelope, code, enhanced in cases:
        h.client.send_mail(envelope)
        (ev,) = h.exchange()
        assert isinstance(ev, C.TransactionDone)
        (r,) = ev.result.recipients
        assert (r.reply.code, r.reply.enhanced, r.stage, r.synthetic) == (code, enhanced, "local", True)
        assert ev.result.mail_reply is None
    assert len(h.writes) == sent  # nothing went on the wire


def test_one_bad_recipient_among_good_ones_is_not_sent() -> None:
    h = Harness()
    h.hello()
    _, result = h.deliver(env("bob@b.example", "x y@b.example"), [b"hi\r\n"])
    assert [(r.stage, r.reply.code) for r in result.recipients] == [("body", 250), ("local", 553)]
    assert len(h.rcpts) == 1


def test_smtputf8_when_offered() -> None:
    h = Harness()
    h.hello()
    _, result = h.deliver(env("bøb@b.example", smtputf8=True, body="8BITMIME"), [b"x\r\n"])
    assert result.recipients[0].delivered
    assert h.mails[0].params.smtputf8 and h.rcpts[0].address == "bøb@b.example"


def test_utf8_orcpt_round_trip() -> None:
    h = Harness()
    h.hello()
    rcpt = C.Recipient("bob@b.example", orcpt="utf-8;bøb+\\=@b.example")
    h.deliver(env(rcpt), [b"x\r\n"])
    assert b"ORCPT=utf-8;b\\x{F8}b\\x{2B}\\x{5C}\\x{3D}@b.example" in h.writes[1]
    assert h.rcpts[0].params.orcpt == "utf-8;bøb+\\=@b.example"


def test_helo_fallback_and_no_extensions() -> None:
    h = Harness()
    h.exchange()
    h.client.helo("client.example")
    (ev,) = h.exchange()
    assert isinstance(ev, C.HelloReply) and ev.capabilities == C.Capabilities()
    _, result = h.deliver(env("bob@b.example", size=10, envid="x"), [b"x\r\n"])
    assert h.writes[1] == b"MAIL FROM:<alice@a.example>\r\n"  # no SIZE/ENVID without EHLO
    assert result.recipients[0].delivered


def test_misuse_raises_local_protocol_error() -> None:
    h = Harness()
    with pytest.raises(LocalProtocolError):
        h.client.send_mail(env("bob@b.example"))  # before the greeting and EHLO
    h.hello()
    with pytest.raises(LocalProtocolError):
        h.client.send_body(b"x")
    with pytest.raises(LocalProtocolError):
        h.client.ehlo("bad name!")
    h.client.send_mail(env("bob@b.example"))
    with pytest.raises(LocalProtocolError):
        h.client.send_mail(env("bob@b.example"))
    assert kinds(h.exchange())[-1] == "SendBody"
    with pytest.raises(LocalProtocolError):
        h.client.rset()
    with pytest.raises(LocalProtocolError):
        h.client.quit()
    h.client.end_body()
    h.exchange()
    h.client.quit()
    with pytest.raises(LocalProtocolError):
        h.client.noop()


def test_reply_timeouts_follow_rfc_5321() -> None:
    h = Harness()
    assert h.client.reply_timeout == 300.0
    h.hello()
    assert h.client.reply_timeout is None
    h.client.send_mail(env("bob@b.example"))
    assert h.client.reply_timeout == C.TIMEOUT_MAIL
    h.exchange()
    assert h.client.reply_timeout is None  # sending the body: TIMEOUT_DATA_BLOCK per write
    h.client.end_body()
    assert h.client.reply_timeout == C.TIMEOUT_DATA_END
