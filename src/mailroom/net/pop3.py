"""The POP3 session (RFC 1939): serves the account's INBOX through the sans-I/O engine.

The maildrop is a snapshot taken at login; deletions happen only in the UPDATE state (QUIT), in
one transaction, and IMAP sessions then see them expunged. One POP3 session per maildrop at a
time (RFC 1939 §8: exclusive-access lock; the second gets [IN-USE], RFC 2449 §8.1.1).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field

from mailroom import logs
from mailroom.config import Config
from mailroom.net.listeners import Connection, SessionHandler
from mailroom.net.sasl_exchange import Authenticated, Outcome, Rejected, SaslExchange, SendChallenge
from mailroom.net.tls import ServerTLS
from mailroom.policy.auth import Authenticator
from mailroom.store import mail
from mailroom.store.directory import Account
from mailroom.store.service import Store
from mailroom.wire import pop3

READ_SIZE = 64 * 1024
BODY_CHUNK = 256 * 1024
POP3_MECHANISMS = ("PLAIN", "SCRAM-SHA-256")


@dataclass
class POP3Context:
    cfg: Config
    store: Store
    tls: ServerTLS
    auth: Authenticator
    locked: set[int] = field(default_factory=set)  # account ids with a POP3 session open


@dataclass(frozen=True)
class DropMessage:
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
    messages = [DropMessage(m.uid, m.body_id, m.size) for m in mail.list_messages(conn, box.id)]
    entries = [pop3.DropEntry(m.size, uidl(box.uidvalidity, m.uid)) for m in messages]
    return box.id, messages, entries


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

    async def run(self) -> None:
        self.log.info(
            "connect from [%s]:%d tls=%s", self.conn.peer_ip, self.conn.peer_port, self.conn.tls_active
        )
        self.engine.greeting()
        try:
            await self._loop()
        finally:
            if self.account is not None:
                self.ctx.locked.discard(self.account.id)
            self.log.info("disconnect from [%s]", self.conn.peer_ip)

    async def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data:
            self.conn.writer.write(data)
            await self.conn.writer.drain()

    async def _loop(self) -> None:
        while True:
            event = self.engine.next_event()
            if event is pop3.NEED_DATA:
                await self._flush()
                try:
                    data = await asyncio.wait_for(
                        self.conn.reader.read(READ_SIZE), self.ctx.cfg.limits.pop3_timeout
                    )
                except TimeoutError:
                    self.conn.writer.write(b"-ERR [SYS/TEMP] autologout: idle for too long\r\n")
                    await self.conn.writer.drain()
                    return
                self.engine.receive_data(data)
                continue
            if isinstance(event, pop3.ConnectionClosed):
                await self._flush()
                return
            try:
                await self._handle(event)
            except (ConnectionError, TimeoutError):
                raise
            except Exception:
                self.log.exception("internal error handling %s", type(event).__name__)
                if self.engine.state is not pop3.State.UPDATE:
                    self.engine.reject("internal error, try again later", "SYS/TEMP")
                await self._flush()
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
                await self.conn.start_tls(self.ctx.tls.context, self.ctx.cfg.limits.tls_handshake_timeout)
                self.engine.tls_started()
            case pop3.Retrieve(index=index, top_lines=top_lines):
                await self._retrieve(self.drop[index], top_lines)
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

    async def _retrieve(self, message: DropMessage, top_lines: int | None) -> None:
        self.engine.begin_message()
        offset = 0
        while offset < message.size and self.engine.wants_more_message_data:
            chunk = await self.ctx.store.read(mail.read_chunk, message.body_id, offset, BODY_CHUNK)
            if not chunk:
                break
            offset += len(chunk)
            self.engine.message_data(chunk)
            await self._flush()  # stream: never more than one chunk in memory
        self.engine.end_message()
        if top_lines is None:
            self.retrieved.add(message.uid)

    async def _update(self, deleted: list[int]) -> None:
        assert self.account is not None
        started = time.monotonic()
        try:
            await self.ctx.store.write(apply_update, self.mailbox_id, deleted, sorted(self.retrieved))
        except Exception:
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
