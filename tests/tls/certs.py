"""Certificates for the TLS tests, made with cryptography (no network, no CA)."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_pair(
    directory: Path, stem: str = "server", names: tuple[str, ...] = ("mx.example.org",), days: int = 30
) -> tuple[Path, Path, int]:
    """A self-signed (cert, key) pair in ``directory``; returns the paths and the serial."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path, cert.serial_number


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def insecure_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def implicit_tls_serial(port: int, server_name: str = "mx.example.org") -> int:
    """The serial of the certificate a fresh implicit-TLS connection to 127.0.0.1:port gets."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        insecure_client().wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return serial_of(tls.getpeercert(binary_form=True))
