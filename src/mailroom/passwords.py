"""Password hashing: argon2id (RFC 9106) for logins, SCRAM-SHA-256 keys (RFC 7677) for SASL.

Verification costs tens of milliseconds of CPU by design, so the server runs it in a small
thread pool: a login never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailroom.wire.sasl import ScramCredentials, normalize_password, scram_keys_from_password

# argon2-cffi's defaults are RFC 9106's second recommended option (t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()
_pool: ThreadPoolExecutor | None = None
SCRAM_ITERATIONS = 4096  # RFC 7677 §4: at least 4096


@functools.cache
def _dummy_hash() -> str:
    """A hash verified when the account does not exist, so a failed login takes the same time
    whether or not the user exists. Made on first use: it costs 64 MiB and ~50 ms."""
    return _hasher.hash("mailroom-no-such-user")


def hash_password(password: str) -> str:
    # the same SASLprep normalisation SCRAM applies (RFC 5802 §2.2), so both mechanisms agree
    return _hasher.hash(normalize_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), normalize_password(password))
            and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, verify_password, password_hash, password)


def generate_password(nbytes: int = 15) -> str:
    """A random password that is easy to copy: 20 URL-safe characters."""
    return secrets.token_urlsafe(nbytes)


def encode_scram(keys: ScramCredentials) -> str:
    """How accounts.scram_sha256 stores the RFC 5802 §3 keys: "iterations$salt$storedkey$serverkey"."""
    b64 = base64.b64encode
    return f"{keys.iterations}${b64(keys.salt).decode()}${b64(keys.stored_key).decode()}${b64(keys.server_key).decode()}"


def decode_scram(text: str) -> ScramCredentials:
    iterations, salt, stored, server = text.split("$")
    b64d = base64.b64decode
    return ScramCredentials(b64d(salt), int(iterations), b64d(stored), b64d(server))


def scram_sha256_keys(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> ScramCredentials:
    """New SCRAM-SHA-256 keys for a password (a fresh 16-byte salt unless one is given)."""
    return scram_keys_from_password(password, os.urandom(16) if salt is None else salt, iterations)
