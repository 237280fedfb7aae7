"""The imapclient library (a test dependency) against a running server: its parsers read every
response shape we send (ENVELOPE and BODYSTRUCTURE objects, ESEARCH, MOVE, IDLE)."""

from __future__ import annotations

import smtplib
import ssl
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mailroom.store import directory
from mailroom.store.database import transaction
from tests.conftest import IN_CI
from tests.server_fixture import PASSWORD, RunningServer, running_server

try:
    import imapclient
except ImportError:  # pragma: no cover
    if IN_CI:
        raise
    pytest.skip("imapclient is not installed (pip install imapclient)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("imapclient"), services=("smtp", "imaps")) as srv:
        yield srv


def connect(server: RunningServer) -> tuple[Any, str]:
    address = f"ic{uuid.uuid4().hex[:8]}@example.org"
    conn = server.db()
    try:
        with transaction(conn):
            directory.add_account(conn, address, PASSWORD)
    finally:
        conn.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = imapclient.IMAPClient(
        "127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=ctx, timeout=15
    )
    client.login(address, PASSWORD)
    return client, address


MESSAGE = (
    b"From: Ann Example <ann@example.org>\r\nTo: bob@example.org\r\nSubject: imapclient check\r\n"
    b"Date: Tue, 2 Jan 2024 10:00:00 +0100\r\nMessage-ID: <ic@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html</p>\r\n--b--\r\n"
)


def test_imapclient_round_trip(server: RunningServer) -> None:
    client, _address = connect(server)
    assert b"IDLE" in client.capabilities() and client.has_capability("MOVE")
    assert client.namespace().personal == (("", "/"),)
    assert client.id_({"name": "imapclient-test"}) == ((b"name", b"mailroom", b"vendor", b"mailroom"),)
    folders = {name for _flags, _delim, name in client.list_folders()}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= folders
    assert client.find_special_folder(b"\\Sent") == "Sent"
    client.create_folder("Work/Reports")
    assert client.folder_exists("Work/Reports") and client.folder_exists("Work")
    uid = int(client.append("INBOX", MESSAGE, flags=[b"$Important"]).split()[2].rstrip(b"]"))
    assert client.folder_status("INBOX", [b"MESSAGES", b"UNSEEN"]) == {b"MESSAGES": 1, b"UNSEEN": 1}
    client.select_folder("INBOX")
    assert client.search(["SUBJECT", "imapclient"]) == [uid]
    assert client.search(["TEXT", "html"]) == [uid]
    data = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "RFC822.SIZE", "BODY.PEEK[1]"])[uid]
    envelope = data[b"ENVELOPE"]
    assert envelope.subject == b"imapclient check" and envelope.from_[0].mailbox == b"ann"
    assert envelope.message_id == b"<ic@example.org>"
    assert data[b"BODYSTRUCTURE"].is_multipart
    assert data[b"RFC822.SIZE"] == len(MESSAGE)
    assert data[b"BODY[1]"] == b"plain text"
    assert set(data[b"FLAGS"]) == {b"$Important", b"\\Recent"}
    client.add_flags([uid], [imapclient.SEEN, imapclient.FLAGGED])
    assert set(client.get_flags([uid])[uid]) >= {b"\\Seen", b"\\Flagged"}
    client.move([uid], "Work/Reports")
    assert client.search("ALL") == []
    client.select_folder("Work/Reports")
    assert client.search(["FLAGGED"]) == [1]
    client.logout()


def test_imapclient_idle_sees_delivery(server: RunningServer) -> None:
    client, address = connect(server)
    client.select_folder("INBOX")
    client.idle()

    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example") as s:
            s.sendmail("x@remote.test", [address], b"Subject: during idle\r\n\r\nhi\r\n")

    threading.Timer(0.2, deliver).start()
    responses = client.idle_check(timeout=5)
    client.idle_done()
    assert (1, b"EXISTS") in responses
    client.logout()
