"""FETCH (UID FLAGS) from the mailbox index, through a real server: the same answers as the
row-by-row path whatever the mailbox went through (keywords, \\Recent, changes other sessions
made and this one was not told of yet), and sessions that share the index's UID array never
see each other's changes before they are told (RFC 9051 §2.3.1.2, §7.5.1)."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest

from tests.imap.raw_client import RawIMAP
from tests.server_fixture import PASSWORD, RunningServer, new_account, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("imap-index"), services=("smtp", "imaps")) as srv:
        yield srv


def client(server: RunningServer, user: str) -> RawIMAP:
    c = RawIMAP(server.ports["imaps"])
    c.login(user, PASSWORD)
    return c


def deliver(server: RunningServer, to: str, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example") as s:
        for i in range(n):
            assert s.sendmail("sender@remote.test", [to], b"Subject: d%d\r\n\r\nbody\r\n" % i) == {}


def append(c: RawIMAP, flags: str) -> None:
    message = b"Subject: appended\r\n\r\nbody\r\n"
    c.send(f"a APPEND INBOX ({flags}) {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
    assert c.until("a")[-1].startswith(b"a OK")


def indexed(c: RawIMAP, command: str) -> list[bytes]:
    lines = c.command(command)
    assert lines[-1].startswith(b"t OK"), lines[-1]
    return lines[:-1]


def row_by_row(c: RawIMAP, command: str) -> list[bytes]:
    """The same FETCH with RFC822.SIZE added (which takes it off the index), that item removed."""
    lines = c.command(command.replace(")", " RFC822.SIZE)"))
    assert lines[-1].startswith(b"t OK"), lines[-1]
    return [re.sub(rb" ?RFC822\.SIZE \d+", b"", line).replace(b"( ", b"(") for line in lines[:-1]]


COMMANDS = (
    "UID FETCH 1:* (UID FLAGS)",
    "FETCH 1:* (FLAGS)",
    "FETCH 1:* (UID)",
    "FETCH 2,4:5 (UID FLAGS)",
    "UID FETCH 3:* (FLAGS)",
    "UID FETCH 2:4,9:* (UID)",
)


def same_both_ways(c: RawIMAP) -> list[bytes]:
    """Both paths answer alike (after a NOOP: a UID FETCH announces changes after its data)."""
    c.command("NOOP")
    for command in COMMANDS:
        assert indexed(c, command) == row_by_row(c, command), command
    return indexed(c, "UID FETCH 1:* (UID FLAGS)")


def test_indexed_fetch_flags_answers_as_row_by_row(server: RunningServer) -> None:
    user = new_account(server, "i")
    a, b = client(server, user), client(server, user)
    for flags in ("\\Seen", "\\Flagged $Label1", "", "\\Draft Work $Label1", "\\Answered \\Seen"):
        append(a, flags)
    deliver(server, user, 3)
    assert b"* 8 EXISTS" in a.command("SELECT INBOX")  # A takes \Recent for the delivered ones
    b.command("SELECT INBOX")
    got = same_both_ways(a)
    assert got[0] == b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))"
    assert got[3] == b"* 4 FETCH (UID 4 FLAGS (\\Draft \\Recent Work $Label1))"
    assert got[5] == b"* 6 FETCH (UID 6 FLAGS (\\Recent))"
    assert same_both_ways(b)[5] == b"* 6 FETCH (UID 6 FLAGS ())"  # \Recent is A's alone
    # B changes flags and expunges; more mail arrives; A has been told nothing yet
    assert b.command("STORE 2,7 +FLAGS (Urgent \\Deleted)")[-1].startswith(b"t OK")
    assert b.command("STORE 3 FLAGS (\\Seen)")[-1].startswith(b"t OK")
    assert b.command("EXPUNGE")[-1].startswith(b"t OK")
    deliver(server, user, 2)
    same_both_ways(b)
    # FETCH by sequence number may not announce expunges (RFC 9051 §7.5.1): A still counts 8
    got = indexed(a, "FETCH 1:* (FLAGS)")
    assert got == row_by_row(a, "FETCH 1:* (FLAGS)")
    assert [line.split(b" ")[1] for line in got] == [b"1", b"3", b"4", b"5", b"6", b"8"]
    assert got[1] == b"* 3 FETCH (FLAGS (\\Seen \\Recent))"
    a.command("NOOP")
    got = same_both_ways(a)
    assert [line.split(b" ")[4] for line in got] == [b"1", b"3", b"4", b"5", b"6", b"8", b"9", b"10"]
    assert got[-1] == b"* 8 FETCH (UID 10 FLAGS ())"  # \Recent went to B, which heard first
    for c in (a, b):
        c.close()


def test_sessions_sharing_the_index_never_see_each_others_changes_early(server: RunningServer) -> None:
    """Both views start out as the store's one UID array; whichever changes first copies it."""
    user = new_account(server, "i")
    deliver(server, user, 6)
    x, y = client(server, user), client(server, user)
    x.command("SELECT INBOX")
    y.command("SELECT INBOX")
    uids = [b"* %d FETCH (UID %d)" % (n, n) for n in range(1, 7)]
    deliver(server, user, 1)
    assert b"* 7 EXISTS" in x.command("NOOP")
    assert indexed(y, "FETCH 1:* (UID)") == uids  # Y was not told of message 7
    assert indexed(y, "UID FETCH 1:* (UID)") == [*uids, b"* 7 EXISTS", b"* 0 RECENT"]  # told after
    # an expunge in X: Y keeps its sequence numbers until told (FETCH by number tells nothing)
    assert x.command("STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"t OK")
    assert x.command("EXPUNGE")[:-1] == [b"* 2 EXPUNGE"]
    assert indexed(y, "FETCH 1:* (UID)") == [b"* %d FETCH (UID %d)" % (n, n) for n in (1, 3, 4, 5, 6, 7)]
    z = client(server, user)
    z.command("SELECT INBOX")
    assert indexed(z, "FETCH 1:* (UID)") == [
        b"* %d FETCH (UID %d)" % p for p in enumerate((1, 3, 4, 5, 6, 7), 1)
    ]
    for c in (x, y, z):
        c.close()
