"""Logins for every protocol: password checks off the event loop, and failure throttling.

A failed login is answered only after a delay that grows with the recent failures of that client
address and of that account name (Dovecot's auth_failure_delay, made progressive), so guessing is
slow from one address and slow against one account from many. Successful logins are never delayed.
The answer never says whether the account exists; the timing does not either (a dummy hash is
verified for unknown names).

Every password login (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN and AUTHENTICATE PLAIN, POP3 USER/PASS and
AUTH PLAIN) comes through :meth:`Authenticator.check_password`, so the verified-credentials cache
(passwords.VerifiedCache) and the rehash of outdated argon2 hashes live here, once. SCRAM-SHA-256
never runs argon2: it checks the client's proof against the stored SCRAM keys.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mailroom import logs
from mailroom.passwords import DEFAULT_CACHE_TTL, VerifiedCache, decode_scram, verify_and_rehash_async
from mailroom.store import directory
from mailroom.store.directory import Account
from mailroom.store.service import Store
from mailroom.wire.sasl import ScramCredentials

WINDOW = 900.0  # failures older than this are forgotten
BASE_DELAY = 1.0
MAX_DELAY = 15.0
MAX_TRACKED = 10_000  # bound the memory a flood of names or addresses can take


@dataclass
class _Failures:
    count: int
    last: float


def client_key(ip: str) -> str:
    """Failures count per IPv4 address and per IPv6 /64, as the connection limits do: one host
    usually holds a whole /64 and could otherwise start afresh from each of its addresses."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


class _FailureTable:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def count(self, key: str) -> int:
        entry = self._table.get(key)
        if entry is None:
            return 0
        if self._clock() - entry.last > WINDOW:
            del self._table[key]
            return 0
        return entry.count

    def add(self, key: str) -> None:
        entry = self._table.pop(key, None)
        now = self._clock()
        count = entry.count + 1 if entry and now - entry.last <= WINDOW else 1
        self._table[key] = _Failures(count, now)
        while len(self._table) > MAX_TRACKED:
            self._table.popitem(last=False)

    def clear(self, key: str) -> None:
        self._table.pop(key, None)


class Authenticator:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
        base_delay: float = BASE_DELAY,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        self.store = store
        self.cache = VerifiedCache(cache_ttl, clock=clock)
        self._by_ip = _FailureTable(clock)
        self._by_user = _FailureTable(clock)
        self._sleep = sleep
        self.base_delay = base_delay

    def failure_delay(self, ip: str, username: str) -> float:
        """Delay before answering the next failure: doubles per recent failure, capped."""
        failures = max(self._by_ip.count(client_key(ip)), self._by_user.count(username.lower()))
        if self.base_delay <= 0:
            return 0.0
        return float(min(self.base_delay * (2 ** min(failures, 10)), MAX_DELAY))

    async def check_password(
        self, service: str, ip: str, username: str, password: str, log: logging.Logger | logs.ConnLogger
    ) -> Account | None:
        account = await self.store.read(directory.find_account, username)
        if account is not None and not account.disabled:
            if self.cache.matches(account.id, account.password_hash, password):
                ok = True  # verified by argon2 within the TTL, and the stored hash is the same
            else:
                ok = await self._verify(account, password, log)
        else:
            # a dummy hash for unknown or disabled accounts: a failure costs the same either way
            ok = (await verify_and_rehash_async(None, password)).ok
        if ok and account is not None:
            self.succeeded(ip, username)
            return account
        await self.failed(service, ip, username, log)
        return None

    async def _verify(self, account: Account, password: str, log: logging.Logger | logs.ConnLogger) -> bool:
        """The full argon2 check; a success is cached, and an outdated hash rewritten."""
        verified = await verify_and_rehash_async(account.password_hash, password)
        if not verified.ok:
            return False  # never cached: the next attempt pays the full cost again
        current = account.password_hash
        if verified.new_hash is not None:
            try:
                if await self.store.write(
                    directory.replace_password_hash, account.id, current, verified.new_hash
                ):
                    current = verified.new_hash
                    log.info("password hash of %s updated to the current argon2 parameters", account.address)
            except Exception as exc:  # the login stands; the rehash is tried again next time
                log.warning("could not store the rehashed password of %s: %s", account.address, exc)
        self.cache.remember(account.id, current, password)
        return True

    async def scram_keys(self, username: str) -> tuple[Account, ScramCredentials] | None:
        account = await self.store.read(directory.find_account, username)
        if account is None or account.disabled or not account.scram_sha256:
            return None
        return account, decode_scram(account.scram_sha256)

    async def failed(
        self, service: str, ip: str, username: str, log: logging.Logger | logs.ConnLogger
    ) -> None:
        """Record and log a failure (any mechanism), then wait before the caller answers."""
        delay = self.failure_delay(ip, username)
        self._by_ip.add(client_key(ip))
        self._by_user.add(username.lower())
        logs.auth_failed(log, service, ip, username)
        if delay > 0:
            await self._sleep(delay)  # type: ignore[misc]

    def succeeded(self, ip: str, username: str) -> None:
        self._by_ip.clear(client_key(ip))
        self._by_user.clear(username.lower())
