"""The queue runner against a scripted SMTP peer on loopback, with time from an injected clock."""

from __future__ import annotations

import asyncio
import email
import io
import random
import time
from collections.abc import Callable
from pathlib import Path

from mailroom import config
from mailroom.delivery.runner import QueueRunner
from mailroom.dns import FakeResolver
from mailroom.store import directory, mail
from mailroom.store.database import open_database, transaction
from mailroom.store.delivery import Delivery, deliver
from mailroom.store.queue import QueueEnvelope, QueueRecipient, list_queue
from mailroom.store.service import Store
from mailroom.wire.smtp import events as ev
from mailroom.wire.smtp.replies import Reply, reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine

MESSAGE = b"From: alice@example.org\r\nTo: bob@remote.test\r\nSubject: queued\r\n\r\nhello\r\n.dot\r\n"


class Peer:
    """An SMTP server answering RCPT from a script, built on our own server engine."""

    def __init__(self, rcpt_replies: list[Reply | None], dsn: bool = True) -> None:
        self.rcpt_replies = rcpt_replies  # None: accept
        self.dsn = dsn
        self.received: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        engine = SMTPServerEngine(
            ServerConfig(hostname="mx.remote.test", max_message_size=10_000_000, dsn=self.dsn)
        )
        engine.greeting()
        body = bytearray()
        while not engine.closed:
            event = engine.next_event()
            if event is ev.NEED_DATA:
                writer.write(engine.data_to_send())
                await writer.drain()
                engine.receive_data(await reader.read(65536))
                continue
            match event:
                case ev.RcptTo():
                    answer = self.rcpt_replies.pop(0) if self.rcpt_replies else None
                    engine.accept() if answer is None else engine.reject(answer)
                case ev.BodyChunk(data=data):
                    body += data
                case ev.BodyEnd():
                    self.received.append(bytes(body))
                    body.clear()  # the next transaction may come over the same connection
                    engine.accept()
                case ev.Hello() | ev.MailFrom():
                    engine.accept()
                case ev.ConnectionClosed():
                    break
        writer.write(engine.data_to_send())
        writer.close()


def setup(tmp_path: Path, port: int, extra: dict[str, object] | None = None) -> tuple[config.Config, Store]:
    conn = open_database(tmp_path)
    with transaction(conn):
        directory.add_domain(conn, "example.org")
        directory.add_account(conn, "alice@example.org", "password-1")
    conn.close()
    raw: dict[str, object] = {
        "server": {"hostname": "mx.example.org", "data_dir": str(tmp_path)},
        "delivery": {"mx_port": port, "ipv6": False, **(extra or {})},
    }
    return config.from_dict(raw), Store(tmp_path)


def runner_for(cfg: config.Config, store: Store, now: list[float]) -> QueueRunner:
    resolver = FakeResolver(
        {"remote.test": {"MX": ["10 mx.remote.test."]}, "mx.remote.test": {"A": ["127.0.0.1"]}}
    )
    return QueueRunner(cfg, store, resolver, clock=lambda: now[0], rng=random.Random(1))


async def enqueue(store: Store, sender: str = "alice@example.org", notify: str | None = None) -> None:
    envelope = QueueEnvelope(
        sender=sender, recipients=[QueueRecipient("bob@remote.test", "rfc822;bob@remote.test", notify)]
    )
    await store.write(deliver, Delivery(io.BytesIO(MESSAGE), len(MESSAGE), int(time.time()), remote=envelope))


def state(store_dir: Path) -> list[tuple[str, int, str | None]]:
    conn = open_database(store_dir)
    try:
        return [(e.state, e.attempts, e.last_reply) for e in list_queue(conn)]
    finally:
        conn.close()


def alice_inbox(store_dir: Path) -> list[bytes]:
    conn = open_database(store_dir)
    try:
        acct = directory.find_account(conn, "alice@example.org")
        assert acct is not None
        box = mail.inbox(conn, acct.id)
        return [mail.body_bytes(conn, m.body_id) for m in mail.list_messages(conn, box.id)]
    finally:
        conn.close()


