from __future__ import annotations

import sqlite3

import pytest

from mailroom.address import AddressError
from mailroom.store import directory as d
from mailroom.store.database import ConflictError, NotFoundError, transaction

PW = "correct horse"


@pytest.fixture
def populated(conn: sqlite3.Connection) -> sqlite3.Connection:
    with transaction(conn):
        d.add_domain(conn, "example.org")
        d.add_domain(conn, "Bücher.example")
        d.add_account(conn, "alice@example.org", PW)
        d.add_account(conn, "Bob@example.org", PW)
        d.add_account(conn, "jörg@bücher.example", PW)
    return conn


def ids(conn: sqlite3.Connection, *addresses: str) -> set[int]:
    out = set()
    for a in addresses:
        acct = d.find_account(conn, a)
        assert acct is not None, a
        out.add(acct.id)
    return out


def resolved(conn: sqlite3.Connection, address: str) -> tuple[set[int], list[str]] | None:
    r = d.resolve(conn, address)
    return None if r is None else (r.account_ids, r.external)


def test_exact_case_and_idna(populated: sqlite3.Connection) -> None:
    c = populated
    assert resolved(c, "ALICE@EXAMPLE.ORG") == (ids(c, "alice@example.org"), [])
    assert resolved(c, "bob@Example.Org") == (ids(c, "bob@example.org"), [])
    # domain as U-label or A-label, local part NFC + case fold (JÖRG with a combining diaeresis)
    assert resolved(c, "JO\u0308RG@xn--bcher-kva.example") == (ids(c, "jörg@bücher.example"), [])
    assert resolved(c, "nobody@example.org") == (set(), [])
    assert resolved(c, "alice@elsewhere.net") is None  # not a local domain


def test_plus_tag_after_exact(populated: sqlite3.Connection) -> None:
    c = populated
    assert resolved(c, "alice+news@example.org") == (ids(c, "alice@example.org"), [])
    with transaction(c):
        d.add_alias(c, "alice+list@example.org", ["bob@example.org"])
    # an exact alias beats tag stripping
    assert resolved(c, "alice+list@example.org") == (ids(c, "bob@example.org"), [])
    assert resolved(c, "nobody+x@example.org") == (set(), [])


def test_alias_fanout_external_and_catch_all(populated: sqlite3.Connection) -> None:
    c = populated
    with transaction(c):
        d.add_alias(c, "team@example.org", ["alice@example.org", "bob@example.org", "friend@remote.test"])
        d.add_alias(c, "all@example.org", ["team@example.org", "alice@example.org"])
    assert resolved(c, "team@example.org") == (
        ids(c, "alice@example.org", "bob@example.org"),
        ["friend@remote.test"],
    )
    # reaching alice twice through a fan-out is not a loop
    r = d.resolve(c, "all@example.org")
    assert r is not None and not r.loop and r.account_ids == ids(c, "alice@example.org", "bob@example.org")
    assert resolved(c, "random@example.org") == (set(), [])
    with transaction(c):
        d.add_alias(c, "@example.org", ["bob@example.org"])
    assert resolved(c, "random@example.org") == (ids(c, "bob@example.org"), [])
    assert resolved(c, "alice@example.org") == (
        ids(c, "alice@example.org"),
        [],
    )  # accounts beat the catch-all


def test_alias_loop_detected(populated: sqlite3.Connection) -> None:
    c = populated
    with transaction(c):
        d.add_alias(c, "a@example.org", ["b@example.org"])
        d.add_alias(c, "b@example.org", ["a@example.org"])
    r = d.resolve(c, "a@example.org")
    assert r is not None and r.loop and not r.found


