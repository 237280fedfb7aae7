"""Listening sockets and the accept loop: the only place that binds ports.

Listener kinds are data (ARCHITECTURE habit 8, chasquid's SocketMode): a session knows from its
kind whether TLS is already on (465/993/995) before it builds EHLO or CAPABILITY.
Sockets are bound first, while still root, and served after privileges are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailroom.config import Endpoint
from mailroom.logs import new_conn_id
from mailroom.policy.auth import client_key

log = logging.getLogger("mailroom.net")


@dataclass(frozen=True)
class ListenerKind:
    service: str  # config key: smtp, submission, submissions, imap, imaps, pop3, pop3s, http, https
    protocol: str  # smtp, imap, pop3, http
    tls: str  # none | starttls | implicit
    submission: bool = False  # AUTH required, relay allowed for authenticated users


KINDS: dict[str, ListenerKind] = {
    "smtp": ListenerKind("smtp", "smtp", "starttls"),
    "submission": ListenerKind("submission", "smtp", "starttls", submission=True),
    "submissions": ListenerKind("submissions", "smtp", "implicit", submission=True),
    "imap": ListenerKind("imap", "imap", "starttls"),
    "imaps": ListenerKind("imaps", "imap", "implicit"),
    "pop3": ListenerKind("pop3", "pop3", "starttls"),
    "pop3s": ListenerKind("pop3s", "pop3", "implicit"),
    "http": ListenerKind("http", "http", "none"),
    "https": ListenerKind("https", "http", "implicit"),
}


@dataclass
class Connection:
    """What a session gets: the streams plus who and where."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    kind: ListenerKind
    conn_id: str
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    idle: bool = False  # waiting for the peer with nothing in flight: safe to cancel at shutdown

    async def read(self, size: int, timeout: float) -> bytes:
        """Read what the peer sent; while waiting the connection counts as idle."""
        self.idle = True
        try:
            # not wait_for: on Python 3.11 it wraps every read in a new task
            async with asyncio.timeout(timeout):
                return await self.reader.read(size)
        finally:
            self.idle = False

    @property
    def tls_active(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Upgrade after STARTTLS/STLS (the protocol's "go ahead" has been flushed already).

        Plaintext the client pipelined after the command must not be honoured (RFC 3207 §4.2,
        RFC 2595 §3.1, CVE-2011-0411): the engine drops what it buffered, and this drops what the
        stream reader read ahead, which would otherwise come back as if it had been encrypted.
        """
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        await self.writer.start_tls(context, ssl_handshake_timeout=timeout)


SessionHandler = Callable[[Connection], Awaitable[None]]
# Bytes to send when a connection is refused over a limit (protocol-specific busy reply)
BUSY_REPLIES = {
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",
    "imap": b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    "http": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
}


# What a session cancelled at shutdown says before the connection closes
BYE_REPLIES = {
    "http": b"",
    "smtp": b"421 4.3.2 Server shutting down\r\n",
    "imap": b"* BYE Server shutting down\r\n",
    "pop3": b"-ERR [SYS/TEMP] Server shutting down\r\n",
}


class BindError(Exception):
    pass


def bind(service: str, endpoint: Endpoint) -> socket.socket:
    """Bind one listening socket; IPv6 sockets are IPv6-only so 0.0.0.0 and [::] can coexist."""
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    # IPPROTO_TCP given explicitly: asyncio then sets TCP_NODELAY on accepted connections (a reply
    # written in two pieces otherwise waits ~40 ms for the peer's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = {
            errno.EADDRINUSE: "address already in use",
            errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            errno.EADDRNOTAVAIL: "address not available on this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise BindError(f"listeners.{service}: cannot listen on {endpoint}: {reason}") from None
    return sock


class ConnectionLimits:
    """Total and per-client-address connection caps."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open = 0
        self.by_ip: Counter[str] = Counter()

    client_key = staticmethod(client_key)  # IPv4 singly, IPv6 per /64, as login throttling counts

    def admit(self, ip: str) -> bool:
        key = self.client_key(ip)
        if self.open >= self.total or self.by_ip[key] >= self.per_ip:
            return False
        self.open += 1
        self.by_ip[key] += 1
        return True

    def release(self, ip: str) -> None:
        key = self.client_key(ip)
        self.open -= 1
        self.by_ip[key] -= 1
        if self.by_ip[key] <= 0:
            del self.by_ip[key]


class Listener:
    """Serves one bound socket with a session handler."""

    def __init__(
        self,
        kind: ListenerKind,
        sock: socket.socket,
        handler: SessionHandler,
        limits: ConnectionLimits,
        tls_context: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        self.kind = kind
        self.sock = sock
        self.handler = handler
        self.limits = limits
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self.server: asyncio.Server | None = None
        self.tasks: dict[asyncio.Task[None], Connection] = {}

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def implicit_tls(self) -> bool:
        # no context: the session does TLS itself (https reads the ClientHello first, for tls-alpn-01)
        return self.kind.tls == "implicit" and self.tls_context is not None

    async def start(self) -> None:
        # Implicit TLS is started in _accept, after the connection limits admitted the client: a
        # handshake in progress costs ~300 KiB (asyncio's TLS buffers), and handshakes done by
        # start_server(ssl=...) would not count against max_connections or the per-IP cap.
        self.server = await asyncio.start_server(self._accept, sock=self.sock, limit=64 * 1024)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        peer_ip = str(peer[0]).removeprefix("::ffff:")
        if not self.limits.admit(peer_ip):
            log.warning(
                "%s: refused connection from %s: connection limit reached", self.kind.service, peer_ip
            )
            if not self.implicit_tls:  # on a TLS port the busy reply would need a handshake first
                try:
                    writer.write(BUSY_REPLIES[self.kind.protocol])
                    await asyncio.wait_for(writer.drain(), 5)
                except (OSError, TimeoutError, ssl.SSLError):
                    pass
            writer.close()
            return
        conn = Connection(
            reader, writer, self.kind, new_conn_id(), peer_ip, int(peer[1]), str(local[0]), int(local[1])
        )
        self.tasks[task] = conn
        handshaken = not self.implicit_tls
        try:
            if not handshaken:
                assert self.tls_context is not None
                conn.idle = True  # nothing in flight yet: a shutdown may end it at once
                await writer.start_tls(self.tls_context, ssl_handshake_timeout=self.handshake_timeout)
                conn.idle = False
                handshaken = True
            await self.handler(conn)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # shutdown: the session was idle (or out of grace); say goodbye and end quietly
            if handshaken:
                with contextlib.suppress(Exception):
                    writer.write(BYE_REPLIES[self.kind.protocol])
        except Exception:
            log.exception("%s [%s]: session failed", self.kind.service, conn.conn_id)
        finally:
            self.tasks.pop(task, None)
            self.limits.release(peer_ip)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
                pass

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def finish(self, grace: float) -> None:
        """Stop sessions: idle ones at once, busy ones (storing a message, streaming one) when they
        next wait for the peer or when ``grace`` seconds have passed."""
        deadline = asyncio.get_running_loop().time() + grace
        while self.tasks and asyncio.get_running_loop().time() < deadline:
            for task, conn in list(self.tasks.items()):
                if conn.idle:
                    task.cancel()
            await asyncio.wait(set(self.tasks), timeout=0.05)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=2)
