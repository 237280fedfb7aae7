"""A full disk: data_dir on a small tmpfs (root only). Intake fills it until the server answers
452 4.3.1; nothing acknowledged is lost, the server restarts on the full disk, and once space is
freed (a ballast file on the same filesystem is removed) intake resumes. IMAP writes on the full
disk answer NO [OVERQUOTA] and the session goes on. No traceback in the log: a full disk is the
environment's fault, answered and logged in one line."""

from __future__ import annotations

import errno
import imaplib
import os
import poplib
import smtplib
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mailroom.store.database import is_storage_full
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


def top_up(mount: Path) -> Path:
    """Take the last free blocks too (fill() stops when a message no longer fits), so any write
    that needs new space fails, whichever service makes it."""
    path = mount / "top-up"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def imap_answer(call: Callable[[], tuple[str, list[Any]]]) -> tuple[str, bytes]:
    """(status, the text) of one imaplib call, which raises on NO."""
    try:
        typ, data = call()
    except imaplib.IMAP4.error as exc:
        return "NO", str(exc).encode()
    return typ, tagged_text(data)


@contextmanager
def wal_pinned(data_dir: Path) -> Iterator[None]:
    """Make every database write need new disk space: a read transaction held open keeps SQLite
    from starting its WAL over, and no-op commits use up the room left in the WAL file (without
    this, small writes may fit where a checkpoint already freed frames)."""
    path = data_dir / "mailroom.sqlite3"
    reader = sqlite3.connect(path, isolation_level=None)
    writer = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()
        version = int(writer.execute("PRAGMA user_version").fetchone()[0])
        for _ in range(100_000):
            try:
                writer.execute(f"PRAGMA user_version = {version}")  # rewrites page 1: one WAL frame
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc), exc
                break
        else:
            pytest.fail("the WAL never filled the disk")
        yield
    finally:
        writer.close()
        reader.close()


def tagged_text(data: list[Any]) -> bytes:
    return b" ".join(d if isinstance(d, bytes) else str(d).encode() for d in data if d is not None)


def test_imap_on_a_full_disk_says_overquota_loses_nothing_and_recovers(tmp_path: Path) -> None:
    """RFC 9051 §7.1 / RFC 5530 §3: APPEND, COPY and MOVE on a full disk are
    NO [OVERQUOTA] "Not enough disk space" (Dovecot's answer), never [SERVERBUG]; reading goes on
    (SELECT and the announcement of new mail cannot claim \\Recent, a write, and must not fail
    for it); nothing is half done; the log has one line per refusal and no traceback; once
    space is freed the same commands work."""
    with tmpfs("32m") as mount:
        # freed at the end: more than the mail, because the database file then takes in what the
        # WAL held (a checkpoint needs the space) before the WAL can start over
        ballast = mount / "ballast"
        ballast.write_bytes(os.urandom(20 * 1024 * 1024))
        (mount / "data").mkdir()
        srv = make_server(tmp_path / "full-imap", ("smtp", "imaps"), data_dir=mount / "data")
        with started(srv):
            client = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=tls_context(), timeout=30)
            client.login("carol@example.net", PASSWORD)
            assert client.create("Kept")[0] == "OK"
            assert client.select("INBOX") == ("OK", [b"0"])
            accepted: set[str] = set()
            fill(srv, accepted, Counter())
            extra = top_up(mount)
            with wal_pinned(srv.data_dir):
                # the session hears of the delivered mail although \\Recent cannot be claimed
                assert client.noop()[0] == "OK"
                assert client.response("EXISTS")[1][-1] == str(len(accepted)).encode()
                typ, data = client.select("INBOX")  # claims \\Recent again, and cannot
                assert (typ, data) == ("OK", [str(len(accepted)).encode()])
                answers: dict[str, tuple[str, bytes]] = {}
                for size in (150_000, 400_000, 20_000):  # 400 KB goes to a spool file
                    text = message("imap-full", size)
                    answers[f"APPEND {size}"] = imap_answer(partial(client.append, "INBOX", None, None, text))
                answers["COPY"] = imap_answer(partial(client.uid, "COPY", "1:*", "Kept"))
                answers["MOVE"] = imap_answer(partial(client.uid, "MOVE", "1:*", "Kept"))
                assert client.noop()[0] == "OK"  # the session goes on
                typ, fetched = client.uid("FETCH", "1:*", "(FLAGS)")
                assert typ == "OK" and len(fetched) == len(accepted), fetched[:3]
            for what, (typ, text) in answers.items():
                assert (typ, text) == ("NO", b"[OVERQUOTA] Not enough disk space"), (what, typ, text)
            assert markers_by_mailbox(srv.data_dir, "carol@example.net") == {"INBOX": Counter(accepted)}
            # space again: the same commands work and nothing was lost
            extra.unlink()
            ballast.unlink()
            assert client.append("INBOX", None, None, message("imap-after", 20_000))[0] == "OK"
            assert client.uid("COPY", "1:*", "Kept")[0] == "OK"
            client.logout()
            stored = markers_by_mailbox(srv.data_dir, "carol@example.net")
            assert stored["INBOX"] == Counter(accepted) + Counter(["imap-after"])
            assert stored["Kept"] == stored["INBOX"]
            assert integrity(srv.data_dir) == "ok"
            srv.stop()
            log = srv.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 300 :][:3000]
        lines = [line for line in log.splitlines() if " imaps " in line and "not enough disk space" in line]
        refused = [line for line in lines if "Recent not claimed" not in line]
        assert len(refused) == len(answers), refused  # one line each
        assert len(lines) - len(refused) == 2, lines  # \\Recent at NOOP and at SELECT


def test_storage_full_is_recognised_wherever_it_hides() -> None:
    """store.database.is_storage_full, which SMTP (452 4.3.1), IMAP (NO [OVERQUOTA]) and POP3
    ([SYS/TEMP]) answer by: SQLITE_FULL itself, the error SQLite's automatic rollback then causes,
    and ENOSPC/EDQUOT from a file write; nothing else."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA max_page_count = 8")  # a database that cannot grow: SQLITE_FULL, for real
    conn.execute("CREATE TABLE t (x BLOB)")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert full.value.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert is_storage_full(full.value)
    try:  # store.service: ROLLBACK TO fails once SQLite rolled the whole transaction back
        try:
            raise full.value
        except sqlite3.OperationalError:
            conn.execute("ROLLBACK TO job")
    except sqlite3.OperationalError as masked:
        assert "no such savepoint" in str(masked) and masked.__context__ is full.value
        assert is_storage_full(masked)
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_storage_full(OSError(errno.EIO, "Input/output error"))
    assert not is_storage_full(sqlite3.OperationalError("database is locked"))
    assert not is_storage_full(ValueError("database or disk is full"))
    conn.close()
