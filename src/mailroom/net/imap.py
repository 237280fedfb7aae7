"""The IMAP session (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1): drives the sans-I/O engine over a
connection and answers each command from the store.

One command at a time (the engine pauses until its tagged response). Exceptions become replies
in one place (``_dispatch``): a client's mistake was already answered by the engine; our own
fault is logged with a traceback and answered ``NO [SERVERBUG]``, and the session goes on.

Changes made by other sessions and by delivery reach a selected session through the store's
change feed (published after commit): they are announced before the tagged response of the
next command (EXPUNGE never during FETCH, STORE or SEARCH, RFC 9051 §7.5.1) and at once during
IDLE. Nothing here holds a transaction while writing to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from mailroom import logs
from mailroom.config import Config
from mailroom.imap import flags as imap_flags
from mailroom.imap import listing
from mailroom.imap.search import (
    SearchContext,
    SearchOutcome,
    evaluate,
    needs_content,
    required_text,
    uses_modseq,
)
from mailroom.imap.view import InvalidSequence, MailboxView
from mailroom.net.imap_base import CommandFailed, Disconnect, Preformatted
from mailroom.net.imap_fetch import fetch
from mailroom.net.listeners import Connection, SessionHandler
from mailroom.net.sasl_exchange import Authenticated, Outcome, Rejected, SaslExchange, SendChallenge
from mailroom.net.tls import ServerTLS, describe
from mailroom.policy.auth import Authenticator
from mailroom.store import imap_messages as im
from mailroom.store import mail, mailboxes
from mailroom.store.database import is_storage_full, storage_full_error
from mailroom.store.directory import Account
from mailroom.store.mailboxes import MailboxError
from mailroom.store.service import Store
from mailroom.store.spool import SpoolFile
from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.imap import commands as c
from mailroom.wire.imap.engine import IMAPServerConfig, IMAPServerEngine
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendBegin,
    AppendChunk,
    AppendEnd,
    AuthAborted,
    AuthResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ProtocolViolation,
)
from mailroom.wire.imap.responses import (
    CapabilityResponse,
    Enabled,
    ESearch,
    Exists,
    ExpungeResponse,
    FetchResponse,
    FetchValue,
    IdResponse,
    ListResponse,
    NamespaceResponse,
    Recent,
    ResponseCode,
    SearchResponse,
    StatusResponse,
    Tagged,
    Untagged,
)
from mailroom.wire.imap.sequence import SequenceSet

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")
READ_SIZE = 256 * 1024
MECHANISMS = ("PLAIN", "SCRAM-SHA-256")
# What this session implements on top of IMAP4rev1 (the engine parses more: QRESYNC is left out)
EXTENSIONS = (
    "IMAP4rev2",
    "SASL-IR",
    "ENABLE",
    "ID",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "ESEARCH",
    "SEARCHRES",
    "WITHIN",
    "CONDSTORE",
    "BINARY",
    "MULTIAPPEND",
    "UTF8=ACCEPT",
    "STATUS=SIZE",
)
FLUSH_AT = 64 * 1024
PRE_AUTH_TIMEOUT = 60.0  # not logged in yet: no reason to wait half an hour
_SEEN_BIT = imap_flags.SEEN


@dataclass
class IMAPContext:
    """What every IMAP session shares."""

    cfg: Config
    store: Store
    tls: ServerTLS
    auth: Authenticator
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _AppendMessage:
    spool: SpoolFile
    flags: int
    keywords: str
    date: int
    tz: int
    normalize: bool
    prev_cr: bool = False


_MAILBOX_CODES = {
    "NONEXISTENT": ResponseCode.NONEXISTENT,
    "ALREADYEXISTS": ResponseCode.ALREADYEXISTS,
    "CANNOT": ResponseCode.CANNOT,
    "USEATTR": ResponseCode.USEATTR,
    "LIMIT": ResponseCode.LIMIT,
}


# RFC 5530 §3: OVERQUOTA, "the user would be over quota after the operation"; Dovecot answers a
# full disk with exactly this (its MAIL_ERRSTR_NO_SPACE), for APPEND, COPY, MOVE and any other write
_NO_SPACE = ("Not enough disk space", ResponseCode.OVERQUOTA)


def _event_name(event: Event) -> str:
    if isinstance(event, c.Command):
        return event.name
    return "APPEND" if isinstance(event, AppendEnd) else type(event).__name__


def mailbox_failure(exc: MailboxError) -> CommandFailed:
    return CommandFailed(exc.message, _MAILBOX_CODES.get(exc.code))


def normalize_newlines(data: bytes, prev_cr: bool) -> bytes:
    """Bare LF -> CRLF (RFC 9051 §2.3.4 messages are CRLF text; Dovecot serves them so), across
    chunk boundaries: ``prev_cr`` says the previous chunk ended in CR."""
    if not data:
        return data
    if prev_cr and data[:1] == b"\n":
        return b"\n" + data[1:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class IMAPSession:
    def __init__(self, ctx: IMAPContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.store = ctx.store
        self.log = logs.conn_logger(conn.kind.service, conn.conn_id)
        self.engine = IMAPServerEngine(
            IMAPServerConfig(
                tls_active=conn.kind.tls == "implicit",
                starttls_available=conn.kind.tls == "starttls",
                login_requires_tls=True,
                auth_mechanisms=MECHANISMS,
                append_limit=ctx.cfg.limits.message_size,
                extensions=EXTENSIONS,
            )
        )
        self.account: Account | None = None
        self.view: MailboxView | None = None
        self.changed = asyncio.Event()
        self.sasl: SaslExchange | None = None
        self.pending_tag: str | None = None
        self.idling = False
        self.appending: list[_AppendMessage] = []
        self.read_task: asyncio.Task[bytes] | None = None
        self.append_mailbox = ""
        self.append_error: CommandFailed | None = None
        self.outbuf = bytearray()
        self.commands = 0

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.log.info(
            "connect from [%s]:%d tls=%s", self.conn.peer_ip, self.conn.peer_port, self.conn.tls_active
        )
        sock = self.conn.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.engine.greeting("mailroom ready")
        try:
            await self._loop()
        except Disconnect:
            await self._flush()
        finally:
            if self.read_task is not None:
                self.read_task.cancel()
            self._discard_appends()
            if self.account is not None:
                self.store.unsubscribe(self.account.id, self._on_change)
            self.log.info("disconnect from [%s] commands=%d", self.conn.peer_ip, self.commands)

    async def _loop(self) -> None:
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA:
                await self._flush()
                data = await self._receive()
                if data is None:
                    return
                self.engine.receive_data(data)
                continue
            if event is PAUSED:  # pragma: no cover - every command is answered before we read on
                raise LocalProtocolError("engine paused with no command pending")
            if isinstance(event, ConnectionClosed):
                await self._flush()
                return
            await self._dispatch(event)

    async def _flush(self) -> None:
        self.outbuf += self.engine.data_to_send()
        if self.outbuf:
            self.conn.writer.write(bytes(self.outbuf))
            self.outbuf.clear()
            await self.conn.writer.drain()

    async def _flush_some(self) -> None:
        """Mid-command: write out what has piled up, but not in small pieces (many small
        segments cost the client round trips)."""
        self.outbuf += self.engine.data_to_send()
        if len(self.outbuf) >= FLUSH_AT:
            await self._flush()

    def _timeout(self) -> float:
        idle = self.ctx.cfg.limits.imap_idle_timeout
        return idle if self.account is not None else min(idle, PRE_AUTH_TIMEOUT)

    async def _receive(self) -> bytes | None:
        """The client's next bytes; during IDLE, changes are announced while waiting. None: the
        autologout timer ran out (BYE sent)."""
        if not self.idling and self.read_task is None:
            # the common case, between commands: only the client to wait for (no task to make,
            # no wait set; a read of what the client pipelined returns at once)
            self.conn.idle = True
            try:
                async with asyncio.timeout(self._timeout()):
                    return await self.conn.reader.read(READ_SIZE)
            except TimeoutError:
                await self._autologout()
                return None
            finally:
                self.conn.idle = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout()
        while True:
            if self.read_task is None:
                self.read_task = asyncio.ensure_future(self.conn.reader.read(READ_SIZE))
            waits: set[asyncio.Future[object]] = {self.read_task}  # type: ignore[arg-type]
            change_wait: asyncio.Task[bool] | None = None
            if self.idling:
                if self.changed.is_set():
                    await self._announce(force=False)
                    await self._flush()
                    continue
                change_wait = asyncio.ensure_future(self.changed.wait())
                waits.add(change_wait)  # type: ignore[arg-type]
            remaining = deadline - loop.time()
            self.conn.idle = True
            try:
                done, _ = await asyncio.wait(
                    waits, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                self.conn.idle = False
                if change_wait is not None:
                    change_wait.cancel()
            if self.read_task in done:
                task, self.read_task = self.read_task, None
                return task.result()
            if not done:
                await self._autologout()
                return None

    async def _autologout(self) -> None:
        self.log.info("autologout after %.0fs of inactivity", self._timeout())
        self.engine.send(Untagged("BYE", "Autologout; idle for too long"))
        await self._flush()

    def _on_change(self, account_id: int) -> None:
        self.changed.set()

    # --- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, c.Command) or (isinstance(event, AppendEnd) and event.last):
            self.pending_tag = event.tag
            self.commands += 1
        try:
            await self._handle(event)
        except CommandFailed as exc:
            self._discard_appends()
            if self.pending_tag is not None:
                self._tagged(exc.status, exc.text, exc.code)
        except InvalidSequence as exc:
            if self.pending_tag is not None:
                self._tagged("BAD", f"Invalid message sequence number: {exc}")
        except Disconnect:
            raise
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            raise
        except LocalProtocolError:
            raise
        except Exception as exc:
            self._discard_appends()
            full = storage_full_error(exc)
            if full is not None:
                # the environment's fault, not ours: one line, no traceback; the store rolled the
                # write back, so nothing was half done and the session goes on
                self.log.error("%s failed: not enough disk space: %s", _event_name(event), full)
                if self.pending_tag is not None:
                    self._tagged("NO", *_NO_SPACE)
                return
            self.log.exception("internal error handling %s", type(event).__name__)
            if self.pending_tag is not None:
                self._tagged("NO", "Internal error, try again later", ResponseCode.SERVERBUG)

    def _tagged(self, status: str, text: str, code: ResponseCode | None = None) -> None:
        tag = self.pending_tag
        assert tag is not None
        self.pending_tag = None
        self.engine.send(Tagged(tag, status, text, code))  # type: ignore[arg-type]

    def _ok(self, text: str, code: ResponseCode | None = None) -> None:
        self._tagged("OK", text, code)

    async def _handle(self, event: Event) -> None:
        match event:
            case AppendBegin():
                self._append_begin(event)
            case AppendChunk(data=data):
                self._append_chunk(data)
            case AppendEnd(last=last):
                if last:
                    await self._append_end()
            case AppendAborted(reason=reason):
                self.log.info("APPEND aborted: %s", reason)
                self._discard_appends()
                self.append_error = None
            case IdleDone(ok=ok):
                self.idling = False
                if ok:
                    self.pending_tag = event.tag
                    await self._announce(force=False)
                    self._ok("IDLE terminated")
            case AuthResponse(data=data):
                self.pending_tag = event.tag
                assert self.sasl is not None
                await self._sasl_outcome(await self.sasl.step(data))
            case AuthAborted():
                self.sasl = None
            case ProtocolViolation(message=message):
                self.log.info("protocol error: %s", message)
            case c.Command():
                await self._command(event)

    async def _command(self, cmd: c.Command) -> None:
        self.log.debug("command %s", cmd.name)
        match cmd:
            case c.Capability():
                self.engine.send(CapabilityResponse(self.engine.capabilities()))
                self._ok("Pre-login capabilities listed" if self.account is None else "Capability completed")
            case c.Noop():
                await self._announce(force=True)
                self._ok("NOOP completed")
            case c.Check():
                await self._announce(force=True)
                self._ok("CHECK completed")
            case c.Logout():
                self.engine.send(Untagged("BYE", "Logging out"))
                self._ok("LOGOUT completed")
                self.engine.logout()
            case c.StartTLS():
                await self._starttls()
            case c.Login(username=username, password=password):
                account = await self.ctx.auth.check_password(
                    self.conn.kind.service, self.conn.peer_ip, username, password, self.log
                )
                self._login_result(account, "LOGIN")
            case c.Authenticate(mechanism=mechanism, initial_response=initial):
                await self._authenticate(mechanism, initial)
            case c.Enable(capabilities=names):
                self.engine.send(Enabled(self.engine.enable(names)))
                self._ok("ENABLE completed")
            case c.Id(parameters=params):
                if params:
                    shown = " ".join(f"{k}={v}" for k, v in params[:8] if v is not None)
                    self.log.info("client id %s", shown[:300])
                self.engine.send(IdResponse((("name", "mailroom"), ("vendor", "mailroom"))))
                self._ok("ID completed")
            case c.Namespace():
                self.engine.send(NamespaceResponse())
                self._ok("NAMESPACE completed")
            case c.SelectCommand():
                await self._select(cmd)
            case c.Create(mailbox=name, special_use=use):
                await self._write_mailbox(mailboxes.create_mailbox, self._account_id(), name, use)
                self._ok("CREATE completed")
            case c.Delete(mailbox=name):
                await self._delete(name)
            case c.Rename(mailbox=old, new_name=new):
                await self._write_mailbox(mailboxes.rename_mailbox, self._account_id(), old, new)
                self.store.publish([self._account_id()])
                await self._announce(force=True)
                self._ok("RENAME completed")
            case c.Subscribe(mailbox=name):
                await self._write_mailbox(mailboxes.subscribe, self._account_id(), name)
                self._ok("SUBSCRIBE completed")
            case c.Unsubscribe(mailbox=name):
                await self._write_mailbox(mailboxes.unsubscribe, self._account_id(), name)
                self._ok("UNSUBSCRIBE completed")
            case c.List():
                await self._list(cmd)
            case c.Lsub(reference=reference, pattern=pattern):
                await self._lsub(reference, pattern)
            case c.Status(mailbox=name, items=items):
                await self._status(name, items)
            case c.Idle():
                await self._announce(force=True)
                self.engine.accept_idle()
                self.pending_tag = None
                self.idling = True
            case c.Close():
                await self._close(expunge=True)
                self._ok("CLOSE completed")
            case c.Unselect():
                await self._close(expunge=False)
                self._ok("UNSELECT completed")
            case c.Expunge():
                await self._expunge(cmd)
            case c.Search():
                await self._search(cmd)
            case c.Fetch():
                await fetch(self, cmd)
                await self._announce(force=False, expunge=cmd.uid)
                self._ok("FETCH completed")
            case c.Store():
                await self._store(cmd)
            case c.Copy():
                await self._copy(cmd.uid, cmd.sequence, cmd.mailbox, move=False)
            case c.Move():
                await self._copy(cmd.uid, cmd.sequence, cmd.mailbox, move=True)
            case _:
                raise CommandFailed(f"{cmd.name} is not supported", ResponseCode.CANNOT)

    def _account_id(self) -> int:
        assert self.account is not None
        return self.account.id

    # --- authentication -----------------------------------------------------------------------

    async def _starttls(self) -> None:
        self._ok("Begin TLS negotiation now")
        await self._flush()
        await self.conn.start_tls(self.ctx.tls.context, self.ctx.cfg.limits.tls_handshake_timeout)
        self.engine.tls_started()
        self.log.info("STARTTLS: %s", describe(self.conn.writer.get_extra_info("ssl_object")))

    async def _authenticate(self, mechanism: str, initial: bytes | None) -> None:
        conn = self.conn
        self.sasl = SaslExchange.start_new(
            mechanism, MECHANISMS, self.ctx.auth, conn.kind.service, conn.peer_ip, self.log
        )
        if self.sasl is None:
            raise CommandFailed("Unsupported authentication mechanism", ResponseCode.CANNOT)
        await self._sasl_outcome(await self.sasl.start(initial))

    async def _sasl_outcome(self, outcome: Outcome) -> None:
        assert self.sasl is not None
        match outcome:
            case SendChallenge(data=data):
                self.engine.auth_challenge(data)
                self.pending_tag = None
                return
            case Authenticated(account=account):
                self._login_result(account, f"AUTHENTICATE {self.sasl.name}")
            case Rejected():
                self._login_result(None, "AUTHENTICATE")
        self.sasl = None

    def _login_result(self, account: Account | None, how: str) -> None:
        if account is None:
            # RFC 5530: the same answer whether or not the account exists
            raise CommandFailed("Authentication failed", ResponseCode.AUTHENTICATIONFAILED)
        self.account = account
        self.engine.logged_in()
        self.store.subscribe(account.id, self._on_change)
        self.log.info("login user=%s method=%s", account.address, how.split()[0].lower())
        self._ok("Logged in", ResponseCode.capability(self.engine.capabilities()))

    # --- mailboxes ----------------------------------------------------------------------------

    async def _write_mailbox(self, fn: object, *args: object) -> object:
        try:
            return await self.store.write(fn, *args)  # type: ignore[arg-type]
        except MailboxError as exc:
            raise mailbox_failure(exc) from None

    async def _read_cached(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(conn, *args, cached_only=True)`` right here on the event loop's thread when it
        can answer from the mailbox index cache with a few indexed rows (the hop to a reader
        thread and back costs several times more); else ``fn`` on a reader thread."""
        try:
            return self.store.read_now(fn, *args, cached_only=True)
        except im.NotCached:
            return await self.store.read(fn, *args)

    async def _mailbox_id(self, name: str) -> int | None:
        return await self.store.read(im.mailbox_id_by_name, self._account_id(), name)

    async def _delete(self, name: str) -> None:
        mailbox_id = await self._mailbox_id(name)
        if self.view is not None and mailbox_id == self.view.mailbox_id:
            raise CommandFailed("Cannot delete the selected mailbox", ResponseCode.INUSE)
        await self._write_mailbox(mailboxes.delete_mailbox, self._account_id(), name)
        self.store.publish([self._account_id()])
        self._ok("DELETE completed")

    async def _select(self, cmd: c.SelectCommand) -> None:
        if self.view is not None:
            # RFC 9051 §6.3.2: selecting another mailbox closes the current one (no expunge)
            self.view = None
            self.engine.unselected()
            self.engine.send(Untagged("OK", "Previous mailbox closed", ResponseCode.CLOSED))
        if cmd.condstore:
            self.engine.enable(["CONDSTORE"])
        # one read for the whole snapshot (it says whether \Recent is to claim); a change
        # committed from here on is announced after the SELECT
        self.changed.clear()
        snap = await self._read_cached(im.select_snapshot, self._account_id(), cmd.mailbox)
        if snap is None:
            raise CommandFailed("Mailbox does not exist", ResponseCode.NONEXISTENT)
        read_only = cmd.read_only
        claim = (snap.uidnext, snap.uidnext)
        if not read_only and snap.recent_uid < snap.uidnext:
            # RFC 3501 §2.3.2 \Recent goes to one session. The claim may reach past the snapshot:
            # those newer UIDs are this session's when _announce brings them (recent_claim).
            try:
                claim = await self.store.write(im.claim_all_recent, snap.mailbox_id)
            except Exception as exc:
                if not is_storage_full(exc):
                    raise
                # a full disk must not stop reading mail: nothing claimed, nothing shown as \Recent
                self.log.error("SELECT: \\Recent not claimed: not enough disk space: %s", exc)
        first, upto = claim
        recent = [u for u in snap.uids if first <= u < upto] if first < upto else []
        view = MailboxView(
            snap.mailbox_id,
            snap.name,
            snap.uidvalidity,
            snap.uids,
            snap.uidnext,
            snap.highestmodseq,
            read_only,
            recent,
        )
        view.recent_claim = claim
        self.engine.send(Preformatted(_select_data(snap, view, "IMAP4rev2" in self.engine.enabled)))
        self.view = view
        self.engine.selected(read_only)
        self.log.debug("select mailbox=%s exists=%d", snap.name, view.exists)
        if read_only:
            self._ok("EXAMINE completed", ResponseCode.READ_ONLY)
        else:
            self._ok("SELECT completed", ResponseCode.READ_WRITE)

    async def _list(self, cmd: c.List) -> None:
        patterns = cmd.patterns
        if not cmd.extended and len(patterns) == 1 and patterns[0] == "":
            # RFC 9051 §6.3.9: the hierarchy delimiter and the root of the reference
            root = cmd.reference.split("/")[0] + "/" if "/" in cmd.reference else ""
            self.engine.send(ListResponse(root, "/", ("\\Noselect",)))
            self._ok("LIST completed")
            return
        boxes, subscribed = await self.store.read(mailboxes.list_entries, self._account_id())
        items = listing.list_mailboxes(
            [(b.name, b.special_use) for b in boxes],
            subscribed,
            cmd.reference,
            patterns,
            cmd.select_options,
            cmd.return_options,
            cmd.extended,
        )
        ids = {b.name: b.id for b in boxes}
        statuses = {}
        if "STATUS" in cmd.return_options and cmd.status_items:
            wanted = [ids[i.name] for i in items if i.exists and i.name in ids]
            statuses = await self.store.read(mailboxes.mailbox_statuses, wanted)
        for item in items:
            self.engine.send(ListResponse(item.name, "/", tuple(item.attributes), tuple(item.child_info)))
            if item.exists and item.name in ids and ids[item.name] in statuses:
                status = statuses[ids[item.name]]
                self.engine.send(StatusResponse(item.name, self._status_items(status, cmd.status_items)))
        self._ok("LIST completed")

    async def _lsub(self, reference: str, pattern: str) -> None:
        boxes, subscribed = await self.store.read(mailboxes.list_entries, self._account_id())
        for item in listing.lsub(subscribed, {b.name for b in boxes}, reference, pattern):
            self.engine.send(ListResponse(item.name, "/", tuple(item.attributes), command="LSUB"))
        self._ok("LSUB completed")

    def _status_items(self, st: mailboxes.MailboxStatus, items: tuple[str, ...]) -> list[tuple[str, int]]:
        values = {
            "MESSAGES": st.messages,
            "UIDNEXT": st.uidnext,
            "UIDVALIDITY": st.uidvalidity,
            "UNSEEN": st.unseen,
            "DELETED": st.deleted,
            "SIZE": st.size,
            "RECENT": st.recent,
            "HIGHESTMODSEQ": st.highestmodseq,
            "APPENDLIMIT": self.engine.append_limit,
        }
        return [(item, values[item]) for item in items if item in values]

    async def _status(self, name: str, items: tuple[str, ...]) -> None:
        mailbox_id = await self._mailbox_id(name)
        status = None if mailbox_id is None else await self.store.read(mailboxes.mailbox_status, mailbox_id)
        if status is None:
            raise CommandFailed("Mailbox does not exist", ResponseCode.NONEXISTENT)
        if "HIGHESTMODSEQ" in items:
            self.engine.enable(["CONDSTORE"])  # RFC 7162 §3.1: a CONDSTORE-enabling command
        self.engine.send(StatusResponse(name, self._status_items(status, items)))
        await self._announce(force=False)
        self._ok("STATUS completed")

    # --- APPEND -------------------------------------------------------------------------------

    def _append_begin(self, event: AppendBegin) -> None:
        bits, keywords = imap_flags.split_flags(event.flags)
        if event.date is not None:
            date = event.date if event.date.tzinfo else event.date.replace(tzinfo=_dt.UTC)
            offset = date.utcoffset() or _dt.timedelta(0)
            ts, tz = int(date.timestamp()), int(offset.total_seconds() // 60)
        else:
            ts, tz = int(time.time()), 0
        self.append_mailbox = event.mailbox
        if self.append_error is not None:
            return
        try:
            spool = SpoolFile(self.store.data_dir / "spool")
        except OSError as exc:
            self._append_failed(exc)
            return
        self.appending.append(
            _AppendMessage(spool, bits, " ".join(keywords), ts, tz, normalize=not event.binary)
        )

    def _append_chunk(self, data: bytes) -> None:
        if self.append_error is not None:
            return  # keep reading to the end of the command, then say NO
        msg = self.appending[-1]
        try:
            if msg.normalize:
                out = normalize_newlines(data, msg.prev_cr)
                msg.prev_cr = data.endswith(b"\r")
                msg.spool.write(out)
            else:
                msg.spool.write(data)
        except OSError as exc:
            self._append_failed(exc)

    def _append_failed(self, exc: OSError) -> None:
        self._discard_appends()
        if is_storage_full(exc):
            self.log.error("APPEND failed: not enough disk space: spool write: %s", exc)
            self.append_error = CommandFailed(*_NO_SPACE)
        else:
            self.log.error("APPEND spool write failed: %s", exc)
            self.append_error = CommandFailed(
                "Cannot store the message now, try again later", ResponseCode.UNAVAILABLE
            )

    def _discard_appends(self) -> None:
        for msg in self.appending:
            msg.spool.close()
        self.appending.clear()

    async def _append_end(self) -> None:
        messages, self.appending = self.appending, []
        failure, self.append_error = self.append_error, None
        try:
            if failure is not None:
                raise failure
            if not messages:  # pragma: no cover - every APPEND brings at least one message
                raise CommandFailed("No message")
            if any(m.spool.size == 0 for m in messages):
                raise CommandFailed("Cannot store an empty message")
            if any(m.spool.size > self.engine.append_limit for m in messages):
                raise CommandFailed("Message too large", ResponseCode.TOOBIG)
            # the mailbox name came with AppendBegin; the engine keeps it per command
            name = self.append_mailbox
            mailbox_id = await self._mailbox_id(name)
            if mailbox_id is None:
                raise CommandFailed("Mailbox does not exist", ResponseCode.TRYCREATE)
            items = [
                im.AppendItem(m.spool.reader(), m.spool.size, m.flags, m.keywords, m.date, m.tz)
                for m in messages
            ]
            result = await self.store.write(im.append_messages, mailbox_id, items)
        finally:
            for m in messages:
                m.spool.close()
        self.store.publish([self._account_id()])
        uids = [dst for _src, dst in result.pairs]
        await self._announce(force=False)
        self._ok("APPEND completed", ResponseCode.appenduid(result.uidvalidity, uids))

    # --- selected state -----------------------------------------------------------------------

    def _selected(self) -> MailboxView:
        assert self.view is not None
        return self.view

    def _require_writable(self) -> MailboxView:
        view = self._selected()
        if view.read_only:
            raise CommandFailed("Mailbox is read-only", ResponseCode.READ_ONLY)
        return view

    async def _announce(self, force: bool, expunge: bool = True) -> None:
        """Tell the client about changes to the selected mailbox (RFC 9051 §5.2, §7.5)."""
        view = self.view
        if view is None:
            self.changed.clear()
            return
        if not force and not self.changed.is_set():
            return
        if not expunge:
            return  # keep the flag: EXPUNGE must wait for a command that allows it
        self.changed.clear()
        changes = await self.store.read(im.changes_since, view.mailbox_id, view.modseq, view.uidnext)
        if changes is None or changes.uidvalidity != view.uidvalidity:
            self.engine.send(Untagged("BYE", "Selected mailbox was deleted, have to disconnect"))
            self.engine.logout()
            raise Disconnect()
        for seq in view.expunge(changes.expunged):
            self.engine.send(ExpungeResponse(seq))
        rev2 = "IMAP4rev2" in self.engine.enabled
        condstore = "CONDSTORE" in self.engine.enabled
        if changes.new:
            new_uids = [r.uid for r in changes.new]
            view.add(new_uids)
            lo, hi = view.recent_claim
            view.recent.update(u for u in new_uids if lo <= u < hi)  # claimed at SELECT already
            if not view.read_only and changes.recent_uid <= new_uids[-1]:
                try:
                    first = await self.store.write(im.claim_recent, view.mailbox_id, new_uids[-1] + 1)
                except Exception as exc:
                    if not is_storage_full(exc):
                        raise
                    # the view already counts the new messages: the EXISTS below must go out
                    self.log.error("\\Recent not claimed: not enough disk space: %s", exc)
                    first = new_uids[-1] + 1
                view.recent.update(u for u in new_uids if u >= first)
            self.engine.send(Exists(view.exists))
            if not rev2:
                self.engine.send(Recent(len(view.recent)))
        for row in changes.changed:
            changed_seq = view.seq_of(row.uid)
            if changed_seq is None:
                continue
            items: list[tuple[str | bytes, FetchValue]] = [
                ("UID", row.uid),
                ("FLAGS", imap_flags.flag_names(row.flags, row.keywords, row.uid in view.recent)),
            ]
            if condstore:
                items.append(("MODSEQ", row.modseq))
            self.engine.send(FetchResponse(changed_seq, items))
        view.modseq = max(view.modseq, changes.highestmodseq)

    def _own_change(self, before: int, after: int) -> None:
        """After a write of ours: if nobody else changed the mailbox in between, the client has
        seen everything up to ``after`` through our own responses."""
        view = self.view
        if view is not None and view.modseq == before:
            view.modseq = after

    async def _close(self, expunge: bool) -> None:
        view = self._selected()
        if expunge and not view.read_only:
            removed, _before, _after = await self.store.write(im.expunge_deleted, view.mailbox_id, None)
            if removed:
                self.store.publish([self._account_id()])
        self.view = None
        self.engine.unselected()

    async def _expunge(self, cmd: c.Expunge) -> None:
        view = self._require_writable()
        ranges = None
        if cmd.uid and cmd.sequence is not None:
            ranges = view.uid_ranges(view.select_uids(cmd.sequence))
            if not ranges:
                await self._announce(force=False)
                self._ok("UID EXPUNGE completed")
                return
        removed, before, after = await self.store.write(im.expunge_deleted, view.mailbox_id, ranges)
        for seq in view.expunge(removed):
            self.engine.send(ExpungeResponse(seq))
        self._own_change(before, after)
        if removed:
            self.store.publish([self._account_id()])
        await self._announce(force=False)
        self._ok("EXPUNGE completed")

    async def _search(self, cmd: c.Search) -> None:
        view = self._selected()
        if uses_modseq(cmd.criteria):
            self.engine.enable(["CONDSTORE"])
        outcome = await self._run_search(cmd.criteria)
        numbers = outcome.uids if cmd.uid else outcome.seqs
        options = cmd.return_options
        rev2 = "IMAP4rev2" in self.engine.enabled
        if options is None and rev2:
            options = ("ALL",)
        modseq = outcome.max_modseq if uses_modseq(cmd.criteria) and outcome.uids else None
        if options is None:
            self.engine.send(SearchResponse(numbers, modseq))
        else:
            if "SAVE" in options:
                view.saved = list(outcome.uids)
            shown = [o for o in options if o != "SAVE"]
            if shown:
                self.engine.send(
                    ESearch(
                        tag=cmd.tag,
                        uid=cmd.uid,
                        min=min(numbers) if "MIN" in shown and numbers else None,
                        max=max(numbers) if "MAX" in shown and numbers else None,
                        count=len(numbers) if "COUNT" in shown else None,
                        all=SequenceSet.from_numbers(numbers) if "ALL" in shown and numbers else None,
                        modseq=modseq,
                    )
                )
        await self._announce(force=False, expunge=cmd.uid)
        self._ok("SEARCH completed")

    async def _run_search(self, criteria: c.SearchKey) -> SearchOutcome:
        view = self._selected()
        if not view.uids:
            return SearchOutcome()
        ctx = SearchContext(view.uids, set(view.recent), list(view.saved), time.time())
        headers, bodies = needs_content(criteria)
        ranges = [(view.uids[0], view.uids[-1])]
        outcome = await self.store.read(_search_job, view.mailbox_id, ranges, criteria, ctx, headers, bodies)
        if outcome.new_cache:
            await self.store.write(
                im.save_cache,
                [(b, e.bodystructure, e.body, e.envelope, e.parts) for b, e in outcome.new_cache],
            )
        return outcome

    async def _store(self, cmd: c.Store) -> None:
        view = self._require_writable()
        selection = view.select(cmd.sequence, cmd.uid)
        if cmd.unchanged_since is not None:
            self.engine.enable(["CONDSTORE"])
        bits, keywords = imap_flags.split_flags(cmd.flags)
        result = await self.store.write(
            im.store_flags,
            view.mailbox_id,
            view.uid_ranges(selection),
            cmd.mode,
            bits,
            keywords,
            cmd.unchanged_since,
        )
        self._own_change(result.before, result.after)
        if result.changed:
            self.store.publish([self._account_id()])
        condstore = "CONDSTORE" in self.engine.enabled
        modified = set(result.modified)
        for row in result.rows:
            if row.uid in modified:
                continue
            seq = view.seq_of(row.uid)
            if seq is None:
                continue
            if cmd.silent and not (condstore and row.uid in result.changed):
                continue
            items: list[tuple[str | bytes, FetchValue]] = []
            if cmd.uid:
                items.append(("UID", row.uid))
            if not cmd.silent:
                items.append(
                    ("FLAGS", imap_flags.flag_names(row.flags, row.keywords, row.uid in view.recent))
                )
            if condstore:
                items.append(("MODSEQ", row.modseq))
            self.engine.send(FetchResponse(seq, items))
        await self._announce(force=False, expunge=cmd.uid)
        if modified:
            numbers = sorted(modified) if cmd.uid else sorted(s for u in modified if (s := view.seq_of(u)))
            self._ok("Conditional STORE failed", ResponseCode.modified(numbers))
        else:
            self._ok("STORE completed")

    async def _copy(self, uid: bool, sequence: SequenceSet, name: str, move: bool) -> None:
        view = self._require_writable() if move else self._selected()
        selection = view.select(sequence, uid)
        dest = await self._mailbox_id(name)
        if dest is None:
            raise CommandFailed("Mailbox does not exist", ResponseCode.TRYCREATE)
        verb = "MOVE" if move else "COPY"
        if not selection:
            await self._announce(force=False, expunge=uid)
            self._ok(f"{verb} completed (no messages)")
            return
        result = await self.store.write(
            im.copy_messages, view.mailbox_id, view.uid_ranges(selection), dest, move
        )
        self.store.publish([self._account_id()])
        code = None
        if result.pairs:
            code = ResponseCode.copyuid(
                result.uidvalidity, [s for s, _ in result.pairs], [d for _, d in result.pairs]
            )
        if move:
            if code is not None:
                self.engine.send(Untagged("OK", "Moved UIDs", code))
            for seq in view.expunge([s for s, _ in result.pairs]):
                self.engine.send(ExpungeResponse(seq))
            self._own_change(result.source_before, result.source_after)
            await self._announce(force=False)
            self._ok("MOVE completed")
        else:
            await self._announce(force=False, expunge=uid)
            self._ok("COPY completed", code)


_SYSTEM_FLAG_LIST = " ".join(name for name, _bit in imap_flags.SYSTEM_FLAGS).encode("ascii")


def _select_data(snap: im.Snapshot, view: MailboxView, rev2: bool) -> bytes:
    """SELECT/EXAMINE's untagged data in one piece (RFC 9051 §6.3.2: FLAGS, PERMANENTFLAGS,
    EXISTS, UIDVALIDITY, UIDNEXT; IMAP4rev1 adds RECENT and UNSEEN, RFC 3501 §6.3.1; RFC 7162
    §3.1.2.1 HIGHESTMODSEQ), in the form and order Dovecot sends them."""
    flags = _SYSTEM_FLAG_LIST + b"".join(b" " + kw.encode("utf-8") for kw in snap.keywords)
    permanent = b"" if view.read_only else flags + b" \\*"
    out = b"* FLAGS (%s)\r\n* OK [PERMANENTFLAGS (%s)] Flags permitted\r\n* %d EXISTS\r\n" % (
        flags,
        permanent,
        view.exists,
    )
    if not rev2:
        out += b"* %d RECENT\r\n" % len(view.recent)
        if snap.first_unseen_uid is not None and (seq := view.seq_of(snap.first_unseen_uid)) is not None:
            out += b"* OK [UNSEEN %d] First unseen message %d\r\n" % (seq, seq)
    return out + (
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n* OK [UIDNEXT %d] Predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (snap.uidvalidity, snap.uidnext, snap.highestmodseq)
    )


def _search_job(
    conn: sqlite3.Connection,
    mailbox_id: int,
    ranges: list[tuple[int, int]],
    criteria: c.SearchKey,
    ctx: SearchContext,
    headers: bool,
    bodies: bool,
) -> SearchOutcome:
    """Runs on a store reader thread: the store hands rows and body octets to the evaluator."""
    required, in_body = required_text(criteria)
    rows = im.search_rows(conn, mailbox_id, ranges, headers, bodies, required, in_body)
    return evaluate(
        rows, criteria, ctx, lambda body_id, offset, length: mail.read_chunk(conn, body_id, offset, length)
    )


def imap_handler(ctx: IMAPContext) -> SessionHandler:
    async def handle(conn: Connection) -> None:
        await IMAPSession(ctx, conn).run()

    return handle
