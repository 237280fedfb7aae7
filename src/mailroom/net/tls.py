"""TLS server contexts: TLS 1.2 and 1.3 only, a modern cipher list, swapped in place on renewal.

One SSLContext object serves every listener; ``load`` puts a new certificate into that same
object, so implicit-TLS listeners and later STARTTLS upgrades pick it up without a restart
(OpenSSL copies the context's certificate into each new connection at accept time).

A new pair is checked whole (readable, PEM, key matches certificate) on a snapshot before it
touches the shared context: OpenSSL's ``SSL_CTX_use_certificate`` with a mismatched key would
otherwise leave the live context with the new certificate and no key, and every handshake would fail.

Also here, for the ``https`` listener: reading the ClientHello before any TLS state exists (to see
the ``acme-tls/1`` ALPN protocol of RFC 8737, which Python's ssl cannot choose a certificate by),
and a TLS stream over memory BIOs that replays those already-read bytes into the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailroom.net.certinfo import CertificateFormatError, CertInfo, pem_certificates, read_der

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are fixed by OpenSSL)
_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TLSError(Exception):
    """A certificate/key problem; ``str()`` is one line naming the file (and config key when known)."""


def server_context() -> ssl.SSLContext:
    """A server context with mailroom's policy and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


__all__ = ["CertInfo", "ServerTLS", "TLSError", "check_pair", "server_context"]


class _Encrypted(Exception):
    """Raised from OpenSSL's passphrase callback instead of letting it prompt on a terminal."""


def _no_passphrase() -> str:
    raise _Encrypted


