"""A tiny IMAP client for tests that need the exact bytes: lines with their literals, and a
FETCH item splitter. (imaplib hides too much for exact-response tests.)"""

from __future__ import annotations

import re
import socket
import ssl

_LITERAL = re.compile(rb"~?\{(\d+)\+?\}\r\n$")


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawIMAP:
    def __init__(self, port: int, tls: bool = True, timeout: float = 15) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = tls_context().wrap_socket(sock) if tls else sock
        self.buf = b""
        self.n = 0
        self.greeting = self.line()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def raw_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes:
        """One response with its literals inline, without the final CRLF."""
        out = b""
        while True:
            part = self.raw_line()
            out += part
            m = _LITERAL.search(part)
            if not m:
                return out[:-2]
            out += self.read_exact(int(m.group(1)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def starttls(self) -> None:
        assert self.command("STARTTLS")[-1].split()[1] == b"OK"
        self.sock = tls_context().wrap_socket(self.sock)

    def command(self, text: str | bytes, tag: str | None = None) -> list[bytes]:
        """Send ``tag text`` and read until the tagged response (included, last). The tag is
        "t" unless given (tags need not be unique), so expected answers read ``t OK ...``."""
        self.n += 1
        tag = tag or "t"
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def login(self, user: str, password: str) -> None:
        assert self.command(f'LOGIN "{user}" "{password}"')[-1].split()[1] == b"OK"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _skip_value(data: bytes, i: int) -> int:
    """Index just past one IMAP value starting at ``i`` (atom, quoted, literal, list)."""
    c = data[i : i + 1]
    if c == b'"':
        i += 1
        while data[i : i + 1] != b'"':
            i += 2 if data[i : i + 1] == b"\\" else 1
        return i + 1
    if c in (b"{", b"~"):
        m = re.compile(rb"~?\{(\d+)\+?\}\r\n").match(data, i)
        assert m, data[i : i + 20]
        return m.end() + int(m.group(1))
    if c == b"(":
        i += 1
        while data[i : i + 1] != b")":
            if data[i : i + 1] == b" ":
                i += 1
                continue
            i = _skip_value(data, i)
        return i + 1
    m = re.compile(rb"[^ ()\r\n]+").match(data, i)
    assert m, data[i : i + 20]
    return m.end()


def fetch_items(line: bytes) -> dict[str, bytes]:
    """``* n FETCH (NAME value ...)`` -> {NAME: raw value}; literals come back as their octets."""
    m = re.match(rb"\* \d+ FETCH \(", line)
    assert m, line[:80]
    i = m.end()
    out: dict[str, bytes] = {}
    while line[i : i + 1] != b")":
        if line[i : i + 1] == b" ":
            i += 1
            continue
        j = i
        depth = 0
        while True:
            ch = line[j : j + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif ch == b" " and depth == 0:
                break
            j += 1
        name = line[i:j].decode()
        i = j + 1
        end = _skip_value(line, i)
        value = line[i:end]
        lm = re.match(rb"~?\{(\d+)\+?\}\r\n", value)
        if lm:
            value = value[lm.end() :]
        out[name] = value
        i = end
    return out
