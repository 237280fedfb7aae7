"""mailroom's POP3 side by side with Dovecot's (the reference server, ../shared/peers/start-dovecot.sh).

The same real messages (flanker and CPython email test data: broken MIME, 8-bit, no final CRLF,
lines starting with dots) go byte for byte into a mailroom INBOX (``store_message``: no trace header
is prepended) and into a Dovecot Maildir; then both servers are asked the same questions over the
wire and must give the same bytes: STAT, LIST, TOP n and RETR (byte-stuffed, as sent), the UIDL
count, which commands fail, and what a deleted message still answers to.

Dovecot gets a user of its own (pop3cmp@peer.test, added to the peers' passwd-file when missing),
so mail that other tests or benchmarks deliver to sink@peer.test cannot get in the way.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailroom.store import directory, mail
from mailroom.store.database import transaction
from tests.conftest import TESTDATA, require_path
from tests.interop.conftest import start_peer
from tests.server_fixture import PASSWORD, RunningServer, running_server

pytestmark = pytest.mark.interop

PEERS_STATE = Path(os.environ.get("PEERS_STATE", "/var/lib/mailroom-peers"))
DOVECOT_POP3S = 1995
DOVECOT_USER = "pop3cmp@peer.test"
DOVECOT_PASSWORD = "secret"
MAILROOM_USER = "alice@example.org"

# (file, why it is here)
MESSAGES: tuple[tuple[str, str], ...] = (
    ("flanker-messages/8bitmime.eml", "8-bit body"),
    ("flanker-messages/mailformed-headers.eml", "raw 8-bit header bytes, broken header lines"),
    ("flanker-messages/enclosed-bad-encoding.eml", "8-bit, bad encodings in an enclosed message"),
    ("flanker-messages/enclosed-broken-body.eml", "broken enclosed body"),
    ("flanker-messages/missing-final-boundary.eml", "MIME without its final boundary"),
    ("flanker-messages/missing-boundaries.eml", "MIME without boundaries"),
    ("flanker-messages/no-ctype.eml", "no Content-Type, no final CRLF"),
    ("flanker-messages/text-only.eml", "no final CRLF"),
    ("flanker-messages/long-header.eml", "a 200 KB header field, no final CRLF"),
    ("flanker-messages/mailgun-pic.eml", "mixed line ends, no final CRLF, 80 KB"),
    ("flanker-messages/multi-received-headers.eml", "a body line starting with a dot"),
    ("flanker-messages/quoted-printable.eml", "quoted-printable line starting with a dot"),
    ("flanker-messages/torture.eml", "1.8 MB torture test, lines starting with dots"),
    ("flanker-messages/russian-attachment-yahoo.eml", "8-bit, 240 KB"),
    ("flanker-messages/from-encoding.eml", "8-bit From"),
    ("python-email-testdata/msg_01.txt", "plain"),
    ("python-email-testdata/msg_07.txt", "multipart"),
    ("python-email-testdata/msg_26.txt", "CRLF in the source"),
    ("python-email-testdata/msg_47.txt", "no final CRLF"),
)
LABELS = [name for name, _ in MESSAGES] + ["msg_01.txt + lone-dot lines", "msg_01.txt header only"]
TOP_LINES = (0, 1, 2, 10, 4294967295)


def crlf(data: bytes) -> bytes:
    """Line ends as POP3 sends them (RFC 1939 §3) and as Dovecot counts a Maildir file's size."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def corpus() -> list[bytes]:
    messages = [crlf(require_path(TESTDATA / name, "shared test data").read_bytes()) for name, _ in MESSAGES]
    # Derived from a real message: lines that are nothing but dots, and a last line that is one
    lone_dots = messages[15] + b".\r\n..\r\n. \r\n.\r\n.."
    # A header section with no empty line and no body at all
    header_only = messages[15].split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return [*messages, lone_dots, header_only]


def wire_form(message: bytes) -> bytes:
    """RETR's multi-line body: RFC 1939 §3 byte-stuffing, a CRLF if missing, then "." CRLF."""
    stuffed = re.sub(rb"(^|\n)\.", rb"\1..", message)
    return stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"