def test_postmaster_and_abuse(populated: sqlite3.Connection) -> None:
    c = populated
    first = ids(c, "alice@example.org")
    assert resolved(c, "postmaster@example.org") == (first, [])
    assert resolved(c, "PostMaster@EXAMPLE.org") == (first, [])
    assert resolved(c, "abuse@example.org") == (first, [])
    with transaction(c):
        d.set_postmaster(c, "example.org", "bob@example.org")
    assert resolved(c, "postmaster@example.org") == (ids(c, "bob@example.org"), [])
    with transaction(c):
        d.add_alias(c, "abuse@example.org", ["jörg@bücher.example"])
    assert resolved(c, "abuse@example.org") == (ids(c, "jörg@bücher.example"), [])
    # a domain without accounts still has a postmaster: the first account anywhere
    with transaction(c):
        d.add_domain(c, "empty.example")
    assert resolved(c, "postmaster@empty.example") == (first, [])
    with transaction(c):
        d.add_domain(c, "pm.example", postmaster="bob@example.org")
    assert resolved(c, "postmaster@pm.example") == (ids(c, "bob@example.org"), [])


def test_invalid_and_conflicting_input(populated: sqlite3.Connection) -> None:
    c = populated
    for bad in (
        "no-at-sign",
        "a..b@example.org",
        "a b@example.org",
        ".a@example.org",
        "a@exa mple.org",
        "x" * 65 + "@example.org",
    ):
        with pytest.raises(AddressError):
            d.add_account(c, bad, PW)
    with pytest.raises(NotFoundError, match="not a local domain"):
        d.add_account(c, "x@unknown.example", PW)
    with pytest.raises(ConflictError):
        d.add_account(c, "ALICE@example.org", PW)
    with pytest.raises(ValueError, match="at least 8"):
        d.add_account(c, "carol@example.org", "short")
    with pytest.raises(ConflictError, match="is an account"):
        d.add_alias(c, "alice@example.org", ["bob@example.org"])
    with pytest.raises(AddressError):
        d.add_alias(c, "x@example.org", ["not an address"])
    with pytest.raises(ConflictError, match="already exists"):
        d.add_domain(c, "EXAMPLE.org")


def test_domain_remove_refused_while_referenced(populated: sqlite3.Connection) -> None:
    c = populated
    with pytest.raises(ConflictError, match="2 account"):
        d.remove_domain(c, "example.org")
    with transaction(c):
        d.add_domain(c, "spare.example")
        d.add_alias(c, "x@spare.example", ["alice@example.org"])
    with pytest.raises(ConflictError, match="alias"):
        d.remove_domain(c, "spare.example")
    with transaction(c):
        d.remove_alias(c, "x@spare.example")
        d.remove_domain(c, "spare.example")
    assert d.get_domain(c, "spare.example") is None


def test_new_account_mailboxes(populated: sqlite3.Connection) -> None:
    c = populated
    acct = d.find_account(c, "alice@example.org")
    assert acct is not None
    assert acct.password_hash.startswith("$argon2id$")
    rows = c.execute(
        "SELECT name, special_use, subscribed, uidvalidity FROM mailboxes WHERE account_id = ? ORDER BY id",
        (acct.id,),
    ).fetchall()
    assert [r[0] for r in rows] == ["INBOX", "Drafts", "Sent", "Junk", "Trash", "Archive"]
    assert rows[2][1] == "\\Sent" and all(r[2] == 1 and r[3] > 0 for r in rows)
    assert len({r[3] for r in rows}) == len(rows)


def test_replace_password_hash_only_over_the_hash_it_replaces(populated: sqlite3.Connection) -> None:
    c = populated
    acct = d.find_account(c, "alice@example.org")
    bob = d.find_account(c, "bob@example.org")
    assert acct is not None and bob is not None
    with transaction(c):
        assert d.replace_password_hash(c, acct.id, acct.password_hash, "$argon2id$rehashed")
    after = d.find_account(c, "alice@example.org")
    assert after is not None and after.password_hash == "$argon2id$rehashed"
    assert after.scram_sha256 == acct.scram_sha256  # the same password: SCRAM keys stay
    other = d.find_account(c, "bob@example.org")
    assert other is not None and other.password_hash == bob.password_hash
    # the password was changed between the login's read and the rehash: the change wins
    with transaction(c):
        d.set_password(c, "alice@example.org", "another password")
    changed = d.find_account(c, "alice@example.org")
    assert changed is not None
    with transaction(c):
        assert not d.replace_password_hash(c, acct.id, "$argon2id$rehashed", "$argon2id$stale")
    final = d.find_account(c, "alice@example.org")
    assert final is not None and final.password_hash == changed.password_hash
