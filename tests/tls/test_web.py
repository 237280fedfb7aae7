"""The http/https listeners in-process: routes, http-01, the ClientHello peek and tls-alpn-01."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from mailroom.acme.challenges import ACME_TLS_ALPN, ID_PE_ACME_IDENTIFIER, ChallengeResponder
from mailroom.config import Endpoint, dev_defaults
from mailroom.net.listeners import KINDS, ConnectionLimits, Listener, bind
from mailroom.net.tls import ServerTLS
from mailroom.web.http import Request, Response
from mailroom.web.server import WebContext, build_router, http_handler
from tests.tls.certs import insecure_client, make_pair, serial_of


@asynccontextmanager
async def web(tmp_path: Path, service: str) -> AsyncIterator[tuple[int, ChallengeResponder, WebContext, int]]:
    cert, key, serial = make_pair(tmp_path / "certs")
    tls = ServerTLS(cert, key, scratch_dir=tmp_path / "scratch")
    challenges = ChallengeResponder(tmp_path / "scratch")
    ctx = WebContext(dev_defaults(str(tmp_path / "data")), tls, build_router(challenges), challenges)
    sock = bind(service, Endpoint("127.0.0.1", 0))
    listener = Listener(KINDS[service], sock, http_handler(ctx), ConnectionLimits(100, 100), None, 5.0)
    await listener.start()
    try:
        yield sock.getsockname()[1], challenges, ctx, serial
    finally:
        listener.stop_accepting()
        await listener.finish(grace=1)


async def exchange(port: int, data: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="mx.example.org" if tls else None
    )
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_http01_answer_and_404(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "http") as (port, challenges, _, _):
            challenges.add_http01("tok-EN_1", "tok-EN_1.thumb")
            out = await exchange(
                port,
                b"GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 200 OK\r\n")
            assert out.endswith(b"\r\n\r\ntok-EN_1.thumb")
            out = await exchange(
                port,
                b"GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 404 ")
            challenges.remove_http01("tok-EN_1")
            out = await exchange(port, b"GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.0\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 404 ")

    run(go)


def test_keep_alive_head_and_proxy_absolute_form(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "http") as (port, challenges, _, _):
            challenges.add_http01("t1", "t1.x")
            # pipelined: a HEAD, then an absolute-form GET as a forwarding proxy may send, then close
            out = await exchange(
                port,
                b"HEAD /.well-known/acme-challenge/t1 HTTP/1.1\r\nHost: a\r\n\r\n"
                b"GET http://mx.example.org/.well-known/acme-challenge/t1 HTTP/1.1\r\nHost: mx.example.org\r\n"
                b"X-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n",
            )
            first, second = out.split(b"HTTP/1.1 200 OK", 2)[1:]
            assert b"Content-Length: 4" in first and not first.endswith(b"t1.x")
            assert second.endswith(b"\r\n\r\nt1.x") and b"Connection: close" in second

    run(go)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", b"505"),
        (
            b"POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
            b"405",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    ],
)
def test_bad_requests(tmp_path: Path, request_bytes: bytes, status: bytes) -> None:
    async def go() -> None:
        async with web(tmp_path, "http") as (port, _, _, _):
            out = await exchange(port, request_bytes)
            assert out.startswith(b"HTTP/1.1 " + status), out[:80]

    run(go)


def test_routes_are_pluggable(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "http") as (port, _, ctx, _):

            async def page(request: Request) -> Response:
                return Response(200, f"hello {request.host}".encode(), "text/html")

            ctx.router.add("/mail/config-v1.1.xml", page)
            out = await exchange(
                port,
                b"GET /mail/config-v1.1.xml?x=1 HTTP/1.1\r\nHost: Auto.Example:80\r\nConnection: close\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello auto.example")

    run(go)


def test_https_serves_the_shared_certificate(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "https") as (port, challenges, _, serial):
            challenges.add_http01("t", "t.k")
            out = await exchange(
                port,
                b"GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                insecure_client(),
            )
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"t.k")
            got = await asyncio.to_thread(_serial_over, port, None)
            assert got == serial

    run(go)


def _serial_over(port: int, alpn: list[str] | None, server_name: str = "mx.example.org") -> int:
    ctx = insecure_client()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as s,
    ):
        if alpn:
            assert s.selected_alpn_protocol() == ACME_TLS_ALPN
        return serial_of(s.getpeercert(binary_form=True))


def test_tls_alpn01_gets_the_challenge_certificate(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "https") as (port, challenges, _, serial):
            # nothing pending: a validator gets no handshake at all
            with pytest.raises((ssl.SSLError, OSError)):
                await asyncio.to_thread(_serial_over, port, [ACME_TLS_ALPN])
            await asyncio.to_thread(challenges.add_tls_alpn01, "mx.example.org", "tok.thumb")
            ctx = insecure_client()
            ctx.set_alpn_protocols([ACME_TLS_ALPN])

            def fetch() -> bytes:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                    ctx.wrap_socket(raw, server_hostname="MX.example.org") as s,
                ):
                    assert s.selected_alpn_protocol() == ACME_TLS_ALPN
                    der = s.getpeercert(binary_form=True)
                    assert der is not None
                    return der

            cert = x509.load_der_x509_certificate(await asyncio.to_thread(fetch))
            assert cert.serial_number != serial
            ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(ID_PE_ACME_IDENTIFIER))
            assert ext.critical and ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()  # type: ignore[attr-defined]
            # other names, and ordinary clients meanwhile, still get the server's certificate
            with pytest.raises((ssl.SSLError, OSError)):
                await asyncio.to_thread(_serial_over, port, [ACME_TLS_ALPN], "other.example.org")
            assert await asyncio.to_thread(_serial_over, port, None) == serial
            assert ("tls-alpn-01", "mx.example.org") in challenges.answered

    run(go)


def test_plain_http_on_the_https_port_is_dropped(tmp_path: Path) -> None:
    async def go() -> None:
        async with web(tmp_path, "https") as (port, _, _, _):
            out = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert out == b""

    run(go)
