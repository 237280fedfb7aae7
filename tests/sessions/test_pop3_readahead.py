"""The POP3 session's read-ahead (net/pop3.py), in process over a socket pair: every answer must be
what RFC 1939 asks (byte-stuffed text, "+OK n octets" with n the exact size) whatever order the
client asks in, and an in-order download must read many messages per store hop."""

from __future__ import annotations

import asyncio
import io
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from mailroom import config
from mailroom.net import pop3 as net_pop3
from mailroom.net.listeners import KINDS, Connection
from mailroom.net.pop3 import POP3Context, POP3Session, plan_read_ahead
from mailroom.net.tls import ServerTLS
from mailroom.policy.auth import Authenticator
from mailroom.store import directory, mail
from mailroom.store.database import open_database, transaction
from mailroom.store.service import Store

USER = "reader@example.org"
PW = "correct horse"


def message(i: int, size: int) -> bytes:
    head = f"Subject: message {i}\r\n\r\n.leading dot\r\n".encode()
    line = b"..two dots and text\r\n" if i % 2 else b"plain line of text\r\n"
    body = head + line * ((size - len(head)) // len(line) + 1)
    return body[: max(size, len(head))] + (b"" if i % 3 else b"\r\n")


# small ones, then one above READ_AHEAD_MAX (patched to 2000 below), then small ones again
SIZES = [300 + 37 * i for i in range(12)] + [5000] + [400 + 11 * i for i in range(9)]
MESSAGES = [message(i, size) for i, size in enumerate(SIZES)]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(net_pop3, "READ_AHEAD_MAX", 2000)
    monkeypatch.setattr(net_pop3, "READ_AHEAD_COUNT", 4)
    monkeypatch.setattr(net_pop3, "READ_AHEAD_BYTES", 3000)
    conn = open_database(tmp_path)
    with transaction(conn):
        directory.add_domain(conn, "example.org")
        account = directory.add_account(conn, USER, PW)
        box = mail.inbox(conn, account.id)
        for data in MESSAGES:
            mail.store_message(conn, io.BytesIO(data), len(data), [mail.Placement(box.id)], int(time.time()))
    conn.close()
    s = Store(tmp_path)
    yield s
    s.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def command(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reader.readline()

    async def multiline(self, line: str) -> tuple[bytes, bytes]:
        """The status line and the text, byte-stuffing undone (RFC 1939 §3)."""
        status = await self.command(line)
        assert status.startswith(b"+OK"), status
        lines = []
        while (got := await self.reader.readline()) != b".\r\n":
            assert got.endswith(b"\r\n") and got
            lines.append(got[1:] if got.startswith(b".") else got)
        return status, b"".join(lines)


def run_session(store: Store, script: Callable[[Client], Awaitable[None]]) -> int:
    """Run ``script`` against a logged-in session; returns how many store reads the session made."""
    reads = 0
    real_read = store.read

    async def counting_read(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(fn, *args, **kwargs)

    async def main() -> None:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        # the pop3s kind: the engine takes TLS as on (the socket pair has none, and needs none)
        conn = Connection(reader, writer, KINDS["pop3s"], "t", "127.0.0.1", 1, "127.0.0.1", 995)
        auth = Authenticator(store, base_delay=0)
        ctx = POP3Context(config.Config(), store, cast(ServerTLS, None), auth)
        session = asyncio.ensure_future(POP3Session(ctx, conn).run())
        client = Client(*await asyncio.open_connection(sock=theirs))
        assert (await client.reader.readline()).startswith(b"+OK")
        assert (await client.command(f"USER {USER}")).startswith(b"+OK")
        assert (await client.command(f"PASS {PW}")).startswith(b"+OK")
        store.read = counting_read  # type: ignore[method-assign]
        try:
            await script(client)
            assert (await client.command("QUIT")).startswith(b"+OK")
            await asyncio.wait_for(session, 10)
        finally:
            store.read = real_read  # type: ignore[method-assign]
            client.writer.close()

    asyncio.run(main())
    return reads


async def retr(client: Client, number: int) -> None:
    status, text = await client.multiline(f"RETR {number}")
    want = MESSAGES[number - 1]
    assert status == b"+OK %d octets\r\n" % len(want)  # RFC 1939 §5: the exact size
    # RFC 1939 §3: a message without a final CRLF gets one before the terminator
    assert text == (want if want.endswith(b"\r\n") else want + b"\r\n")


def test_plan_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net_pop3, "READ_AHEAD_MAX", 2000)
    monkeypatch.setattr(net_pop3, "READ_AHEAD_COUNT", 4)
    monkeypatch.setattr(net_pop3, "READ_AHEAD_BYTES", 3000)
    drop = [
        net_pop3.DropMessage(i + 1, i + 1, size) for i, size in enumerate([900, 900, 900, 900, 900, 5000, 10])
    ]
    assert plan_read_ahead(drop, 0) == range(0, 3)  # 3000 octets at most
    assert plan_read_ahead(drop, 3) == range(3, 5)  # stops before the big one
    assert plan_read_ahead(drop, 5) == range(5, 5)  # the big one is streamed when asked for
    assert plan_read_ahead(drop, 6) == range(6, 7)
    assert plan_read_ahead(drop, 7) == range(7, 7)
    monkeypatch.setattr(net_pop3, "READ_AHEAD_BYTES", 100)
    assert plan_read_ahead(drop, 0) == range(0, 1)  # one always fits
    monkeypatch.setattr(net_pop3, "READ_AHEAD_COUNT", 1)
    assert plan_read_ahead([*drop[6:], *drop[6:]], 0) == range(0, 1)


def test_in_order_download_reads_ahead_in_batches(store: Store) -> None:
    async def script(client: Client) -> None:
        for number in range(1, len(MESSAGES) + 1):
            assert (await client.command(f"LIST {number}")) == b"+OK %d %d\r\n" % (
                number,
                len(MESSAGES[number - 1]),
            )
            await retr(client, number)

    reads = run_session(store, script)
    # 22 messages in 8 reads: RETR 1 and the big message alone, the others in batches of at most
    # 4 messages or 3000 octets (without read-ahead it is one read per message)
    assert reads <= 8, reads


def test_any_order_top_dele_and_rereads(store: Store) -> None:
    async def script(client: Client) -> None:
        for number in (2, 3, 1, 7, 6, 13, 12, 14, 22, 4, 5):  # back, jump, around the big one
            await retr(client, number)
        _status, top = await client.multiline("TOP 8 0")
        assert top == MESSAGES[7].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"  # RFC 1939 §7
        assert (await client.command("DELE 9")).startswith(b"+OK")
        assert (await client.command("RETR 9")).startswith(b"-ERR")
        for number in (8, 10, 11, 15, 16, 2):
            await retr(client, number)

    run_session(store, script)


def test_message_expunged_after_login(store: Store) -> None:
    def expunge_third(conn: sqlite3.Connection) -> None:
        account = directory.find_account(conn, USER)
        assert account is not None
        box = mail.inbox(conn, account.id)
        mail.expunge(conn, box.id, [3])

    async def script(client: Client) -> None:
        await store.write(expunge_third)  # an IMAP session expunges it; the drop still lists it
        await retr(client, 1)
        await retr(client, 2)
        assert (await client.command("RETR 3")) == b"-ERR message 3 was removed by another session\r\n"
        await retr(client, 4)

    run_session(store, script)


def test_skips_and_steps_back_keep_reading_ahead(store: Store) -> None:
    async def script(client: Client) -> None:
        for number in (1, 3, 5, 7, 9, 11):  # every other one (the rest deleted, or not wanted)
            await retr(client, number)
        for number in (2, 3, 4, 5, 6):  # back to the start: reading ahead starts over from there
            await retr(client, number)

    reads = run_session(store, script)
    # 11 RETRs in 7 reads: RETR 1 alone, then batches; a skipped message is passed over, and a
    # step back reads that one alone and starts the read-ahead again right after it
    assert reads <= 7, reads
