"""A self-signed certificate for first start and dev mode (tls.mode = "self-signed")."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from mailroom.net.certinfo import CertificateFormatError, read_pem


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path, bool]:
    """Return (cert, key) paths, creating them when absent or not for ``hostname``.

    The third value says whether a new certificate was made.
    """
    cert_path, key_path = directory / "selfsigned.crt", directory / "selfsigned.key"
    if cert_path.exists() and key_path.exists():
        try:
            info = read_pem(cert_path.read_bytes())
            if hostname in info.names and info.not_after > datetime.datetime.now(
                datetime.UTC
            ) + datetime.timedelta(days=7):
                return cert_path, key_path, False
        except CertificateFormatError:
            pass
    # making one is rare (first start, hostname change): only then load cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