class Wire:
    """A raw POP3 client over TLS: the exact bytes on the wire (poplib undoes stuffing and line ends)."""

    def __init__(self, port: int, cafile: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()
        assert self.greeting.startswith(b"+OK"), self.greeting

    def line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed by the server")
        return line

    def multiline(self) -> bytes:
        """Everything up to and including the terminating "." CRLF, exactly as sent."""
        out = bytearray()
        while True:
            line = self.line()
            out += line
            if line == b".\r\n":
                return bytes(out)

    def send(self, *commands: str) -> None:
        self.sock.sendall("".join(c + "\r\n" for c in commands).encode())

    def cmd(self, command: str) -> bytes:
        self.send(command)
        return self.line()

    def multi(self, command: str) -> tuple[bytes, bytes]:
        """A command whose +OK answer is multi-line: (status line, body with terminator)."""
        status = self.cmd(command)
        return status, self.multiline() if status.startswith(b"+OK") else b""

    def login(self, user: str, password: str) -> None:
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        status = self.cmd(f"PASS {password}")
        assert status.startswith(b"+OK"), status

    def quit(self) -> bytes:
        status = self.cmd("QUIT")
        self.close()
        return status

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Peer:
    name: str
    port: int
    cafile: Path
    user: str
    password: str

    def connect(self) -> Wire:
        wire = Wire(self.port, self.cafile)
        wire.login(self.user, self.password)
        return wire


def ensure_dovecot_user(user: str, password: str) -> None:
    """Add ``user`` to the peers' Dovecot passwd-file (re-read by Dovecot when it changes)."""
    users = PEERS_STATE / "dovecot" / "users"
    lines = users.read_text().splitlines()
    if any(line.startswith(f"{user}:") for line in lines):
        return
    st = users.stat()
    tmp = users.with_name(f"users.{os.getpid()}")
    tmp.write_text("\n".join([*lines, f"{user}:{{PLAIN}}{password}::::::"]) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o777)
    os.replace(tmp, users)


def dovecot_sessions(user: str) -> bool:
    """Whether Dovecot still has a session of ``user`` open (it writes its index after QUIT)."""
    conf = PEERS_STATE / "dovecot" / "dovecot.conf"
    who = subprocess.run(["doveadm", "-c", str(conf), "who", user], capture_output=True, text=True)
    return who.returncode == 0 and user in who.stdout


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def fill_maildir(home: Path, messages: list[bytes]) -> None:
    """A fresh Maildir owned by vmail; Dovecot numbers new/ files in file name order."""
    shutil.rmtree(home, ignore_errors=True)
    vmail = pwd.getpwnam("vmail")
    for sub in ("", "new", "cur", "tmp"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / sub, vmail.pw_uid, vmail.pw_gid)
    base = int(time.time())
    for i, data in enumerate(messages):
        path = home / "new" / f"{base + i}.M{i:06d}P{os.getpid()}.mailroom-tests"
        path.write_bytes(data)
        os.chown(path, vmail.pw_uid, vmail.pw_gid)


def store_in_inbox(server: RunningServer, address: str, messages: list[bytes]) -> None:
    """Insert the bytes as they are (no Return-Path/Received prepended, unlike SMTP delivery)."""
    conn = server.db()
    try:
        with transaction(conn):
            account = directory.find_account(conn, address)
            assert account is not None
            box = mail.inbox(conn, account.id)
            for data in messages:
                mail.store_message(
                    conn, io.BytesIO(data), len(data), [mail.Placement(box.id)], int(time.time())
                )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    return corpus()


@pytest.fixture(scope="module")
def dovecot(messages: list[bytes]) -> Iterator[Peer]:
    start_peer("start-dovecot.sh")
    ensure_dovecot_user(DOVECOT_USER, DOVECOT_PASSWORD)
    local, domain = DOVECOT_USER.split("@")
    home = PEERS_STATE / "mail" / domain / local
    fill_maildir(home, messages)
    peer = Peer("dovecot", DOVECOT_POP3S, PEERS_STATE / "tls" / "ca.pem", DOVECOT_USER, DOVECOT_PASSWORD)

    def answers() -> bool:  # start-dovecot.sh reloads a running Dovecot: its listeners restart
        try:
            peer.connect().quit()
            return True
        except (OSError, EOFError, AssertionError):
            return False

    wait_until(answers, 20, "Dovecot POP3S to log pop3cmp in")
    try:
        yield peer
    finally:
        wait_until(lambda: not dovecot_sessions(DOVECOT_USER), 10, "Dovecot to end its POP3 sessions")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def mailroom(tmp_path_factory: pytest.TempPathFactory, messages: list[bytes]) -> Iterator[Peer]:
    with running_server(tmp_path_factory.mktemp("pop3-dovecot"), services=("smtp", "pop3s")) as server:
        store_in_inbox(server, MAILROOM_USER, messages)
        cafile = server.data_dir / "tls" / "selfsigned.crt"
        yield Peer("mailroom", server.ports["pop3s"], cafile, MAILROOM_USER, PASSWORD)


@pytest.fixture
def both(mailroom: Peer, dovecot: Peer) -> Iterator[tuple[Wire, Wire]]:
    ours, theirs = mailroom.connect(), dovecot.connect()
    try:
        yield ours, theirs
    finally:
        # RSET first: whatever a test marked, nothing is deleted on either server
        for wire in (ours, theirs):
            try:
                wire.cmd("RSET")
                wire.quit()
            except (OSError, EOFError):
                wire.close()


def scan_listing(body: bytes) -> list[tuple[int, bytes]]:
    return [(int(n), rest) for n, rest in (line.split(b" ", 1) for line in body.splitlines()[:-1])]


def test_stat_list_uidl_match(both: tuple[Wire, Wire], messages: list[bytes]) -> None:
    ours, theirs = both
    stat = b"+OK %d %d\r\n" % (len(messages), sum(map(len, messages)))
    assert ours.cmd("STAT") == theirs.cmd("STAT") == stat
    list_ours, list_theirs = ours.multi("LIST")[1], theirs.multi("LIST")[1]
    assert list_ours == list_theirs
    assert list_ours == b"".join(b"%d %d\r\n" % (i, len(m)) for i, m in enumerate(messages, 1)) + b".\r\n"
    for i, message in enumerate(messages, 1):
        assert ours.cmd(f"LIST {i}") == theirs.cmd(f"LIST {i}") == b"+OK %d %d\r\n" % (i, len(message))
    uidl_ours, uidl_theirs = scan_listing(ours.multi("UIDL")[1]), scan_listing(theirs.multi("UIDL")[1])
    assert [n for n, _ in uidl_ours] == [n for n, _ in uidl_theirs] == list(range(1, len(messages) + 1))
    uids = [uid for _, uid in uidl_ours]
    assert len(set(uids)) == len(uids)
    # RFC 1939 §7: unique-id = 1*70 characters in the range 0x21 to 0x7E
    assert all(re.fullmatch(rb"[\x21-\x7e]{1,70}", uid) for uid in uids)
    for i, uid in enumerate(uids, 1):
        assert ours.cmd(f"UIDL {i}") == b"+OK %d %s\r\n" % (i, uid)


def test_retr_and_top_match(both: tuple[Wire, Wire], messages: list[bytes]) -> None:
    ours, theirs = both
    for i, message in enumerate(messages, 1):
        status, body = ours.multi(f"RETR {i}")
        their_status, their_body = theirs.multi(f"RETR {i}")
        assert status.startswith(b"+OK") and their_status.startswith(b"+OK")
        assert body == their_body, f"RETR {i} ({LABELS[i - 1]})"
        assert body == wire_form(message)
        for n in TOP_LINES:
            top, their_top = ours.multi(f"TOP {i} {n}"), theirs.multi(f"TOP {i} {n}")
            assert top[0].startswith(b"+OK") and their_top[0].startswith(b"+OK")
            assert top[1] == their_top[1], f"TOP {i} {n} ({LABELS[i - 1]})"
        assert ours.multi(f"TOP {i} 4294967295")[1] == body  # more lines than the body has: all of it


def test_deleted_messages(both: tuple[Wire, Wire], messages: list[bytes]) -> None:
    ours, theirs = both
    assert ours.cmd("DELE 2").startswith(b"+OK") and theirs.cmd("DELE 2").startswith(b"+OK")
    # RFC 1939 §5: a message marked as deleted may not be referred to again
    for command in ("LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "DELE 2"):
        assert ours.cmd(command).startswith(b"-ERR"), command
        assert theirs.cmd(command).startswith(b"-ERR"), command
    stat = b"+OK %d %d\r\n" % (len(messages) - 1, sum(map(len, messages)) - len(messages[1]))
    assert ours.cmd("STAT") == theirs.cmd("STAT") == stat
    # scan listings skip it, the other messages keep their numbers
    assert ours.multi("LIST")[1] == theirs.multi("LIST")[1]
    numbers = [n for n, _ in scan_listing(ours.multi("UIDL")[1])]
    assert numbers == [n for n, _ in scan_listing(theirs.multi("UIDL")[1])]
    assert numbers == [1, *range(3, len(messages) + 1)]
    assert ours.multi("RETR 3")[1] == theirs.multi("RETR 3")[1] == wire_form(messages[2])
    assert ours.cmd("RSET").startswith(b"+OK") and theirs.cmd("RSET").startswith(b"+OK")
    assert ours.cmd("STAT") == theirs.cmd("STAT")
    assert ours.cmd("LIST 2") == theirs.cmd("LIST 2") == b"+OK 2 %d\r\n" % len(messages[1])


def test_errors_match(both: tuple[Wire, Wire], messages: list[bytes]) -> None:
    ours, theirs = both
    past = len(messages) + 1
    for command in (
        "RETR 0",
        f"RETR {past}",
        "RETR one",
        "LIST 0",
        f"LIST {past}",
        f"UIDL {past}",
        "TOP 1",
        f"TOP {past} 0",
        "TOP 1 -1",
        "DELE 0",
        f"DELE {past}",
        "XYZZY",
        "STLS",
        "USER again",
    ):
        mine, reference = ours.cmd(command), theirs.cmd(command)
        assert mine[:1] == reference[:1] == b"-", f"{command}: {mine!r} vs Dovecot {reference!r}"
        # More mistakes than the limit of errors in a row, each followed by a good command: like
        # Dovecot, mailroom only hangs up on a client that errs again and again without a success.
        assert ours.cmd("STAT") == theirs.cmd("STAT")


def test_pipelined_session_matches(both: tuple[Wire, Wire], messages: list[bytes]) -> None:
    """RFC 2449 §6.6: every command of the session in one write; answers come back in order."""
    ours, theirs = both
    commands = ["STAT", "LIST", "UIDL", "NOOP"]
    for i in range(1, len(messages) + 1):
        commands += [f"LIST {i}", f"TOP {i} 3", f"RETR {i}", f"DELE {i}"]
    commands += ["STAT", "RSET", "STAT"]
    multi = {"LIST", "UIDL", "TOP", "RETR"}

    def run(wire: Wire) -> list[bytes]:
        wire.send(*commands)
        answers = []
        for command in commands:
            status = wire.line()
            has_body = (
                status.startswith(b"+OK")
                and command.split()[0] in multi
                and (command.split()[0] in ("TOP", "RETR") or " " not in command)
            )
            exact = command == "STAT" or command.startswith("LIST ")
            answers.append((status if exact else status[:3]) + (wire.multiline() if has_body else b""))
        return answers

    mine, reference = run(ours), run(theirs)
    for command, a, b in zip(commands, mine, reference, strict=True):
        if command.startswith("UIDL"):
            a, b = a[:3], b[:3]  # unique-ids differ by design; test_stat_list_uidl_match counts them
        assert a == b, command
