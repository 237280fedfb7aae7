"""Real POP3 clients against mailroom: curl (STLS and POP3S, USER and AUTH PLAIN), fetchmail (POP3S and
STLS, keep / delete, client-side UIDL tracking) and getmail6 (POP3S).

Mail goes in through SMTP, so the store holds it with mailroom's trace headers; every message a
client fetches must be byte-identical to what the store holds (tests.server_fixture.inbox).
fetchmail is told to add nothing (``set invisible``, ``no rewrite``, ``no stripcr``); getmail rewrites
line ends to LF and re-serialises, so its copies are compared with LF line ends.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.store import directory
from mailroom.store.database import db_path, transaction
from tests.conftest import TESTDATA, require_path
from tests.interop.conftest import require_tool
from tests.server_fixture import PASSWORD, RunningServer, inbox, running_server

pytestmark = pytest.mark.interop

# real messages: 8-bit body, a body line starting with a dot, no final newline in the source
SAMPLES = (
    "flanker-messages/8bitmime.eml",
    "flanker-messages/multi-received-headers.eml",
    "python-email-testdata/msg_47.txt",
)
# and a line that is a lone dot (which must go out stuffed, or it ends the answer early)
DOTS = b"Subject: dots\r\nFrom: dots@remote.test\r\n\r\n.\r\n..\r\n...x\r\n.end\r\nlast\r\n"
COUNT_SQL = (
    "SELECT count(*) FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id "
    "JOIN accounts a ON a.id = mb.account_id JOIN domains d ON d.id = a.domain_id "
    "WHERE a.local || '@' || d.name = ? AND mb.name = 'INBOX'"
)
# An MDA for fetchmail: stores each message as NNNN.eml and, before that, notes how many messages
# the account's INBOX holds at that moment (so a test can tell when DELE really took effect).
# A message carrying "X-Fetch-Test: refuse" is refused with EX_TEMPFAIL.
MDA_SCRIPT = f"""
import sqlite3, sys
from pathlib import Path
out, db, address = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = sys.stdin.buffer.read()
conn = sqlite3.connect(f"file:{{db}}?mode=ro", uri=True, timeout=10)
count = conn.execute({COUNT_SQL!r}, (address,)).fetchone()[0]
conn.close()
with open(out / "inbox-counts", "a") as f:
    f.write(f"{{count}}\\n")
if b"X-Fetch-Test: refuse" in data:
    sys.exit(75)
n = len(list(out.glob("*.eml")))
(out / f"{{n:04d}}.eml").write_bytes(data)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("pop3-clients"), services=("smtp", "pop3", "pop3s")) as srv:
        yield srv


@pytest.fixture
def account(server: RunningServer) -> str:
    """A fresh, empty account per test."""
    address = f"u{uuid.uuid4().hex[:12]}@example.org"
    conn = server.db()
    try:
        with transaction(conn):
            directory.add_account(conn, address, PASSWORD)
    finally:
        conn.close()
    return address


