"""SMTP through real sockets against a running `mailroom serve`: MX, submission, submissions."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_fixture import PASSWORD, RunningServer, inbox, insecure_tls, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("smtp")
    with running_server(root, extra='[limits]\nmessage_size = "64KiB"\n') as srv:
        yield srv


def mx(server: RunningServer) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example", timeout=10)


def unique() -> str:
    return uuid.uuid4().hex


class Raw:
    """A line-level client for exact transcripts."""

    def __init__(self, port: int, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = insecure_tls().wrap_socket(sock) if tls else sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"\r\n".join(lines)

    def cmd(self, line: str | bytes) -> bytes:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        self.sock = insecure_tls().wrap_socket(self.sock)

    def close(self) -> None:
        self.sock.close()


def test_mx_local_delivery_exact_bytes(server: RunningServer) -> None:
    tag = unique()
    body = f"Subject: {tag}\r\nFrom: x@remote.test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n".encode()
    with mx(server) as s:
        assert s.sendmail("sender@remote.test", ["alice@example.org"], body) == {}
    stored = [m for m in inbox(server, "alice@example.org") if tag.encode() in m]
    assert len(stored) == 1
    msg = stored[0]
    assert msg.startswith(
        b"Return-Path: <sender@remote.test>\r\nReceived: from client.example ([127.0.0.1])\r\n"
    )
    assert b"\tby mx.example.org (mailroom) with ESMTP id " in msg
    assert re.search(rb"\tfor <alice@example.org>; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n", msg)
    # smtplib dot-stuffs, the server unstuffs (RFC 5321 §4.5.2): exactly the original bytes after the trace
    assert msg.endswith(b"\r\n\r\n" + body) or msg.endswith(b"+0000\r\n" + body)
    assert msg.endswith(b"\r\nline one\r\n.leading dot\r\n..two dots\r\n")


def test_mx_recipient_resolution(server: RunningServer) -> None:
    tag = unique()
    body = f"Subject: {tag}\r\n\r\nhi\r\n".encode()
    with mx(server) as s:
        refused = s.sendmail(
            "sender@remote.test",
            [
                "team@example.org",
                "BOB+lists@Example.ORG",
                "anything@example.net",
                "Postmaster",
                "nobody@example.org",
                "x@gmail.example",
                "loop1@example.org",
            ],
            body,
        )
    assert refused == {
        "nobody@example.org": (550, b"5.1.1 Recipient address rejected: user unknown"),
        "x@gmail.example": (550, b"5.7.1 Relay access denied"),
        "loop1@example.org": (550, b"5.4.6 Recipient address rejected: alias loop"),
    }
    count = lambda who: sum(tag.encode() in m for m in inbox(server, who))  # noqa: E731
    assert count("alice@example.org") == 1  # team + Postmaster (first account) -> one copy
    assert count("bob@example.org") == 1  # team + bob+lists -> one copy
    assert count("carol@example.net") == 1  # catch-all
    conn = server.db()
    try:
        rows = conn.execute(
            "SELECT address, orcpt FROM queue_recipients WHERE address = 'friend@remote.test'"
        ).fetchall()
    finally:
        conn.close()
    assert ("friend@remote.test", "rfc822;team@example.org") in rows  # the alias's external target is queued


def test_mx_refuses_auth_and_relay(server: RunningServer) -> None:
    c = Raw(server.ports["smtp"])
    assert c.reply().startswith(b"220 mx.example.org ESMTP")
    ehlo = c.cmd("EHLO client.example")
    assert b"AUTH" not in ehlo and b"STARTTLS" in ehlo
    assert c.cmd(
        "AUTH PLAIN " + base64.b64encode(b"\0alice@example.org\0" + PASSWORD.encode()).decode()
    ).startswith(b"5")
    assert c.cmd("MAIL FROM:<a@remote.test>") == b"250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<someone@elsewhere.example>") == b"550 5.7.1 Relay access denied"
    assert c.cmd("QUIT") == b"221 2.0.0 Bye"
    c.close()


def test_size_limit_keeps_session_in_sync(server: RunningServer) -> None:
    c = Raw(server.ports["smtp"])
    c.reply()
    assert b"SIZE 65536" in c.cmd("EHLO client.example")
    assert (
        c.cmd("MAIL FROM:<a@remote.test> SIZE=999999")
        == b"552 5.3.4 Message size exceeds fixed maximum message size"
    )
    assert c.cmd("MAIL FROM:<a@remote.test>") == b"250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@example.org>") == b"250 2.1.5 Ok"
    assert c.cmd("DATA").startswith(b"354")
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 100 + b".\r\nNOOP\r\n")
    assert c.reply() == b"552 5.3.4 Message size exceeds fixed maximum message size"
    assert c.reply() == b"250 2.0.0 Ok"  # the pipelined NOOP: still in sync
    c.close()


def test_pipelining_and_bdat(server: RunningServer) -> None:
    tag = unique().encode()
    c = Raw(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO client.example")
    msg = b"Subject: " + tag + b"\r\n\r\nbinary-ish\r\n"
    c.send(
        b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<alice@example.org>\r\n"
        b"BDAT %d\r\n" % 10 + msg[:10] + b"BDAT %d LAST\r\n" % (len(msg) - 10) + msg[10:]
    )
    assert c.reply() == b"250 2.1.0 Ok"
    assert c.reply().startswith(b"550 5.1.1")
    assert c.reply() == b"250 2.1.5 Ok"
    assert c.reply().startswith(b"250 2.0.0")
    assert re.match(rb"250 2.0.0 Ok: queued as [0-9A-F]{10}", c.reply())
    assert c.cmd("QUIT") == b"221 2.0.0 Bye"
    stored = [m for m in inbox(server, "alice@example.org") if tag in m]
    assert len(stored) == 1 and stored[0].endswith(msg)


def test_starttls_discards_pipelined_plaintext(server: RunningServer) -> None:
    c = Raw(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO client.example")
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert c.reply() == b"220 2.0.0 Ready to start TLS"
    c.starttls()
    # the injected MAIL was dropped: a MAIL now is out of sequence (no EHLO after TLS, RFC 3207 §4.2)
    assert c.cmd("MAIL FROM:<a@remote.test>").startswith(b"503 5.5.1")
    ehlo = c.cmd("EHLO client.example")
    assert b"STARTTLS" not in ehlo
    assert c.cmd("MAIL FROM:<a@remote.test>") == b"250 2.1.0 Ok"
    c.close()


def test_too_many_received_headers(server: RunningServer) -> None:
    hops = b"".join(b"Received: from hop%d by x; Tue, 24 Nov 2026 00:00:00 +0000\r\n" % i for i in range(100))
    with mx(server) as s, pytest.raises(smtplib.SMTPDataError) as info:
        s.sendmail("a@remote.test", ["alice@example.org"], hops + b"Subject: loop\r\n\r\nx\r\n")
    assert info.value.smtp_code == 554 and info.value.smtp_error.startswith(b"5.4.6")


def test_submission_requires_tls_then_auth(server: RunningServer) -> None:
    c = Raw(server.ports["submission"])
    c.reply()
    ehlo = c.cmd("EHLO client.example")
    assert b"AUTH" not in ehlo and b"STARTTLS" in ehlo
    creds = base64.b64encode(b"\0alice@example.org\0" + PASSWORD.encode()).decode()
    assert c.cmd("AUTH PLAIN " + creds).startswith(b"538 5.7.11")
    assert c.cmd("MAIL FROM:<alice@example.org>").startswith(b"530 5.7.0")
    assert c.cmd("STARTTLS").startswith(b"220")
    c.starttls()
    assert b"AUTH PLAIN LOGIN SCRAM-SHA-256" in c.cmd("EHLO client.example")
    assert c.cmd("MAIL FROM:<alice@example.org>").startswith(b"530 5.7.0")
    bad = base64.b64encode(b"\0alice@example.org\0wrong-password").decode()
    assert c.cmd("AUTH PLAIN " + bad) == b"535 5.7.8 Authentication credentials invalid"
    assert c.cmd("AUTH PLAIN " + creds) == b"235 2.7.0 Authentication successful"
    assert (
        c.cmd("MAIL FROM:<bob@example.org>")
        == b"550 5.7.1 Sender address rejected: not owned by the authenticated user"
    )
    assert c.cmd("MAIL FROM:<alice+x@example.org>") == b"250 2.1.0 Ok"
    c.close()
    time.sleep(0.2)
    assert re.search(r"auth failed service=submission ip=127\.0\.0\.1 user=alice@example\.org", server.log())
    assert "wrong-password" not in server.log() and PASSWORD not in server.log()


def test_submission_queues_remote_and_adds_headers(server: RunningServer) -> None:
    tag = unique()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], local_hostname="laptop", timeout=10) as s:
        s.starttls(context=insecure_tls())
        s.login("alice@example.org", PASSWORD)
        assert (
            s.sendmail(
                "alice@example.org",
                ["bob@example.org", "Someone@Remote.Example"],
                f"Subject: {tag}\r\n\r\nhi\r\n",
            )
            == {}
        )
    (msg,) = [m for m in inbox(server, "bob@example.org") if tag.encode() in m]
    assert b"with ESMTPSA id" in msg and b"(using TLSv1.3 with cipher " in msg
    assert re.search(
        rb"\r\nDate: .+ \+0000\r\nMessage-ID: <[0-9A-F]{10}\.[0-9a-f]{16}@mx\.example\.org>\r\n", msg
    )
    conn = server.db()
    try:
        row = conn.execute(
            "SELECT q.sender, r.domain, r.state, b.data FROM queue_recipients r JOIN queue q ON q.id = r.queue_id "
            "JOIN bodies b ON b.id = q.body_id WHERE r.address = 'Someone@Remote.Example'"
        ).fetchone()
    finally:
        conn.close()
    assert row[:3] == ("alice@example.org", "remote.example", "pending")
    assert not bytes(row[3]).startswith(b"Return-Path")  # only final delivery adds it (RFC 5321 §4.4)
    assert tag.encode() in bytes(row[3])


def test_submissions_implicit_tls_scram(server: RunningServer) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], local_hostname="laptop", context=insecure_tls(), timeout=10
    ) as s:
        code, caps = s.ehlo()
        assert b"STARTTLS" not in caps and b"AUTH PLAIN LOGIN SCRAM-SHA-256" in caps
        s.user, s.password = "carol@example.net", PASSWORD
        code, _ = s.auth("LOGIN", s.auth_login)
        assert code == 235
    # SCRAM-SHA-256 by hand (RFC 7677), proving the stored keys match the password
    import hashlib
    import hmac

    c = Raw(server.ports["submissions"], tls=True)
    c.reply()
    c.cmd("EHLO laptop")
    client_first_bare = "n=carol@example.net,r=clientnonce123"
    r = c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(("n,," + client_first_bare).encode()).decode())
    assert r.startswith(b"334 ")
    server_first = base64.b64decode(r[4:]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{final_bare}".encode()
    sig = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True))).decode()
    r = c.cmd(base64.b64encode(f"{final_bare},p={proof}".encode()).decode())
    assert r.startswith(b"334 ")
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode()
    assert base64.b64decode(r[4:]).decode() == f"v={expected}"
    assert c.cmd("") == b"235 2.7.0 Authentication successful"
    c.close()


def test_accepted_message_survives_kill(tmp_path: Path) -> None:
    """Non-negotiable 2: a 250 means committed; SIGKILL right after loses nothing."""
    with running_server(tmp_path) as srv:
        tags = []
        with mx(srv) as s:
            for _ in range(5):
                tag = unique()
                tags.append(tag)
                assert (
                    s.sendmail("a@remote.test", ["alice@example.org"], f"Subject: {tag}\r\n\r\nx\r\n") == {}
                )
        srv.kill()
        conn = srv.db()
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        stored = inbox(srv, "alice@example.org")
        for tag in tags:
            assert sum(tag.encode() in m for m in stored) == 1
        srv.start()  # restarts cleanly on the same data


@pytest.mark.parametrize(
    "rcpt",
    [
        "<@example.org:victim@elsewhere.example>",  # source route ends outside: the route is ignored
        "<victim%elsewhere.example@example.org>",  # percent hack: a local part here, never relayed
        '<"victim@elsewhere.example"@example.org>',  # quoted local part holding an @
        "<victim@elsewhere.example.>",  # trailing dot
        "<victim@[192.0.2.1]>",  # IP literal
        "<victim@[127.0.0.1]>",
        "<Victim@ELSEWHERE.Example>",  # mixed case
        "<victim@example.org@elsewhere.example>",
    ],
)
def test_no_open_relay_tricky_forms(server: RunningServer, rcpt: str) -> None:
    c = Raw(server.ports["smtp"])
    c.reply()
    c.cmd("EHLO client.example")
    assert c.cmd("MAIL FROM:<a@remote.test>") == b"250 2.1.0 Ok"
    answer = c.cmd(f"RCPT TO:{rcpt}")
    assert answer[:1] == b"5", answer  # refused: 550 5.7.1 relay, 550 5.1.1 unknown or 501 syntax
    assert answer.startswith((b"550 5.7.1", b"550 5.1.1", b"501 5.1.3")), answer
    c.close()
    conn = server.db()
    try:
        assert (
            conn.execute("SELECT count(*) FROM queue_recipients WHERE address LIKE '%victim%'").fetchone()[0]
            == 0
        )
    finally:
        conn.close()


def test_long_lines_8bit_and_smtputf8(server: RunningServer) -> None:
    tag = unique()
    long_line = b"y" * 5000
    body = (
        f"Subject: {tag}\r\n".encode()
        + "Content-Type: text/plain; charset=utf-8\r\n\r\ngrüße\r\n".encode()
        + long_line
        + b"\r\n"
    )
    with mx(server) as s:
        s.ehlo()
        assert s.has_extn("8bitmime") and s.has_extn("smtputf8")
        assert s.sendmail("a@remote.test", ["alice@example.org"], body, mail_options=["BODY=8BITMIME"]) == {}
        assert s.sendmail("jörg@bücher.example", ["alice@example.org"], body, mail_options=["SMTPUTF8"]) == {}
    stored = [m for m in inbox(server, "alice@example.org") if tag.encode() in m]
    assert len(stored) == 2 and all(m.endswith(long_line + b"\r\n") for m in stored)  # never split
    assert stored[1].startswith("Return-Path: <jörg@bücher.example>\r\n".encode())


def test_from_header_must_be_owned(server: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], local_hostname="laptop", timeout=10) as s:
        s.starttls(context=insecure_tls())
        s.login("alice@example.org", PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail(
                "alice@example.org",
                ["bob@example.org"],
                "From: Bob <bob@example.org>\r\nSubject: x\r\n\r\nhi\r\n",
            )
        assert (info.value.smtp_code, info.value.smtp_error) == (
            550,
            b"5.7.1 From header address not owned by the authenticated user",
        )
        # own address, a +tag and an alias that reaches her are fine
        for sender in (
            "Alice <alice@example.org>",
            "alice+news@example.org",
            '"The Team" <team@example.org>',
        ):
            assert (
                s.sendmail(
                    "alice@example.org", ["bob@example.org"], f"From: {sender}\r\nSubject: x\r\n\r\nhi\r\n"
                )
                == {}
            )


def test_sending_limits(tmp_path: Path) -> None:
    extra = "[limits]\nsubmission_messages_per_day = 3\nsubmission_new_recipients_per_day = 2\n"
    with (
        running_server(tmp_path, extra=extra) as srv,
        smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="l", timeout=10) as s,
    ):
        s.starttls(context=insecure_tls())
        s.login("alice@example.org", PASSWORD)
        msg = "Subject: x\r\n\r\nhi\r\n"
        refused = s.sendmail(
            "alice@example.org", ["one@remote.example", "two@remote.example", "three@remote.example"], msg
        )
        assert refused == {
            "three@remote.example": (
                451,
                b"4.7.1 Daily limit of new recipients reached for this account, try again tomorrow",
            )
        }
        # writing again to known recipients, and to local ones, is not limited
        assert s.sendmail("alice@example.org", ["ONE@remote.example", "bob@example.org"], msg) == {}
        assert s.sendmail("alice@example.org", ["bob@example.org"], msg) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("alice@example.org", ["bob@example.org"], msg)
        assert info.value.smtp_code == 451 and info.value.smtp_error.startswith(b"4.7.1 Daily message limit")


def test_sigterm_says_goodbye_to_idle_sessions(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        c = Raw(srv.ports["smtp"])
        c.reply()
        c.cmd("EHLO client.example")
        started = time.monotonic()
        assert srv.stop() == 0
        assert time.monotonic() - started < 3  # idle sessions do not hold up shutdown
        assert c.reply() == b"421 4.3.2 Server shutting down"
        c.close()


def test_forwarded_mail_gets_srs_and_bounces_come_back(server: RunningServer) -> None:
    tag = unique()
    with mx(server) as s:
        assert s.sendmail("orig@sender.example", ["team@example.org"], f"Subject: {tag}\r\n\r\nfwd\r\n") == {}
    conn = server.db()
    try:
        rows = conn.execute(
            "SELECT q.sender FROM queue q JOIN queue_recipients r ON r.queue_id = q.id "
            "JOIN bodies b ON b.id = q.body_id WHERE r.address = 'friend@remote.test' AND instr(b.data, ?) > 0",
            (tag.encode(),),
        ).fetchall()
    finally:
        conn.close()
    (srs_sender,) = [r[0] for r in rows]
    assert re.fullmatch(r"SRS0=[^=]{4}=[A-Z2-7]{2}=sender\.example=orig@mx\.example\.org", srs_sender), (
        srs_sender
    )
    # a bounce to that address goes back to the original sender; a forged one is refused
    with mx(server) as s:
        assert s.sendmail("", [srs_sender], "Subject: bounce\r\n\r\nx\r\n") == {}
        forged = srs_sender.replace("SRS0=", "SRS0=x", 1)
        assert s.sendmail("", [forged, "alice@example.org"], "Subject: bounce\r\n\r\nx\r\n") == {
            forged: (550, b"5.1.1 Recipient address rejected: user unknown")
        }
    conn = server.db()
    try:
        assert (
            conn.execute(
                "SELECT count(*) FROM queue_recipients WHERE address = 'orig@sender.example'"
            ).fetchone()[0]
            == 1
        )
    finally:
        conn.close()
