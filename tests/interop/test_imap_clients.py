"""Real IMAP clients against mailroom: mbsync (full, then incremental sync both ways), curl
(imap + STARTTLS, imaps), offlineimap, and neomutt reading a message in tmux.

Clients verify the server's self-signed certificate (data_dir/tls/selfsigned.crt, names
localhost and 127.0.0.1); mbsync matches names only against DNS names, so it connects to
``localhost`` (ARCHITECTURE pitfalls, ../shared/peers/README.md)."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap.raw_client import RawIMAP
from tests.interop.conftest import require_tool
from tests.server_fixture import PASSWORD, RunningServer, new_account, running_server

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("imap-clients"), services=("smtp", "imap", "imaps")) as srv:
        yield srv


def deliver(server: RunningServer, to: str, subject: str, body: str = "hello") -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example") as s:
        msg = f"From: sender@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@remote.test>\r\n\r\n{body}\r\n"
        assert s.sendmail("sender@remote.test", [to], msg.encode()) == {}


def cert(server: RunningServer) -> Path:
    path = server.data_dir / "tls" / "selfsigned.crt"
    assert path.exists()
    return path


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload,no-any-return]


def imap(server: RunningServer, user: str) -> RawIMAP:
    c = RawIMAP(server.ports["imaps"])
    c.login(user, PASSWORD)
    return c


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).glob("*") if p.is_file())


# --- mbsync ------------------------------------------------------------------------------------


def test_mbsync_full_then_incremental_both_ways(server: RunningServer, tmp_path: Path) -> None:
    mbsync = require_tool("mbsync")
    user = new_account(server, "c")
    for i in range(3):
        deliver(server, user, f"mbsync message {i}")
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount mr
Host localhost
Port {server.ports["imaps"]}
User {user}
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {cert(server)}

IMAPStore mr-remote
Account mr

MaildirStore mr-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mr
Far :mr-remote:
Near :mr-local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )

    def sync() -> None:
        r = run([mbsync, "-c", str(rc), "-a"])
        assert r.returncode == 0, r.stdout + r.stderr

    sync()
    inbox = maildir_files(local / "INBOX")
    assert len(inbox) == 3
    assert {p.name for p in (local).iterdir()} >= {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}

    # server side: a new message and a flag; local side: a flag and a new message
    deliver(server, user, "mbsync message 3")
    c = imap(server, user)
    c.command("SELECT INBOX")
    assert c.command("UID STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"t OK")
    target = next(p for p in inbox if "message 1" in p.read_text())
    base = target.name.split(":2,")[0]
    target.rename(target.parent.parent / "cur" / f"{base}:2,S")
    new_local = local / "INBOX" / "new" / f"{int(time.time())}.local{uuid.uuid4().hex[:6]}.host"
    new_local.write_bytes(b"From: me@example.org\nSubject: written locally\n\nlocal body\n")
    sync()

    files = maildir_files(local / "INBOX")
    assert len(files) == 5
    flagged = [p for p in files if "message 0" in p.read_text()]
    assert flagged and flagged[0].name.endswith(("F", "FS")), [p.name for p in files]
    c.command("NOOP")  # learn about the message mbsync appended
    lines = c.command("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    text = b"\n".join(lines)
    assert b"written locally" in text
    seen_line = next(line for line in lines if b"message 1" in line)
    assert b"\\Seen" in seen_line, seen_line
    # a second run with nothing new changes nothing
    sync()
    assert len(maildir_files(local / "INBOX")) == 5
    c.close()


# --- curl --------------------------------------------------------------------------------------


def test_curl_imap_starttls_and_imaps(server: RunningServer) -> None:
    curl = require_tool("curl")
    user = new_account(server, "c")
    deliver(server, user, "curl subject", "curl body text")
    r = run(
        [curl, "-sS", "--ssl-reqd", "--cacert", str(cert(server)), "--user", f"{user}:{PASSWORD}",
         f"imap://localhost:{server.ports['imap']}/"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert '* LIST (\\HasNoChildren) "/" INBOX' in r.stdout and "\\Sent" in r.stdout
    r = run(
        [curl, "-sS", "--cacert", str(cert(server)), "--user", f"{user}:{PASSWORD}",
         f"imaps://localhost:{server.ports['imaps']}/INBOX;UID=1"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Subject: curl subject" in r.stdout and "curl body text" in r.stdout
    r = run(
        [curl, "-sS", "--cacert", str(cert(server)), "--user", f"{user}:{PASSWORD}",
         f"imaps://localhost:{server.ports['imaps']}/INBOX", "-X", "STATUS INBOX (MESSAGES UNSEEN)"]
    )  # fmt: skip
    assert r.returncode == 0 and "MESSAGES 1" in r.stdout, r.stdout + r.stderr
    r = run([curl, "-sS", "--user", f"{user}:{PASSWORD}", f"imap://127.0.0.1:{server.ports['imap']}/"])
    assert r.returncode != 0  # no STARTTLS requested: the server refuses the login in the clear


# --- offlineimap -------------------------------------------------------------------------------


def test_offlineimap(server: RunningServer, tmp_path: Path) -> None:
    offlineimap = require_tool("offlineimap")
    user = new_account(server, "c")
    deliver(server, user, "offlineimap subject")
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        f"""[general]
accounts = mr
metadata = {tmp_path}/meta

