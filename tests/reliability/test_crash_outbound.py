"""Crash consistency of the outbound queue: a server with a full queue delivers to a second
mailroom (the sink, through `[delivery] smarthost`) and is killed with SIGKILL at random moments
during delivery, then restarted, until the queue is empty.

Nothing may be lost: every queued message reaches the sink at least once and none bounces. A
duplicate is possible by design (README "Outbound mail"): the sink's 250 arrived but the crash came
before our commit marked the recipient delivered. Duplicates are counted and reported.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import ipaddress
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailroom.store import directory
from mailroom.store.database import now, open_database, transaction
from mailroom.store.delivery import Delivery, deliver
from mailroom.store.queue import QueueEnvelope, QueueRecipient
from mailroom.wire.smtp import events as ev
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine
from tests.delivery.test_runner import Peer, runner_for, setup
from tests.delivery.test_runner import state as queue_state
from tests.reliability.support import (
    count,
    integrity,
    make_server,
    markers_by_mailbox,
    scale,
    started,
    wait_until,
)

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

SEED = int(os.environ.get("MAILROOM_SEED", str(random.randrange(1 << 30))))


def ip_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the sender verifies the relay it talks to)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    stamp = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(stamp - datetime.timedelta(minutes=5))
        .not_valid_after(stamp + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sink.crt", directory / "sink.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def sink_domain(data_dir: Path) -> None:
    conn = open_database(data_dir)
    try:
        with transaction(conn):
            directory.add_domain(conn, "sink.test")
            directory.add_alias(conn, "@sink.test", ["carol@example.net"])
    finally:
        conn.close()


def queue_messages(markers: list[str]):  # type: ignore[no-untyped-def]
    def setup(data_dir: Path) -> None:
        conn = open_database(data_dir)
        try:
            with transaction(conn):
                for marker in markers:
                    data = (
                        f"From: alice@example.org\r\nTo: {marker}@sink.test\r\nX-Mark: {marker}\r\n"
                        f"Subject: {marker}\r\n\r\n" + "q" * 3000 + "\r\n"
                    ).encode()
                    envelope = QueueEnvelope("alice@example.org", [QueueRecipient(f"{marker}@sink.test")])
                    deliver(conn, Delivery(io.BytesIO(data), len(data), now(), remote=envelope))
        finally:
            conn.close()

    return setup


def pending(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "mailroom.sqlite3")
    try:
        return int(conn.execute("SELECT count(*) FROM queue_recipients").fetchone()[0])
    finally:
        conn.close()


def test_outbound_queue_survives_kill_9_during_delivery(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    messages = scale(6000, 40000)
    trials = scale(20, 200)
    markers = [f"out{i}" for i in range(messages)]
    cert, key = ip_certificate(tmp_path / "certs")
    sink_tls = f'[tls]\nmode = "files"\ncert = "{cert}"\nkey = "{key}"\n'
    sink_limits = "[limits]\nmax_connections_per_ip = 100\n"
    sink = make_server(tmp_path / "sink", ("smtp",), sink_tls + sink_limits, setup=sink_domain)
    with started(sink):
        relay = (
            f'[delivery]\nsmarthost = "127.0.0.1:{sink.ports["smtp"]}"\nsmarthost_ca_file = "{cert}"\n'
            'smarthost_tls = "starttls"\n'
        )
        sender = make_server(tmp_path / "sender", ("smtp",), relay, setup=queue_messages(markers))
        kills = 0
        with started(sender):
            for _ in range(trials):
                time.sleep(rng.uniform(0.05, 0.3))
                sender.kill()
                kills += 1
                assert integrity(sender.data_dir) == "ok", f"seed {SEED}"
                sender.start()
                if pending(sender.data_dir) == 0:
                    break
            assert wait_until(lambda: pending(sender.data_dir) == 0, timeout=120), sender.log()[-3000:]
            assert "status=bounced" not in sender.log() and "status=deferred" not in sender.log()
        received = markers_by_mailbox(sink.data_dir, "carol@example.net").get("INBOX", Counter())
    lost = [m for m in markers if received[m] == 0]
    assert not lost, f"seed {SEED}: never delivered: {lost[:10]}"
    assert set(received) == set(markers)
    duplicates = sum(n - 1 for n in received.values())
    # only a batch in flight at the moment of a kill can repeat; one per parallel slot at most
    assert duplicates <= kills * 10, f"seed {SEED}: {duplicates} duplicates after {kills} kills"
    assert integrity(sink.data_dir) == "ok"
    count("crash trials (outbound queue)", kills)
    count("messages delivered and checked (outbound queue)", len(markers))
    count("duplicates after a crash (outbound queue, allowed by design)", duplicates)


class DroppingPeer(Peer):
    """Accepts ``keep`` messages on a connection, then drops it without answering the next one."""

    def __init__(self, keep: int) -> None:
        super().__init__([])
        self.keep = keep

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        engine = SMTPServerEngine(ServerConfig(hostname="mx.remote.test", max_message_size=1_000_000))
        engine.greeting()
        body = bytearray()
        accepted = 0
        while not engine.closed:
            event = engine.next_event()
            if event is ev.NEED_DATA:
                writer.write(engine.data_to_send())
                await writer.drain()
                engine.receive_data(await reader.read(65536))
                continue
            match event:
                case ev.BodyChunk(data=data):
                    body += data
                case ev.BodyEnd():
                    self.received.append(bytes(body))
                    body.clear()
                    if accepted == self.keep and self.connections == 1:
                        writer.transport.abort()  # the peer dies before its 250
                        return
                    accepted += 1
                    engine.accept()
                case ev.Hello() | ev.MailFrom() | ev.RcptTo():
                    engine.accept()
                case ev.ConnectionClosed():
                    break
        writer.write(engine.data_to_send())
        writer.close()


def test_connection_lost_mid_session_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    """Several messages share one connection: those the peer acknowledged before the connection
    broke are recorded as delivered at once and never sent again; only the unanswered one is."""
    peer = DroppingPeer(keep=2)
    bodies = [f"Subject: m{i}\r\n\r\nmessage {i}\r\n".encode() for i in range(4)]

    async def scenario() -> None:
        port = await peer.start()
        cfg, store = setup(tmp_path, port)
        for body in bodies:
            envelope = QueueEnvelope("alice@example.org", [QueueRecipient("bob@remote.test")])
            await store.write(
                deliver, Delivery(io.BytesIO(body), len(body), int(time.time()), remote=envelope)
            )
        clock = [time.time() + 2]
        await runner_for(cfg, store, clock).drain()
        assert [s for s, _, _ in queue_state(tmp_path)] == ["pending", "pending"]
        clock[0] += 3600  # the retry
        await runner_for(cfg, store, clock).drain()
        await peer.stop()
        store.close()

    asyncio.run(scenario())
    assert peer.received[:2] == bodies[:2]
    assert sorted(peer.received) == sorted([*bodies, bodies[2]])  # only the unanswered one twice
    assert queue_state(tmp_path) == []
    count("connection-loss checks (outbound queue)")
