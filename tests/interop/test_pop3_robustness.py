"""POP3 under the conditions real clients create: a 20 MB RETR (streamed, not buffered), clients that
drop or stall in the middle of one, a whole session pipelined in one write, a message expunged by
another session, huge TOP counts, and a shutdown while sessions sit idle.

Each runs against a real ``mailroom serve`` subprocess over TLS; the server log must never show a
traceback (tests.server_fixture checks it when the server stops).
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailroom.store import directory, mail
from mailroom.store.database import transaction
from tests.interop.test_pop3_dovecot import Wire, store_in_inbox, wire_form
from tests.server_fixture import PASSWORD, RunningServer, inbox, running_server

BIG_LINES = 200_000  # x 100 octets: a 20 MB message
SERVICES = ("smtp", "pop3s")


def big_message() -> bytes:
    body = b"".join(b"%07d " % i + (b"." if i % 1000 == 0 else b"x") * 91 + b"\r\n" for i in range(BIG_LINES))
    return b"Subject: twenty megabytes\r\nFrom: big@remote.test\r\n\r\n" + body


def connect(server: RunningServer, user: str) -> Wire:
    wire = Wire(server.ports["pop3s"], server.data_dir / "tls" / "selfsigned.crt")
    wire.login(user, PASSWORD)
    return wire


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def can_log_in(server: RunningServer, user: str) -> bool:
    """The maildrop lock is free (RFC 1939 §8: a second session gets -ERR [IN-USE])."""
    try:
        connect(server, user).quit()
        return True
    except AssertionError:
        return False


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.fixture(scope="module")
def big() -> bytes:
    return big_message()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, big: bytes) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("pop3-robust"), services=SERVICES) as srv:
        store_in_inbox(srv, "alice@example.org", [big, b"Subject: small\r\n\r\n.\r\n..\r\nend\r\n"])
        yield srv


def test_retr_of_20_mb_streams(server: RunningServer, big: bytes) -> None:
    assert server.proc is not None
    wire = connect(server, "alice@example.org")  # login first: password hashing has its own peak
    before = peak_rss_kib(server.proc.pid)
    status = wire.cmd("RETR 1")
    assert status == b"+OK %d octets\r\n" % len(big)
    digest, size = hashlib.sha256(), 0
    while (line := wire.line()) != b".\r\n":
        # RFC 1939 §3: undo the byte-stuffing
        line = line[1:] if line.startswith(b"..") else line
        digest.update(line)
        size += len(line)
    assert size == len(big) and digest.digest() == hashlib.sha256(big).digest()
    grown_mib = (peak_rss_kib(server.proc.pid) - before) / 1024
    # streamed in 256 KiB pieces; holding the message (let alone a stuffed copy) would be >= 20 MiB
    assert grown_mib < 10, f"server peak RSS grew by {grown_mib:.1f} MiB during a 20 MB RETR"
    # TOP with a huge line count is the whole message; TOP 0 only the header
    assert wire.multi("TOP 2 4294967295")[1] == wire.multi("RETR 2")[1]
    assert wire.multi("TOP 1 0")[1] == b"Subject: twenty megabytes\r\nFrom: big@remote.test\r\n\r\n.\r\n"
    assert wire.cmd("TOP 1 99999999999").startswith(b"-ERR")  # more than 10 digits: refused
    assert wire.cmd("NOOP") == b"+OK\r\n"
    wire.quit()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_drops_in_the_middle_of_retr(server: RunningServer, big: bytes, how: str) -> None:
    wire = connect(server, "alice@example.org")
    assert wire.cmd("DELE 2").startswith(b"+OK")
    assert wire.cmd("RETR 1").startswith(b"+OK")
    wire.file.read(1_000_000)  # a megabyte of 20, then gone without QUIT
    if how == "reset":
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wire.close()
    wait_until(lambda: can_log_in(server, "alice@example.org"), 10, "the maildrop lock to be released")
    assert len(inbox(server, "alice@example.org")) == 2  # no QUIT, no UPDATE: DELE 2 never happened
    assert "Traceback" not in server.log(), server.log()


def test_pipelined_session(server: RunningServer) -> None:
    """RFC 2449 §6.6: a client may send every command at once; answers come back in order."""
    store_in_inbox(
        server, "bob@example.org", [b"Subject: p%d\r\n\r\n.body %d\r\n" % (i, i) for i in range(3)]
    )
    stored = inbox(server, "bob@example.org")
    wire = Wire(server.ports["pop3s"], server.data_dir / "tls" / "selfsigned.crt")
    wire.send(
        "CAPA",
        "USER bob@example.org",
        f"PASS {PASSWORD}",
        "STAT",
        "RETR 1",
        "DELE 1",
        "RETR 1",
        "TOP 2 0",
        "DELE 3",
        "UIDL",
        "BOGUS",
        "LIST",
        "QUIT",
    )
    assert wire.line() == b"+OK Capability list follows\r\n"
    wire.multiline()
    assert wire.line() == b"+OK\r\n"
    assert wire.line().startswith(b"+OK maildrop has 3 messages")
    assert wire.line() == b"+OK 3 %d\r\n" % sum(map(len, stored))
    assert wire.line() == b"+OK %d octets\r\n" % len(stored[0])
    assert wire.multiline() == wire_form(stored[0])
    assert wire.line() == b"+OK message 1 deleted\r\n"
    assert wire.line() == b"-ERR message 1 is deleted\r\n"
    assert wire.line().startswith(b"+OK")
    assert wire.multiline() == stored[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n.\r\n"
    assert wire.line() == b"+OK message 3 deleted\r\n"
    assert wire.line() == b"+OK\r\n"
    assert [line.split()[0] for line in wire.multiline().splitlines()] == [b"2", b"."]
    assert wire.line() == b"-ERR unknown command\r\n"
    assert wire.line().startswith(b"+OK 1 message")
    assert wire.multiline() == b"2 %d\r\n.\r\n" % len(stored[1])
    assert wire.line().startswith(b"+OK") and wire.file.read() == b""  # QUIT, then closed
    wire.close()
    assert inbox(server, "bob@example.org") == [stored[1]]


def test_message_expunged_by_another_session(server: RunningServer) -> None:
    """The drop is a snapshot taken at login; an IMAP EXPUNGE may remove a message (and its body)
    meanwhile. RETR of it is a plain -ERR, the session goes on, QUIT still works."""
    store_in_inbox(
        server, "carol@example.net", [b"Subject: e1\r\n\r\none\r\n", b"Subject: e2\r\n\r\ntwo\r\n"]
    )
    stored = inbox(server, "carol@example.net")
    wire = connect(server, "carol@example.net")
    conn = server.db()
    try:
        with transaction(conn):
            account = directory.find_account(conn, "carol@example.net")
            assert account is not None
            box = mail.inbox(conn, account.id)
            first_uid = mail.list_messages(conn, box.id)[0].uid
            mail.expunge(conn, box.id, [first_uid])  # what IMAP EXPUNGE does in the store
    finally:
        conn.close()
    assert wire.cmd("RETR 1").startswith(b"-ERR")
    assert wire.cmd("TOP 1 0").startswith(b"-ERR")
    assert wire.multi("RETR 2")[1] == wire_form(stored[1])
    assert wire.cmd("DELE 1").startswith(b"+OK")
    assert wire.quit().startswith(b"+OK")
    assert inbox(server, "carol@example.net") == [stored[1]]
    assert "Traceback" not in server.log(), server.log()


def test_stalled_reader_and_idle_client_time_out(tmp_path: Path, big: bytes) -> None:
    """A client that stops reading in the middle of a RETR must not keep its session (and the
    maildrop lock) for ever; a silent one is logged out (pop3_timeout, 2 s here)."""
    extra = '[limits]\npop3_timeout = "2s"\n'
    with running_server(tmp_path, services=SERVICES, extra=extra) as server:
        store_in_inbox(server, "alice@example.org", [big])
        stalled = connect(server, "alice@example.org")
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.send("RETR 1")  # and never read
        started = time.monotonic()
        wait_until(lambda: "client read nothing for 2.0s" in server.log(), 20, "the send timeout")
        assert time.monotonic() - started < 15
        wait_until(lambda: can_log_in(server, "alice@example.org"), 10, "the maildrop lock to be released")
        stalled.close()

        idle = connect(server, "alice@example.org")
        assert idle.line() == b"-ERR [SYS/TEMP] autologout: idle for too long\r\n"
        assert idle.file.read() == b""
        idle.close()
        assert inbox(server, "alice@example.org") == [big]


def test_shutdown_ends_idle_sessions_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path, services=SERVICES) as server:
        store_in_inbox(server, "alice@example.org", [b"Subject: s\r\n\r\nkeep me\r\n"])
        idle = connect(server, "alice@example.org")
        assert idle.cmd("DELE 1").startswith(b"+OK")
        started = time.monotonic()
        assert server.stop() == 0
        # waiting for the next command is idle: no need to sit out the 5 s grace period
        assert time.monotonic() - started < 3
        assert idle.line() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
        idle.close()
        assert len(inbox(server, "alice@example.org")) == 1  # no QUIT: nothing deleted


def test_small_answers_are_not_delayed(server: RunningServer) -> None:
    """A client waits for each answer before its next command: an answer written in pieces whose
    last one Nagle's algorithm holds back until the client's delayed ACK costs 40 ms per RETR."""
    store_in_inbox(server, "carol@example.net", [b"Subject: quick\r\n\r\n" + b"x" * 3000 + b"\r\n"])
    wire = connect(server, "carol@example.net")
    last = int(wire.cmd("STAT").split()[1])
    started = time.monotonic()
    for _ in range(40):
        wire.multi(f"RETR {last}")
        wire.multi(f"TOP {last} 1")
    elapsed = time.monotonic() - started
    wire.quit()
    assert elapsed < 1.5, f"80 small answers took {elapsed:.2f} s"


def test_uidl_and_list_survive_a_new_session(server: RunningServer) -> None:
    """UIDLs are stable across sessions; messages added after login are not in the snapshot."""
    address = "bob@example.org"
    store_in_inbox(server, address, [b"Subject: u%d\r\n\r\nu\r\n" % i for i in range(3)])
    first = connect(server, address)
    uidls = first.multi("UIDL")[1]
    count = len(inbox(server, address))
    store_in_inbox(server, address, [b"Subject: later\r\n\r\nlater\r\n"])
    assert first.cmd("STAT").startswith(b"+OK %d " % count)  # the drop is fixed at login
    first.quit()
    second = connect(server, address)
    again = second.multi("UIDL")[1]
    assert again.startswith(uidls[:-3]) and len(again.splitlines()) == count + 2
    second.quit()
