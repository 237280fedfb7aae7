"""A full disk: data_dir on a 20 MiB tmpfs (root only). Intake fills it until the server answers
452 4.3.1; nothing acknowledged is lost, the server restarts on the full disk, and once space is
freed (a ballast file on the same filesystem is removed) intake resumes. No traceback in the log:
a full disk is the environment's fault, answered and logged in one line."""

from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.support import (
    count,
    integrity,
    make_server,
    markers_by_mailbox,
    scale,
    started,
    tls_context,
    tmpfs,
)
from tests.server_fixture import PASSWORD, RunningServer

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long


def message(marker: str, size: int) -> bytes:
    line = b"y" * 998 + b"\r\n"
    body = line * (size // len(line))
    return f"From: filler@client.test\r\nTo: carol@example.net\r\nX-Mark: {marker}\r\n\r\n".encode() + body


def send(srv: RunningServer, marker: str, size: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="client.test", timeout=30) as s:
        try:
            s.sendmail("filler@client.test", ["carol@example.net"], message(marker, size))
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            code, text = exc.smtp_code, exc.smtp_error
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients["carol@example.net"]
        else:
            return 250, b""
    return code, text if isinstance(text, bytes) else text.encode()


def fill(srv: RunningServer, accepted: set[str], refusals: Counter[bytes]) -> None:
    """Send until the server has refused ten messages in a row for lack of space."""
    in_a_row = 0
    for n in range(2000):
        marker = f"fill-{uuid.uuid4().hex[:12]}"
        code, text = send(srv, marker, [150_000, 400_000, 20_000][n % 3])  # 400 KB goes to a spool file
        if code == 250:
            accepted.add(marker)
            in_a_row = 0
            continue
        assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
        refusals[text] += 1
        in_a_row += 1
        if in_a_row >= 10:
            return
    pytest.fail("the 20 MiB filesystem never filled up")


def check_stored(srv: RunningServer, accepted: set[str]) -> None:
    stored = markers_by_mailbox(srv.data_dir, "carol@example.net").get("INBOX", Counter())
    lost = [m for m in accepted if stored[m] != 1]
    assert not lost, f"acknowledged but not stored once: {lost[:5]}"
    assert max(stored.values(), default=1) == 1


def test_full_disk_answers_452_loses_nothing_and_recovers(tmp_path: Path) -> None:
    with tmpfs("20m") as mount:
        ballast = mount / "ballast"
        ballast.write_bytes(os.urandom(4 * 1024 * 1024))
        (mount / "data").mkdir()
        srv = make_server(tmp_path / "full", ("smtp", "imaps", "pop3s"), data_dir=mount / "data")
        accepted: set[str] = set()
        refusals: Counter[bytes] = Counter()
        with started(srv):
            fill(srv, accepted, refusals)
            assert len(accepted) > 20
            check_stored(srv, accepted)
            # a restart on the full disk works, and the disk is still full afterwards
            srv.stop()
            srv.start()
            assert integrity(srv.data_dir) == "ok"
            check_stored(srv, accepted)
            code, text = send(srv, "still-full", 400_000)
            assert (code, text[:5]) == (452, b"4.3.1")
            # POP3 on the full disk: UPDATE either works or says -ERR [SYS/TEMP]; nothing half done
            pop = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=tls_context(), timeout=30)
            pop.user("carol@example.net")
            pop.pass_(PASSWORD)
            first = pop.top(1, 0)[1]
            victim = next(line.split(b" ", 1)[1].decode() for line in first if line.startswith(b"X-Mark:"))
            pop.dele(1)
            try:
                pop.quit()
                accepted.discard(victim)
            except poplib.error_proto as exc:
                assert b"[SYS/TEMP]" in exc.args[0], exc
            # free space: intake resumes
            ballast.unlink()
            for n in range(10):
                marker = f"after-{n}"
                assert send(srv, marker, 150_000) == (250, b""), srv.log()[-2000:]
                accepted.add(marker)
            check_stored(srv, accepted)
            assert integrity(srv.data_dir) == "ok"
        count("full-disk refusals answered 452 4.3.1", sum(refusals.values()))
        count("messages checked after a full disk", len(accepted))
        log = srv.log()
        assert "Traceback" not in log
        assert "Insufficient system storage" in "".join(t.decode() for t in refusals)


@pytest.mark.xfail(
    reason="IMAP (in progress elsewhere): net/imap.py _append_end lets sqlite3 'database or disk is full' "
    "reach _dispatch: NO [SERVERBUG] and a traceback instead of NO [OVERQUOTA]/[LIMIT]",
    strict=False,
)
def test_imap_append_on_a_full_disk_says_no_without_a_traceback(tmp_path: Path) -> None:
    """RFC 9051 §7.1: APPEND on a full disk is NO (RFC 5530 [OVERQUOTA] or [LIMIT] or
    [UNAVAILABLE]); the session goes on and the log has one line, not a traceback."""
    with tmpfs("20m") as mount:
        (mount / "data").mkdir()
        srv = make_server(tmp_path / "full-imap", ("smtp", "imaps"), data_dir=mount / "data")
        with started(srv):
            fill(srv, set(), Counter())
            client = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=tls_context(), timeout=30)
            client.login("alice@example.org", PASSWORD)
            answers = []
            for size in (150_000, 400_000, 20_000):
                try:
                    typ, data = client.append("INBOX", None, None, message("imap-full", size))
                except imaplib.IMAP4.error as exc:
                    typ, data = "NO", [str(exc).encode()]
                answers.append((typ, data))
            assert client.noop()[0] == "OK"  # the session goes on
            client.logout()
            srv.stop()
            log = srv.log()
        assert all(typ == "NO" for typ, _ in answers), answers
        assert all(
            any(code in repr(data) for code in ("OVERQUOTA", "LIMIT", "UNAVAILABLE")) for _, data in answers
        )
        assert "Traceback" not in log, log[log.index("Traceback") - 300 :][:3000]