[Account mr]
localrepository = mr-local
remoterepository = mr-remote

[Repository mr-local]
type = Maildir
localfolders = {tmp_path}/mail

[Repository mr-remote]
type = IMAP
remotehost = localhost
remoteport = {server.ports["imaps"]}
remoteuser = {user}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {cert(server)}
"""
    )
    (tmp_path / "mail").mkdir()
    r = run([offlineimap, "-c", str(rc), "-o", "-u", "basic"])
    assert r.returncode == 0 and "Finished account" in r.stdout + r.stderr, r.stdout + r.stderr
    files = maildir_files(tmp_path / "mail" / "INBOX")
    assert len(files) == 1 and "offlineimap subject" in files[0].read_text()


# --- neomutt in tmux ---------------------------------------------------------------------------


def test_neomutt_reads_a_message(server: RunningServer, tmp_path: Path) -> None:
    neomutt = require_tool("neomutt")
    tmux = require_tool("tmux")
    user = new_account(server, "c")
    subject = f"neomutt {uuid.uuid4().hex[:6]}"
    deliver(server, user, subject, "the body neomutt shows")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f"""set imap_user = "{user}"
set imap_pass = "{PASSWORD}"
set folder = "imaps://localhost:{server.ports["imaps"]}/"
set spoolfile = "+INBOX"
set record = ""
set ssl_ca_certificates_file = "{cert(server)}"
set certificate_file = "{tmp_path}/certs"
set header_cache = "{tmp_path}/cache/"
set message_cachedir = "{tmp_path}/cache/"
set mail_check = 0
set timeout = 1
"""
    )
    (tmp_path / "cache").mkdir()
    session = f"mr-neomutt-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    env = {**os.environ, "TERM": "xterm-256color", "HOME": str(tmp_path)}
    start = [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
             f"{neomutt} -n -F {muttrc} -f imaps://localhost:{server.ports['imaps']}/INBOX"]  # fmt: skip
    assert run(start, env=env).returncode == 0

    def screen() -> str:
        return run([tmux, "capture-pane", "-p", "-t", session]).stdout

    def wait_for(text: str) -> str:
        shown = ""
        for _ in range(60):
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never appeared:\n{shown}")

    try:
        wait_for(subject)
        run([tmux, "send-keys", "-t", session, "Enter"])
        wait_for("the body neomutt shows")
        run([tmux, "send-keys", "-t", session, "q"])
        time.sleep(0.5)
        run([tmux, "send-keys", "-t", session, "q"])
        time.sleep(0.5)
        run([tmux, "send-keys", "-t", session, "y"])
    finally:
        run([tmux, "kill-session", "-t", session])
    c = imap(server, user)
    c.command("EXAMINE INBOX")
    assert b"\\Seen" in c.command("FETCH 1 (FLAGS)")[0]  # reading it marked it seen
    c.close()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
