"""ACME against Pebble on loopback (../shared/peers/start-pebble.sh, with Knot DNS on 127.0.0.1:5353).

Pebble validates http-01 on port 5002 and tls-alpn-01 on port 5001 of the address the test DNS
gives for the name, so mailroom's http/https listeners sit on 127.0.0.1:5002 / :5001 here.
Checked for each: issuance, the challenge really answered by mailroom, the certificate chaining to
Pebble's issuing root, a forced renewal hot-swapped into SMTP STARTTLS, IMAPS and POP3S without a
restart, and a failing issuance that leaves the server serving. The orders run in the certificate
worker (a child process): the server itself never maps cryptography (so neither acme nor josepy) nor
requests' charset_normalizer; where it cannot start a child (running as a user who cannot read the
Python installation) it issues in-process.
"""

from __future__ import annotations

import os
import pwd
import smtplib
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.interop.conftest import ensure_knot, start_peer
from tests.server_fixture import RunningServer, free_port, populate, write_config
from tests.tls.test_serve_tls import heavy_libraries

pytestmark = pytest.mark.interop

PEERS_STATE = Path(os.environ.get("PEERS_STATE", "/var/lib/mailroom-peers"))
DIRECTORY = "https://127.0.0.1:14000/dir"
HTTP01_PORT, TLSALPN01_PORT = 5002, 5001
HOST, EXTRA_NAME = "mr-acme.proj.test", "mr-sts.proj.test"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mailroom binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def pebble() -> Iterator[Path]:
    ensure_knot()
    start_peer("start-pebble.sh")
    import dns.query
    import dns.update

    update = dns.update.UpdateMessage("proj.test.")
    for name in (HOST, EXTRA_NAME):
        update.replace(f"{name}.", 60, "A", "127.0.0.1")  # RFC 2136; Knot keeps it in memory
    assert dns.query.tcp(update, "127.0.0.1", port=5353, timeout=5).rcode() == 0
    busy = [p for p in (HTTP01_PORT, TLSALPN01_PORT) if not _port_free(p)]
    if busy:
        message = f"ports {busy} are taken: Pebble validates there, mailroom must listen there"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root_pem = subprocess.run(
        ["curl", "-fsS", "--cacert", str(PEERS_STATE / "tls" / "ca.pem"), "https://127.0.0.1:15000/roots/0"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    path = PEERS_STATE / "pebble" / "issuer-root-test.pem"
    path.write_bytes(root_pem)  # Pebble makes a new issuing root at each start: fetch the live one
    yield path


def acme_server(
    root: Path,
    challenges: list[str],
    *,
    names: tuple[str, ...] = (EXTRA_NAME,),
    http_port: int = HTTP01_PORT,
    user: str = "",
    ca_file: Path = PEERS_STATE / "tls" / "ca.pem",
) -> RunningServer:
    root.mkdir(parents=True, exist_ok=True)
    ports = {
        "smtp": free_port(),
        "imaps": free_port(),
        "pop3s": free_port(),
        "http": http_port,
        "https": TLSALPN01_PORT,
    }
    extra = (
        f'[tls]\nmode = "acme"\nacme_directory = "{DIRECTORY}"\nacme_email = "postmaster@proj.test"\n'
        f'acme_ca_file = "{ca_file}"\n'
        f"acme_names = [{', '.join(repr(n).replace(chr(39), chr(34)) for n in names)}]\n"
        f"acme_challenges = [{', '.join(chr(34) + c + chr(34) for c in challenges)}]\n"
    )
    cfg = write_config(root, ports, extra)
    server_section = f'hostname = "{HOST}"' + (f'\nuser = "{user}"' if user else "")
    cfg.write_text(cfg.read_text().replace('hostname = "mx.example.org"', server_section))
    server = RunningServer(root, cfg, ports)
    populate(server.data_dir)
    return server


def wait_for(
    check: Callable[[], bool], what: str, server: RunningServer, timeout: float = 60, fail_on: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if fail_on and fail_on in server.log():
            raise AssertionError(f"{what}: {fail_on!r} in the log:\n{server.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout}s:\n{server.log()[-4000:]}")
        time.sleep(0.1)


def verifying(root_pem: Path) -> ssl.SSLContext:
    """A client that trusts only Pebble's issuing root and checks the host name."""
    ctx = ssl.create_default_context(cafile=str(root_pem))
    ctx.check_hostname = True
    return ctx


def serials(server: RunningServer, root_pem: Path) -> dict[str, int]:
    """The serial each protocol's NEW connection gets, verified against Pebble's root, for HOST."""
    from cryptography import x509

    def serial(sock: ssl.SSLSocket) -> int:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    out: dict[str, int] = {}
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.test", timeout=10) as s:
        s._host = HOST  # smtplib verifies against the host it connected to; we connect by address
        s.starttls(context=verifying(root_pem))
        out["smtp starttls"] = serial(s.sock)  # type: ignore[arg-type]
    for service in ("imaps", "pop3s"):
        with (
            socket.create_connection(("127.0.0.1", server.ports[service]), timeout=10) as raw,
            verifying(root_pem).wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            out[service] = serial(tls)
            assert tls.recv(100).startswith((b"* OK", b"+OK"))
    return out


def installed(server: RunningServer) -> int:
    return server.log().count("acme: installed new certificate")


def cli(server: RunningServer, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "mailroom", "--config", str(server.config_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_http01_issue_then_forced_renewal_hot_swaps_every_protocol(tmp_path: Path, pebble: Path) -> None:
    server = acme_server(tmp_path, ["http-01"])
    server.start()
    try:
        wait_for(lambda: installed(server) == 1, "first issuance", server, fail_on="acme: no certificate")
        log = server.log()
        assert "acme: answering http-01 for mr-acme.proj.test" in log
        assert (
            '"GET /.well-known/acme-challenge/' in log and " 200 " in log
        )  # answered by mailroom's http listener
        first = serials(server, pebble)
        assert len(set(first.values())) == 1, first
        assert server.proc is not None
        assert heavy_libraries(server.proc.pid) == []  # the order ran in the certificate worker
        key = server.data_dir / "tls" / "acme" / "account.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert (server.data_dir / "tls" / "acme" / "key.pem").stat().st_mode & 0o777 == 0o600
        status = cli(server, "cert", "status")
        assert f"serial:       {first['imaps']:x}" in status
        assert "issuer:       CN=Pebble Intermediate CA" in status
        assert f"names:        {HOST}, {EXTRA_NAME}" in status
        assert "(when a third of the lifetime remains)" in status

        assert server.proc is not None
        pid = server.proc.pid
        assert "renewal requested from the running server" in cli(server, "cert", "renew")
        wait_for(lambda: installed(server) == 2, "forced renewal", server, fail_on="acme: no certificate")
        second = serials(server, pebble)
        assert server.proc is not None and server.proc.pid == pid  # no restart
        assert len(set(second.values())) == 1, second
        assert set(second.values()).isdisjoint(first.values()), (first, second)
        assert not (server.data_dir / "tls" / "acme" / "renew-requested").exists()
        assert heavy_libraries(pid) == []
        assert "certificate worker" not in server.log()  # no failure, no fallback
    finally:
        if server.proc is not None:
            assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_tls_alpn01_issue(tmp_path: Path, pebble: Path) -> None:
    server = acme_server(tmp_path, ["tls-alpn-01"], names=())
    server.start()
    try:
        wait_for(
            lambda: installed(server) == 1, "issuance by tls-alpn-01", server, fail_on="acme: no certificate"
        )
        log = server.log()
        assert f"answered tls-alpn-01 for {HOST}" in log
        assert "(challenge tls-alpn-01)" in log
        assert "acme-challenge" not in log  # no http-01 involved
        assert len(set(serials(server, pebble).values())) == 1
        assert server.proc is not None
        assert heavy_libraries(server.proc.pid) == []  # the challenge certificate too was made there
    finally:
        if server.proc is not None:
            assert server.stop() == 0
    assert "Traceback" not in server.log()


class _Proxy(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    backend = 0


class _Forward(socketserver.StreamRequestHandler):
    """A reverse proxy that forwards only /.well-known/acme-challenge/ (as nginx configs do)."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if not target.startswith(b"/.well-known/acme-challenge/"):
            self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        backend = self.server.backend  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", backend), timeout=10) as up:
            up.sendall(
                method
                + b" "
                + target
                + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: "
                + self.client_address[0].encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            while data := up.recv(65536):
                self.request.sendall(data)


def test_http01_behind_a_reverse_proxy(tmp_path: Path, pebble: Path) -> None:
    backend = free_port()
    server = acme_server(tmp_path, ["http-01"], names=(), http_port=backend)
    proxy = _Proxy(("127.0.0.1", HTTP01_PORT), _Forward)
    proxy.backend = backend
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        server.start()
        wait_for(
            lambda: installed(server) == 1,
            "issuance through the proxy",
            server,
            fail_on="acme: no certificate",
        )
        assert '"GET /.well-known/acme-challenge/' in server.log()
    finally:
        proxy.shutdown()
        proxy.server_close()
        if server.proc is not None:
            assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_failed_issuance_is_logged_and_the_server_keeps_serving(tmp_path: Path, pebble: Path) -> None:
    # a name with no address in the test DNS: Pebble cannot validate it by either challenge
    server = acme_server(tmp_path, ["http-01", "tls-alpn-01"], names=("nowhere.proj.test",))
    server.start()
    try:
        wait_for(lambda: "acme: no certificate for" in server.log(), "the failure line", server)
        line = next(li for li in server.log().splitlines() if "acme: no certificate for" in li)
        assert "nowhere.proj.test" in line and "still serving" in line and "next attempt in" in line
        assert "http-01:" in line and "tls-alpn-01:" in line
        assert server.proc is not None and server.proc.poll() is None
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.test", timeout=10) as s:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)  # on the self-signed certificate
            assert s.noop()[0] == 250
        status = cli(server, "cert", "status")
        assert "self-signed until the first ACME issuance" in status
        assert "last attempt:" in status and "failed" in status
    finally:
        if server.proc is not None:
            assert server.stop() == 0
    assert "Traceback" not in server.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="binding and dropping privileges to nobody needs root")
def test_in_process_when_the_server_user_cannot_read_python(pebble: Path) -> None:
    """[server] user cannot read the Python libraries (here: a PYTHONPATH entry it cannot enter), so
    app.py loads them before the drop and no child could import them: certificates are made in the
    server process, ACME in a thread, and issuance still works."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mailroom-acme-nobody-", dir="/tmp"))  # pytest's is 0700
    root.chmod(0o755)
    hidden = Path(tempfile.mkdtemp(prefix="mailroom-hidden-", dir="/tmp"))  # 0700: nobody cannot enter
    try:
        ca_file = root / "ca.pem"
        shutil.copy(PEERS_STATE / "tls" / "ca.pem", ca_file)
        ca_file.chmod(0o644)
        server = acme_server(root, ["http-01"], names=(), user="nobody", ca_file=ca_file)
        for path in (server.data_dir, *server.data_dir.rglob("*")):
            os.chown(path, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [old, str(hidden)]))
        try:
            server.start()
        finally:
            if old is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = old
        try:
            assert "nobody cannot read the Python libraries" in server.log()
            wait_for(
                lambda: installed(server) == 1, "in-process issuance", server, fail_on="acme: no certificate"
            )
            assert len(set(serials(server, pebble).values())) == 1
            assert server.proc is not None
            assert heavy_libraries(server.proc.pid) != []  # loaded here, as before the worker existed
            assert (server.data_dir / "tls" / "acme" / "key.pem").stat().st_uid == pwd.getpwnam(
                "nobody"
            ).pw_uid
        finally:
            if server.proc is not None:
                assert server.stop() == 0
        assert "Traceback" not in server.log()
        assert "certificate worker" not in server.log()  # chosen up front: no child was tried
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(hidden, ignore_errors=True)
