"""What an ACME issuance produces, without importing the ACME client library (which pulls in
requests and josepy: several MiB that a server not using ACME should never load)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class IssueError(Exception):
    """Issuance failed; ``str()`` is one line saying why (the CA's own words where it gave any)."""


@dataclass(frozen=True)
class Issued:
    fullchain_pem: bytes
    key_pem: bytes
    challenge: str  # the challenge type that was answered ("reused" when the CA had valid authorizations)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