def run(tmp_path: Path, scenario: Callable[..., object]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_down_then_up_delivers_on_retry(tmp_path: Path) -> None:
    port = free_port()
    cfg, store = setup(tmp_path, port)
    now = [time.time() + 2]  # the queue stamps times with the real clock; tests move on from there

    async def scenario() -> None:
        runner = runner_for(cfg, store, now)
        await enqueue(store)
        await runner.drain()  # nothing listens: deferred
        assert state(tmp_path) == [("pending", 1, "451 4.4.2 Connection lost or refused before a reply")]
        await runner.drain()  # not due yet: nothing happens
        assert state(tmp_path)[0][1] == 1
        peer = Peer([])
        await peer.start(port)
        now[0] += 6 * 60  # past the first retry (5 min +- 10 %)
        await runner.drain()
        await peer.stop()
        assert peer.received == [MESSAGE]
        assert state(tmp_path) == []  # delivered: the message left the queue
        store.close()

    run(tmp_path, scenario)


def test_451_then_250(tmp_path: Path) -> None:
    peer = Peer([reply(451, "4.2.1", "try later"), None])
    cfg, store = None, None
    now = [time.time() + 2]  # the queue stamps times with the real clock; tests move on from there

    async def scenario() -> None:
        nonlocal cfg, store
        port = await peer.start()
        cfg, store = setup(tmp_path, port)
        runner = runner_for(cfg, store, now)
        await enqueue(store)
        await runner.drain()
        assert state(tmp_path) == [("pending", 1, "451 4.2.1 try later")]
        now[0] += 6 * 60
        await runner.drain()
        await peer.stop()
        assert peer.received == [MESSAGE] and state(tmp_path) == []
        store.close()

    run(tmp_path, scenario)


def test_550_bounces_to_local_sender_with_dsn(tmp_path: Path) -> None:
    peer = Peer([reply(550, "5.1.1", "no such user")])
    now = [time.time() + 2]  # the queue stamps times with the real clock; tests move on from there

    async def scenario() -> None:
        port = await peer.start()
        cfg, store = setup(tmp_path, port)
        runner = runner_for(cfg, store, now)
        await enqueue(store)
        await runner.drain()
        await peer.stop()
        store.close()

    run(tmp_path, scenario)
    assert state(tmp_path) == []
    (dsn_bytes,) = alice_inbox(tmp_path)
    assert dsn_bytes.startswith(b"Return-Path: <>\r\n")
    dsn = email.message_from_bytes(dsn_bytes)
    assert (
        dsn.get_content_type() == "multipart/report" and dsn["From"].startswith("Mail Delivery System")
    ) or "MAILER-DAEMON" in dsn["From"]
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status").as_string()
    assert (
        "Action: failed" in status
        and "Status: 5.1.1" in status
        and "Remote-MTA: dns; mx.remote.test" in status
    )
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status
    headers = next(p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers")
    assert "Subject: queued" in headers.as_string()


def test_give_up_after_five_days_and_one_delay_notice(tmp_path: Path) -> None:
    port = free_port()  # never listens
    cfg, store = setup(tmp_path, port)
    now = [time.time() + 2]  # the queue stamps times with the real clock; tests move on from there

    async def scenario() -> None:
        runner = runner_for(cfg, store, now)
        await enqueue(store)
        base = now[0]
        for hours in (0, 1, 3, 5, 8, 12):  # a delay notice once past 4 hours, not again
            now[0] = base + hours * 3600
            await runner.drain()
        notices = [m for m in alice_inbox(tmp_path) if b"Action: delayed" in m]
        assert len(notices) == 1
        now[0] = base + 5 * 86400 + 3600
        await runner.drain()
        store.close()

    run(tmp_path, scenario)
    assert state(tmp_path) == []
    failed = [m for m in alice_inbox(tmp_path) if b"Action: failed" in m]
    assert len(failed) == 1


def test_null_sender_never_bounces(tmp_path: Path) -> None:
    peer = Peer([reply(550, "5.1.1", "no such user")])

    async def scenario() -> None:
        port = await peer.start()
        cfg, store = setup(tmp_path, port)
        runner = runner_for(cfg, store, [time.time() + 2])
        await enqueue(store, sender="")
        await runner.drain()
        await peer.stop()
        store.close()

    run(tmp_path, scenario)
    assert state(tmp_path) == [] and alice_inbox(tmp_path) == []


def test_notify_success_to_a_peer_without_dsn_gets_a_relayed_notice(tmp_path: Path) -> None:
    async def scenario(peer: Peer, where: Path) -> None:
        port = await peer.start()
        cfg, store = setup(where, port)
        await enqueue(store, notify="SUCCESS,FAILURE")
        await runner_for(cfg, store, [time.time() + 2]).drain()
        await peer.stop()
        store.close()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    asyncio.run(scenario(Peer([], dsn=False), tmp_path / "a"))
    (notice,) = alice_inbox(tmp_path / "a")
    assert b"Action: relayed" in notice and b"Final-Recipient: rfc822; bob@remote.test" in notice
    asyncio.run(scenario(Peer([], dsn=True), tmp_path / "b"))  # the peer reports success itself
    assert alice_inbox(tmp_path / "b") == []


def test_messages_for_one_domain_share_a_connection(tmp_path: Path) -> None:
    peer = Peer([None, reply(550, "5.1.1", "gone"), None])

    async def scenario() -> None:
        port = await peer.start()
        cfg, store = setup(tmp_path, port)
        for _ in range(3):
            await enqueue(store)
        await runner_for(cfg, store, [time.time() + 2]).drain()
        await peer.stop()
        store.close()

    asyncio.run(scenario())
    assert peer.connections == 1
    assert peer.received == [MESSAGE, MESSAGE]  # the middle one was refused at RCPT
    assert state(tmp_path) == []
    assert sum(b"Action: failed" in m for m in alice_inbox(tmp_path)) == 1
