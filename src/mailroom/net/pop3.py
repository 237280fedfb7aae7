"""The POP3 session (RFC 1939): serves the account's INBOX through the sans-I/O engine.

The maildrop is a snapshot taken at login; deletions happen only in the UPDATE state (QUIT), in
one transaction, and IMAP sessions then see them expunged. One POP3 session per maildrop at a
time (RFC 1939 §8: exclusive-access lock; the second gets [IN-USE], RFC 2449 §8.1.1).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mailroom import logs
from mailroom.config import Config
from mailroom.net.listeners import Connection, SessionHandler
from mailroom.net.sasl_exchange import Authenticated, Outcome, Rejected, SaslExchange, SendChallenge
from mailroom.net.tls import ServerTLS, describe
from mailroom.policy.auth import Authenticator
from mailroom.store import mail
from mailroom.store.database import is_storage_full
from mailroom.store.directory import Account
from mailroom.store.service import Store
from mailroom.wire import pop3

READ_SIZE = 64 * 1024
BODY_CHUNK = 256 * 1024
# Clients download in order, one RETR at a time (fetchmail: LIST n, RETR n, ...). While one
# message is on the wire the store already reads the following ones, many per reader-thread hop:
# a hop (submit, wake the thread, wake the loop) costs more than reading a small message.
READ_AHEAD_MAX = 64 * 1024  # only messages at most this big are read ahead (whole)
READ_AHEAD_COUNT = 64  # messages per read-ahead batch, at most
READ_AHEAD_BYTES = 256 * 1024  # octets per batch, at most (and the next batch starts below half)
POP3_MECHANISMS = ("PLAIN", "SCRAM-SHA-256")


@dataclass
class POP3Context:
    cfg: Config
    store: Store
    tls: ServerTLS
    auth: Authenticator
    locked: set[int] = field(default_factory=set)  # account ids with a POP3 session open


class DropMessage(NamedTuple):  # a tuple: made a thousand times per login
    uid: int
    body_id: int
    size: int


def uidl(uidvalidity: int, uid: int) -> str:
    """Stable and unique across sessions and restarts: the IMAP UIDVALIDITY and UID (Dovecot's
    default pop3_uidl_format %08Xu%08Xv, ours in the other order)."""
    return f"{uidvalidity:08x}{uid:08x}"


def load_drop(
    conn: sqlite3.Connection, account_id: int
) -> tuple[int, list[DropMessage], list[pop3.DropEntry]]:
    box = mail.inbox(conn, account_id)
    rows = mail.list_uid_body_size(conn, box.id)
    messages = list(map(DropMessage._make, rows))
    entries = [pop3.DropEntry(size, uidl(box.uidvalidity, uid)) for uid, _, size in rows]
    return box.id, messages, entries


def read_message_chunk(conn: sqlite3.Connection, body_id: int, offset: int, length: int) -> bytes | None:
    """One piece of a message for RETR/TOP; None when the body is gone (the snapshot taken at login
    still lists a message that an IMAP session has expunged since, and nothing else holds it)."""
    if conn.execute("SELECT 1 FROM bodies WHERE id = ?", (body_id,)).fetchone() is None:
        return None
    return mail.read_chunk(conn, body_id, offset, length)


def read_first_chunks(conn: sqlite3.Connection, body_ids: Sequence[int]) -> list[bytes | None]:
    """The first piece of several messages in one read transaction (the read-ahead batch)."""
    return [read_message_chunk(conn, body_id, 0, BODY_CHUNK) for body_id in body_ids]


def plan_read_ahead(drop: Sequence[DropMessage], start: int) -> range:
    """The messages to read ahead from ``start`` on: consecutive ones of at most READ_AHEAD_MAX
    octets, at most READ_AHEAD_COUNT of them and READ_AHEAD_BYTES in all (one always fits). Empty
    when ``start`` is a bigger message: that one is streamed when asked for."""
    end, total = start, 0
    while end < len(drop) and end - start < READ_AHEAD_COUNT:
        size = drop[end].size
        if size > READ_AHEAD_MAX or (end > start and total + size > READ_AHEAD_BYTES):
            break
        total += size
        end += 1
    return range(start, end)


def apply_update(conn: sqlite3.Connection, mailbox_id: int, deleted: list[int], seen: list[int]) -> None:
    mail.add_flags(conn, mailbox_id, seen, mail.FLAG_BITS["\\Seen"])
    mail.expunge(conn, mailbox_id, deleted)


class POP3Session:
    def __init__(self, ctx: POP3Context, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.log = logs.conn_logger(conn.kind.service, conn.conn_id)
        self.engine = pop3.POP3ServerEngine(
            pop3.POP3Config(
                tls_active=conn.kind.tls == "implicit",
                stls_available=conn.kind.tls == "starttls",
                sasl_mechanisms=POP3_MECHANISMS,
            )
        )
        self.sasl: SaslExchange | None = None
        self.account: Account | None = None
        self.mailbox_id = 0
        self.drop: list[DropMessage] = []
        self.retrieved: set[int] = set()  # UIDs sent whole by RETR: \Seen at QUIT, as Dovecot does
        # read ahead: first pieces ready by drop index (ascending), the batch being read, and the
        # first index neither ready nor being read
        self.ahead: deque[tuple[int, bytes | None]] = deque()
        self.ahead_bytes = 0
        self.ahead_end = 0
        self.batch: tuple[range, asyncio.Future[list[bytes | None]]] | None = None

    async def run(self) -> None:
        self.log.info(
            "connect from [%s]:%d tls=%s", self.conn.peer_ip, self.conn.peer_port, self.conn.tls_active
        )
        # Every answer is flushed as soon as it is complete and the client waits for it before
        # its next command: with Nagle's algorithm on, a reply's last segment waits for the ACK
        # of the one before, which the client delays (40 ms per RETR on Linux). asyncio only
        # disables Nagle itself on sockets created with proto=IPPROTO_TCP, not on ours.
        sock = self.conn.writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.engine.greeting()
        try:
            await self._loop()
        finally:
            self._cancel_read_ahead()
            if self.account is not None:
                self.ctx.locked.discard(self.account.id)
            self.log.info("disconnect from [%s]", self.conn.peer_ip)

    async def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data:
            self.conn.writer.write(data)
            await self._drain()

    async def _drain(self) -> None:
        writer = self.conn.writer
        if writer.transport.get_write_buffer_size() == 0:
            # All of it went to the kernel: drain() would return at once, and the transport
            # resumes writing synchronously when its buffer empties, so it cannot be paused.
            # Skipping it saves a timer per answer (two per message with fetchmail's LIST+RETR).
            return
        # A client that stops reading in the middle of a RETR must not hold the session (and the
        # maildrop lock) for ever: the output has to make progress within the idle timeout.
        # asyncio.timeout, not wait_for: wait_for runs drain() in a new task, which yields to the
        # event loop even when nothing is buffered; after "+OK Begin TLS negotiation" that lets the
        # client's ClientHello be read as plaintext and discarded by start_tls (fetchmail hung).
        timeout = self.ctx.cfg.limits.pop3_timeout
        try:
            async with asyncio.timeout(timeout):
                await writer.drain()
        except TimeoutError:
            self.log.info("client read nothing for %ss; closing", timeout)
            raise

    async def _loop(self) -> None:
        while True:
            event = self.engine.next_event()
            if event is pop3.NEED_DATA:
                await self._flush()
                timeout = self.ctx.cfg.limits.pop3_timeout
                try:
                    data = await self.conn.read(READ_SIZE, timeout)
                except TimeoutError:
                    self.log.info("timeout after %ss of silence", timeout)
                    self.conn.writer.write(b"-ERR [SYS/TEMP] autologout: idle for too long\r\n")
                    await self._drain()
                    return
                self.engine.receive_data(data)
                continue
            if isinstance(event, pop3.ConnectionClosed):
                await self._flush()
                return
            try:
                await self._handle(event)
            except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
                raise  # the peer went away or stalled: the listener ends the session quietly
            except Exception:
                self.log.exception("internal error handling %s", type(event).__name__)
                if self.engine.decision_pending:
                    self.engine.reject("internal error, try again later", "SYS/TEMP")
                    await self._flush()
                # else a multi-line answer is half sent (or UPDATE failed after its reply):
                # only closing the connection tells the client it is incomplete
                return

    async def _handle(self, event: pop3.Event | object) -> None:
        match event:
            case pop3.UserPass(username=username, password=password):
                account = await self.ctx.auth.check_password(
                    self.conn.kind.service, self.conn.peer_ip, username, password, self.log
                )
                await self._login(account)
            case pop3.AuthStart(mechanism=name, initial=initial):
                conn = self.conn
                self.sasl = SaslExchange.start_new(
                    name, POP3_MECHANISMS, self.ctx.auth, conn.kind.service, conn.peer_ip, self.log
                )
                if self.sasl is None:
                    self.engine.reject("unsupported mechanism")
                    return
                await self._sasl_outcome(await self.sasl.start(initial))
            case pop3.AuthResponse(data=data):
                assert self.sasl is not None
                await self._sasl_outcome(await self.sasl.step(data))
            case pop3.AuthCancelled():
                self.sasl = None
            case pop3.StartTLS():
                self.engine.accept()
                await self._flush()
                try:
                    await self.conn.start_tls(self.ctx.tls.context, self.ctx.cfg.limits.tls_handshake_timeout)
                except (ssl.SSLError, TimeoutError, ConnectionError) as exc:
                    # e.g. the client does not trust our certificate: its mistake or its policy,
                    # one line in the log, no traceback
                    self.log.info("STLS handshake failed: %s", str(exc) or type(exc).__name__)
                    raise ConnectionAbortedError("TLS handshake failed") from exc
                self.engine.tls_started()
                self.log.info("STLS: %s", describe(self.conn.writer.get_extra_info("ssl_object")))
            case pop3.Retrieve(index=index, top_lines=top_lines):
                await self._retrieve(index, top_lines)
            case pop3.Update(deleted=deleted):
                await self._update([self.drop[i].uid for i in deleted])
            case pop3.ProtocolViolation(message=message):
                self.log.info("protocol error: %s", message)
            case pop3.Quit():
                pass

    async def _sasl_outcome(self, outcome: Outcome) -> None:
        match outcome:
            case SendChallenge(data=data):
                self.engine.auth_challenge(data)
                return
            case Authenticated(account=account):
                await self._login(account)
            case Rejected():
                self.engine.reject("authentication failed", "AUTH")
        self.sasl = None

    async def _login(self, account: Account | None) -> None:
        if account is None:
            # RFC 3206 §4 [AUTH]: the same answer whether or not the account exists
            self.engine.reject("authentication failed", "AUTH")
            return
        if account.id in self.ctx.locked:
            self.log.info("maildrop of %s is in use", account.address)
            self.engine.reject("maildrop already locked by another session", "IN-USE")
            return
        self.ctx.locked.add(account.id)
        self.account = account
        self.mailbox_id, self.drop, entries = await self.ctx.store.read(load_drop, account.id)
        self.engine.login_succeeded(entries, username=account.address)
        self.log.info("login user=%s messages=%d", account.address, len(entries))

    def _start_batch(self, start: int) -> None:
        wanted = plan_read_ahead(self.drop, start)
        if not wanted:
            return
        future = asyncio.ensure_future(
            self.ctx.store.read(read_first_chunks, [self.drop[i].body_id for i in wanted])
        )
        # a read ahead that is never used must not log "exception was never retrieved"
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.batch = (wanted, future)
        self.ahead_end = wanted.stop

    def _cancel_read_ahead(self) -> None:
        if self.batch is not None:
            self.batch[1].cancel()
            self.batch = None
        self.ahead.clear()
        self.ahead_bytes = 0

    async def _first_chunk(self, index: int) -> bytes | None:
        """The first piece of message ``index`` (its whole text when small): from the read-ahead
        when the client goes in order, else read now; either way the read-ahead moves on."""
        if self.batch is not None and (self.batch[1].done() or index in self.batch[0]):
            wanted, future = self.batch
            self.batch = None
            try:
                results = await future
            except Exception:
                # read it again below, where a failure is reported like any RETR's
                self.log.exception("read-ahead of messages %d-%d failed", wanted.start + 1, wanted.stop)
                self.ahead_end = wanted.start
            else:
                for i, data in zip(wanted, results, strict=True):
                    self.ahead.append((i, data))
                    self.ahead_bytes += len(data) if data else 0
        ahead = self.ahead
        while ahead and ahead[0][0] < index:  # skipped (deleted, or not wanted)
            self.ahead_bytes -= len(ahead.popleft()[1] or b"")
        if ahead and ahead[0][0] == index:
            chunk = ahead.popleft()[1]
            self.ahead_bytes -= len(chunk or b"")
            self._read_ahead_from(index + 1)
            return chunk
        # not read ahead: a big message, a step back, a jump, or the first RETR
        self._cancel_read_ahead()
        reading = self.ctx.store.read(read_message_chunk, self.drop[index].body_id, 0, BODY_CHUNK)
        self.ahead_end = index + 1
        self._read_ahead_from(index + 1)  # on another reader thread, at the same time
        return await reading

    def _read_ahead_from(self, following: int) -> None:
        if self.batch is None and self.ahead_bytes < READ_AHEAD_BYTES // 2:
            self._start_batch(max(self.ahead_end, following))

    async def _retrieve(self, index: int, top_lines: int | None) -> None:
        number, message = index + 1, self.drop[index]
        # The first piece is read before "+OK": a message that vanished still gets a clean -ERR
        chunk = await self._first_chunk(index)
        if chunk is None:
            self.log.info("message %d (uid %d) was expunged by another session", number, message.uid)
            self.engine.reject(f"message {number} was removed by another session")
            return
        self.engine.begin_message()
        offset = len(chunk)
        self.engine.message_data(chunk)
        while chunk and offset < message.size and self.engine.wants_more_message_data:
            await self._flush()  # stream: never more than one chunk in memory
            chunk = await self.ctx.store.read(read_message_chunk, message.body_id, offset, BODY_CHUNK)
            if chunk is None:
                # gone in the middle: the answer cannot be completed, only cut off
                self.log.info("message %d (uid %d) was expunged while being sent", number, message.uid)
                raise ConnectionAbortedError(f"message {number} vanished while being sent")
            offset += len(chunk)
            self.engine.message_data(chunk)
        self.engine.end_message()
        # One write for the end of the answer (all of it for most messages), and nothing left
        # waiting when pipelined RETRs follow
        await self._flush()
        if top_lines is None:
            self.retrieved.add(message.uid)

    async def _update(self, deleted: list[int]) -> None:
        assert self.account is not None
        started = time.monotonic()
        try:
            await self.ctx.store.write(apply_update, self.mailbox_id, deleted, sorted(self.retrieved))
        except Exception as exc:
            if is_storage_full(exc):
                # the environment's fault (even a DELETE needs WAL space): one line, no traceback
                self.log.error("update failed; nothing was deleted: %s", exc)
            else:
                self.log.exception("update failed; nothing was deleted")
            self.engine.reject("deleting messages failed, nothing was removed", "SYS/TEMP")
            return
        self.ctx.store.publish([self.account.id])
        self.log.info(
            "update user=%s deleted=%d delay=%.3f",
            self.account.address,
            len(deleted),
            time.monotonic() - started,
        )
        self.engine.accept()


def pop3_handler(ctx: POP3Context) -> SessionHandler:
    async def handle(conn: Connection) -> None:
        await POP3Session(ctx, conn).run()

    return handle
