from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from mailroom import passwords
from mailroom.policy.auth import Authenticator
from mailroom.store import directory
from mailroom.store.database import open_database, transaction
from mailroom.store.service import Store


def test_argon2id_roundtrip() -> None:
    h = passwords.hash_password("s3cret pass")
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, "s3cret pass")
    assert not passwords.verify_password(h, "s3cret pasS")
    assert not passwords.verify_password(None, "anything")
    assert not passwords.verify_password("garbage", "x")
    # no account, or an account without a password: the dummy hash's own password fails too
    assert not passwords.verify_password(None, "mailroom-no-such-user")
    assert not passwords.verify_password("", "mailroom-no-such-user")
    assert asyncio.run(passwords.verify_password_async(h, "s3cret pass"))
    # SASLprep (RFC 4013): a non-ASCII space maps to a space, as SCRAM normalises it
    assert passwords.verify_password(h, "s3cret\u00a0pass")


def test_scram_keys_rfc7677_vector() -> None:
    # RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    # The RFC's ServerSignature v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4= for its AuthMessage:
    import hashlib
    import hmac

    keys = passwords.scram_sha256_keys("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    sig = hmac.new(keys.server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(sig) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert passwords.decode_scram(passwords.encode_scram(keys)) == keys


# --- argon2 parameters and rehash on login --------------------------------------------------------

# a hash made as mailroom did before (argon2-cffi's default, RFC 9106 §4: m=64 MiB, t=3, p=4); the
# test only needs parameters other than today's, so a cheap set keeps it fast
OLD_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=2)


def test_current_parameters_are_owasp() -> None:
    # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1
    params = extract_parameters(passwords.hash_password("s3cret pass"))
    assert (params.type, params.memory_cost, params.time_cost, params.parallelism) == (
        Type.ID,
        19 * 1024,
        2,
        1,
    )
    assert extract_parameters(passwords._dummy_hash()) == params  # unknown users cost the same


def test_verify_and_rehash() -> None:
    old = OLD_HASHER.hash("s3cret pass")
    assert passwords.verify_password(old, "s3cret pass")  # old hashes keep working
    assert passwords.needs_rehash(old)
    result = passwords.verify_and_rehash(old, "s3cret pass")
    assert result.ok and result.new_hash is not None
    assert not passwords.needs_rehash(result.new_hash)
    assert passwords.verify_password(result.new_hash, "s3cret pass")
    assert passwords.verify_and_rehash(old, "wrong pass") == passwords.Verified(False)
    current = passwords.hash_password("s3cret pass")
    assert passwords.verify_and_rehash(current, "s3cret pass") == passwords.Verified(True)


# --- the verified-credentials cache ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_hits_only_the_verified_password_and_hash() -> None:
    clock = FakeClock()
    cache = passwords.VerifiedCache(ttl=60, clock=clock)
    assert not cache.matches(1, "$hash1", "pw one")
    cache.remember(1, "$hash1", "pw one")
    assert cache.matches(1, "$hash1", "pw one")
    assert cache.matches(1, "$hash1", "pw\u00a0one")  # SASLprep, as argon2 verification applies it
    assert not cache.matches(1, "$hash1", "pw two")
    assert not cache.matches(2, "$hash1", "pw one")  # another account
    assert cache.matches(1, "$hash1", "pw one")  # a wrong guess does not evict the entry
    # the stored hash changed (password changed or reset): the entry is gone for good
    assert not cache.matches(1, "$hash2", "pw one")
    assert not cache.matches(1, "$hash1", "pw one")
    assert len(cache) == 0


def test_cache_entries_expire() -> None:
    clock = FakeClock()
    cache = passwords.VerifiedCache(ttl=60, clock=clock)
    cache.remember(1, "$hash1", "pw one")
    clock.now += 59.9
    assert cache.matches(1, "$hash1", "pw one")
    clock.now += 0.1
    assert not cache.matches(1, "$hash1", "pw one")
    assert len(cache) == 0


def test_cache_is_bounded_and_can_be_off() -> None:
    cache = passwords.VerifiedCache(ttl=60, max_entries=3)
    for account_id in range(5):
        cache.remember(account_id, "$h", "pw")
    assert len(cache) == 3
    assert not cache.matches(0, "$h", "pw") and not cache.matches(1, "$h", "pw")
    assert cache.matches(4, "$h", "pw")
    off = passwords.VerifiedCache(ttl=0)
    off.remember(1, "$h", "pw")
    assert not off.matches(1, "$h", "pw")


def test_cache_keeps_no_password() -> None:
    cache = passwords.VerifiedCache(ttl=60)
    cache.remember(1, "$hash1", "correct horse battery")
    other = passwords.VerifiedCache(ttl=60)
    other.remember(1, "$hash1", "correct horse battery")
    (entry,) = cache._entries.values()
    assert b"correct horse" not in repr(entry).encode()
    assert entry[1] != next(iter(other._entries.values()))[1]  # a random key per cache (process)


# --- the Authenticator: every password login goes through check_password --------------------------

LOG = logging.getLogger("test.passwords")
USER = "alice@example.org"
PW = "correct horse"


