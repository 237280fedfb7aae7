"""The outbound queue runner: reads due recipients, routes, delivers over SMTP, records results.

Per (message, destination domain) one SMTP transaction carries every recipient at that domain.
Results are committed right after the peer's answer; a recipient is marked delivered only after the
peer's final 250, so only a crash between that 250 and our commit can repeat a delivery (the one
duplicate the design allows). A failure and the DSN reporting it are committed in the same
transaction (delivery/dsn.py builds it; a DSN to a local sender goes straight into their INBOX).

TLS is opportunistic (RFC 7435, RFC 3207): STARTTLS whenever offered, the certificate verified
against the MX host name and the result logged; a peer whose certificate does not verify is tried
again with encryption but without verification, and one whose handshake fails, in plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import logging
import random
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailroom.config import Config
from mailroom.delivery.dsn import Dsn, DsnRecipient, DsnReport, build_dsn
from mailroom.delivery.routing import Route, SmarthostPolicy, Target, resolve_route
from mailroom.delivery.schedule import GiveUp, RetryPolicy, after_temporary_failure
from mailroom.dns import Resolver
from mailroom.store import directory, mail, queue
from mailroom.store.delivery import Delivery, LocalCopy, deliver
from mailroom.store.queue import DueBatch, DueRecipient, QueueEnvelope, QueueRecipient, RecipientUpdate
from mailroom.store.service import Store
from mailroom.wire.smtp import client as smtpc
from mailroom.wire.smtp.replies import Reply, reply

log = logging.getLogger("mailroom.delivery")

CONNECT_TIMEOUT = 30.0
BODY_CHUNK = 256 * 1024
DSN_ORIGINAL_CAP = 512 * 1024 + 1  # dsn.py returns at most 512 KiB of the original (RET=FULL)
IDLE_POLL = 60.0


@dataclass
class _Attempt:
    """Per-recipient outcomes of one batch, filled target by target."""

    final: dict[int, tuple[Reply, str]] = field(default_factory=dict)  # recipient id -> (reply, host)
    last_temporary: dict[int, tuple[Reply, str]] = field(default_factory=dict)
    relayed: set[int] = field(default_factory=set)  # delivered to a peer without DSN (RFC 3461 §4.1)
    recorded: set[int] = field(default_factory=set)  # queue ids whose outcome is committed already


# called when one message's transaction is over, before the next one starts on the connection
_Finished = Callable[[DueBatch, list[DueRecipient], dict[int, Reply]], Awaitable[None]]


class QueueRunner:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        resolver: Resolver,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        verify_context: ssl.SSLContext | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.resolver = resolver
        self.clock = clock
        self.rng = rng or random.Random()
        self.hostname = cfg.server.hostname
        d = cfg.delivery
        routes = dict(route.split("=", 1) for route in d.routes)
        self.smarthosts = SmarthostPolicy.parse(
            d.smarthost or None, {k.strip(): v.strip() for k, v in routes.items()}
        )
        self.policy = RetryPolicy(give_up=d.give_up_after, delay_warning=d.delay_warning_after)
        self.verified = verify_context or ssl.create_default_context()
        self.relay_context = ssl.create_default_context(cafile=d.smarthost_ca_file or None)
        self.unverified = ssl.create_default_context()
        self.unverified.check_hostname = False
        self.unverified.verify_mode = ssl.CERT_NONE
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: set[int] = set()  # queue ids being delivered right now
        self._slots = asyncio.Semaphore(max(1, d.max_parallel))
        self._workers: set[asyncio.Task[None]] = set()
        self._no_verify: set[str] = set()  # hosts whose certificate failed to verify (this run)
        self._peer_dsn: dict[str, bool] = {}  # "host[address]:port" -> the peer offered DSN

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="queue-runner")

    def wake(self) -> None:
        """New mail was queued: look now instead of at the next scheduled attempt."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for worker in list(self._workers):
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=5)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
                next_due = await self.store.read(queue.next_due)
            except Exception:
                log.exception("queue runner failed; retrying in a minute")
                next_due = None
            wait = IDLE_POLL if next_due is None else max(0.05, min(IDLE_POLL, next_due - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def run_once(self) -> int:
        """Start delivery of every due batch not already in flight; returns how many started."""
        batches = await self.store.read(queue.due_batches, int(self.clock()), tuple(self._busy))
        by_domain: dict[str, list[DueBatch]] = {}
        for batch in batches:
            self._busy.add(batch.queue_id)
            by_domain.setdefault(batch.domain, []).append(batch)
        for group in by_domain.values():  # one connection carries every due message for a domain
            worker = asyncio.create_task(self._deliver_guarded(group))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return len(batches)

    async def drain(self, timeout: float = 60) -> None:
        """Tests and `mailroom queue run`: deliver everything due, wait for the workers."""
        await self.run_once()
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=timeout)

    async def _deliver_guarded(self, group: list[DueBatch]) -> None:
        try:
            async with self._slots:
                await self.deliver_group(group)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery to %s failed", group[0].domain)
        finally:
            for batch in group:
                self._busy.discard(batch.queue_id)
            self._wake.set()  # the same messages may have another domain due

    # --- one batch ------------------------------------------------------------------------------

    async def deliver_group(self, group: list[DueBatch]) -> None:
        """Messages for one domain: one route, and one connection per host for all of them."""
        started = self.clock()
        route = await resolve_route(
            group[0].domain,
            self.resolver,
            rng=self.rng,
            ipv6=self.cfg.delivery.ipv6,
            smarthosts=self.smarthosts,
            self_names=(self.hostname,),
        )
        attempt = _Attempt()  # recipient ids are unique across messages: one record serves all
        if route.failure is not None:
            for batch in group:
                for rcpt in batch.recipients:
                    attempt.final[rcpt.id] = (route.failure, "dns")
        else:
            await self._try_targets(group, route, attempt, started)
        for batch in group:
            if batch.queue_id not in attempt.recorded:
                await self._record(batch, attempt, started)

    async def _try_targets(
        self, group: list[DueBatch], route: Route, attempt: _Attempt, started: float
    ) -> None:
        pending: list[tuple[DueBatch, list[DueRecipient]]] = [(b, list(b.recipients)) for b in group]
        for target in route.targets:
            if not pending:
                break
            host = f"{target.host}[{target.address}]:{self._port(target)}"

            async def finished(
                batch: DueBatch, remaining: list[DueRecipient], results: dict[int, Reply], host: str = host
            ) -> None:
                # One message's transaction is over: when every recipient has a final answer, its
                # outcome is committed before the next message is sent over the same connection,
                # so a crash (or a connection lost) later in the session cannot repeat it.
                if not self._classify(remaining, results, host, attempt):
                    await self._record(batch, attempt, started)
                    attempt.recorded.add(batch.queue_id)

            results = await self._transaction(pending, target, finished)
            still_pending: list[tuple[DueBatch, list[DueRecipient]]] = []
            for batch, remaining in pending:
                if batch.queue_id in attempt.recorded:
                    continue
                still = self._classify(remaining, results, host, attempt)
                if still:
                    still_pending.append((batch, still))
            pending = still_pending
        for _, remaining in pending:
            for rcpt in remaining:
                attempt.final.setdefault(rcpt.id, attempt.last_temporary.get(rcpt.id, (_NO_HOST, "none")))

    def _classify(
        self, remaining: list[DueRecipient], results: dict[int, Reply], host: str, attempt: _Attempt
    ) -> list[DueRecipient]:
        """Note each recipient's answer from ``host``; returns those to try at the next host."""
        still: list[DueRecipient] = []
        for rcpt in remaining:
            answer = results.get(rcpt.id)
            if answer is None or 400 <= answer.code < 500:
                attempt.last_temporary[rcpt.id] = (answer or _LOST, host)
                still.append(rcpt)  # RFC 5321 §4.5.4.1: try the next MX host
            else:
                attempt.final[rcpt.id] = (answer, host)
                if answer.code < 400 and not self._peer_dsn.get(host, False):
                    attempt.relayed.add(rcpt.id)
        return still

    def _port(self, target: Target) -> int:
        return target.port if target.kind == "relay" else self.cfg.delivery.mx_port

    # --- one SMTP transaction -----------------------------------------------------------------

    async def _transaction(
        self, jobs: list[tuple[DueBatch, list[DueRecipient]]], target: Target, finished: _Finished
    ) -> dict[int, Reply]:
        """Deliver messages to one host over one connection; a reply per recipient id (absent:
        nothing definite). Answers received before the connection failed are kept."""
        results: dict[int, Reply] = {}
        relay = target.kind == "relay"
        implicit = relay and self.cfg.delivery.smarthost_tls == "implicit"
        verify = target.host not in self._no_verify
        try:
            return await self._session(jobs, target, results, finished, implicit=implicit, verify=verify)
        except ssl.SSLCertVerificationError as exc:
            if relay:  # a smarthost we log in to must prove who it is
                log.warning("%s: relay certificate not verified (%s)", target.host, exc.verify_message)
                return results
            log.info(
                "%s: certificate not verified (%s); retrying with unauthenticated TLS",
                target.host,
                exc.verify_message,
            )
            self._no_verify.add(target.host)
            try:
                return await self._session(jobs, target, results, finished, implicit=implicit, verify=False)
            except (OSError, TimeoutError, ssl.SSLError) as again:
                log.info("%s[%s]: %s", target.host, target.address, again)
                return results
        except _PlaintextFallback:
            return await self._session(
                jobs, target, results, finished, implicit=False, verify=False, starttls=False
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info(
                "%s[%s]:%d: connection failed: %s",
                target.host,
                target.address,
                self._port(target),
                exc or type(exc).__name__,
            )
            return results

    async def _session(
        self,
        jobs: list[tuple[DueBatch, list[DueRecipient]]],
        target: Target,
        results: dict[int, Reply],
        finished: _Finished,
        *,
        implicit: bool,
        verify: bool,
        starttls: bool = True,
    ) -> dict[int, Reply]:
        context = (
            self.relay_context if target.kind == "relay" else self.verified if verify else self.unverified
        )
        local = self._source_address(target.address)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.address,
                self._port(target),
                ssl=context if implicit else None,
                server_hostname=target.host if implicit else None,
                local_addr=(local, 0) if local else None,
            ),
            CONNECT_TIMEOUT,
        )
        engine = smtpc.SMTPClientEngine(smtpc.ClientConfig(tls_active=implicit))
        current = 0  # the job whose transaction is under way; later ones reuse the connection
        envelope = self._envelope(*jobs[0])
        tls_note = "implicit" if implicit else "none"
        try:
            while True:
                event = engine.next_event()
                if event is smtpc.NEED_DATA:
                    await _flush(writer, engine)
                    timeout = engine.reply_timeout or 300.0
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                    engine.receive_data(data)
                    continue
                match event:
                    case smtpc.Greeting(reply=greeting):
                        if greeting.code != 220:
                            log.info("%s: greeting %d %s", target.host, greeting.code, greeting.text)
                            engine.quit()
                        else:
                            engine.ehlo(self.hostname)
                    case smtpc.HelloReply(capabilities=caps):
                        self._peer_dsn[f"{target.host}[{target.address}]:{self._port(target)}"] = bool(
                            caps and caps.dsn
                        )
                        if caps is None:
                            engine.helo(self.hostname)
                        elif caps.starttls and not engine.tls_active and starttls and not implicit:
                            engine.starttls()
                        elif target.kind == "relay" and self.cfg.delivery.smarthost_username:
                            engine.auth(self.cfg.delivery.smarthost_username, self._smarthost_password())
                        elif (
                            target.kind == "relay"
                            and self.cfg.delivery.smarthost_tls != "none"
                            and not engine.tls_active
                        ):
                            log.warning("%s: relay offers no STARTTLS; not sending in plaintext", target.host)
                            engine.quit()
                        else:
                            engine.send_mail(envelope)
                    case smtpc.StartTLSReply(reply=answer):
                        if answer.code != 220:
                            engine.send_mail(envelope)
                            continue
                        await _flush(writer, engine)
                        try:
                            await writer.start_tls(context, server_hostname=target.host)
                        except ssl.SSLCertVerificationError:
                            raise
                        except ssl.SSLError as exc:
                            log.info("%s: TLS handshake failed (%s); retrying in plaintext", target.host, exc)
                            raise _PlaintextFallback from None
                        tls_note = _describe(writer) + (" verified" if verify else " unverified")
                        self._last_tls = tls_note  # for the delivery lines of messages recorded early
                        engine.tls_started()
                        engine.ehlo(self.hostname)
                    case smtpc.AuthReply(reply=answer):
                        if answer.code == 235:
                            engine.send_mail(envelope)
                        else:
                            log.warning(
                                "%s: relay refused AUTH: %d %s", target.host, answer.code, answer.text
                            )
                            engine.quit()
                    case smtpc.SendBody():
                        await self._stream_body(jobs[current][0], engine, writer)
                    case smtpc.TransactionDone(result=result):
                        for rcpt, rcpt_result in zip(jobs[current][1], result.recipients, strict=True):
                            results[rcpt.id] = rcpt_result.reply
                        await finished(*jobs[current], results)
                        current += 1
                        if current < len(jobs):
                            envelope = self._envelope(*jobs[current])
                            engine.send_mail(envelope)  # the next message over the same connection
                        else:
                            engine.quit()
                    case smtpc.Closed():
                        await _flush(writer, engine)
                        break
                    case smtpc.ProtocolFailure(message=message):
                        log.info("%s: protocol failure: %s", target.host, message)
                    case _:
                        pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
        log.debug("%s: session done tls=%s", target.host, tls_note)
        self._last_tls = tls_note
        return results

    async def _stream_body(
        self, batch: DueBatch, engine: smtpc.SMTPClientEngine, writer: asyncio.StreamWriter
    ) -> None:
        offset = 0
        while offset < batch.size:
            chunk = await self.store.read(mail.read_chunk, batch.body_id, offset, BODY_CHUNK)
            if not chunk:
                break
            offset += len(chunk)
            engine.send_body(chunk)
            await _flush(writer, engine)
        engine.end_body()

    def _envelope(self, batch: DueBatch, recipients: list[DueRecipient]) -> smtpc.Envelope:
        return smtpc.Envelope(
            sender=batch.sender,
            recipients=tuple(
                smtpc.Recipient(r.address, tuple(r.notify.split(",")) if r.notify else None, r.orcpt)
                for r in recipients
            ),
            size=batch.size,
            body=batch.body_type,  # type: ignore[arg-type]
            smtputf8=batch.smtputf8,
            ret=batch.ret,  # type: ignore[arg-type]
            envid=batch.envid,
        )

    def _source_address(self, address: str) -> str:
        d = self.cfg.delivery
        return d.source_ipv6 if ":" in address else d.source_ipv4

    def _smarthost_password(self) -> str:
        path = self.cfg.delivery.smarthost_password_file
        return Path(path).read_text().strip() if path else ""

    # --- results --------------------------------------------------------------------------------

    async def _record(self, batch: DueBatch, attempt: _Attempt, started: float) -> None:
        now = self.clock()
        updates: list[RecipientUpdate] = []
        failed: list[DsnRecipient] = []
        delayed: list[DsnRecipient] = []
        relayed: list[DsnRecipient] = []  # NOTIFY=SUCCESS, and the next hop cannot report it
        for rcpt in batch.recipients:
            answer, host = attempt.final.get(rcpt.id, (_NO_HOST, "none"))
            delay = now - batch.created
            if answer.code < 400:
                updates.append(RecipientUpdate(rcpt.id, "delivered", _line(answer), host))
                if rcpt.id in attempt.relayed and rcpt.notify and "SUCCESS" in rcpt.notify.split(","):
                    relayed.append(self._dsn_recipient(rcpt, "relayed", answer, host, now))
                self._log(batch, rcpt, host, delay, "sent", answer)
                continue
            if answer.code >= 500:
                updates.append(RecipientUpdate(rcpt.id, "failed", _line(answer), host))
                failed.append(self._dsn_recipient(rcpt, "failed", answer, host, now))
                self._log(batch, rcpt, host, delay, "bounced", answer)
                continue
            decision = after_temporary_failure(
                self.policy,
                queued_at=batch.created,
                now=now,
                attempts=rcpt.attempts + 1,
                warned=rcpt.warned,
                rng=self.rng,
            )
            if isinstance(decision, GiveUp):
                updates.append(
                    RecipientUpdate(rcpt.id, "failed", f"{_line(answer)} ({decision.reason})", host)
                )
                failed.append(self._dsn_recipient(rcpt, "failed", answer, host, now))
                self._log(batch, rcpt, host, delay, "expired", answer)
                continue
            updates.append(
                RecipientUpdate(rcpt.id, "pending", _line(answer), host, int(decision.at), decision.warn)
            )
            if decision.warn:
                delayed.append(self._dsn_recipient(rcpt, "delayed", answer, host, now))
            self._log(batch, rcpt, host, delay, "deferred", answer)
        dsns = []
        original = b""
        if (failed or delayed or relayed) and batch.sender:
            original = await self.store.read(mail.read_chunk, batch.body_id, 0, DSN_ORIGINAL_CAP)
        for recipients in (failed, delayed, relayed):
            if not recipients or not batch.sender:
                continue
            report = DsnReport(
                hostname=self.hostname,
                sender=batch.sender,
                recipients=tuple(recipients),
                now=_utc(now),
                envid=batch.envid,
                ret="FULL" if batch.ret == "FULL" else "HDRS" if batch.ret == "HDRS" else None,
                arrival_date=_utc(batch.created),
            )
            dsn = build_dsn(report, io.BytesIO(original))
            if dsn is not None:
                dsns.append(dsn)
        await self.store.write(_commit_results, updates, dsns, int(now))
        if dsns:
            self.wake()

    def _dsn_recipient(
        self, rcpt: DueRecipient, action: str, answer: Reply, host: str, now: float
    ) -> DsnRecipient:
        return DsnRecipient(
            address=rcpt.address,
            action=action,  # type: ignore[arg-type]
            reply=answer,
            remote_mta=None if host in ("dns", "none") else host.split("[")[0],
            orcpt=rcpt.orcpt,
            notify=tuple(rcpt.notify.split(",")) if rcpt.notify else None,
            last_attempt=_utc(now),
        )

    def _log(
        self, batch: DueBatch, rcpt: DueRecipient, host: str, delay: float, status: str, answer: Reply
    ) -> None:
        # Postfix's delivery line shape: queue id, to, relay, delay, status (reply)
        log.info(
            "Q%d: from=<%s> to=<%s> relay=%s delay=%.1f tls=%s status=%s (%d %s)",
            batch.queue_id,
            batch.sender,
            rcpt.address,
            host,
            delay,
            getattr(self, "_last_tls", "-"),
            status,
            answer.code,
            answer.text,
        )


