"""Submission side by side: several concurrent sessions, each STARTTLS + AUTH PLAIN once, then
messages one after another (MAIL, RCPT, DATA pipelined when PIPELINING is offered), timed until
every message is durably stored.

mailroom: its submission listener, the sender's domain holding one RSA 2048 DKIM key, delivery to a
local account (committed in SQLite). Postfix: a private instance with the shared peer's submission
service (STARTTLS required, SASL through Dovecot's auth socket), signing through an OpenDKIM milter
(RSA 2048), delivery into a Maildir. Both again without DKIM, to show what signing costs.

The client is a small asyncio program (one process, one thread) in the harness's process.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import statistics
import time
from dataclasses import dataclass

from benchlib import BenchError


@dataclass(frozen=True)
class Load:
    sessions: int
    per_session: int
    size: int

    @property
    def messages(self) -> int:
        return self.sessions * self.per_session

    def describe(self) -> str:
        return f"{self.sessions} sessions x {self.per_session} msgs, {self.size // 1024} KiB"


@dataclass(frozen=True)
class Account:
    port: int
    user: str
    password: str
    sender: str
    rcpt: str


@dataclass
class Sent:
    wall_s: float  # first connect to the last 250 after DATA
    login_s: list[float]  # per session: connect, greeting, EHLO, STARTTLS, EHLO, AUTH


def message(sender: str, rcpt: str, session: int, n: int, size: int) -> bytes:
    head = (
        f"From: Bench <{sender}>\r\nTo: <{rcpt}>\r\nSubject: submission benchmark {session}.{n}\r\n"
        f"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\nMessage-ID: <{session}.{n}.{time.time_ns()}@bench>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = "The quick brown fox jumps over the lazy dog, message body text.\r\n"  # 66 octets
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


async def _reply(reader: asyncio.StreamReader, want: str, what: str) -> list[bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError(f"connection closed after {what}")
        lines.append(line)
        if line[3:4] != b"-":
            break
    if not lines[-1].startswith(want.encode()):
        raise BenchError(f"{what}: {b''.join(lines).decode(errors='replace').strip()[:200]}")
    return lines


async def _session(account: Account, session: int, load: Load, tls: ssl.SSLContext) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", account.port, limit=1 << 16)
    try:
        await _reply(reader, "220", "connect")
        writer.write(b"EHLO client.sender.test\r\n")
        await _reply(reader, "250", "EHLO")
        writer.write(b"STARTTLS\r\n")
        await _reply(reader, "220", "STARTTLS")
        await writer.start_tls(tls, server_hostname="localhost")
        writer.write(b"EHLO client.sender.test\r\n")
        ehlo = await _reply(reader, "250", "EHLO after STARTTLS")
        pipelining = any(line[4:].strip().upper() == b"PIPELINING" for line in ehlo)
        token = base64.b64encode(f"\0{account.user}\0{account.password}".encode()).decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        await _reply(reader, "235", "AUTH")
        login = time.perf_counter() - t0
        envelope = [
            f"MAIL FROM:<{account.sender}>\r\n".encode(),
            f"RCPT TO:<{account.rcpt}>\r\n".encode(),
            b"DATA\r\n",
        ]
        for n in range(load.per_session):
            data = message(account.sender, account.rcpt, session, n, load.size)
            if pipelining:
                writer.write(b"".join(envelope))
                await _reply(reader, "250", "MAIL")
                await _reply(reader, "250", "RCPT")
                await _reply(reader, "354", "DATA")
            else:
                for command, want in zip(envelope, ("250", "250", "354"), strict=True):
                    writer.write(command)
                    await _reply(reader, want, command.decode().strip())
            writer.write(data + b".\r\n")  # no line of the body starts with a dot
            await _reply(reader, "250", "end of data")
        writer.write(b"QUIT\r\n")
        await _reply(reader, "221", "QUIT")
        return login
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def _submit(account: Account, load: Load) -> Sent:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # certificates are not what this measures
    t0 = time.perf_counter()
    logins = await asyncio.gather(*(_session(account, s, load, tls) for s in range(load.sessions)))
    return Sent(time.perf_counter() - t0, list(logins))


def submit(account: Account, load: Load) -> Sent:
    return asyncio.run(_submit(account, load))


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000
