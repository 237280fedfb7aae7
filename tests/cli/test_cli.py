"""The `mailroom` command end to end, through a subprocess, as an administrator uses it."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    tmp: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailroom", *args],
        cwd=tmp,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def write_config(tmp: Path, extra: str = "") -> Path:
    path = tmp / "mailroom.toml"
    path.write_text(
        f'[server]\nhostname = "mail.example.org"\ndata_dir = "{tmp / "data"}"\n'
        '[listeners]\nsmtp = "127.0.0.1:0"\nsubmission = ""\nsubmissions = ""\nimap = ""\nimaps = ""\n'
        'pop3 = ""\npop3s = ""\nhttp = ""\nhttps = ""\n[dns]\nnameservers = []\n' + extra
    )
    return path


def test_admin_commands_end_to_end(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path))
    assert run(tmp_path, "--config", cfg, "user", "list").returncode == 1  # data_dir missing: clear error
    r = run(tmp_path, "--config", cfg, "migrate")  # creates it
    assert r.returncode == 0 and "applied migrations 1" in r.stdout
    assert (
        run(tmp_path, "domain", "add", "example.org", "--config", cfg).returncode == 0
    )  # --config after the command too
    r = run(
        tmp_path,
        "--config",
        cfg,
        "user",
        "add",
        "alice@example.org",
        "--password-stdin",
        stdin="hunter2hunter2\n",
    )
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    r = run(tmp_path, "--config", cfg, "user", "add", "bob@example.org", "--generate-password")
    assert r.returncode == 0 and "password: " in r.stdout
    r = run(
        tmp_path, "--config", cfg, "alias", "add", "team@example.org", "alice@example.org", "bob@example.org"
    )
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "--config", cfg, "user", "list")
    assert r.stdout.split() == ["alice@example.org", "bob@example.org"]
    r = run(tmp_path, "--config", cfg, "alias", "list")
    assert r.stdout.strip() == "team@example.org\talice@example.org, bob@example.org"
    # refusals: one line, the reason, non-zero
    r = run(tmp_path, "--config", cfg, "user", "add", "bad..dots@example.org", "--generate-password")
    assert (
        r.returncode == 1 and r.stderr.strip() == "mailroom: invalid local part 'bad..dots' (misplaced dot)"
    )
    r = run(tmp_path, "--config", cfg, "user", "add", "carol@example.org")  # no TTY, no --password-stdin
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    r = run(tmp_path, "--config", cfg, "domain", "remove", "example.org")
    assert r.returncode == 1 and "still referenced" in r.stderr and "Traceback" not in r.stderr
    r = run(
        tmp_path,
        "--config",
        cfg,
        "user",
        "passwd",
        "alice@example.org",
        "--password-stdin",
        stdin="newpassword99\n",
    )
    assert r.returncode == 0
    conn = sqlite3.connect(tmp_path / "data" / "mailroom.sqlite3")
    (hash_,) = conn.execute("SELECT password_hash FROM accounts WHERE local = 'alice'").fetchone()
    conn.close()
    from mailroom.passwords import verify_password

    assert verify_password(hash_, "newpassword99")


def test_backup_restore_roundtrip(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path))
    (tmp_path / "data").mkdir()
    assert run(tmp_path, "--config", cfg, "domain", "add", "example.org").returncode == 0
    assert (
        run(tmp_path, "--config", cfg, "user", "add", "alice@example.org", "--generate-password").returncode
        == 0
    )
    backup = tmp_path / "backup.sqlite3"
    r = run(tmp_path, "--config", cfg, "backup", str(backup))
    assert r.returncode == 0, r.stderr
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert run(tmp_path, "--config", cfg, "backup", str(backup)).returncode == 2  # no silent overwrite
    assert run(tmp_path, "--config", cfg, "user", "remove", "alice@example.org").returncode == 0
    assert run(tmp_path, "--config", cfg, "user", "list").stdout == ""
    r = run(tmp_path, "--config", cfg, "restore", str(backup))
    assert r.returncode == 0, r.stderr
    assert run(tmp_path, "--config", cfg, "user", "list").stdout.split() == ["alice@example.org"]
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"nope" * 1000)
    r = run(tmp_path, "--config", cfg, "restore", str(garbage))
    assert r.returncode == 1 and "not a SQLite database" in r.stderr
    assert run(tmp_path, "--config", cfg, "user", "list").stdout.split() == ["alice@example.org"]


def test_config_errors_exit_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmessage_size = "lots"\n')
    for args in (
        ["config", "check", str(bad)],
        ["--config", str(bad), "serve"],
        ["--config", str(bad), "user", "list"],
    ):
        r = run(tmp_path, *args)
        assert r.returncode == 2, args
        assert r.stderr.count("\n") == 1 and "limits.message_size" in r.stderr and "Traceback" not in r.stderr
    r = run(tmp_path, "config", "check", str(bad), env={"CONFIG_PATH": "/nonexistent"})
    assert "limits.message_size" in r.stderr  # an explicit path wins over CONFIG_PATH
    r = run(tmp_path, "serve", env={"CONFIG_PATH": str(bad)})
    assert r.returncode == 2 and "limits.message_size" in r.stderr
    example = run(tmp_path, "config", "example")
    (tmp_path / "example.toml").write_text(example.stdout)
    r = run(tmp_path, "config", "check", str(tmp_path / "example.toml"))
    assert r.returncode == 0 and r.stdout.strip().endswith(": ok")


def test_serve_port_in_use_and_bad_data_dir(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        r = run(tmp_path, "--config", str(cfg), "serve", timeout=30)
        assert r.returncode == 1
        assert (
            f"listeners.smtp: cannot listen on 127.0.0.1:{port}: address already in use"
            in r.stdout + r.stderr
        )
    finally:
        blocker.close()
    (tmp_path / "file").write_text("")
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "data"), str(tmp_path / "file" / "data")))
    r = run(tmp_path, "--config", str(cfg), "serve", timeout=30)
    assert r.returncode == 1 and "server.data_dir: cannot create" in r.stdout + r.stderr


def test_corrupt_database_is_left_alone(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path))
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "mailroom.sqlite3"
    db.write_bytes(b"\x00garbage" * 512)
    before = db.read_bytes()
    r = run(tmp_path, "--config", cfg, "serve", timeout=30)
    assert r.returncode == 1 and "not a usable mailroom database" in r.stdout + r.stderr
    assert db.read_bytes() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test dropping privileges")
def test_root_acts_as_server_user() -> None:
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    tmp_path = Path(tempfile.mkdtemp(prefix="mailroom-root-test-", dir="/tmp"))
    try:
        _root_acts_as_server_user(tmp_path, nobody)
    finally:
        shutil.rmtree(tmp_path)


def _root_acts_as_server_user(tmp_path: Path, nobody: object) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[listeners]", 'user = "nobody"\n[listeners]'))
    tmp_path.chmod(0o755)
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", nobody.pw_uid, nobody.pw_gid)  # type: ignore[attr-defined]
    r = run(tmp_path, "--config", str(cfg), "domain", "add", "example.org")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "mailroom.sqlite3").stat().st_uid == nobody.pw_uid  # type: ignore[attr-defined]
    # a data_dir the server user cannot write: one clear line, no traceback
    (tmp_path / "data").chmod(0o500)
    (tmp_path / "data" / "mailroom.sqlite3").unlink()
    r = run(tmp_path, "--config", str(cfg), "user", "list")
    assert (
        r.returncode == 1
        and "cannot" in r.stderr
        and "Traceback" not in r.stderr
        and "internal error" not in r.stderr
    )
