"""The ``http`` and ``https`` listeners' session: HTTP/1.1 over a plain or TLS stream.

On ``https`` the ClientHello is read before any TLS state exists: a client offering ALPN
``acme-tls/1`` (RFC 8737, an ACME CA validating tls-alpn-01) gets the challenge certificate for its
SNI name and nothing else; everyone else gets the shared context (the server's certificate), with
the bytes already read replayed into the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Protocol

from mailroom import logs
from mailroom.acme.challenges import ACME_TLS_ALPN, HTTP01_PREFIX, ChallengeResponder
from mailroom.config import Config
from mailroom.net.listeners import Connection, SessionHandler
from mailroom.net.tls import NotTLS, ServerTLS, TLSStream, read_client_hello
from mailroom.web.autoconfig import register_pages
from mailroom.web.http import (
    HTTPError,
    Request,
    Response,
    Router,
    body_length,
    head_complete,
    parse_head,
    text,
)

MAX_REQUESTS = 100  # per connection
IDLE_TIMEOUT = 30.0


class Stream(Protocol):
    async def read(self, size: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


class PlainStream:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def read(self, size: int) -> bytes:
        return await self.conn.reader.read(size)

    def write(self, data: bytes) -> None:
        self.conn.writer.write(data)

    async def drain(self) -> None:
        await self.conn.writer.drain()

    async def close(self) -> None:
        pass  # the listener closes the transport


@dataclass
class WebContext:
    cfg: Config
    tls: ServerTLS
    router: Router
    challenges: ChallengeResponder


def build_router(challenges: ChallengeResponder) -> Router:
    """The routes every mailroom answers; later features add theirs with ``router.add``."""
    router = Router()

    async def http01(request: Request) -> Response:
        # RFC 8555 §8.3: the body is the key authorization; any Host (a reverse proxy may rewrite it)
        answer = challenges.http01(request.path[len(HTTP01_PREFIX) :])
        if answer is None:
            return text(404)
        return Response(200, answer.encode("ascii"), "application/octet-stream")

    router.add(HTTP01_PREFIX, http01, prefix=True)
    return router


def http_handler(ctx: WebContext) -> SessionHandler:
    register_pages(ctx.router, ctx.cfg)  # autoconfig, autodiscover, Apple profile, MTA-STS policy

    async def handle(conn: Connection) -> None:
        await serve_connection(ctx, conn)

    return handle


async def serve_connection(ctx: WebContext, conn: Connection) -> None:
    log = logs.conn_logger(conn.kind.service, conn.conn_id)
    handshake_timeout = ctx.cfg.limits.tls_handshake_timeout
    stream: Stream
    if conn.kind.tls == "implicit" and not conn.tls_active:
        try:
            data, hello = await read_client_hello(conn.reader, handshake_timeout)
        except (NotTLS, TimeoutError) as exc:
            log.debug("no TLS ClientHello from [%s]: %s", conn.peer_ip, exc or "timeout")
            return
        if ACME_TLS_ALPN in hello.alpn:
            context = ctx.challenges.tls_alpn01(hello.server_name)
            if context is None:
                log.info(
                    "tls-alpn-01 probe for %r from [%s]: no challenge pending",
                    hello.server_name,
                    conn.peer_ip,
                )
                return
            challenge = TLSStream(conn.reader, conn.writer, context, data)
            await challenge.handshake(handshake_timeout)
            log.info("answered tls-alpn-01 for %s to [%s]", hello.server_name, conn.peer_ip)
            await challenge.close()
            return
        tls_stream = TLSStream(conn.reader, conn.writer, ctx.tls.context, data)
        await tls_stream.handshake(handshake_timeout)
        stream = tls_stream
    else:
        stream = PlainStream(conn)
    try:
        await serve_http(stream, ctx.router, conn, https=conn.kind.tls == "implicit", log=log)
    finally:
        await stream.close()


async def serve_http(
    stream: Stream,
    router: Router,
    conn: Connection,
    *,
    https: bool,
    log: logs.ConnLogger,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    buffer = bytearray()
    for served in range(1, MAX_REQUESTS + 1):
        try:
            while (end := head_complete(buffer)) < 0:
                conn.idle = not buffer
                try:
                    chunk = await asyncio.wait_for(stream.read(65536), idle_timeout)
                finally:
                    conn.idle = False
                if not chunk:
                    return
                buffer += chunk
            head = bytes(buffer[:end])
            del buffer[:end]
            request = parse_head(head, https=https, peer_ip=conn.peer_ip)
            length = body_length(request)
            while len(buffer) < length:
                chunk = await asyncio.wait_for(stream.read(65536), idle_timeout)
                if not chunk:
                    return
                buffer += chunk
            if length:
                request = dataclasses.replace(request, body=bytes(buffer[:length]))
            del buffer[:length]
        except TimeoutError:
            if buffer:
                await _send(stream, text(408), head_only=False, close=True)
            return
        except HTTPError as exc:
            log.info("bad request from [%s]: %d %s", conn.peer_ip, exc.status, exc)
            await _send(stream, text(exc.status, str(exc)), head_only=False, close=True)
            return
        try:
            response = await router.dispatch(request)
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            response = text(500)
        close = not request.keep_alive or served == MAX_REQUESTS
        await _send(stream, response, head_only=request.method == "HEAD", close=close)
        log.info(
            '[%s] "%s %s %s" %d %d',
            conn.peer_ip,
            request.method,
            request.target[:200],
            request.version,
            response.status,
            len(response.body),
        )
        if close:
            return


async def _send(stream: Stream, response: Response, *, head_only: bool, close: bool) -> None:
    data = response.head_bytes(close=close)
    if not head_only:
        data += response.body
    with contextlib.suppress(ConnectionError):
        stream.write(data)
        await stream.drain()
