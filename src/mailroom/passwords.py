"""Password hashing: argon2id (RFC 9106) for logins, SCRAM-SHA-256 keys (RFC 7677) for SASL.

Verification costs tens of milliseconds of CPU by design, so the server runs it in a small
thread pool: a login never blocks the event loop. A password verified once is then remembered for
a while in :class:`VerifiedCache` (memory only), so a client that logs in every few minutes pays
that cost once an hour rather than at every poll.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailroom.wire.sasl import ScramCredentials, normalize_password, scram_keys_from_password

# argon2id at OWASP's recommended minimum, m=19 MiB, t=2, p=1 (OWASP Password Storage Cheat Sheet:
# "Use Argon2id with a minimum configuration of 19 MiB of memory, an iteration count of 2, and 1
# degree of parallelism"). We used argon2-cffi's default, RFC 9106 §4's second recommended option
# (m=64 MiB, t=3, p=4): ~140 ms here and 64 MiB allocated per concurrent login, a real spike on a
# small VPS whose idle server takes ~50 MiB. This is ~20 ms and 19 MiB: an offline guess costs an
# attacker several times less than before, still at the floor OWASP sets for new systems.
# Hashes made with other parameters still verify (they carry their own) and are rewritten at the
# next successful login (check_needs_rehash, argon2-cffi's documented practice). Until an account
# has logged in once after an upgrade, a wrong password for it costs the old ~140 ms against
# ~20 ms for an unknown name (whose dummy hash uses today's parameters); clients poll, so that
# window is short.
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM)
_pool: ThreadPoolExecutor | None = None
SCRAM_ITERATIONS = 4096  # RFC 7677 §4: at least 4096


@functools.cache
def _dummy_hash() -> str:
    """A hash verified when the account does not exist, so a failed login takes the same time
    whether or not the user exists. Made on first use (one hash's cost), with today's parameters."""
    return _hasher.hash("mailroom-no-such-user")


def hash_password(password: str) -> str:
    # the same SASLprep normalisation SCRAM applies (RFC 5802 §2.2), so both mechanisms agree
    return _hasher.hash(normalize_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """``None`` (no such account) or "" (no password set) verify the dummy hash and fail, so the
    dummy's own password is never accepted."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), normalize_password(password)) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether a (valid argon2) hash was made with other parameters than today's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


@dataclass(frozen=True)
class Verified:
    """The outcome of :func:`verify_and_rehash`: ``new_hash`` is set when the password was right
    and its stored hash uses outdated parameters; the caller stores it in place of the old one."""

    ok: bool
    new_hash: str | None = None


def verify_and_rehash(password_hash: str | None, password: str) -> Verified:
    """Verify, and on success rehash with today's parameters if the stored hash is outdated
    (one more hash, once per account: argon2-cffi's check_needs_rehash after a successful login)."""
    if not verify_password(password_hash, password):
        return Verified(False)
    assert password_hash is not None  # verify_password is False for None
    return Verified(True, hash_password(password) if needs_rehash(password_hash) else None)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
    return _pool


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), verify_password, password_hash, password)


async def verify_and_rehash_async(password_hash: str | None, password: str) -> Verified:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), verify_and_rehash, password_hash, password)


# --- the verified-credentials cache ----------------------------------------------------------------

DEFAULT_CACHE_TTL = 3600.0  # Dovecot's auth_cache_ttl default: 1 hour
DEFAULT_CACHE_SIZE = 1000  # accounts remembered at most (the least recently used go first)


class VerifiedCache:
    """Successful password checks, remembered in memory for ``ttl`` seconds. Modelled on Dovecot's
    auth cache (auth_cache_ttl, default 1 hour), which keeps the passdb answer and checks the
    password against the cached hash again; we keep a keyed HMAC instead, so a hit costs
    microseconds rather than an argon2 run.

    An entry is an HMAC-SHA256, under a random key made per process and never stored, of the
    account id, its stored argon2 hash and the (normalised) password: nothing a memory dump can
    turn back into a password without the key. It matches only while the account still has that
    stored hash, so a password change or reset (``mailroom user passwd``, from any process)
    invalidates it at the very next login. Only successes are remembered: a wrong password always
    pays the full argon2 cost and the failure throttling in policy/auth.py sees it as before.
    ``ttl`` 0 turns the cache off.
    """

    def __init__(
        self,
        ttl: float = DEFAULT_CACHE_TTL,
        max_entries: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # account id -> (stored hash, mac, expiry): one entry per account, its current password
        self._entries: OrderedDict[int, tuple[str, bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _mac(self, account_id: int, password_hash: str, password: str) -> bytes:
        # the password normalised as verify_password does, so the cache agrees with argon2
        message = b"\0".join(
            (str(account_id).encode(), password_hash.encode(), normalize_password(password).encode())
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def matches(self, account_id: int, password_hash: str, password: str) -> bool:
        """True only for the password verified before, the same stored hash, within the TTL."""
        entry = self._entries.get(account_id)
        if entry is None:
            return False
        stored, mac, expires = entry
        if self._clock() >= expires or stored != password_hash:
            del self._entries[account_id]  # expired, or the password was changed since
            return False
        if not hmac.compare_digest(mac, self._mac(account_id, password_hash, password)):
            return False  # another password: the caller verifies it in full (and it fails)
        self._entries.move_to_end(account_id)
        return True

    def remember(self, account_id: int, password_hash: str, password: str) -> None:
        """Call only after argon2 accepted ``password`` for ``password_hash``."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries.pop(account_id, None)
        self._entries[account_id] = (
            password_hash,
            self._mac(account_id, password_hash, password),
            self._clock() + self.ttl,
        )
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, account_id: int) -> None:
        self._entries.pop(account_id, None)

    def clear(self) -> None:
        self._entries.clear()


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
