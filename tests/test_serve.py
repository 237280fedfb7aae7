"""`mailroom serve` as an administrator runs it: reload, privileges, logs, admin while serving."""

from __future__ import annotations

import os
import pwd
import re
import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailroom.app import RunAs, readable_after_drop
from mailroom.mailauth.dkim import generate_key
from tests.server_fixture import (
    PASSWORD,
    RunningServer,
    free_port,
    inbox,
    insecure_tls,
    populate,
    running_server,
    wait_until,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_sighup_applies_only_a_valid_config(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        assert srv.proc is not None
        original = srv.config_path.read_text()
        srv.config_path.write_text(original + '\n[limits]\nmessage_size = "not a size"\n')
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: "reload refused, keeping the running config: limits.message_size" in srv.log()
        )
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c") as s:
            s.ehlo()
            before = s.esmtp_features["size"]
        srv.config_path.write_text(
            original.replace('level = "debug"', 'level = "info"') + '\n[limits]\nmessage_size = "7M"\n'
        )
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload: configuration applied" in srv.log())
        # still serving, and a new session runs on the new [limits] (RFC 1870 SIZE in EHLO)
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c") as s:
            assert s.noop()[0] == 250
            s.ehlo()
            assert s.esmtp_features["size"] == str(7 * 1024 * 1024) != before


def test_admin_commands_while_serving(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailroom",
                "--config",
                str(srv.config_path),
                "user",
                "add",
                "dave@example.org",
                "--password-stdin",
            ],
            input="dave-password-1\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        ctx = insecure_tls()
        with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="c", context=ctx) as s:
            assert s.login("dave@example.org", "dave-password-1")[0] == 235
        backup = tmp_path / "live-backup.sqlite3"
        r = subprocess.run(
            [sys.executable, "-m", "mailroom", "--config", str(srv.config_path), "backup", str(backup)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        r = subprocess.run(
            [sys.executable, "-m", "mailroom", "--config", str(srv.config_path), "restore", str(backup)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 2 and "stop it before restoring" in r.stderr


def test_fail2ban_filter_matches_our_failed_login_line(tmp_path: Path) -> None:
    filter_text = (REPO / "contrib" / "fail2ban" / "filter.d" / "mailroom.conf").read_text()
    failregex = re.search(r"^failregex = (.+)$", filter_text, re.M)
    assert failregex is not None
    # fail2ban's <HOST> is an address group
    pattern = re.compile(failregex.group(1).replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))
    with running_server(tmp_path) as srv:
        ctx = insecure_tls()
        with (
            smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="c", context=ctx) as s,
            pytest.raises(smtplib.SMTPAuthenticationError),
        ):
            s.login("alice@example.org", "wrong")
        assert wait_until(lambda: "auth failed" in srv.log())
        lines = [line for line in srv.log().splitlines() if "auth failed" in line]
    assert lines  # smtplib tries PLAIN, then LOGIN: one line per failed attempt
    for line in lines:
        m = pattern.search(line)
        assert m is not None and m.group("host") == "127.0.0.1", line
    assert "wrong" not in srv.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a low port and dropping privileges needs root")
def test_binds_low_port_then_runs_as_configured_user() -> None:
    import shutil
    import tempfile

    low = next(p for p in range(700, 1000) if _port_free(p))
    root = Path(tempfile.mkdtemp(prefix="mailroom-priv-", dir="/tmp"))
    root.chmod(0o755)
    try:
        ports = {"smtp": low, "submissions": free_port()}
        cfg = write_config(root, ports, "")
        cfg.write_text(cfg.read_text().replace("[listeners]", 'user = "nobody"\n[listeners]'))
        srv = RunningServer(root, cfg, ports)
        srv.start()
        nobody = pwd.getpwnam("nobody")
        try:
            assert srv.proc is not None
            status = Path(f"/proc/{srv.proc.pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
            assert (root / "data" / "mailroom.sqlite3").stat().st_uid == nobody.pw_uid
            populate(root / "data")  # root writes into the server's (nobody's) existing files
            generate_key(root / "data", "example.org", "s1", "ed25519")
            for path in (root / "data" / "dkim", *(root / "data" / "dkim").rglob("*")):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            with smtplib.SMTP("127.0.0.1", low, local_hostname="c") as s:
                assert s.noop()[0] == 250
            # DKIM signing loads dkimpy and cryptography at first use: after the drop, that works
            # only because the server saw it could not read them as nobody and loaded them first
            ctx = insecure_tls()
            with smtplib.SMTP_SSL("127.0.0.1", ports["submissions"], local_hostname="c", context=ctx) as s:
                s.login("alice@example.org", PASSWORD)
                s.sendmail(
                    "alice@example.org",
                    ["bob@example.org"],
                    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nhi\r\n",
                )
            stored = inbox(srv, "bob@example.org")
            assert len(stored) == 1 and b"DKIM-Signature: v=1; a=ed25519-sha256" in stored[0]
        finally:
            assert srv.stop() == 0
        assert "Traceback" not in srv.log() and "internal error" not in srv.log()
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a check as another user needs root")
def test_readable_after_drop_sees_what_the_user_can_read(tmp_path: Path) -> None:
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK) or Path(python).resolve().is_relative_to("/root"):
        pytest.skip("needs a python3 that nobody can run")
    nobody = pwd.getpwnam("nobody")
    who = RunAs("nobody", nobody.pw_uid, nobody.pw_gid)
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="mailroom-readable-", dir="/tmp"))  # pytest's is 0700
    tree = tmp_path / "site"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "sub" / "mod.py").write_text("x = 1\n")
    for path in (tmp_path, tree, tree / "pkg", tree / "pkg" / "sub"):
        path.chmod(0o755)
    (tree / "pkg" / "sub" / "mod.py").chmod(0o644)
    assert readable_after_drop(who, [str(tree)], python) is True
    (tree / "pkg" / "sub" / "mod.py").chmod(0o600)  # root's only
    assert readable_after_drop(who, [str(tree)], python) is False
    (tree / "pkg" / "sub" / "mod.py").chmod(0o644)
    (tree / "pkg").chmod(0o700)  # a directory nobody cannot enter
    assert readable_after_drop(who, [str(tree)], python) is False
    (tree / "pkg").chmod(0o755)
    tmp_path.chmod(0o700)  # nor reach
    assert readable_after_drop(who, [str(tree)], python) is False
    import shutil

    shutil.rmtree(tmp_path)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_password_never_logged_even_on_debug(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        ctx = insecure_tls()
        with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], local_hostname="c", context=ctx) as s:
            s.login("bob@example.org", PASSWORD)
        assert "login" in srv.log().lower() or "authenticated" in srv.log()
        assert PASSWORD not in srv.log()
