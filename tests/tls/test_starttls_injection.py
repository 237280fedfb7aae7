"""STARTTLS command injection (CVE-2011-0411 class) through real sockets: plaintext pipelined after
STARTTLS / STLS must be discarded, never executed as if it had arrived inside TLS.

Each test also sends the same command inside TLS as a control, proving the probe would notice."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from tests.server_fixture import PASSWORD, running_server
from tests.tls.certs import insecure_client


class Line:
    """Line reader over a socket that reads one byte at a time before TLS (so nothing of the
    handshake is swallowed) and in chunks after."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(1 if not isinstance(self.sock, ssl.SSLSocket) else 4096)
            if not chunk:
                raise ConnectionError(f"closed; had {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def until(self, prefix: bytes) -> list[bytes]:
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(prefix):
                return lines


def upgrade(raw: socket.socket) -> Line:
    return Line(insecure_client().wrap_socket(raw, server_hostname="mx.example.org"))


def test_smtp_starttls_injection(tmp_path: Path) -> None:
    with running_server(tmp_path, ("smtp",)) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
        plain = Line(raw)
        assert plain.line().startswith(b"220 ")
        raw.sendall(b"EHLO client.test\r\n")
        assert any(b"STARTTLS" in line for line in plain.until(b"250 "))
        raw.sendall(b"STARTTLS\r\nQUIT\r\n")  # the injected QUIT must not be honoured inside TLS
        assert plain.line().startswith(b"220 ")
        assert plain.buffer == b""
        tls = upgrade(raw)
        tls.sock.sendall(b"NOOP\r\n")
        assert tls.line().startswith(b"250 "), "a command pipelined before the handshake was executed"
        tls.sock.sendall(b"QUIT\r\n")  # control: the same command inside TLS does take effect
        assert tls.line().startswith(b"221 ")
        tls.sock.close()
    assert "QUIT" not in srv.log().split("STARTTLS:", 1)[1].split("\n", 1)[0]


def test_pop3_stls_injection(tmp_path: Path) -> None:
    with running_server(tmp_path, ("smtp", "pop3")) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10)
        plain = Line(raw)
        assert plain.line().startswith(b"+OK")
        raw.sendall(b"STLS\r\nUSER alice@example.org\r\n")  # injected USER
        assert plain.line().startswith(b"+OK")
        tls = upgrade(raw)
        tls.sock.sendall(f"PASS {PASSWORD}\r\n".encode())
        assert tls.line().startswith(b"-ERR"), "USER pipelined before the handshake was executed"
        # control: USER inside TLS is what makes PASS work
        tls.sock.sendall(f"USER alice@example.org\r\nPASS {PASSWORD}\r\n".encode())
        assert tls.line().startswith(b"+OK")
        assert tls.line().startswith(b"+OK")
        tls.sock.sendall(b"QUIT\r\n")
        assert tls.line().startswith(b"+OK")
        tls.sock.close()


def test_imap_starttls_injection(tmp_path: Path) -> None:
    with running_server(tmp_path, ("smtp", "imap")) as srv:
        if "imap: not implemented" in srv.log():
            pytest.skip("net/imap.py is not wired into services.py yet")
        raw = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=10)
        plain = Line(raw)
        assert plain.line().startswith(b"* OK")
        raw.sendall(b"a STARTTLS\r\nb LOGOUT\r\n")  # injected LOGOUT
        assert plain.until(b"a ")[-1].startswith(b"a OK")
        tls = upgrade(raw)
        tls.sock.sendall(b"c NOOP\r\n")
        lines = tls.until(b"c ")
        assert lines[-1].startswith(b"c OK"), lines
        assert not any(line.startswith((b"* BYE", b"b ")) for line in lines), (
            "LOGOUT before the handshake was executed"
        )
        tls.sock.sendall(b"d LOGOUT\r\n")  # control
        lines = tls.until(b"d ")
        assert lines[0].startswith(b"* BYE") and lines[-1].startswith(b"d OK")
        tls.sock.close()
