"""The SMTP session: drives the sans-I/O engine over a connection, decides MAIL/RCPT/DATA by
policy, spools the body, and stores it before answering 250.

Exceptions become replies in one place (``_decide``): a peer's mistake was already answered by
the engine; our own fault is logged with a traceback and answered 451 4.3.0 (temporary), so the
sender retries and nothing is lost.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailroom import logs
from mailroom.address import AddressError, normalize_domain, normalize_local
from mailroom.config import Config
from mailroom.delivery.srs import SRS, SRSInvalid, is_srs
from mailroom.mailauth.dkim import SigningKey, load_keys
from mailroom.mailauth.dkim import sign as dkim_sign
from mailroom.mailauth.inbound import authenticate, stamp
from mailroom.mailauth.resolver import DnsLookup
from mailroom.message.trace import (
    MAX_RECEIVED,
    HeaderScanner,
    ReceivedInfo,
    received_header,
    return_path,
    rfc5322_date,
)
from mailroom.net.listeners import Connection, SessionHandler
from mailroom.net.sasl_exchange import Authenticated, Outcome, Rejected, SaslExchange, SendChallenge
from mailroom.net.tls import ServerTLS, describe
from mailroom.policy.auth import Authenticator
from mailroom.store import directory, sending
from mailroom.store.database import is_storage_full
from mailroom.store.delivery import Delivery, DeliveryResult, LocalCopy, deliver
from mailroom.store.directory import Account
from mailroom.store.queue import QueueEnvelope, QueueRecipient
from mailroom.store.service import Store
from mailroom.store.spool import SpoolFile
from mailroom.wire.smtp import events as ev
from mailroom.wire.smtp.replies import Reply, reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine

READ_SIZE = 256 * 1024
SUBMISSION_MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")

RELAY_DENIED = reply(550, "5.7.1", "Relay access denied")  # RFC 5321 §4.3.2: 554 is no RCPT reply
USER_UNKNOWN = reply(550, "5.1.1", "Recipient address rejected: user unknown")
ALIAS_LOOP = reply(550, "5.4.6", "Recipient address rejected: alias loop")
TOO_MANY_HOPS = reply(554, "5.4.6", "Too many hops (mail loop?)")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
SENDER_NOT_OWNED = reply(550, "5.7.1", "Sender address rejected: not owned by the authenticated user")
FROM_NOT_OWNED = reply(550, "5.7.1", "From header address not owned by the authenticated user")
NULL_SENDER_SUBMISSION = reply(550, "5.7.1", "Sender address rejected: a null sender is not allowed here")
DAILY_MESSAGES = reply(451, "4.7.1", "Daily message limit reached for this account, try again tomorrow")
DAILY_RECIPIENTS = reply(
    451, "4.7.1", "Daily limit of new recipients reached for this account, try again tomorrow"
)
NO_STORAGE = reply(452, "4.3.1", "Insufficient system storage")
LOCAL_ERROR = reply(451, "4.3.0", "Local error in processing, try again later")
TIMEOUT = reply(421, "4.4.2", "Timeout exceeded, closing connection")
MAILBOX_FULL = reply(552, "5.2.2", "Mailbox full")


@dataclass
class SMTPContext:
    """What every SMTP session shares: config, store, TLS, logins."""

    cfg: Config
    store: Store
    tls: ServerTLS
    auth: Authenticator
    queued: Callable[[], None] = lambda: None  # tells the outbound queue runner there is new mail
    lookup: DnsLookup | None = None  # mail authentication's DNS; None: lookups off (dev mode)
    dkim_keys: dict[str, list[SigningKey]] = field(default_factory=dict)  # cache per domain
    srs: SRS | None = None  # rewrites senders of forwarded mail; None: forward unchanged

    def signing_keys(self, domain: str) -> list[SigningKey]:
        if domain not in self.dkim_keys:
            try:
                self.dkim_keys[domain] = load_keys(self.store.data_dir, domain)
            except (OSError, ValueError) as exc:
                logging.getLogger("mailroom.dkim").error("DKIM keys for %s unusable: %s", domain, exc)
                self.dkim_keys[domain] = []
        return self.dkim_keys[domain]


@dataclass
class _Transaction:
    sender: str = ""
    params: ev.MailParams = field(default_factory=ev.MailParams)
    local: list[tuple[str, set[int]]] = field(default_factory=list)  # (rcpt, account ids)
    remote: list[QueueRecipient] = field(default_factory=list)
    queue_id: str = ""
    spool: SpoolFile | None = None
    scanner: HeaderScanner = field(default_factory=HeaderScanner)
    spool_error: Reply | None = None
    received: bytes = b""
    size: int = 0
    new_keys: set[str] = field(default_factory=set)  # first-time remote recipients in this message
    started: float = field(default_factory=time.monotonic)

    @property
    def recipients(self) -> list[str]:
        return [r for r, _ in self.local] + [q.address for q in self.remote]

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def engine_config(ctx: SMTPContext, conn: Connection) -> ServerConfig:
    kind = conn.kind
    return ServerConfig(
        hostname=ctx.cfg.server.hostname,
        max_message_size=ctx.cfg.limits.message_size,
        tls_active=kind.tls == "implicit",
        starttls_available=kind.tls == "starttls",
        auth_mechanisms=SUBMISSION_MECHANISMS if kind.submission else (),
        auth_requires_tls=True,
        auth_required=kind.submission,
        max_recipients=ctx.cfg.limits.max_recipients,
    )


class SMTPSession:
    def __init__(self, ctx: SMTPContext, conn: Connection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.log = logs.conn_logger(conn.kind.service, conn.conn_id)
        self.engine = SMTPServerEngine(engine_config(ctx, conn))
        self.helo = ""
        self.helo_verb = ""
        self.account: Account | None = None
        self.tx: _Transaction | None = None
        self.sasl: SaslExchange | None = None
        self.messages = 0

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.log.info(
            "connect from [%s]:%d tls=%s", self.conn.peer_ip, self.conn.peer_port, self.conn.tls_active
        )
        self.engine.greeting()
        try:
            await self._loop()
        finally:
            if self.tx is not None:
                self.tx.discard()
            self.log.info("disconnect from [%s] messages=%d", self.conn.peer_ip, self.messages)

    async def _loop(self) -> None:
        writer = self.conn.writer
        while True:
            event = self.engine.next_event()
            if event is ev.NEED_DATA:
                await self._flush()
                try:
                    data = await self.conn.read(READ_SIZE, self.ctx.cfg.limits.smtp_timeout)
                except TimeoutError:
                    self.log.info("timeout after %ss of silence", self.ctx.cfg.limits.smtp_timeout)
                    writer.write(TIMEOUT.to_bytes())
                    await self._flush()
                    return
                self.engine.receive_data(data)
                continue
            if isinstance(event, ev.ConnectionClosed):
                await self._flush()
                return
            await self._decide(event)

    async def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data:
            self.conn.writer.write(data)
            await self.conn.writer.drain()

    async def _decide(self, event: ev.Event | ev.Sentinel) -> None:
        """Handle one event; our own failures become a temporary error, never a traceback to the peer."""
        try:
            await self._handle(event)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            raise
        except Exception:
            self.log.exception("internal error handling %s", type(event).__name__)
            if self.tx is not None and isinstance(event, ev.BodyEnd | ev.BodyChunk | ev.DataStart):
                self.tx.discard()
            if event_needs_decision(event):
                self.engine.reject(LOCAL_ERROR)

    async def _handle(self, event: ev.Event | ev.Sentinel) -> None:
        match event:
            case ev.Hello(verb=verb, name=name):
                self.helo, self.helo_verb = name, verb
                self._end_transaction()
                self.engine.accept()
                self.log.debug("%s %s", verb, name)
            case ev.StartTLS():
                await self._starttls()
            case ev.AuthStart(mechanism=name, initial=initial):
                await self._auth_start(name, initial)
            case ev.AuthResponse(data=data):
                await self._auth_step(data)
            case ev.MailFrom(address=address, params=params):
                await self._mail(address, params)
            case ev.RcptTo(address=address, params=params):
                await self._rcpt(address, params)
            case ev.DataStart():
                self._data_start()
            case ev.BodyChunk(data=data):
                self._body_chunk(data)
            case ev.BodyEnd():
                await self._body_end()
            case ev.BodyAborted(reason=reason):
                self.log.info("message refused: %s", reason)
                self._end_transaction()
            case ev.Reset():
                self._end_transaction()
            case ev.Quit():
                pass
            case ev.ProtocolViolation(reply=answer, message=message):
                self.log.info(
                    "protocol error: %s (answered %d %s)", message, answer.code, answer.enhanced or ""
                )

    # --- STARTTLS -----------------------------------------------------------------------------

    async def _starttls(self) -> None:
        self.engine.accept()
        await self._flush()
        await self.conn.start_tls(self.ctx.tls.context, self.ctx.cfg.limits.tls_handshake_timeout)
        self.engine.tls_started()
        self.helo = ""
        self.log.info("STARTTLS: %s", describe(self.conn.writer.get_extra_info("ssl_object")))

    # --- AUTH ---------------------------------------------------------------------------------

    async def _auth_start(self, name: str, initial: bytes | None) -> None:
        conn = self.conn
        self.sasl = SaslExchange.start_new(
            name, SUBMISSION_MECHANISMS, self.ctx.auth, conn.kind.service, conn.peer_ip, self.log
        )
        if self.sasl is None:
            self.engine.reject(reply(504, "5.5.4", "Unrecognized authentication mechanism"))
            return
        self._auth_outcome(await self.sasl.start(initial))

    async def _auth_step(self, data: bytes) -> None:
        assert self.sasl is not None
        self._auth_outcome(await self.sasl.step(data))

    def _auth_outcome(self, outcome: Outcome) -> None:
        assert self.sasl is not None
        match outcome:
            case SendChallenge(data=data):
                self.engine.auth_challenge(data)
                return
            case Authenticated(account=account):
                self.account = account
                self.engine.accept()
                self.log.info("authenticated user=%s mechanism=%s", account.address, self.sasl.name)
            case Rejected():
                self.engine.reject(AUTH_FAILED)
        self.sasl = None

    # --- the transaction ----------------------------------------------------------------------

    def _end_transaction(self) -> None:
        if self.tx is not None:
            self.tx.discard()
            self.tx = None

    async def _mail(self, address: str, params: ev.MailParams) -> None:
        if self.conn.kind.submission:
            assert self.account is not None  # the engine requires AUTH first
            if not address:
                self.engine.reject(NULL_SENDER_SUBMISSION)
                return
            if not await self.ctx.store.read(directory.owns, self.account.id, address):
                self.log.info("sender %s refused for user %s", address, self.account.address)
                self.engine.reject(SENDER_NOT_OWNED)
                return
            used = await self.ctx.store.read(sending.usage, self.account.id, sending.day_of(int(time.time())))
            if used.messages >= self.ctx.cfg.limits.submission_messages_per_day:
                self.log.warning("daily message limit reached user=%s", self.account.address)
                self.engine.reject(DAILY_MESSAGES)
                return
        self.tx = _Transaction(sender=address, params=params)
        self.engine.accept()

    async def _rcpt(self, address: str, params: ev.RcptParams) -> None:
        assert self.tx is not None
        if address.lower() == "postmaster":
            address = f"postmaster@{await self._primary_domain()}"  # RFC 5321 §4.1.1.3
        resolution = self.ctx.store.read_now(directory.resolve, address)  # a few indexed rows
        notify = ",".join(params.notify) if params.notify else None
        if resolution is None and self._is_our_srs(address):
            await self._srs_bounce(address, params)
            return
        if resolution is None:
            if not self.conn.kind.submission:
                self.log.info("relay denied: from=<%s> to=<%s>", self.tx.sender, address)
                self.engine.reject(RELAY_DENIED)
                return
            if not await self._within_recipient_limit(address):
                self.engine.reject(DAILY_RECIPIENTS)
                return
            self.tx.remote.append(QueueRecipient(address, params.orcpt, notify))
            self.engine.accept()
            return
        if resolution.loop and not resolution.found:
            self.log.warning("alias loop resolving %s", address)
            self.engine.reject(ALIAS_LOOP)
            return
        if not resolution.found:
            self.log.info("unknown recipient: from=<%s> to=<%s>", self.tx.sender, address)
            self.engine.reject(USER_UNKNOWN)
            return
        self.tx.local.append((address, resolution.account_ids))
        # alias targets outside our domains are forwarded through the queue
        self.tx.remote.extend(QueueRecipient(ext, f"rfc822;{address}", notify) for ext in resolution.external)
        self.engine.accept()

    def _is_our_srs(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        return self.ctx.srs is not None and is_srs(address) and domain == self.ctx.cfg.server.hostname

    async def _srs_bounce(self, address: str, params: ev.RcptParams) -> None:
        """Mail to an SRS address we made goes back to the original sender (usually a bounce of a
        forward); a forged or expired one is refused like an unknown user."""
        assert self.tx is not None and self.ctx.srs is not None
        original = self.ctx.srs.reverse(address, time.time())
        if isinstance(original, SRSInvalid):
            self.log.info("SRS address refused (%s): %s", original.reason, address)
            self.engine.reject(USER_UNKNOWN)
            return
        notify = ",".join(params.notify) if params.notify else None
        self.tx.remote.append(QueueRecipient(original, params.orcpt, notify))
        self.engine.accept()

    async def _within_recipient_limit(self, address: str) -> bool:
        """Submission: first-time remote recipients per account and day (mox's limit, default 200)."""
        assert self.account is not None and self.tx is not None
        key = recipient_key(address)
        if key in self.tx.new_keys or await self.ctx.store.read(sending.is_known, self.account.id, key):
            return True
        used = await self.ctx.store.read(sending.usage, self.account.id, sending.day_of(int(time.time())))
        if (
            used.new_recipients + len(self.tx.new_keys)
            >= self.ctx.cfg.limits.submission_new_recipients_per_day
        ):
            self.log.warning("daily new-recipient limit reached user=%s", self.account.address)
            return False
        self.tx.new_keys.add(key)
        return True

    async def _primary_domain(self) -> str:
        domains = await self.ctx.store.read(directory.list_domains)
        hostname = self.ctx.cfg.server.hostname
        for domain in domains:
            if hostname == domain.name or hostname.endswith("." + domain.name):
                return domain.name
        return domains[0].name if domains else hostname

    def _data_start(self) -> None:
        assert self.tx is not None
        tx = self.tx
        tx.queue_id = secrets.token_hex(5).upper()
        tx.received = self._received(tx)  # stamped when the data starts, prepended when stored
        try:
            tx.spool = SpoolFile(self.ctx.store.data_dir / "spool")
        except OSError as exc:
            tx.spool_error = self._storage_reply(exc)
            tx.discard()

    def _received(self, tx: _Transaction) -> bytes:
        ssl_object = self.conn.writer.get_extra_info("ssl_object")
        protocol = "ESMTP" if self.helo_verb == "EHLO" else "SMTP"  # RFC 3848 with-protocol types
        if ssl_object is not None:
            protocol += "S"
        if self.account is not None:
            protocol += "A"  # RFC 3848
        recipients = tx.recipients
        info = ReceivedInfo(
            helo=self.helo,
            client_ip=self.conn.peer_ip,
            hostname=self.ctx.cfg.server.hostname,
            protocol=protocol,
            queue_id=tx.queue_id,
            timestamp=time.time(),
            tls=describe(ssl_object) if ssl_object is not None else None,
            recipient=recipients[0] if len(recipients) == 1 else None,
        )
        return received_header(info)

    def _body_chunk(self, data: bytes) -> None:
        tx = self.tx
        assert tx is not None
        tx.scanner.feed(data)
        if tx.spool is None:
            return
        try:
            tx.spool.write(data)
        except OSError as exc:
            tx.spool_error = self._storage_reply(exc)
            tx.discard()

    def _storage_reply(self, exc: OSError) -> Reply:
        self.log.error("spool write failed: %s", exc)
        return NO_STORAGE if is_storage_full(exc) else LOCAL_ERROR

    async def _body_end(self) -> None:
        tx = self.tx
        assert tx is not None
        if tx.spool_error is not None or tx.spool is None:
            self.engine.reject(tx.spool_error or LOCAL_ERROR)
            self._end_transaction()
            return
        if tx.scanner.received + 1 > MAX_RECEIVED:  # RFC 5321 §6.3, counting our own
            self.log.warning("loop: %d Received headers from=<%s>", tx.scanner.received, tx.sender)
            self.engine.reject(TOO_MANY_HOPS)
            self._end_transaction()
            return
        if self.account is not None and not await self._from_owned(tx):
            self.engine.reject(FROM_NOT_OWNED)
            self._end_transaction()
            return
        # trace fields go on top (RFC 5321 §4.4), then any header submission adds
        added = self._submission_headers(tx)
        junk = False
        if self.conn.kind.submission:
            added = await self._dkim_sign(tx, added) + added
        else:
            checked = await self._authenticate(tx)
            if checked is None:
                return
            auth_header, junk = checked
            tx.received = auth_header + tx.received
        extra = tx.received + added
        spool = tx.spool
        assert spool is not None
        tx.size = spool.size + len(extra)
        delivery = Delivery(
            source=spool.reader(),
            size=spool.size,
            internal_date=int(time.time()),
            local=[
                LocalCopy(account_id, "\\Junk" if junk else None)
                for _, ids in tx.local
                for account_id in sorted(ids)
            ],
            local_prefix=return_path(tx.sender) + extra,
            remote=self._queue_envelope(tx),
            remote_prefix=extra,
            submitter=self.account.id if self.account else None,
            remote_keys=[recipient_key(q.address) for q in tx.remote],
        )
        try:
            result = await self.ctx.store.write(deliver, delivery)
        except sqlite3.Error as exc:
            self.log.error("storing message failed: %s", exc)
            self.engine.reject(NO_STORAGE if is_storage_full(exc) else LOCAL_ERROR)  # RFC 3463 4.3.1
            self._end_transaction()
            return
        finally:
            spool.close()
            tx.spool = None
        self.ctx.store.publish(account_id for account_id, _ in result.stored)
        if result.queue_id is not None:
            self.ctx.queued()
        self.engine.accept(f"Ok: queued as {tx.queue_id}")
        self.messages += 1
        self._log_delivery(tx, result)
        self.tx = None

    async def _authenticate(self, tx: _Transaction) -> tuple[bytes, bool] | None:
        """MX: SPF, DKIM and DMARC before the final reply, so a reject is a real SMTP reject.

        Returns (Authentication-Results header, deliver to Junk), or None when answered already.
        """
        if self.ctx.lookup is None:
            self.log.debug("%s: dns lookups off: spf=none dkim=none dmarc=none", tx.queue_id)
            return b"", False
        assert tx.spool is not None
        reader = tx.spool.reader()
        message = reader.read()  # DKIM must see the whole message (bounded by message_size)
        hostname = self.ctx.cfg.server.hostname
        result = await authenticate(
            self.ctx.lookup,
            message,
            authserv_id=hostname,
            client_ip=self.conn.peer_ip,
            helo=self.helo,
            mail_from=tx.sender,
        )
        verdict = result.verdict
        summary = " ".join(result.header.split(";", 1)[-1].split())
        self.log.info("%s: %s -> %s", tx.queue_id, summary, verdict.action)
        if verdict.action in ("reject", "tempfail"):
            self.log.info("%s: refused from=<%s>: %s", tx.queue_id, tx.sender, verdict.reason)
            self.engine.reject(reply(verdict.code, verdict.enhanced, verdict.text))
            self._end_transaction()
            return None
        cleaned = stamp(message, "", hostname)  # RFC 8601 §5: drop A-R fields that claim to be ours
        if cleaned != message:
            replacement = SpoolFile(self.ctx.store.data_dir / "spool")
            replacement.write(cleaned)
            tx.spool.close()
            tx.spool = replacement
        return result.header.encode("utf-8"), verdict.action == "junk"

    async def _dkim_sign(self, tx: _Transaction, added: bytes) -> bytes:
        """Submission: DKIM-sign with the keys of the From domain (RFC 6376), added headers included."""
        domain = self._signing_domain(tx)
        keys = self.ctx.signing_keys(domain) if domain else []
        if not keys:
            return b""
        assert tx.spool is not None
        message = added + tx.spool.reader().read()
        try:
            return await dkim_sign(message, keys)
        except ValueError as exc:
            self.log.warning("%s: not DKIM-signed: %s", tx.queue_id, exc)
            return b""

    def _signing_domain(self, tx: _Transaction) -> str:
        text = tx.scanner.from_value.decode("utf-8", "replace")
        for _, addr in email.utils.getaddresses([text]):
            if "@" in addr:
                return addr.rpartition("@")[2].lower()
        return tx.sender.rpartition("@")[2].lower()

    async def _from_owned(self, tx: _Transaction) -> bool:
        """Submission: every From: address must be the user's own (RFC 6409 §8 leaves this to policy)."""
        assert self.account is not None
        if not tx.scanner.has_from:
            return True
        text = tx.scanner.from_value.decode("utf-8", "replace")
        addresses = [addr for _, addr in email.utils.getaddresses([text]) if addr]
        if not addresses:
            self.log.info("From header without an address refused: %r", text[:200])
            return False
        for addr in addresses:
            if not await self.ctx.store.read(directory.owns, self.account.id, addr):
                self.log.info("From %s refused for user %s", addr, self.account.address)
                return False
        return True

    def _submission_headers(self, tx: _Transaction) -> bytes:
        """RFC 6409 §8.2/§8.3: a submission server may add a missing Date and Message-ID."""
        if not self.conn.kind.submission:
            return b""
        extra = b""
        if not tx.scanner.has_date:
            extra += f"Date: {rfc5322_date(time.time())}\r\n".encode()
        if not tx.scanner.has_message_id:
            domain = self.ctx.cfg.server.hostname
            extra += f"Message-ID: <{tx.queue_id}.{secrets.token_hex(8)}@{domain}>\r\n".encode()
        return extra

    def _queue_envelope(self, tx: _Transaction) -> QueueEnvelope | None:
        if not tx.remote:
            return None
        sender = tx.sender
        if not self.conn.kind.submission and sender and self.ctx.srs is not None:
            # forwarding someone else's mail: SRS (postsrsd's scheme) so the destination's SPF
            # check sees our domain, and bounces find their way back through _srs_bounce
            try:
                sender = self.ctx.srs.forward(sender, self.ctx.cfg.server.hostname, time.time())
            except ValueError:
                pass
        return QueueEnvelope(
            sender=sender,
            recipients=tx.remote,
            account_id=self.account.id if self.account else None,
            envid=tx.params.envid,
            ret=tx.params.ret,
            body_type=tx.params.body,
            smtputf8=tx.params.smtputf8,
        )

    def _log_delivery(self, tx: _Transaction, result: DeliveryResult) -> None:
        delay = time.monotonic() - tx.started
        for rcpt, _ in tx.local:
            self.log.info(
                "%s: from=<%s> to=<%s> relay=local delay=%.2f size=%d status=sent (delivered)",
                tx.queue_id,
                tx.sender,
                rcpt,
                delay,
                tx.size,
            )
        for q in tx.remote:
            self.log.info(
                "%s: from=<%s> to=<%s> relay=queue delay=%.2f status=queued (queue id %s)",
                tx.queue_id,
                tx.sender,
                q.address,
                delay,
                result.queue_id,
            )


def recipient_key(address: str) -> str:
    local, _, domain = address.rpartition("@")
    try:
        return f"{normalize_local(local)}@{normalize_domain(domain)}"
    except AddressError:
        return address.lower()


def event_needs_decision(event: ev.Event | ev.Sentinel) -> bool:
    return isinstance(
        event, ev.Hello | ev.MailFrom | ev.RcptTo | ev.BodyEnd | ev.StartTLS | ev.AuthStart | ev.AuthResponse
    )


def smtp_handler(ctx: SMTPContext) -> SessionHandler:
    async def handle(conn: Connection) -> None:
        await SMTPSession(ctx, conn).run()

    return handle
