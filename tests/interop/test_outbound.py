"""Outbound delivery for real: mailroom resolves MX through Knot and delivers to Postfix, which
stores into Maildir (../shared/peers); bounces come back as DSNs; unreachable hosts are deferred."""

from __future__ import annotations

import email
import smtplib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import ensure_knot, start_peer
from tests.server_fixture import PASSWORD, RunningServer, inbox, insecure_tls, running_server, wait_until

pytestmark = pytest.mark.interop
MAILDIR = Path("/var/lib/mailroom-peers/mail/peer.test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    ensure_knot()
    start_peer("start-postfix.sh")
    extra = '[dns]\nnameservers = ["127.0.0.1:5353"]\n[delivery]\nmx_port = 2525\nipv6 = false\n'
    root = tmp_path_factory.mktemp("outbound")
    with running_server(root, extra=extra) as srv:
        yield srv


def submit(server: RunningServer, rcpts: list[str], body: str) -> None:
    ctx = insecure_tls()
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], local_hostname="laptop", context=ctx, timeout=10
    ) as s:
        s.login("alice@example.org", PASSWORD)
        assert s.sendmail("alice@example.org", rcpts, body) == {}


def maildir_with(user: str, tag: str) -> list[bytes]:
    found = []
    for sub in ("new", "cur"):
        for path in (MAILDIR / user / sub).glob("*") if (MAILDIR / user / sub).exists() else []:
            data = path.read_bytes()
            if tag.encode() in data:
                found.append(data)
    return found


def test_delivers_to_postfix_by_mx(server: RunningServer) -> None:
    tag = uuid.uuid4().hex
    body = f"From: alice@example.org\r\nTo: bob@peer.test\r\nSubject: {tag}\r\n\r\nover the wire\r\n"
    submit(server, ["bob@peer.test"], body)
    assert wait_until(lambda: maildir_with("bob", tag)), server.log()[-3000:]
    (got,) = maildir_with("bob", tag)
    assert got.replace(b"\n", b"\r\n").endswith(b"\r\n\r\nover the wire\r\n")
    assert b"by mx.example.org (mailroom) with ESMTPSA" in got.replace(b"\n", b"\r\n")
    # the queue is empty again and the log has a Postfix-style line
    conn = server.db()
    try:
        assert conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 0
    finally:
        conn.close()
    assert wait_until(
        lambda: (
            "to=<bob@peer.test> relay=mx.peer.test[127.0.0.1]:2525" in server.log()
            and "status=sent (250" in server.log()
        )
    )


def test_rejected_recipient_bounces_to_local_sender(server: RunningServer) -> None:
    tag = uuid.uuid4().hex
    submit(server, ["nosuchuser@peer.test"], f"From: alice@example.org\r\nSubject: {tag}\r\n\r\nlost\r\n")

    def bounce() -> list[bytes]:
        return [
            m for m in inbox(server, "alice@example.org") if b"multipart/report" in m and tag.encode() in m
        ]

    assert wait_until(lambda: bounce()), server.log()[-3000:]
    dsn = email.message_from_bytes(bounce()[0])
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nosuchuser@peer.test" in text.replace(
        "rfc822;nosuchuser", "rfc822; nosuchuser"
    )
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert bounce()[0].startswith(b"Return-Path: <>\r\n")


def test_unreachable_host_is_deferred(server: RunningServer) -> None:
    # proj.test's MX is mail.proj.test = 127.0.0.2, where nothing listens on 2525
    tag = uuid.uuid4().hex
    submit(server, ["someone@proj.test"], f"Subject: {tag}\r\n\r\nlater\r\n")

    def row() -> tuple[str, int, int, str] | None:
        conn = server.db()
        try:
            r = conn.execute(
                "SELECT state, attempts, next_attempt, last_reply FROM queue_recipients WHERE address = 'someone@proj.test'"
            ).fetchone()
            return None if r is None or r[1] == 0 else r  # type: ignore[no-any-return]
        finally:
            conn.close()

    assert wait_until(lambda: row() is not None), server.log()[-3000:]
    state, attempts, next_attempt, last_reply = row()  # type: ignore[misc]
    assert state == "pending" and attempts == 1 and last_reply.startswith("451 ")
    assert 240 < next_attempt - time.time() < 340  # 5 minutes, jittered 10 %
    assert "status=deferred" in server.log()


def test_queue_commands(server: RunningServer) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(server.config_path), "queue", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0
    assert "someone@proj.test\tpending\tattempts=1" in r.stdout  # from test_unreachable_host_is_deferred
    r = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(server.config_path), "queue", "retry"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("1 recipient(s) due now")


def test_smarthost_with_auth_through_postfix_submission(tmp_path: Path) -> None:
    """Postfix's submission service (STARTTLS + AUTH via Dovecot) as the relay for everything."""
    start_peer("start-dovecot.sh")
    start_peer("start-postfix.sh")
    password_file = tmp_path / "relay.pw"
    password_file.write_text("secret\n")
    password_file.chmod(0o600)
    extra = (
        "[delivery]\n"
        'smarthost = "127.0.0.1:2587"\nsmarthost_tls = "starttls"\n'
        'smarthost_username = "alice@peer.test"\n'
        f'smarthost_password_file = "{password_file}"\n'
        'smarthost_ca_file = "/var/lib/mailroom-peers/tls/ca.pem"\n'
    )
    (tmp_path / "srv").mkdir()
    with running_server(tmp_path / "srv", extra=extra) as srv:
        tag = uuid.uuid4().hex
        submit(srv, ["bob@peer.test"], f"From: alice@example.org\r\nSubject: {tag}\r\n\r\nvia relay\r\n")
        assert wait_until(lambda: maildir_with("bob", tag)), srv.log()[-3000:]
        assert "relay=127.0.0.1[127.0.0.1]:2587" in srv.log()
        assert "secret" not in srv.log()


def test_smarthost_auth_without_tls_is_a_config_error(tmp_path: Path) -> None:
    from mailroom import config

    with pytest.raises(config.ConfigError) as info:
        config.from_dict(
            {
                "delivery": {
                    "smarthost": "relay.example:25",
                    "smarthost_tls": "none",
                    "smarthost_username": "u",
                    "smarthost_password_file": "/x",
                }
            }
        )
    assert info.value.key == "delivery.smarthost_tls"


def test_smarthost_over_implicit_tls(tmp_path: Path) -> None:
    """Postfix's implicit-TLS port (2465) as the relay: TLS from the first byte, certificate verified."""
    start_peer("start-postfix.sh")
    extra = (
        '[delivery]\nsmarthost = "127.0.0.1:2465"\nsmarthost_tls = "implicit"\n'
        'smarthost_ca_file = "/var/lib/mailroom-peers/tls/ca.pem"\n'
    )
    (tmp_path / "srv").mkdir()
    with running_server(tmp_path / "srv", extra=extra) as srv:
        tag = uuid.uuid4().hex
        submit(srv, ["bob@peer.test"], f"From: alice@example.org\r\nSubject: {tag}\r\n\r\nimplicit\r\n")
        assert wait_until(lambda: maildir_with("bob", tag)), srv.log()[-3000:]
        assert "relay=127.0.0.1[127.0.0.1]:2465" in srv.log() and "tls=implicit" in srv.log()
