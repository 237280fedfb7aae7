"""The certificate worker (a child process) as the CertificateManager drives it: challenges published
on the server's responder, a child that hangs, dies, crashes or breaks the protocol (one log line,
the old certificate kept, a retry later), and the in-process fallback when no child can run."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from mailroom.acme.challenges import ChallengeResponder, alpn_challenge_cert
from mailroom.acme.issued import Issued
from mailroom.acme.manager import CertificateManager, acme_paths, initial_certificate
from mailroom.acme.selfsigned import ensure_self_signed
from mailroom.acme.workerclient import CertWorker
from mailroom.config import from_dict
from mailroom.net.tls import ServerTLS, TLSError
from tests.tls.certs import make_pair
from tests.tls.test_manager import FakeCA, acme_config, lines, until

FAKE = str(Path(__file__).with_name("fake_worker.py"))
NAMES = ["mx.example.org", "mta-sts.example.org"]


def fake(state: Path, plan: str) -> list[str]:
    state.mkdir(parents=True, exist_ok=True)
    return [sys.executable, FAKE, str(state), plan]


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def serving(tmp_path: Path) -> tuple[Path, ServerTLS]:
    data_dir = tmp_path / "data"
    cert, key, _ = ensure_self_signed(data_dir / "tls", "mx.example.org")
    return data_dir, ServerTLS(cert, key, scratch_dir=data_dir / "tls" / "tmp")


def test_worker_publishes_challenges_then_installs_what_it_issued(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir, tls = serving(tmp_path)
    state = tmp_path / "state"
    argv = fake(state, "ok")
    _, _, serial = make_pair(state, "issued", tuple(NAMES), days=90)
    alpn_cert, alpn_key = alpn_challenge_cert("mx.example.org", "tok.thumb")
    (state / "alpn.crt").write_bytes(alpn_cert)
    (state / "alpn.key").write_bytes(alpn_key)
    responder = ChallengeResponder(tmp_path / "scratch")
    manager = CertificateManager(acme_config(data_dir), tls, data_dir, responder, worker=CertWorker(argv))

    async def go() -> None:
        manager.start()
        try:
            # published on the server's responder while the child waits (RFC 8555 §8.3 answer)
            await until(lambda: responder.http01("tok-1") == "tok-1.thumb")
            context = responder.tls_alpn01("mx.example.org")  # RFC 8737 §3, made by the child
            assert context is not None
            (state / "go-1").touch()
            await until(lambda: tls.info is not None and tls.info.serial == serial)
        finally:
            await manager.stop()

    asyncio.run(go())
    assert responder.http01("tok-1") is None  # withdrawn
    assert responder.tls_alpn01("mx.example.org") is None
    assert lines(records) == []
    info = lines(records, logging.INFO)
    assert "acme: answering http-01 for mx.example.org" in info  # the child's log line, logged here
    assert any(m.startswith("acme: installed new certificate") and "(challenge http-01)" in m for m in info)
    assert acme_paths(data_dir).key.stat().st_mode & 0o777 == 0o600
    request = json.loads((state / "request-1.json").read_text())
    assert request["op"] == "issue" and request["names"] == NAMES
    assert request["account_key"] == str(acme_paths(data_dir).account_key)
    assert request["available"] == ["http-01", "tls-alpn-01"]  # both listeners configured
    assert not alive(int((state / "pid-1").read_text()))


def test_a_child_that_hangs_dies_or_fails_is_one_line_and_retried(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir, tls = serving(tmp_path)
    self_signed = tls.info
    assert self_signed is not None
    state = tmp_path / "state"
    argv = fake(state, "hang,die,crash,garbage,error,ok")
    _, _, serial = make_pair(state, "issued", tuple(NAMES), days=90)
    (state / "go-6").touch()
    responder = ChallengeResponder(tmp_path / "scratch")
    manager = CertificateManager(
        acme_config(data_dir),
        tls,
        data_dir,
        responder,
        worker=CertWorker(argv, timeout=1.5),
        retry_base=0.05,
        retry_cap=0.1,
    )
    seen: list[str] = []

    async def go() -> None:
        manager.start()
        try:
            # the hung child's challenge is served until it is stopped
            await until(lambda: responder.http01("tok-1") == "tok-1.thumb")
            seen.append("tok-1")
            await until(lambda: len(lines(records)) >= 1)
            assert responder.http01("tok-1") is None
            assert tls.info is self_signed
            await until(lambda: tls.info is not None and tls.info.serial == serial, timeout=15)
        finally:
            await manager.stop()

    asyncio.run(go())
    errors = lines(records)
    assert len(errors) == 5, errors
    prefix = "acme: no certificate for mx.example.org, mta-sts.example.org: "
    expected = [
        "the certificate worker did not finish in 1.5s; stopped it",
        "the certificate worker died (killed by SIGKILL)",
        "the certificate worker died (exit status 1): MemoryError: out of memory",
        "the certificate worker broke the protocol (not a JSON object)",
        "urn:ietf:params:acme:error:rateLimited :: too many certificates",
    ]
    for line, reason in zip(errors, expected, strict=True):
        assert line.startswith(prefix + reason + "; still serving serial="), line
        assert "next attempt in" in line and "\n" not in line and "Traceback" not in line
    assert responder.http01("tok-2") is None  # the dead child's challenge was withdrawn
    for attempt in range(1, 7):  # every child was stopped and reaped
        assert not alive(int((state / f"pid-{attempt}").read_text()))
    assert manager.attempt == 0 and manager.worker is not None  # no fallback for failures after ready


def test_stopping_the_server_mid_order_stops_the_child(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir, tls = serving(tmp_path)
    state = tmp_path / "state"
    responder = ChallengeResponder(tmp_path / "scratch")
    manager = CertificateManager(
        acme_config(data_dir), tls, data_dir, responder, worker=CertWorker(fake(state, "hang"))
    )

    async def go() -> float:
        manager.start()
        await until(lambda: responder.http01("tok-1") is not None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await manager.stop()
        return loop.time() - started

    assert asyncio.run(go()) < 2.0
    assert not alive(int((state / "pid-1").read_text()))
    assert responder.http01("tok-1") is None
    assert lines(records) == []


def test_no_child_falls_back_to_the_in_process_issuer_once(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir, tls = serving(tmp_path)
    ca = FakeCA(tmp_path / "ca", fail=set())
    manager = CertificateManager(
        acme_config(data_dir),
        tls,
        data_dir,
        ChallengeResponder(),
        issuer=ca,
        worker=CertWorker([str(tmp_path / "no-such-python"), "-m", "mailroom.acme.worker"]),
        retry_base=0.05,
    )

    async def go() -> None:
        manager.start()
        try:
            await until(
                lambda: bool(ca.serials) and tls.info is not None and tls.info.serial == ca.serials[0]
            )
            acme_paths(data_dir).renew_flag.write_text("requested\n")
            manager.reload()
            await until(
                lambda: len(ca.serials) == 2 and tls.info is not None and tls.info.serial == ca.serials[1]
            )
        finally:
            await manager.stop()

    asyncio.run(go())
    assert lines(records) == []
    warnings = lines(records, logging.WARNING)
    assert warnings == [
        f"acme: the certificate worker cannot run (cannot start {tmp_path / 'no-such-python'}: No such file "
        "or directory): issuing in the server process from now on"
    ]
    assert manager.worker is None


def test_a_child_that_cannot_import_falls_back(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    data_dir, tls = serving(tmp_path)
    ca = FakeCA(tmp_path / "ca", fail=set())
    manager = CertificateManager(
        acme_config(data_dir),
        tls,
        data_dir,
        ChallengeResponder(),
        issuer=ca,
        worker=CertWorker(fake(tmp_path / "state", "noimport")),
    )

    async def go() -> None:
        manager.start()
        try:
            await until(
                lambda: bool(ca.serials) and tls.info is not None and tls.info.serial == ca.serials[0]
            )
        finally:
            await manager.stop()

    asyncio.run(go())
    assert lines(records) == []
    assert lines(records, logging.WARNING) == [
        "acme: the certificate worker cannot run (it exited (exit status 3) before it was ready: "
        "ModuleNotFoundError: No module named 'acme'): issuing in the server process from now on"
    ]


def test_self_signed_made_by_the_worker(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    cfg = from_dict({"server": {"hostname": "mx.example.org", "data_dir": str(tmp_path / "data")}})
    first = initial_certificate(cfg, tmp_path / "data", CertWorker())  # the real worker
    assert first.note.endswith("(new)")
    assert first.key.stat().st_mode & 0o777 == 0o600
    info = ServerTLS(first.cert, first.key, scratch_dir=tmp_path / "scratch").info
    assert info is not None and info.names == ("mx.example.org", "localhost")
    again = initial_certificate(cfg, tmp_path / "data", CertWorker([str(tmp_path / "never-started")]))
    assert again.cert == first.cert and not again.note.endswith("(new)")  # reused: no child at all
    assert lines(records, logging.WARNING) == []


def test_self_signed_falls_back_in_process_or_fails_in_one_line(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    cfg = from_dict({"server": {"hostname": "mx.example.org", "data_dir": str(tmp_path / "data")}})
    first = initial_certificate(cfg, tmp_path / "data", CertWorker(fake(tmp_path / "s1", "noimport")))
    assert first.note.endswith("(new)") and first.key.stat().st_mode & 0o777 == 0o600
    assert lines(records, logging.WARNING) == [
        "tls: the certificate worker cannot run (it exited (exit status 3) before it was ready: "
        "ModuleNotFoundError: No module named 'acme'): making the certificate in-process"
    ]
    other = from_dict({"server": {"hostname": "mail.example.net", "data_dir": str(tmp_path / "data")}})
    with pytest.raises(TLSError) as caught:
        initial_certificate(other, tmp_path / "data", CertWorker(fake(tmp_path / "s2", "error")))
    assert str(caught.value) == (
        "tls.mode: cannot make a self-signed certificate: "
        "urn:ietf:params:acme:error:rateLimited :: too many certificates"
    )


def test_worker_result_type(tmp_path: Path) -> None:
    """What the worker hands back is the Issued the in-process path returns (tests' fakes still fit)."""
    state = tmp_path / "state"
    argv = fake(state, "ok")
    make_pair(state, "issued", ("mx.example.org",))
    (state / "go-1").touch()

    async def go() -> Issued:
        return await CertWorker(argv).issue(ChallengeResponder(), names=["mx.example.org"], preference=[])

    issued = asyncio.run(go())
    assert issued.challenge == "http-01" and issued.key_pem == (state / "issued.key").read_bytes()


PARENT = """
import json, os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-m", "mailroom.acme.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
request = {"op": "issue", "protocol": 1, "parent": os.getpid(), "names": ["mx.example.org"], "preference": ["http-01"],
           "directory_url": sys.argv[1], "account_key": sys.argv[2], "available": ["http-01"]}
worker.stdin.write((json.dumps(request) + "\\n").encode())
worker.stdin.flush()
assert json.loads(worker.stdout.readline())["type"] == "ready"
print(worker.pid, flush=True)
time.sleep(30)
"""


def test_the_real_worker_does_not_outlive_the_server(tmp_path: Path) -> None:
    """Killed with SIGKILL mid-order (no chance to stop its child), the server takes the worker along."""
    import socket
    import subprocess
    import time

    with socket.socket() as silent:  # a "CA" that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/dir"
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, url, str(tmp_path / "account.key")], stdout=subprocess.PIPE
        )
        try:
            assert parent.stdout is not None
            worker = int(parent.stdout.readline())
            assert alive(worker)
            parent.kill()
            parent.wait()
            deadline = time.monotonic() + 5
            while alive(worker) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not alive(worker)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