def _read(path: Path, key_name: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{key_name}: {what} {path}: no such file") from None
    except PermissionError:
        raise TLSError(
            f"{key_name}: {what} {path}: not readable by uid {os.geteuid()} (permission denied)"
        ) from None
    except IsADirectoryError:
        raise TLSError(f"{key_name}: {what} {path}: is a directory, not a file") from None
    except OSError as exc:
        raise TLSError(f"{key_name}: {what} {path}: cannot read: {exc.strerror}") from None


def check_pair(
    cert_pem: bytes,
    key_pem: bytes,
    cert: Path,
    key: Path,
    cert_key: str = "tls.cert",
    key_key: str = "tls.key",
    *,
    scratch_dir: Path | None = None,
) -> CertInfo:
    """Parse a certificate chain and key and check they belong together; one-line TLSError if not.

    OpenSSL (the ssl module) does the key work on a throw-away context, so a bad pair never
    touches the live one and no crypto library beyond OpenSSL is loaded."""
    try:
        chain = pem_certificates(cert_pem)
        if not chain:
            raise TLSError(f"{cert_key}: {cert}: no PEM certificate in the file")
        info = read_der(chain[0])
    except CertificateFormatError as exc:
        raise TLSError(f"{cert_key}: {cert}: not a usable certificate ({exc})") from None
    if b"PRIVATE KEY-----" not in key_pem:
        raise TLSError(f"{key_key}: {key}: no usable PEM private key in the file")
    with _snapshot(cert_pem, key_pem, scratch_dir) as (cert_file, key_file):
        try:
            server_context().load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except _Encrypted:
            raise TLSError(
                f"{key_key}: {key}: the key is encrypted (passphrase-protected keys are not supported)"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise TLSError(
                    f"{key_key}: {key} is not the private key of the certificate in {cert} (wrong key)"
                ) from None
            if exc.library == "PEM" or "PEM" in str(exc):
                raise TLSError(f"{key_key}: {key}: no usable PEM private key in the file") from None
            raise TLSError(f"{cert_key}: cannot use certificate {cert} with key {key}: {exc}") from None
    return info


class ServerTLS:
    """The one shared server context and the certificate it currently holds."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        cert_key: str = "tls.cert",
        key_key: str = "tls.key",
        scratch_dir: Path | None = None,
    ) -> None:
        self.context = server_context()
        self.cert = cert
        self.key = key
        self.cert_key = cert_key  # the config key named in error lines
        self.key_key = key_key
        self.scratch_dir = scratch_dir
        self.info: CertInfo | None = None
        self.load(cert, key)

    def load(
        self, cert: Path | None = None, key: Path | None = None, *, cert_key: str = "", key_key: str = ""
    ) -> CertInfo:
        """Check a certificate/key pair and put it into the shared context; on error the context
        keeps the pair it had. Reads each file once, so a pair changing under us cannot half-apply."""
        cert, key = cert or self.cert, key or self.key
        cert_key, key_key = cert_key or self.cert_key, key_key or self.key_key
        cert_pem = _read(cert, cert_key, "certificate")
        key_pem = _read(key, key_key, "key")
        info = check_pair(cert_pem, key_pem, cert, key, cert_key, key_key, scratch_dir=self.scratch_dir)
        # load_cert_chain takes only paths: load the snapshot check_pair just proved on a probe
        with _snapshot(cert_pem, key_pem, self.scratch_dir) as (cert_file, key_file):
            self.context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        self.cert, self.key, self.cert_key, self.key_key, self.info = cert, key, cert_key, key_key, info
        return info

    def reload(self, cert: Path | None = None, key: Path | None = None) -> None:
        """Re-read the current (or the given) files; kept for callers of the Foundation API."""
        self.load(cert, key)


@contextlib.contextmanager
def _snapshot(cert_pem: bytes, key_pem: bytes, scratch_dir: Path | None) -> Iterator[tuple[str, str]]:
    """The pair as two readable paths. On Linux, anonymous in-memory files (memfd): they need no
    disk space, so a full data_dir cannot stop a start or a reload, and the key never touches a
    disk. Elsewhere, 0600 files in a private directory under ``scratch_dir``, removed after use."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for data in (cert_pem, key_pem):
                fd = os.memfd_create("mailroom-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".tls-load-", dir=scratch_dir))
    try:
        (tmp / "cert.pem").write_bytes(cert_pem)
        fd = os.open(tmp / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        yield str(tmp / "cert.pem"), str(tmp / "key.pem")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """``TLSv1.3:TLS_AES_256_GCM_SHA384`` for logs and Received headers."""
    if ssl_object is None:
        return "none"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()}:{cipher[0] if cipher else '?'}"


# --- ClientHello peek (RFC 8446 §4.1.2, RFC 6066 §3 SNI, RFC 7301 ALPN) -----------------------

MAX_HELLO = 64 * 1024  # a ClientHello (even with post-quantum key shares) is far smaller


class NotTLS(Exception):
    """The first bytes are not a TLS handshake (plain HTTP on the https port, a scanner...)."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str  # "" when the client sent no SNI
    alpn: tuple[str, ...]


def _u(data: bytes, pos: int, size: int) -> tuple[int, int]:
    if pos + size > len(data):
        raise NotTLS("truncated ClientHello")
    return int.from_bytes(data[pos : pos + size], "big"), pos + size


def hello_records_complete(data: bytes) -> int | None:
    """How many bytes of ``data`` hold the whole ClientHello handshake message (it may span
    several TLS records), or None if more bytes are needed. NotTLS for anything else."""
    body = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            if pos == 0 and data and data[0] != 0x16:
                raise NotTLS("not a TLS handshake record")
            return None
        if data[pos] != 0x16 or data[pos + 1] != 0x03:
            raise NotTLS("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise NotTLS("bad TLS record length")
        if len(data) < pos + 5 + length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(body) >= 4:
            if body[0] != 1:
                raise NotTLS("first handshake message is not a ClientHello")
            if len(body) >= 4 + int.from_bytes(body[1:4], "big"):
                return pos
        if pos > MAX_HELLO:
            raise NotTLS("ClientHello too large")


def parse_client_hello(data: bytes) -> ClientHello:
    """SNI host name and ALPN protocol list of a complete ClientHello (TLS records included)."""
    body = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
    msg = bytes(body)
    if not msg or msg[0] != 1:
        raise NotTLS("not a ClientHello")
    end = 4 + int.from_bytes(msg[1:4], "big")
    msg = msg[:end]
    p = 4 + 2 + 32  # type + length, legacy_version, random
    n, p = _u(msg, p, 1)
    p += n  # legacy_session_id
    n, p = _u(msg, p, 2)
    p += n  # cipher_suites
    n, p = _u(msg, p, 1)
    p += n  # legacy_compression_methods
    server_name = ""
    alpn: tuple[str, ...] = ()
    if p == len(msg):
        return ClientHello(server_name, alpn)
    total, p = _u(msg, p, 2)
    stop = min(p + total, len(msg))
    while p + 4 <= stop:
        ext_type, p = _u(msg, p, 2)
        ext_len, p = _u(msg, p, 2)
        ext = msg[p : p + ext_len]
        p += ext_len
        if ext_type == 0 and len(ext) >= 2:  # server_name: list of (type, name)
            q = 2
            while q + 3 <= len(ext):
                name_type, name_len = ext[q], int.from_bytes(ext[q + 1 : q + 3], "big")
                if name_type == 0:
                    server_name = ext[q + 3 : q + 3 + name_len].decode("ascii", "replace").lower().rstrip(".")
                    break
                q += 3 + name_len
        elif ext_type == 16 and len(ext) >= 2:  # application_layer_protocol_negotiation
            protocols: list[str] = []
            q = 2
            while q < len(ext):
                plen = ext[q]
                protocols.append(ext[q + 1 : q + 1 + plen].decode("ascii", "replace"))
                q += 1 + plen
            alpn = tuple(protocols)
    return ClientHello(server_name, alpn)


async def read_client_hello(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, ClientHello]:
    """Read (not peek: the bytes are replayed into TLSStream) until a whole ClientHello is in."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            chunk = await reader.read(MAX_HELLO)
            if not chunk:
                raise NotTLS("connection closed before a ClientHello")
            data += chunk
            if hello_records_complete(data) is not None:
                return data, parse_client_hello(data)
            if len(data) > MAX_HELLO:
                raise NotTLS("ClientHello too large")


class TLSStream:
    """Server-side TLS over an already-open asyncio stream, fed the bytes read while peeking.

    Used by the https listener: after read_client_hello the bytes are gone from the socket, so
    asyncio's own start_tls cannot be used; an SSLObject over memory BIOs replays them.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        initial: bytes = b"",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._incoming.write(initial)
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    async def _pull(self) -> None:
        data = await self._reader.read(65536)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _push(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)

    async def handshake(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.ssl_object.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._push()
                    await self._writer.drain()
                    await self._pull()
            self._push()
            await self._writer.drain()

    async def read(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes; b"" at the end of the stream (close_notify or EOF)."""
        while True:
            try:
                return self.ssl_object.read(size)
            except ssl.SSLWantReadError:
                self._push()
                await self._pull()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def write(self, data: bytes) -> None:
        self.ssl_object.write(data)
        self._push()

    async def drain(self) -> None:
        self._push()
        await self._writer.drain()

    async def close(self) -> None:
        try:
            self.ssl_object.unwrap()
        except ssl.SSLError:
            pass
        self._push()
        try:
            await asyncio.wait_for(self._writer.drain(), 2)
        except (OSError, TimeoutError):
            pass
