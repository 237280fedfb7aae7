"""The same bytes APPENDed to mailroom and to a live Dovecot (../shared/peers/start-dovecot.sh)
must FETCH the same: BODYSTRUCTURE, ENVELOPE, BODY[1], header fields, RFC822.SIZE and
BINARY.SIZE[1], for every message in ../shared/testdata flanker-messages and
python-email-testdata. A dedicated Dovecot folder is made for the run and deleted after it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.store import directory
from mailroom.store.database import transaction
from tests.conftest import IN_CI, TESTDATA, require_path
from tests.imap.raw_client import RawIMAP, fetch_items
from tests.interop.conftest import start_peer
from tests.server_fixture import PASSWORD, running_server

pytestmark = pytest.mark.interop
DOVECOT_IMAP = 1143
DOVECOT_USER = "alice@peer.test"
DOVECOT_PASSWORD = "secret"
ITEMS = (
    "RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[1] "
    "BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type)] BODY.PEEK[1.MIME]"
)
SETS = ("flanker-messages", "python-email-testdata")
# Known, deliberate differences (message, item): why
KNOWN = {
    # Dovecot answers NO when another part of the message has broken encoded data; mailroom
    # decodes the part asked for
    ("flanker-messages/enclosed-broken-body.eml", "BINARY.SIZE[1]"): "Dovecot refuses the message",
    ("python-email-testdata/msg_15.txt", "BINARY.SIZE[1]"): "Dovecot refuses the message",
}


def messages() -> list[Path]:
    out: list[Path] = []
    for name in SETS:
        root = TESTDATA / name
        if root.exists():
            out.extend(
                p
                for p in sorted(root.rglob("*"))
                if p.is_file() and not p.name.startswith(("LICENSE", "SOURCE", "COPYING", "README"))
            )
    return out


def _dovecot_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", DOVECOT_IMAP), timeout=2).close()
        return True
    except OSError:
        return False


class Dovecot:
    """The Dovecot side, reconnecting when Dovecot drops the connection (it does on some broken
    messages: "Invalid quoted-printable input trailer" on BINARY)."""

    def __init__(self) -> None:
        self.folder = f"mailroom-compare-{uuid.uuid4().hex[:8]}"
        self.conn = self._connect()
        assert self.conn.command(f"CREATE {self.folder}")[-1].startswith(b"t OK")
        assert self.conn.command(f"SELECT {self.folder}")[-1].startswith(b"t OK")

    def _connect(self) -> RawIMAP:
        conn = RawIMAP(DOVECOT_IMAP, tls=False)
        conn.starttls()
        conn.login(DOVECOT_USER, DOVECOT_PASSWORD)
        return conn

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = self._connect()
        assert self.conn.command(f"SELECT {self.folder}")[-1].startswith(b"t OK")

    def cleanup(self) -> None:
        self.reconnect()
        self.conn.command("UNSELECT")
        self.conn.command(f"DELETE {self.folder}")
        self.conn.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawIMAP, Dovecot]]:
    for name in SETS:
        require_path(TESTDATA / name, f"test messages ({name})")
    if not _dovecot_up():
        start_peer("start-dovecot.sh")
    dovecot = Dovecot()
    with running_server(tmp_path_factory.mktemp("imap-compare"), services=("smtp", "imaps")) as srv:
        conn = srv.db()
        try:
            with transaction(conn):
                directory.add_account(conn, "compare@example.org", PASSWORD)
        finally:
            conn.close()
        ours = RawIMAP(srv.ports["imaps"])
        ours.login("compare@example.org", PASSWORD)
        ours.command("SELECT INBOX")
        try:
            yield ours, dovecot
        finally:
            ours.close()
            dovecot.cleanup()


def _append(c: RawIMAP, mailbox: str, data: bytes) -> int | None:
    c.send(b"a APPEND %s {%d+}\r\n" % (mailbox.encode(), len(data)) + data + b"\r\n")
    lines = c.until("a")
    last = lines[-1]
    if not last.startswith(b"a OK"):
        return None
    code = last.split(b"[APPENDUID ", 1)[1].split(b"]")[0]
    return int(code.split()[1])


def _fetch(c: RawIMAP, uid: int, items: str) -> tuple[bytes, dict[str, bytes]]:
    lines = c.command(f"UID FETCH {uid} ({items})")
    status = lines[-1].split(b" ", 2)[1]
    merged: dict[str, bytes] = {}
    for line in lines[:-1]:
        if line.startswith(b"* ") and b" FETCH (" in line[:20]:
            merged.update((k.upper(), v) for k, v in fetch_items(line).items())
    merged.pop("UID", None)
    return status, merged


def test_fetch_answers_match_dovecot(pair: tuple[RawIMAP, Dovecot]) -> None:
    ours, dovecot = pair
    mismatches: list[str] = []
    compared = 0
    for path in messages():
        data = path.read_bytes()
        if not data:
            continue
        dovecot_uid = _append(dovecot.conn, dovecot.folder, data)
        if dovecot_uid is None:
            continue  # Dovecot refused it (a NUL, say): nothing to compare
        our_uid = _append(ours, "INBOX", data)
        name = str(path.relative_to(TESTDATA))
        if our_uid is None:
            mismatches.append(f"{name}: APPEND refused by mailroom")
            continue
        compared += 1
        checked = 0
        for items in (ITEMS, "BINARY.SIZE[1]", "BODY.PEEK[2]"):
            try:
                want_status, want = _fetch(dovecot.conn, dovecot_uid, items)
            except ConnectionError:
                dovecot.reconnect()
                continue  # Dovecot gave up on this one: nothing to compare against
            got_status, got = _fetch(ours, our_uid, items)
            if (name, items) in KNOWN:
                continue
            if want_status != got_status:
                mismatches.append(f"{name}: {items}: status {got_status!r}, Dovecot {want_status!r}")
                continue
            checked += len(want)
            for key, value in want.items():
                if got.get(key) != value:
                    mismatches.append(
                        f"{name}: {key}:\n  mailroom {got.get(key)!r:.600}\n  dovecot  {value!r:.600}"
                    )
        assert checked >= 7, f"{name}: Dovecot answered too little to compare"
    assert compared >= (150 if IN_CI else 1)
    assert not mismatches, f"{len(mismatches)} differences in {compared} messages:\n" + "\n".join(mismatches)
