"""TLS server contexts: TLS 1.2 and 1.3 only, a modern cipher list, swapped in place on renewal.

One SSLContext object serves every listener; ``reload`` loads a new certificate into that same
object, so implicit-TLS listeners and later STARTTLS upgrades pick it up without a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are fixed by OpenSSL)
_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TLSError(Exception):
    pass


class ServerTLS:
    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_ciphers(_CIPHERS)
        self.context.options |= (
            ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
        )
        self.cert = cert
        self.key = key
        self.reload()

    def reload(self, cert: Path | None = None, key: Path | None = None) -> None:
        cert, key = cert or self.cert, key or self.key
        try:
            self.context.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise TLSError(f"certificate or key not found: {exc.filename}") from None
        except PermissionError as exc:
            raise TLSError(f"certificate or key not readable: {exc.filename}") from None
        except (ssl.SSLError, ValueError) as exc:
            raise TLSError(f"cannot load certificate {cert} with key {key}: {exc}") from None
        self.cert, self.key = cert, key


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """``TLSv1.3:TLS_AES_256_GCM_SHA384`` for logs and Received headers."""
    if ssl_object is None:
        return "none"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()}:{cipher[0] if cipher else '?'}"