def cafile(server: RunningServer) -> Path:
    return server.data_dir / "tls" / "selfsigned.crt"


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def deliver(server: RunningServer, to: str, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example", timeout=30) as s:
        assert s.sendmail("sender@remote.test", [to], body, mail_options=["BODY=8BITMIME"]) == {}


def deliver_samples(server: RunningServer, to: str, extra: tuple[bytes, ...] = ()) -> list[bytes]:
    """The SAMPLES (CRLF line ends, a unique marker header in front), DOTS, then ``extra``;
    returns what the store holds for ``to`` afterwards, in UID order."""
    for name in SAMPLES:
        data = crlf(require_path(TESTDATA / name, "shared test data").read_bytes())
        deliver(server, to, f"X-Test-Id: {uuid.uuid4().hex}\r\n".encode() + data)
    for body in (DOTS, *extra):
        deliver(server, to, body)
    stored = inbox(server, to)
    assert len(stored) == len(SAMPLES) + 1 + len(extra)
    return stored


def assert_clean_log(server: RunningServer) -> None:
    assert "Traceback" not in server.log(), server.log()


# --- curl ------------------------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([require_tool("curl"), "-sS", *args], capture_output=True, timeout=60)


def test_curl_pop3_stls(server: RunningServer, account: str) -> None:
    stored = deliver_samples(server, account)
    base = f"pop3://127.0.0.1:{server.ports['pop3']}"
    common = ("--ssl-reqd", "--cacert", str(cafile(server)), "--user", f"{account}:{PASSWORD}")
    listing = curl(*common, "-v", f"{base}/")
    assert listing.returncode == 0, listing.stderr
    assert b"> STLS" in listing.stderr and b"< +OK Begin TLS negotiation" in listing.stderr
    assert listing.stdout == b"".join(b"%d %d\r\n" % (i, len(m)) for i, m in enumerate(stored, 1))
    for i, want in enumerate(stored, 1):
        got = curl(*common, f"{base}/{i}")
        assert got.returncode == 0, got.stderr
        assert got.stdout == want  # curl undoes the byte-stuffing: exactly the stored bytes
    top = curl(*common, "-X", "TOP 1 0", f"{base}/")
    assert top.returncode == 0 and top.stdout == stored[0].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    uidl = curl(*common, "-X", "UIDL", f"{base}/")
    assert [int(line.split()[0]) for line in uidl.stdout.splitlines()] == list(range(1, len(stored) + 1))
    assert inbox(server, account) == stored  # reading deletes nothing
    assert_clean_log(server)


def test_curl_pop3s_auth_plain_and_dele(server: RunningServer, account: str) -> None:
    stored = deliver_samples(server, account)
    base = f"pop3s://127.0.0.1:{server.ports['pop3s']}"
    common = ("--cacert", str(cafile(server)), "--user", f"{account}:{PASSWORD}")
    got = curl(*common, "--login-options", "AUTH=PLAIN", "-v", f"{base}/2")
    assert got.returncode == 0, got.stderr
    assert b"> AUTH PLAIN" in got.stderr and b"< +OK maildrop has %d messages" % len(stored) in got.stderr
    assert got.stdout == stored[1]
    dele = curl(*common, "-v", "-X", "DELE", "-I", f"{base}/2")
    assert dele.returncode == 0, dele.stderr
    assert b"> DELE 2" in dele.stderr and b"< +OK message 2 deleted" in dele.stderr
    # curl quits (QUIT, awaiting its answer) before it exits: the UPDATE state removed message 2
    assert inbox(server, account) == stored[:1] + stored[2:]
    denied = curl("--cacert", str(cafile(server)), "--user", f"{account}:wrong", f"{base}/")
    assert denied.returncode == 67, denied  # CURLE_LOGIN_DENIED
    assert_clean_log(server)


def test_curl_untrusted_certificate_after_stls(server: RunningServer, account: str) -> None:
    """The client aborts the STLS handshake (it does not trust us): one log line, no traceback."""
    before = len(server.log())
    got = curl("--ssl-reqd", "--user", f"{account}:{PASSWORD}", f"pop3://127.0.0.1:{server.ports['pop3']}/")
    assert got.returncode == 60, got  # CURLE_PEER_FAILED_VERIFICATION
    assert "STLS handshake failed" in server.log()[before:]
    assert_clean_log(server)


# --- fetchmail -------------------------------------------------------------------------------------


class Fetchmail:
    def __init__(self, server: RunningServer, account: str, root: Path) -> None:
        self.server, self.account, self.root = server, account, root
        self.out = root / "out"
        self.out.mkdir()
        self.mda = root / "mda.py"
        self.mda.write_text(MDA_SCRIPT)
        self.idfile = root / "fetchids"

    def run(self, *, stls: bool, keep: bool, uidl: bool = False) -> subprocess.CompletedProcess[str]:
        if stls:
            # no "ssl": plain connection, STLS required (sslproto) and the certificate checked
            service = f"service {self.server.ports['pop3']} protocol POP3"
            tls = "sslproto tls1.2+"
        else:
            service = f"service {self.server.ports['pop3s']} protocol POP3"
            tls = "ssl"
        options = ["keep" if keep else "no keep", "no rewrite", "no stripcr"]
        rc = self.root / "fetchmailrc"
        rc.write_text(
            "set no syslog\nset invisible\n"
            f"poll 127.0.0.1 {service}{' uidl' if uidl else ''}\n"
            f'  user "{self.account}" password "{PASSWORD}"\n'
            f"  {tls} sslcertck sslcertfile {cafile(self.server)} sslcommonname localhost\n"
            f"  {' '.join(options)}\n"
            f'  mda "{sys.executable} {self.mda} {self.out} {db_path(self.server.data_dir)} {self.account}"\n'
        )
        rc.chmod(0o600)  # fetchmail refuses a readable rc file holding a password
        files = ["--pidfile", str(self.root / "fetchmail.pid"), "--idfile", str(self.idfile)]
        return subprocess.run(
            [require_tool("fetchmail"), "-f", str(rc), "--nodetach", "-v", *files],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HOME": str(self.root)},
        )

    def fetched(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.glob("*.eml"))]

    def counts(self) -> list[int]:
        path = self.out / "inbox-counts"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def clear(self) -> None:
        for p in self.out.iterdir():
            p.unlink()


def server_uidls(server: RunningServer, account: str) -> list[str]:
    import poplib
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile(server)))
    p = poplib.POP3_SSL("localhost", server.ports["pop3s"], context=ctx, timeout=30)
    try:
        p.user(account)
        p.pass_(PASSWORD)
        return [line.split()[1].decode() for line in p.uidl()[1]]
    finally:
        p.quit()


