"""A real server process: certificate errors at start, files-mode hot reload, `mailroom cert status`."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server_fixture import free_port, running_server, write_config
from tests.tls.certs import implicit_tls_serial, insecure_client, make_pair, serial_of


def serve_fails(root: Path, extra: str) -> list[str]:
    """Start a server that must refuse to start; its stderr lines."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root, {"smtp": free_port()}, extra)
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(cfg), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=root,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("mailroom:")]


def files_tls(cert: Path, key: Path, interval: str = "30s") -> str:
    return f'[tls]\nmode = "files"\ncert = "{cert}"\nkey = "{key}"\nwatch_interval = "{interval}"\n'


def test_missing_file_wrong_key_and_garbage_are_one_line(tmp_path: Path) -> None:
    cert, key, _ = make_pair(tmp_path / "a", "a")
    _, other_key, _ = make_pair(tmp_path / "b", "b")
    missing = tmp_path / "missing.pem"
    assert serve_fails(tmp_path / "1", files_tls(cert, missing)) == [
        f"mailroom: tls.key: key {missing}: no such file"
    ]
    assert serve_fails(tmp_path / "2", files_tls(missing, key)) == [
        f"mailroom: tls.cert: certificate {missing}: no such file"
    ]
    assert serve_fails(tmp_path / "3", files_tls(cert, other_key)) == [
        f"mailroom: tls.key: {other_key} is not the private key of the certificate in {cert} (wrong key)"
    ]
    assert serve_fails(tmp_path / "4", files_tls(key, key)) == [
        f"mailroom: tls.cert: {key}: no PEM certificate in the file"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as root and drop to nobody")
def test_unreadable_key_names_the_key_and_the_user() -> None:
    root = Path(tempfile.mkdtemp(prefix="mailroom-tls-", dir="/tmp"))
    root.chmod(0o755)
    try:
        certs = root / "certs"
        cert, key, _ = make_pair(certs)
        certs.chmod(0o755)
        cert.chmod(0o644)  # the key stays 0600 root: [server] user nobody cannot read it
        uid = pwd.getpwnam("nobody").pw_uid
        cfg = write_config(root, {"smtp": free_port()}, files_tls(cert, key))
        cfg.write_text(cfg.read_text().replace("[listeners]", 'user = "nobody"\n[listeners]'))
        proc = subprocess.run(
            [sys.executable, "-m", "mailroom", "--config", str(cfg), "serve"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=root,
        )
        assert proc.returncode == 1
        errors = [line for line in proc.stderr.splitlines() if line.startswith("mailroom:")]
        assert errors == [f"mailroom: tls.key: key {key}: not readable by uid {uid} (permission denied)"]
    finally:
        shutil.rmtree(root)


def starttls_serial(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=insecure_client())
        assert s.sock is not None
        return serial_of(s.sock.getpeercert(binary_form=True))  # type: ignore[attr-defined]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.1)


def test_files_mode_hot_reload_every_listener(tmp_path: Path) -> None:
    live = tmp_path / "live"
    cert, key, serial1 = make_pair(live, "server")
    extra = files_tls(cert, key, "0.3s")
    (tmp_path / "srv").mkdir()
    with running_server(tmp_path / "srv", ("smtp", "submissions", "pop3s"), extra) as srv:
        ports = srv.ports
        assert starttls_serial(ports["smtp"]) == serial1
        assert implicit_tls_serial(ports["pop3s"]) == serial1
        # new files (as certbot's renewal would write them): picked up without a restart
        c2, k2, serial2 = make_pair(tmp_path / "new", "two")
        shutil.copy(k2, key)
        shutil.copy(c2, cert)
        wait_for(lambda: implicit_tls_serial(ports["submissions"]) == serial2)
        assert starttls_serial(ports["smtp"]) == serial2
        assert implicit_tls_serial(ports["pop3s"]) == serial2
        assert "tls: files changed: loaded certificate serial=" in srv.log()
        # a bad pair: the old certificate stays, one line says why
        c3, _, _ = make_pair(tmp_path / "new", "three")
        shutil.copy(c3, cert)
        wait_for(lambda: "keeping the current certificate" in srv.log())
        time.sleep(1)
        assert srv.log().count("keeping the current certificate") == 1
        assert implicit_tls_serial(ports["pop3s"]) == serial2
        # SIGHUP re-reads at once
        shutil.copy(tmp_path / "new" / "three.key", key)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: implicit_tls_serial(ports["submissions"]) not in (serial1, serial2))


def test_cert_status_files_and_acme_without_certificate(tmp_path: Path) -> None:
    cert, key, serial = make_pair(tmp_path / "live", "server", ("mx.example.org", "mta-sts.example.org"))
    cfg = write_config(tmp_path, {"smtp": free_port()}, files_tls(cert, key))
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    out = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(cfg), "cert", "status"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert f"certificate:  {cert}" in out
    assert "names:        mx.example.org, mta-sts.example.org" in out
    assert f"serial:       {serial:x}" in out
    assert "issuer:       CN=mx.example.org (self-signed)" in out
    assert "days left" in out and "next renewal: not mailroom's job" in out

    (tmp_path / "acme").mkdir()
    acme = write_config(
        tmp_path / "acme",
        {"smtp": free_port()},
        '[tls]\nmode = "acme"\nacme_email = "postmaster@example.org"\n',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(acme), "cert", "status"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "certificate:  none yet" in proc.stdout


def heavy_libraries(pid: int) -> list[str]:
    """The compiled parts of cryptography (and so acme/josepy) and of requests' charset_normalizer
    mapped into a process: none of them should be in a server that only made certificates."""
    with open(f"/proc/{pid}/maps") as f:
        paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so")}
    return sorted(p for p in paths if "/cryptography/" in p or "/charset_normalizer/" in p)


def test_first_start_has_the_worker_make_the_self_signed_certificate(tmp_path: Path) -> None:
    with running_server(tmp_path, ("smtp", "submissions")) as srv:
        assert srv.proc is not None
        assert "self-signed certificate" in srv.log() and "(new)" in srv.log()
        assert heavy_libraries(srv.proc.pid) == []  # cryptography was loaded by the child only
        key = srv.data_dir / "tls" / "selfsigned.key"
        assert key.stat().st_mode & 0o777 == 0o600
        with smtplib.SMTP_SSL(
            "127.0.0.1", srv.ports["submissions"], local_hostname="c", context=insecure_client()
        ) as s:
            assert s.noop()[0] == 250
    assert "certificate worker" not in srv.log()  # no fallback, no failure
