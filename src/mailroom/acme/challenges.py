"""Challenge responders shared by the ACME client (which publishes) and the web listeners (which answer).

- http-01 (RFC 8555 §8.3): ``GET /.well-known/acme-challenge/<token>`` on the ``http`` listener (or
  through a reverse proxy that forwards that path) answers the key authorization.
- tls-alpn-01 (RFC 8737): a TLS connection to the ``https`` listener offering ALPN ``acme-tls/1``
  with SNI ``<name>`` gets a self-signed certificate for ``<name>`` carrying the critical
  id-pe-acmeIdentifier extension (the SHA-256 of the key authorization), and nothing else.

The ACME client normally runs in a child process (worker.py) that asks the server to publish and
withdraw challenges over a pipe (workerclient.py applies them on the event loop); where no child can
run it runs in a daemon thread of the server. Either way the event loop only reads these dicts
(single assignments and deletions, atomic in CPython).
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import os
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Protocol

from mailroom.net.tls import server_context

CHALLENGE_TYPES = ("http-01", "tls-alpn-01")
ACME_TLS_ALPN = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = "1.3.6.1.5.5.7.1.31"  # RFC 8737 §6.1
HTTP01_PREFIX = "/.well-known/acme-challenge/"


def alpn_challenge_cert(name: str, key_authorization: str) -> tuple[bytes, bytes]:
    """RFC 8737 §3: (certificate PEM, key PEM) for answering tls-alpn-01 for ``name``."""
    # cryptography is loaded only while an ACME order runs, not by an idle server
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    der_octet_string = b"\x04\x20" + digest  # acmeIdentifier ::= OCTET STRING (SIZE (32))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier(ID_PE_ACME_IDENTIFIER), der_octet_string),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def alpn_context(cert_pem: bytes, key_pem: bytes, scratch_dir: Path | None = None) -> ssl.SSLContext:
    """A context that negotiates only ``acme-tls/1`` and presents the challenge certificate."""
    context = server_context()
    context.set_alpn_protocols([ACME_TLS_ALPN])
    if scratch_dir is not None:
        scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".alpn-", dir=scratch_dir))
    try:
        (tmp / "cert.pem").write_bytes(cert_pem)
        fd = os.open(tmp / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return context


class Publisher(Protocol):
    """What the ACME client needs to publish challenges: the server's ChallengeResponder when it runs
    in the server process, a proxy that asks the server over the worker pipe when it runs in a child."""

    def add_http01(self, token: str, key_authorization: str) -> None: ...

    def remove_http01(self, token: str) -> None: ...

    def add_tls_alpn01(self, name: str, key_authorization: str) -> None: ...

    def remove_tls_alpn01(self, name: str) -> None: ...


class ChallengeResponder:
    """The challenges currently published, by token (http-01) and by name (tls-alpn-01)."""

    def __init__(self, scratch_dir: Path | None = None) -> None:
        self.scratch_dir = scratch_dir
        self._http01: dict[str, str] = {}
        self._alpn: dict[str, ssl.SSLContext] = {}
        self.answered: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=64
        )  # (challenge type, name or token), for logs and tests

    # publishing (ACME client thread)
    def add_http01(self, token: str, key_authorization: str) -> None:
        self._http01[token] = key_authorization

    def remove_http01(self, token: str) -> None:
        self._http01.pop(token, None)

    def add_tls_alpn01(self, name: str, key_authorization: str) -> None:
        """Make the challenge certificate here (loads cryptography: the in-process path)."""
        cert_pem, key_pem = alpn_challenge_cert(name, key_authorization)
        self.add_tls_alpn01_pem(name, cert_pem, key_pem)

    def add_tls_alpn01_pem(self, name: str, cert_pem: bytes, key_pem: bytes) -> None:
        """Publish a challenge certificate made elsewhere (the worker process): ssl only."""
        self._alpn[name.lower()] = alpn_context(cert_pem, key_pem, self.scratch_dir)

    def remove_tls_alpn01(self, name: str) -> None:
        self._alpn.pop(name.lower(), None)

    # answering (event loop)
    def http01(self, token: str) -> str | None:
        answer = self._http01.get(token)
        if answer is not None:
            self.answered.append(("http-01", token))
        return answer

    def tls_alpn01(self, server_name: str) -> ssl.SSLContext | None:
        context = self._alpn.get(server_name.lower().rstrip("."))
        if context is not None:
            self.answered.append(("tls-alpn-01", server_name))
        return context
