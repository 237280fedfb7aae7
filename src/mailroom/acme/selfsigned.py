"""A self-signed certificate for first start and dev mode (tls.mode = "self-signed").

Checking the stored pair needs no crypto library (certinfo reads the DER). Making one needs
cryptography, so the server has it made by the certificate worker, a short-lived child process
(worker.py, through workerclient.CertWorker.self_signed), and calls ``make_self_signed`` itself
only where no child can run.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from mailroom.acme.issued import write_private
from mailroom.net.certinfo import CertificateFormatError, read_pem

MIN_REMAINING = datetime.timedelta(days=7)  # a start this close to expiry makes a new one


def self_signed_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "selfsigned.crt", directory / "selfsigned.key"


def ensure_self_signed(
    directory: Path, hostname: str, make: Callable[[Path, str], object] | None = None
) -> tuple[Path, Path, bool]:
    """Return (cert, key) paths, creating them when absent or not for ``hostname``.

    ``make(directory, hostname)`` writes a new pair (default: ``make_self_signed`` in this process).
    The third value says whether a new certificate was made.
    """
    cert_path, key_path = self_signed_paths(directory)
    if cert_path.exists() and key_path.exists():
        try:
            info = read_pem(cert_path.read_bytes())
            if (
                hostname in info.names
                and info.not_after > datetime.datetime.now(datetime.UTC) + MIN_REMAINING
            ):
                return cert_path, key_path, False
        except CertificateFormatError:
            pass
    (make or make_self_signed)(directory, hostname)
    return cert_path, key_path, True


def make_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Write a new P-256 key (0600) and a self-signed certificate for ``hostname``, localhost,
    127.0.0.1 and ::1, valid 825 days. Loads cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = self_signed_paths(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        sans.append(x509.DNSName("localhost"))
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, key_pem)
    tmp = cert_path.with_name(f".{cert_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)
    return cert_path, key_path