class _PlaintextFallback(Exception):
    """The STARTTLS handshake failed: RFC 7435 opportunistic security tries again without TLS."""


_LOST = reply(451, "4.4.2", "Connection lost or refused before a reply")
_NO_HOST = reply(451, "4.4.1", "No MX host could be reached")


async def _flush(writer: asyncio.StreamWriter, engine: smtpc.SMTPClientEngine) -> None:
    data = engine.data_to_send()
    if data:
        writer.write(data)
        await writer.drain()


def _describe(writer: asyncio.StreamWriter) -> str:
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return "none"
    cipher = obj.cipher()
    return f"{obj.version()}:{cipher[0] if cipher else '?'}"


def _line(answer: Reply) -> str:
    return " ".join(str(part) for part in (answer.code, answer.enhanced, answer.text) if part)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _commit_results(
    conn: sqlite3.Connection, updates: list[RecipientUpdate], dsns: list[Dsn], when: int
) -> None:
    """One transaction: the outcomes and the DSNs that report them (local senders get theirs at once)."""
    queue.record_results(conn, updates, when)
    for dsn in dsns:
        data, recipient = dsn.data, dsn.recipient
        found = directory.resolve(conn, recipient)
        source = io.BytesIO(data)
        if found is not None and found.account_ids:
            prefix = b"Return-Path: <>\r\n"
            deliver(
                conn,
                Delivery(source, len(data), when, [LocalCopy(a) for a in sorted(found.account_ids)], prefix),
            )
        elif found is None:
            envelope = QueueEnvelope(sender="", recipients=[QueueRecipient(recipient)])
            deliver(conn, Delivery(source, len(data), when, remote=envelope))
        # a local address that no longer exists: nobody to tell
