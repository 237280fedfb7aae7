"""Real clients and a real MTA talking to mailroom's SMTP listeners."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.store import directory
from mailroom.store.database import transaction
from tests.interop.conftest import require_tool, start_peer
from tests.server_fixture import PASSWORD, RunningServer, free_port, inbox, populate, write_config

pytestmark = pytest.mark.interop
POSTFIX_RELAY_PORT = 2526  # ../shared/peers: Postfix relays mail for proj.test to [127.0.0.1]:2526


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("interop-smtp")
    ports = {"smtp": POSTFIX_RELAY_PORT, "submission": free_port(), "submissions": free_port()}
    srv = RunningServer(root, write_config(root, ports), ports)
    populate(srv.data_dir)
    conn = srv.db()
    with transaction(conn):
        directory.add_domain(conn, "proj.test")
        directory.add_account(conn, "user@proj.test", PASSWORD)
    conn.close()
    srv.start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log()


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("swaks"), "--helo", "swaks.client", *args], capture_output=True, text=True, timeout=60
    )


def test_swaks_mx(server: RunningServer) -> None:
    tag = uuid.uuid4().hex
    r = swaks(
        "--server",
        f"127.0.0.1:{server.ports['smtp']}",
        "--from",
        "someone@remote.test",
        "--to",
        "alice@example.org",
        "--header",
        f"Subject: {tag}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as " in r.stdout
    assert sum(tag.encode() in m for m in inbox(server, "alice@example.org")) == 1


def test_swaks_submission_starttls_auth(server: RunningServer) -> None:
    tag = uuid.uuid4().hex
    r = swaks(
        "--server",
        f"127.0.0.1:{server.ports['submission']}",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "bob@example.org",
        "--auth-password",
        PASSWORD,
        "--from",
        "bob@example.org",
        "--to",
        "alice@example.org",
        "--header",
        f"Subject: {tag}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<~  235 2.7.0 Authentication successful" in r.stdout
    r = swaks(
        "--server",
        f"127.0.0.1:{server.ports['submissions']}",
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        "bob@example.org",
        "--auth-password",
        PASSWORD,
        "--from",
        "bob@example.org",
        "--to",
        "alice@example.org",
        "--header",
        f"Subject: {tag}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum(tag.encode() in m for m in inbox(server, "alice@example.org")) == 2
    r = swaks(
        "--server",
        f"127.0.0.1:{server.ports['submissions']}",
        "--tlsc",
        "--auth",
        "PLAIN",
        "--auth-user",
        "bob@example.org",
        "--auth-password",
        "not-the-password",
        "--from",
        "bob@example.org",
        "--to",
        "alice@example.org",
    )
    assert r.returncode != 0 and "<~* 535 5.7.8 Authentication credentials invalid" in r.stdout


def test_curl_submission(server: RunningServer, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    msg = tmp_path / "msg.eml"
    msg.write_bytes(
        f"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: {tag}\r\n\r\nfrom curl\r\n".encode()
    )
    r = subprocess.run(
        [
            require_tool("curl"),
            "-sS",
            "--insecure",
            f"smtps://127.0.0.1:{server.ports['submissions']}",
            "--user",
            f"carol@example.net:{PASSWORD}",
            "--mail-from",
            "carol@example.net",
            "--mail-rcpt",
            "alice@example.org",
            "--upload-file",
            str(msg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    (stored,) = [m for m in inbox(server, "alice@example.org") if tag.encode() in m]
    assert stored.endswith(msg.read_bytes())


def test_postfix_relays_to_mailroom(server: RunningServer) -> None:
    """Postfix (../shared/peers, port 2525) relays proj.test to us on 2526, as a real MTA would."""
    start_peer("start-postfix.sh")
    tag = uuid.uuid4().hex
    r = swaks(
        "--server",
        "127.0.0.1:2525",
        "--from",
        "alice@peer.test",
        "--to",
        "user@proj.test",
        "--header",
        f"Subject: {tag}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = [m for m in inbox(server, "user@proj.test") if tag.encode() in m]
        if got:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"Postfix did not deliver to mailroom; log:\n{server.log()[-3000:]}")
    (msg,) = got
    assert msg.startswith(b"Return-Path: <alice@peer.test>\r\nReceived: from mx.peer.test ([127.0.0.1])")
    # Postfix's own Received line follows ours
    assert b"by mx.peer.test (Postfix" in msg