class Counting:
    """Wraps policy.auth's argon2 entry point to count full verifications."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = passwords.verify_and_rehash_async

        async def counted(password_hash: str | None, password: str) -> passwords.Verified:
            self.calls += 1
            return await real(password_hash, password)

        monkeypatch.setattr("mailroom.policy.auth.verify_and_rehash_async", counted)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    conn = open_database(tmp_path)
    with transaction(conn):
        directory.add_domain(conn, "example.org")
        directory.add_account(conn, USER, PW)
    conn.close()
    yield s
    s.close()


def authenticator(store: Store, clock: FakeClock, ttl: float = 3600) -> Authenticator:
    return Authenticator(store, clock=clock, sleep=lambda _s: asyncio.sleep(0), cache_ttl=ttl)


async def login(auth: Authenticator, password: str, user: str = USER) -> bool:
    return await auth.check_password("pop3", "192.0.2.1", user, password, LOG) is not None


def test_login_cached_after_success_only(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    argon2 = Counting(monkeypatch)
    clock = FakeClock()
    auth = authenticator(store, clock)

    async def scenario() -> None:
        assert not await login(auth, "wrong one")
        assert not await login(auth, "wrong one")
        assert argon2.calls == 2  # failures are never cached: each pays the full cost
        assert auth.failure_delay("192.0.2.1", USER) == 4.0  # and throttling counts both
        assert await login(auth, PW)
        assert argon2.calls == 3
        assert auth.failure_delay("192.0.2.1", USER) == 1.0  # a success clears them, as before
        assert await login(auth, PW)
        assert await login(auth, PW.upper().lower())
        assert argon2.calls == 3  # served by the cache
        assert not await login(auth, "wrong one")  # a wrong password with a warm cache
        assert argon2.calls == 4
        assert auth.failure_delay("192.0.2.1", USER) == 2.0
        assert not await login(auth, PW, user="nobody@example.org")
        assert argon2.calls == 5  # unknown users pay for a dummy hash

    asyncio.run(scenario())


def test_password_change_ends_cached_login(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    argon2 = Counting(monkeypatch)
    auth = authenticator(store, FakeClock())

    async def scenario() -> None:
        assert await login(auth, PW)
        assert await login(auth, PW)
        assert argon2.calls == 1
        # `mailroom user passwd` (another process in real life: only the database changes)
        await store.write(directory.set_password, USER, "new battery staple")
        assert not await login(auth, PW)
        assert argon2.calls == 2
        assert await login(auth, "new battery staple")
        assert await login(auth, "new battery staple")
        assert argon2.calls == 3
        # a reset to the same password still gives a new salt, so a new hash: verified again
        await store.write(directory.set_password, USER, "new battery staple")
        assert await login(auth, "new battery staple")
        assert argon2.calls == 4

    asyncio.run(scenario())


def test_disabled_account_is_refused_despite_cache(store: Store) -> None:
    auth = authenticator(store, FakeClock())

    def disable(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE accounts SET disabled = 1")

    async def scenario() -> None:
        assert await login(auth, PW)
        await store.write(disable)
        assert not await login(auth, PW)

    asyncio.run(scenario())


def test_cached_login_expires(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    argon2 = Counting(monkeypatch)
    clock = FakeClock()
    auth = authenticator(store, clock, ttl=600)

    async def scenario() -> None:
        assert await login(auth, PW)
        clock.now += 599
        assert await login(auth, PW)
        assert argon2.calls == 1
        clock.now += 1
        assert await login(auth, PW)
        assert argon2.calls == 2

    asyncio.run(scenario())


def test_cache_ttl_zero_verifies_every_login(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    argon2 = Counting(monkeypatch)
    auth = authenticator(store, FakeClock(), ttl=0)

    async def scenario() -> None:
        for _ in range(3):
            assert await login(auth, PW)
        assert argon2.calls == 3

    asyncio.run(scenario())


def test_outdated_hash_is_rehashed_at_login(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def set_old_hash(conn: sqlite3.Connection) -> tuple[str, str | None]:
        conn.execute("UPDATE accounts SET password_hash = ?", (OLD_HASHER.hash(PW),))
        account = directory.find_account(conn, USER)
        assert account is not None
        return account.password_hash, account.scram_sha256

    async def scenario() -> None:
        old, scram = await store.write(set_old_hash)
        auth = authenticator(store, FakeClock())
        assert not await login(auth, "wrong one")
        assert await store.read(_hash_of) == old  # a failure rewrites nothing
        argon2 = Counting(monkeypatch)
        assert await login(auth, PW)
        new = await store.read(_hash_of)
        assert new != old and not passwords.needs_rehash(new)
        assert passwords.verify_password(new, PW)
        account = await store.read(directory.find_account, USER)
        assert account is not None and account.scram_sha256 == scram  # SCRAM keys untouched
        assert await login(auth, PW)
        assert argon2.calls == 1  # cached under the new hash
        # a fresh process (no cache) verifies against the new hash and rewrites nothing
        assert await login(authenticator(store, FakeClock()), PW)
        assert await store.read(_hash_of) == new

    asyncio.run(scenario())


def _hash_of(conn: sqlite3.Connection) -> str:
    account = directory.find_account(conn, USER)
    assert account is not None
    return account.password_hash