def test_fetchmail_pop3s_keep_and_uidl(server: RunningServer, account: str, tmp_path: Path) -> None:
    fm = Fetchmail(server, account, tmp_path)
    stored = deliver_samples(server, account)
    first = fm.run(stls=False, keep=True, uidl=True)
    assert first.returncode == 0, first.stdout + first.stderr  # 0: mail was fetched
    assert f"{len(stored)} messages for" in first.stdout + first.stderr
    assert fm.fetched() == stored
    assert inbox(server, account) == stored  # keep: nothing deleted
    # fetchmail's idfile now holds exactly the server's unique-ids
    uidls = server_uidls(server, account)
    ids = [line.split()[-1] for line in fm.idfile.read_text().splitlines() if account in line]
    assert sorted(ids) == sorted(uidls)

    # a second poll finds nothing new: "uidl" tracks what was seen by UIDL
    fm.clear()
    again = fm.run(stls=False, keep=True, uidl=True)
    assert again.returncode == 1, again.stdout + again.stderr  # 1: no mail
    assert fm.fetched() == []

    # one new message: only that one is fetched
    deliver(server, account, b"Subject: the new one\r\n\r\n.dot\r\n..two dots\r\n")
    stored = inbox(server, account)
    third = fm.run(stls=False, keep=True, uidl=True)
    assert third.returncode == 0, third.stdout + third.stderr
    assert fm.fetched() == stored[-1:]
    assert inbox(server, account) == stored
    assert_clean_log(server)


def test_fetchmail_stls_deletes_only_at_quit(server: RunningServer, account: str, tmp_path: Path) -> None:
    fm = Fetchmail(server, account, tmp_path)
    refused = b"Subject: refused by the MDA\r\nX-Fetch-Test: refuse\r\n\r\nstays on the server\r\n"
    stored = deliver_samples(server, account, extra=(refused,))
    result = fm.run(stls=True, keep=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "POP3> STLS" in log and "upgrade to TLS succeeded" in log
    assert re.search(r"POP3> DELE 1\n", log) and "POP3> QUIT" in log
    assert re.search(r"POP3> (RETR|TOP) 1\b", log)  # this mode downloads with TOP n 99999999
    # Each message was delivered while every message was still in the store: fetchmail sends DELE
    # after each delivery, but RFC 1939 §6 removes nothing before QUIT (the UPDATE state).
    assert fm.counts() == [len(stored)] * len(stored)
    assert fm.fetched() == stored[:-1]
    # the message the MDA refused was not deleted; the others were, at QUIT
    assert inbox(server, account) == [stored[-1]]
    assert_clean_log(server)


# --- getmail6 --------------------------------------------------------------------------------------


@pytest.fixture
def getmail_dir() -> Iterator[Path]:
    """getmail refuses to deliver as root; as root it writes as "nobody", who must reach the
    Maildir (pytest's tmp_path is private to root): a world-traversable temp dir of our own."""
    root = Path(tempfile.mkdtemp(prefix="mailroom-getmail-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_getmail(
    server: RunningServer, account: str, root: Path, *, delete: bool
) -> tuple[subprocess.CompletedProcess[str], list[bytes]]:
    maildir = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    if as_root:
        for path in (maildir, *maildir.iterdir()):
            shutil.chown(path, "nobody", "nogroup")
    state = root / "getmail-state"
    state.mkdir(exist_ok=True)
    rc = root / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {server.ports['pop3s']}\nusername = {account}\npassword = {PASSWORD}\n"
        f"ca_certs = {cafile(server)}\n\n"
        f"[destination]\ntype = Maildir\npath = {maildir}/\n{'user = nobody' if as_root else ''}\n\n"
        # read_all = false: only messages whose UIDL getmail has not seen yet
        f"[options]\nread_all = false\ndelete = {str(delete).lower()}\n"
        "delivered_to = false\nreceived = false\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [require_tool("getmail"), "--rcfile", str(rc), "--getmaildir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    files = sorted((maildir / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    got = [p.read_bytes() for p in files]
    for p in files:
        p.unlink()
    return result, got


def as_getmail_writes(stored: bytes) -> bytes:
    return stored.replace(b"\r\n", b"\n")  # getmail delivers with the platform's line ends


def test_getmail_pop3s(server: RunningServer, account: str, getmail_dir: Path) -> None:
    plain = (
        b"Subject: getmail one\r\nFrom: a@remote.test\r\nTo: x@example.org\r\n\r\n.leading dot\r\nline\r\n",
        b"Subject: getmail two\r\nFrom: b@remote.test\r\n\r\n..\r\n.\r\nend\r\n",
    )
    for body in plain:
        deliver(server, account, body)
    stored = inbox(server, account)
    first, got = run_getmail(server, account, getmail_dir, delete=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 messages" in first.stdout and "retrieved" in first.stdout, first.stdout
    assert sorted(got) == sorted(map(as_getmail_writes, stored))
    assert inbox(server, account) == stored

    # nothing new: getmail remembers the UIDLs it has seen
    second, got = run_getmail(server, account, getmail_dir, delete=False)
    assert second.returncode == 0 and got == [], second.stdout + second.stderr

    deliver(server, account, b"Subject: getmail three\r\n\r\nthird\r\n")
    stored = inbox(server, account)
    third, got = run_getmail(server, account, getmail_dir, delete=True)
    assert third.returncode == 0, third.stdout + third.stderr
    assert got == [as_getmail_writes(stored[-1])]
    # delete = true: getmail deletes the new message and the ones it already holds (by UIDL)
    assert inbox(server, account) == []
    assert_clean_log(server)
