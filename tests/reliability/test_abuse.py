"""Abuse: password guessing is throttled per client address and per account across SMTP AUTH,
IMAP and POP3 (one shared table) and logged in the line the fail2ban filter matches; no open
relay whatever the address form; no credentials accepted before TLS on any listener; no account
enumeration beyond what RCPT must say; private files; privileges dropped after binding."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import logging
import os
import poplib
import pwd
import re
import smtplib
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.net.listeners import ConnectionLimits
from mailroom.policy.auth import Authenticator
from mailroom.store import directory
from mailroom.store.database import open_database, transaction
from tests.conftest import REPO
from tests.reliability.support import count, make_server, scale, started, tls_context
from tests.server_fixture import PASSWORD, RunningServer, write_config

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

ALL = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")


# accounts that only the enumeration test uses (a success elsewhere would reset their failure count)
QUIET = ("erin@example.org", "frank@example.org", "grace@example.org")


def quiet_accounts(data_dir: Path) -> None:
    conn = open_database(data_dir)
    try:
        with transaction(conn):
            for address in QUIET:
                directory.add_account(conn, address, PASSWORD)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    limits = "[limits]\nmax_connections_per_ip = 50\n"
    server = make_server(tmp_path_factory.mktemp("abuse"), ALL, limits, setup=quiet_accounts)
    with started(server):
        yield server


def smtp_auth(srv: RunningServer, user: str, password: str, src: str) -> tuple[int, float]:
    with smtplib.SMTP_SSL(
        "127.0.0.1",
        srv.ports["submissions"],
        local_hostname="c",
        context=tls_context(),
        timeout=30,
        source_address=(src, 0),
    ) as s:
        s.ehlo()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        start = time.monotonic()
        code, _ = s.docmd("AUTH", f"PLAIN {token}")
        return code, time.monotonic() - start


def imap_login(srv: RunningServer, user: str, password: str, src: str) -> tuple[str, float]:
    sock = socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=30, source_address=(src, 0))
    with tls_context().wrap_socket(sock) as tls:
        tls.recv(4096)
        start = time.monotonic()
        tls.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        data = b""
        while b"a " not in data:
            data += tls.recv(4096)
        return data.decode().split("a ", 1)[1].strip(), time.monotonic() - start


def pop3_login(srv: RunningServer, user: str, password: str, src: str) -> tuple[str, str, float]:
    sock = socket.create_connection(("127.0.0.1", srv.ports["pop3s"]), timeout=30, source_address=(src, 0))
    with tls_context().wrap_socket(sock) as tls:
        f = tls.makefile("rb")
        f.readline()
        tls.sendall(f"USER {user}\r\n".encode())
        user_reply = f.readline().decode().strip()
        start = time.monotonic()
        tls.sendall(f"PASS {password}\r\n".encode())
        pass_reply = f.readline().decode().strip()
        return user_reply, pass_reply, time.monotonic() - start


# --- throttling and the fail2ban line ------------------------------------------------------------


def test_failed_logins_are_throttled_per_ip_and_per_account_across_protocols(srv: RunningServer) -> None:
    # one address guessing through three protocols: the delay doubles across all of them
    ip = "127.0.1.50"
    code, first = smtp_auth(srv, "alice@example.org", "guess-1", ip)
    assert code == 535
    answer, second = imap_login(srv, "alice@example.org", "guess-2", ip)
    assert answer.startswith("NO [AUTHENTICATIONFAILED]")
    _, pass_reply, third = pop3_login(srv, "alice@example.org", "guess-3", ip)
    assert pass_reply.startswith("-ERR [AUTH]")
    assert 0.9 < first < 1.8 and 1.9 < second < 2.8 and 3.9 < third < 4.8, (first, second, third)
    # one account guessed from many addresses: the delay follows the account
    _, _, fresh = pop3_login(srv, "bob@example.org", "guess-4", "127.0.1.60")
    _, _, other_ip = pop3_login(srv, "bob@example.org", "guess-5", "127.0.1.61")
    assert 0.9 < fresh < 1.8 and 1.9 < other_ip < 2.8, (fresh, other_ip)
    # the right password is never delayed, and clears that address's record
    answer, ok = imap_login(srv, "carol@example.net", PASSWORD, ip)
    assert answer.startswith("OK") and ok < 0.8, (answer, ok)
    count("failed logins throttled (smtp, imap, pop3)", 5)


def test_ipv6_guessing_is_counted_per_64() -> None:
    """One IPv6 host usually holds a /64: rotating addresses inside it does not reset the count
    (the same unit as the connection limits); the log still names the exact address."""
    auth = Authenticator(None, clock=lambda: 1000.0, sleep=lambda _s: asyncio.sleep(0))  # type: ignore[arg-type]
    log = logging.getLogger("mailroom.test")
    for n in range(3):
        asyncio.run(auth.failed("imaps", f"2001:db8:1:2::{n + 1}", f"user{n}@example.org", log))
    assert auth.failure_delay("2001:db8:1:2:ffff::9", "other@example.org") == 8.0  # same /64
    assert auth.failure_delay("2001:db8:1:3::1", "other@example.org") == 1.0  # the next /64
    assert auth.failure_delay("192.0.2.1", "other@example.org") == 1.0


def test_connection_limits_count_ipv6_per_64() -> None:
    """Connections per client count IPv4 addresses singly and IPv6 per /64, as logins do."""
    limits = ConnectionLimits(10, 2)
    assert limits.admit("2001:db8::1") and limits.admit("2001:db8::2")
    assert not limits.admit("2001:db8::ffff:1")  # same /64: a third one is refused
    assert limits.admit("2001:db8:0:1::1")  # the next /64 has its own count
    assert limits.admit("192.0.2.1") and limits.admit("192.0.2.1") and not limits.admit("192.0.2.1")
    assert limits.admit("192.0.2.2")
    limits.release("2001:db8::1")
    assert limits.admit("2001:db8::3") and limits.open == 6


def test_failed_login_lines_match_the_fail2ban_filter(srv: RunningServer) -> None:
    text = (REPO / "contrib" / "fail2ban" / "filter.d" / "mailroom.conf").read_text()
    found = re.search(r"^failregex = (.+)$", text, re.M)
    assert found is not None
    pattern = re.compile(found.group(1).replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))
    smtp_auth(srv, "dave@example.org", "wrong-password-x", "127.0.2.1")
    imap_login(srv, "dave@example.org", "wrong-password-y", "127.0.2.2")
    pop3_login(srv, "dave@example.org", "wrong-password-z", "127.0.2.3")
    lines = [line for line in srv.log().splitlines() if "auth failed" in line and "dave@example.org" in line]
    services = set()
    for line in lines:
        m = pattern.search(line)
        assert m is not None, line
        assert m.group("host").startswith("127.0.2."), line
        services.add(re.search(r"service=(\S+)", line).group(1))  # type: ignore[union-attr]
    assert services == {"submissions", "imaps", "pop3s"}, lines
    assert "wrong-password" not in srv.log()


# --- no open relay -------------------------------------------------------------------------------

RELAY_FORMS = [
    "<friend@remote.test>",
    "<friend@REMOTE.TEST.>",
    "<alice%remote.test@example.org>",
    "<remote.test!alice@example.org>",
    "<@example.org:friend@remote.test>",
    "<@example.org,@mx.example.org:friend@remote.test>",
    "<friend@remote.test@example.org>",
    '<"friend@remote.test"@example.org>',
    '<"friend%remote.test"@example.org>',
    "<friend@remote.test%example.org>",
    "<friend@[127.0.0.1]>",
    "<friend@[IPv6:::1]>",
    "<friend@[192.0.2.1]>",
    "<friend@mx.example.org>",
    "<friend@localhost>",
    "<friend@example.org.remote.test>",
    "<friend@xn--exmple-cua.test>",
    "<friend@exämple.test>",
    "<friend@remote.test> NOTIFY=NEVER",
    "<friend@remote.test> ORCPT=rfc822;alice@example.org",
    "friend@remote.test",
    "< friend@remote.test >",
    "<friend@remote.test\x00@example.org>",
    "<alice@example.org>,<friend@remote.test>",
    "<SRS0=abcd=XY=remote.test=friend@mx.example.org>",
    "<friend+alice@remote.test>",
    "<alice@example.org\r\nRCPT TO:<friend@remote.test>>",
    # local forms: accepted and stored here, never queued
    "<ALICE@EXAMPLE.ORG>",
    "<alice+tag@example.org>",
    "<Postmaster>",
    "<anything@example.net>",
]


def queued(srv: RunningServer) -> int:
    conn = sqlite3.connect(srv.data_dir / "mailroom.sqlite3")
    try:
        return int(conn.execute("SELECT count(*) FROM queue_recipients").fetchone()[0])
    finally:
        conn.close()


def smtp_lines(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("form", RELAY_FORMS)
def test_no_open_relay(srv: RunningServer, form: str) -> None:
    """Port 25 without AUTH: whatever the address form, nothing is queued for a remote host."""
    before = queued(srv)
    with socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10) as sock:
        smtp_lines(sock, b"")
        smtp_lines(sock, b"EHLO spammer.test\r\n")
        smtp_lines(sock, b"MAIL FROM:<spam@spammer.test> SMTPUTF8\r\n")
        answer = smtp_lines(sock, b"RCPT TO:" + form.encode() + b"\r\n")
        if b"250 " in answer and smtp_lines(sock, b"DATA\r\n").startswith(b"354"):
            smtp_lines(sock, b"Subject: relay test\r\n\r\nbuy now\r\n.\r\n")
        smtp_lines(sock, b"QUIT\r\n")
    assert queued(srv) == before, f"{form!r} was queued for relaying ({answer!r})"
    count("open-relay address forms refused")


def test_submission_without_auth_relays_nothing(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="c", timeout=10) as s:
        s.starttls(context=tls_context())
        s.ehlo()
        assert s.docmd("MAIL FROM:<alice@example.org>")[0] == 530


# --- no credentials before TLS -------------------------------------------------------------------


def test_smtp_port_25_offers_no_auth(srv: RunningServer) -> None:
    token = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c", timeout=10) as s:
        assert "auth" not in s.ehlo()[1].decode().lower()
        assert s.docmd("AUTH", f"PLAIN {token}")[0] in (502, 503)
        s.starttls(context=tls_context())
        assert "auth" not in s.ehlo()[1].decode().lower()  # MX: no AUTH even with TLS


def test_submission_refuses_credentials_before_starttls(srv: RunningServer) -> None:
    token = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], local_hostname="c", timeout=10) as s:
        assert "AUTH" not in s.ehlo()[1].decode()
        for mechanism in (f"PLAIN {token}", "LOGIN", "PLAIN"):
            code, _ = s.docmd("AUTH", mechanism)
            assert code in (502, 503, 530, 538), (mechanism, code)
        s.starttls(context=tls_context())
        s.ehlo()
        assert s.docmd("AUTH", f"PLAIN {token}")[0] == 235


def test_imap_refuses_credentials_before_starttls(srv: RunningServer) -> None:
    client = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in client.capabilities
    token = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode()
    for line in (f'a LOGIN alice@example.org "{PASSWORD}"', f"b AUTHENTICATE PLAIN {token}"):
        client.send(line.encode() + b"\r\n")
        answer = client.readline()
        assert re.match(rb"[ab] (NO|BAD)", answer), answer
    client.starttls(ssl_context=tls_context())
    assert client.login("alice@example.org", PASSWORD)[0] == "OK"
    client.logout()


def test_pop3_refuses_credentials_before_stls(srv: RunningServer) -> None:
    client = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=10)
    token = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode()
    for command in ("USER alice@example.org", f"PASS {PASSWORD}", f"AUTH PLAIN {token}"):
        with pytest.raises(poplib.error_proto):
            client._shortcmd(command)  # type: ignore[attr-defined]
    client.stls(context=tls_context())
    client.user("alice@example.org")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_no_credentials_reached_the_log(srv: RunningServer) -> None:
    log = srv.log()
    assert PASSWORD not in log
    assert base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode() not in log


# --- no account enumeration ----------------------------------------------------------------------


def test_vrfy_and_expn_reveal_nothing(srv: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c", timeout=10) as s:
        known, unknown = s.verify("alice@example.org"), s.verify("nobody-at-all@example.org")
        assert known[0] == unknown[0] == 252 and known[1] == unknown[1]
        assert s.expn("team@example.org")[0] == s.expn("nobody@example.org")[0] == 502


def test_login_answers_are_the_same_for_unknown_users(srv: RunningServer) -> None:
    """Same words and about the same time for a wrong password and an unknown user, in IMAP,
    POP3 and SMTP AUTH (the failure delay grows per name alike, known or not)."""
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for n in range(2):
        known = imap_login(srv, QUIET[0], "nope", f"127.0.3.{10 + n}")
        unknown = imap_login(srv, "ghost1@example.org", "nope", f"127.0.3.{20 + n}")
        assert known[0] == unknown[0] and known[0].startswith("NO [AUTHENTICATIONFAILED]")
        timings["known"].append(known[1])
        timings["unknown"].append(unknown[1])
    known_pop = pop3_login(srv, QUIET[1], "nope", "127.0.3.30")
    unknown_pop = pop3_login(srv, "ghost2@example.org", "nope", "127.0.3.31")
    assert known_pop[:2] == unknown_pop[:2]  # USER says +OK for anyone (RFC 1939 allows -ERR; we don't)
    timings["known"].append(known_pop[2])
    timings["unknown"].append(unknown_pop[2])
    known_smtp = smtp_auth(srv, QUIET[2], "nope", "127.0.3.40")
    unknown_smtp = smtp_auth(srv, "ghost3@example.org", "nope", "127.0.3.41")
    assert known_smtp[0] == unknown_smtp[0] == 535
    timings["known"].append(known_smtp[1])
    timings["unknown"].append(unknown_smtp[1])
    for k, u in zip(timings["known"], timings["unknown"], strict=True):
        assert abs(k - u) < 0.3, timings
    count("enumeration probes compared", 8)


# --- files and privileges ------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_files_are_private(srv: RunningServer) -> None:
    data = srv.data_dir
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mailroom",
            "--config",
            str(srv.config_path),
            "dkim",
            "generate",
            "example.org",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    for private in [data / "mailroom.sqlite3", data / "mailroom.sqlite3-wal", data / "srs.key"]:
        assert mode(private) & 0o077 == 0, f"{private}: {oct(mode(private))}"
    for key in [*data.glob("tls/**/*.key"), *data.glob("tls/**/key.pem"), *data.glob("dkim/**/*.key")]:
        assert mode(key) == 0o600, f"{key}: {oct(mode(key))}"
    assert list(data.glob("dkim/**/*.key"))
    for made in (data / "spool", data / "tls", *data.glob("dkim/*")):
        assert mode(made) == 0o700, f"{made}: {oct(mode(made))}"


def test_server_makes_a_private_data_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"smtp": 2})
    config.write_text(config.read_text().replace('smtp = "127.0.0.1:2"', 'smtp = ""'))
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(config), "migrate"],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    data = tmp_path / "data"
    assert mode(data) == 0o700, oct(mode(data))
    assert mode(data / "mailroom.sqlite3") == 0o600


def test_database_made_by_the_admin_cli_is_private(tmp_path: Path) -> None:
    """`mailroom user add` before the first start creates the database: 0600 too; so is the copy
    of the old database that `restore` keeps."""
    config = write_config(tmp_path, {"smtp": 2})
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    (tmp_path / "data").mkdir(mode=0o755)  # as `mkdir -p` would make it

    def cli(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "mailroom", "--config", str(config), *args],
            input="a-long-password-1\n",
            text=True,
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )

    cli("domain", "add", "example.org")
    cli("user", "add", "x@example.org", "--password-stdin")
    for path in (tmp_path / "data").glob("mailroom.sqlite3*"):
        assert mode(path) & 0o077 == 0, f"{path}: {oct(mode(path))}"
    cli("backup", str(tmp_path / "backup.sqlite3"))
    cli("restore", str(tmp_path / "backup.sqlite3"))
    kept = list((tmp_path / "data").glob("mailroom.sqlite3.before-restore-*"))
    assert kept and all(mode(path) == 0o600 for path in kept), [oct(mode(p)) for p in kept]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_privileges_dropped_after_binding_completely(tmp_path: Path) -> None:
    """Extends tests/test_serve.py (uid and a low port): no supplementary groups, no
    capabilities left, the primary group changed too, and every file made is the user's, private."""
    root = tmp_path / "priv"
    root.mkdir()
    for parent in (root, *root.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)  # let nobody reach its data_dir
    low = next(p for p in range(800, 1000) if _port_free(p))
    config = write_config(root, {"smtp": low}, "")
    config.write_text(config.read_text().replace("[listeners]", 'user = "nobody"\n[listeners]'))
    srv = RunningServer(root, config, {"smtp": low})
    nobody = pwd.getpwnam("nobody")
    with started(srv):
        assert srv.proc is not None
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines()
        )
        assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
        assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
        assert status["Groups"].split() == []
        for cap in ("CapEff", "CapPrm", "CapAmb"):
            assert int(status[cap], 16) == 0, (cap, status[cap])
        with smtplib.SMTP("127.0.0.1", low, local_hostname="c", timeout=10) as s:
            assert s.noop()[0] == 250
        data = srv.data_dir
        for path in [data, *data.rglob("*")]:
            if path.name == "mailroom.lock":
                continue
            assert path.stat().st_uid == nobody.pw_uid, path
            if path.is_file() and path.suffix in (".key", ".sqlite3"):
                assert mode(path) & 0o077 == 0, f"{path}: {oct(mode(path))}"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
