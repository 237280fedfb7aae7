"""Domains, accounts and aliases, and recipient resolution.

Functions take an open connection and run inside the caller's transaction where they write.
Resolution order for a local recipient (what Postfix virtual + Dovecot users expect):

1. the exact address: an account, else an alias;
2. ``postmaster@`` / ``abuse@`` (RFC 5321 §4.5.1, RFC 2142): the domain's configured address, else its
   first account; an explicit alias of the same name re-points it;
3. ``user+tag@``: strip the tag and try 1 and 2 again;
4. the domain's catch-all alias;
5. otherwise unknown (550 5.1.1 at RCPT).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from mailroom.address import (
    Address,
    AddressError,
    normalize_domain,
    normalize_local,
    parse_address,
    split_tag,
)
from mailroom.passwords import encode_scram, hash_password, scram_sha256_keys
from mailroom.store.database import ConflictError, NotFoundError, now

ROLE_LOCALS = ("postmaster", "abuse")  # exist for every local domain
MAX_ALIAS_DEPTH = 10

# Mailboxes every new account starts with (RFC 6154 special-use), all subscribed.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)


@dataclass(frozen=True)
class Domain:
    id: int
    name: str
    postmaster: str | None


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    domain_id: int
    password_hash: str
    scram_sha256: str | None
    disabled: bool


@dataclass(frozen=True)
class Alias:
    id: int
    address: str  # "@domain" for a catch-all
    targets: tuple[str, ...]


@dataclass
class Resolution:
    """Where a recipient's mail goes: local account ids and external addresses to forward to."""

    account_ids: set[int] = field(default_factory=set)
    external: list[str] = field(default_factory=list)
    loop: bool = False  # an alias chain came back to itself or went too deep

    @property
    def found(self) -> bool:
        return bool(self.account_ids or self.external)


# --- domains ------------------------------------------------------------------------------------


def get_domain(conn: sqlite3.Connection, name: str) -> Domain | None:
    row = conn.execute(
        "SELECT id, name, postmaster FROM domains WHERE name = ?", (normalize_domain(name),)
    ).fetchone()
    return Domain(*row) if row else None


def list_domains(conn: sqlite3.Connection) -> list[Domain]:
    return [Domain(*row) for row in conn.execute("SELECT id, name, postmaster FROM domains ORDER BY name")]


def add_domain(conn: sqlite3.Connection, name: str, postmaster: str | None = None) -> Domain:
    ascii_name = normalize_domain(name)
    if "." not in ascii_name and ascii_name != "localhost":
        raise AddressError(f"{name!r} is not a fully qualified domain name")
    if postmaster is not None:
        postmaster = str(parse_address(postmaster))
    if get_domain(conn, ascii_name):
        raise ConflictError(f"domain {ascii_name} already exists")
    cur = conn.execute(
        "INSERT INTO domains (name, postmaster, created) VALUES (?, ?, ?)", (ascii_name, postmaster, now())
    )
    return Domain(int(cur.lastrowid or 0), ascii_name, postmaster)


def set_postmaster(conn: sqlite3.Connection, name: str, postmaster: str | None) -> None:
    domain = _require_domain(conn, name)
    target = str(parse_address(postmaster)) if postmaster else None
    conn.execute("UPDATE domains SET postmaster = ? WHERE id = ?", (target, domain.id))


def remove_domain(conn: sqlite3.Connection, name: str) -> None:
    domain = _require_domain(conn, name)
    accounts = conn.execute("SELECT count(*) FROM accounts WHERE domain_id = ?", (domain.id,)).fetchone()[0]
    aliases = conn.execute("SELECT count(*) FROM aliases WHERE domain_id = ?", (domain.id,)).fetchone()[0]
    queued = conn.execute(
        "SELECT count(*) FROM queue_recipients WHERE state = 'pending' AND domain = ?", (domain.name,)
    ).fetchone()[0]
    queued += conn.execute(
        "SELECT count(*) FROM queue q WHERE q.sender LIKE ? AND EXISTS "
        "(SELECT 1 FROM queue_recipients r WHERE r.queue_id = q.id AND r.state = 'pending')",
        ("%@" + domain.name,),
    ).fetchone()[0]
    refs = [
        f"{n} {what}"
        for n, what in ((accounts, "account(s)"), (aliases, "alias(es)"), (queued, "queued message(s)"))
        if n
    ]
    if refs:
        raise ConflictError(
            f"domain {domain.name} is still referenced by {', '.join(refs)}; remove those first"
        )
    conn.execute("DELETE FROM domains WHERE id = ?", (domain.id,))


def _require_domain(conn: sqlite3.Connection, name: str) -> Domain:
    domain = get_domain(conn, name)
    if domain is None:
        raise NotFoundError(f"no such domain: {name}")
    return domain


# --- accounts -----------------------------------------------------------------------------------

_ACCOUNT_SQL = (
    "SELECT a.id, a.local || '@' || d.name, a.domain_id, a.password_hash, a.scram_sha256, a.disabled "
    "FROM accounts a JOIN domains d ON d.id = a.domain_id"
)


def _account(row: tuple[int, str, int, str, str | None, int]) -> Account:
    return Account(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def find_account(conn: sqlite3.Connection, address: str | Address) -> Account | None:
    """Exact account lookup (login names are full addresses), case-insensitive."""
    try:
        addr = address if isinstance(address, Address) else _loose_address(address)
    except AddressError:
        return None
    row = conn.execute(
        _ACCOUNT_SQL + " WHERE d.name = ? AND a.local_key = ?", (addr.domain, addr.local_key)
    ).fetchone()
    return _account(row) if row else None


def get_account(conn: sqlite3.Connection, account_id: int) -> Account | None:
    row = conn.execute(_ACCOUNT_SQL + " WHERE a.id = ?", (account_id,)).fetchone()
    return _account(row) if row else None


def list_accounts(conn: sqlite3.Connection) -> list[Account]:
    return [_account(row) for row in conn.execute(_ACCOUNT_SQL + " ORDER BY d.name, a.local_key")]


def add_account(conn: sqlite3.Connection, address: str, password: str) -> Account:
    addr = parse_address(address)
    domain = get_domain(conn, addr.domain)
    if domain is None:
        raise NotFoundError(
            f"domain {addr.domain} is not a local domain; add it first (mailroom domain add {addr.domain})"
        )
    if find_account(conn, addr):
        raise ConflictError(f"account {addr} already exists")
    if _find_alias(conn, domain.id, addr.local_key):
        raise ConflictError(f"{addr} is an alias; remove the alias first")
    _check_password(password)
    cur = conn.execute(
        "INSERT INTO accounts (domain_id, local, local_key, password_hash, scram_sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
        (
            domain.id,
            addr.local,
            addr.local_key,
            hash_password(password),
            encode_scram(scram_sha256_keys(password)),
            now(),
        ),
    )
    account_id = int(cur.lastrowid or 0)
    # deterministic UIDVALIDITY per account: creation time, made unique by the mailbox row id
    base = now()
    for name, special in DEFAULT_MAILBOXES:
        mbox = conn.execute(
            "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use) VALUES (?, ?, 0, ?)",
            (account_id, name, special),
        ).lastrowid
        conn.execute(
            "UPDATE mailboxes SET uidvalidity = ? WHERE id = ?", (uidvalidity_for(base, int(mbox or 0)), mbox)
        )
    created = get_account(conn, account_id)
    assert created is not None
    return created


def uidvalidity_for(base: int, mailbox_id: int) -> int:
    """RFC 9051 §2.3.1.1: must change when a name is reused; a timestamp mixed with the row id does."""
    return ((base + mailbox_id * 7919) % 0xFFFFFFFF) or 1


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    if any(c in password for c in "\r\n\0"):
        raise ValueError("password must not contain line breaks or NUL")


def set_password(conn: sqlite3.Connection, address: str, password: str) -> None:
    account = find_account(conn, address)
    if account is None:
        raise NotFoundError(f"no such account: {address}")
    _check_password(password)
    conn.execute(
        "UPDATE accounts SET password_hash = ?, scram_sha256 = ? WHERE id = ?",
        (hash_password(password), encode_scram(scram_sha256_keys(password)), account.id),
    )


def replace_password_hash(conn: sqlite3.Connection, account_id: int, old_hash: str, new_hash: str) -> bool:
    """Store a rehash of the same password (new argon2 parameters, see passwords.py), only if
    the account still has ``old_hash``: a password changed meanwhile wins. The SCRAM keys stay, as
    the password is the same. Returns whether the row was updated."""
    cur = conn.execute(
        "UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (new_hash, account_id, old_hash),
    )
    return cur.rowcount == 1


def remove_account(conn: sqlite3.Connection, address: str) -> None:
    account = find_account(conn, address)
    if account is None:
        raise NotFoundError(f"no such account: {address}")
    # mailboxes and messages go with it (ON DELETE CASCADE); bodies follow through the triggers
    conn.execute("DELETE FROM accounts WHERE id = ?", (account.id,))


def _loose_address(text: str) -> Address:
    """Parse an address for lookups: any local part (quoted forms arrive unquoted from SMTP)."""
    local, sep, domain = text.strip().rpartition("@")
    if not sep or not local:
        raise AddressError(f"{text!r} is not an address")
    return Address(local, normalize_domain(domain))


# --- aliases ------------------------------------------------------------------------------------


def _alias_source(text: str) -> tuple[str, str]:
    """``user@domain`` or ``@domain`` (catch-all) -> (local as typed, domain)."""
    text = text.strip()
    if text.startswith("@"):
        return "", normalize_domain(text[1:])
    addr = parse_address(text)
    return addr.local, addr.domain


def _find_alias(conn: sqlite3.Connection, domain_id: int, local_key: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM aliases WHERE domain_id = ? AND local_key = ?", (domain_id, local_key)
    ).fetchone()
    return int(row[0]) if row else None


def _alias_targets(conn: sqlite3.Connection, alias_id: int) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT target FROM alias_targets WHERE alias_id = ? ORDER BY target", (alias_id,)
        )
    ]


def add_alias(conn: sqlite3.Connection, source: str, targets: list[str]) -> Alias:
    """Create an alias or add targets to an existing one. Targets may be local or external."""
    local, domain_name = _alias_source(source)
    domain = get_domain(conn, domain_name)
    if domain is None:
        raise NotFoundError(f"domain {domain_name} is not a local domain; add it first")
    if not targets:
        raise ValueError("an alias needs at least one target address")
    clean = [str(parse_address(t)) for t in targets]
    local_key = normalize_local(local)
    if local and find_account(conn, Address(local, domain.name)):
        raise ConflictError(
            f"{local}@{domain.name} is an account; an address is either an account or an alias"
        )
    alias_id = _find_alias(conn, domain.id, local_key)
    if alias_id is None:
        alias_id = int(
            conn.execute(
                "INSERT INTO aliases (domain_id, local, local_key, created) VALUES (?, ?, ?, ?)",
                (domain.id, local, local_key, now()),
            ).lastrowid
            or 0
        )
    for target in clean:
        conn.execute(
            "INSERT OR IGNORE INTO alias_targets (alias_id, target) VALUES (?, ?)", (alias_id, target)
        )
    return Alias(alias_id, f"{local}@{domain.name}", tuple(_alias_targets(conn, alias_id)))


def remove_alias(conn: sqlite3.Connection, source: str, targets: list[str] | None = None) -> None:
    """Remove the whole alias, or only some of its targets (the alias goes when none remain)."""
    local, domain_name = _alias_source(source)
    domain = _require_domain(conn, domain_name)
    alias_id = _find_alias(conn, domain.id, normalize_local(local))
    if alias_id is None:
        raise NotFoundError(f"no such alias: {source}")
    if targets:
        for target in targets:
            cur = conn.execute(
                "DELETE FROM alias_targets WHERE alias_id = ? AND target = ?",
                (alias_id, str(parse_address(target))),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"{source} has no target {target}")
        if _alias_targets(conn, alias_id):
            return
    conn.execute("DELETE FROM aliases WHERE id = ?", (alias_id,))


def list_aliases(conn: sqlite3.Connection) -> list[Alias]:
    rows = conn.execute(
        "SELECT a.id, a.local || '@' || d.name FROM aliases a JOIN domains d ON d.id = a.domain_id ORDER BY d.name, a.local_key"
    ).fetchall()
    return [Alias(alias_id, address, tuple(_alias_targets(conn, alias_id))) for alias_id, address in rows]


def owns(conn: sqlite3.Connection, account_id: int, address: str) -> bool:
    """Whether ``address`` delivers to the account: its own address, +tags, or an alias of it."""
    found = resolve(conn, address)
    return found is not None and account_id in found.account_ids


# --- resolution ---------------------------------------------------------------------------------


def is_local_domain(conn: sqlite3.Connection, domain: str) -> bool:
    try:
        return get_domain(conn, domain) is not None
    except AddressError:
        return False


def resolve(conn: sqlite3.Connection, address: str) -> Resolution | None:
    """Resolve a recipient. None: the domain is not ours (remote). Empty Resolution: unknown user.

    ``address`` is the envelope form; a bare ``Postmaster`` (RFC 5321 §4.1.1.3) must be
    mapped by the caller to ``postmaster@<primary domain>`` first.
    """
    try:
        addr = _loose_address(address)
    except AddressError:
        return Resolution()
    domain = get_domain(conn, addr.domain)
    if domain is None:
        return None
    result = Resolution()
    _resolve_into(conn, addr, result, path=frozenset(), depth=0)
    return result


def _resolve_into(
    conn: sqlite3.Connection, addr: Address, result: Resolution, path: frozenset[str], depth: int
) -> None:
    """``path`` holds the addresses on the way here: meeting one again is a loop (a fan-out
    that reaches the same target twice is not)."""
    if addr.key in path or depth > MAX_ALIAS_DEPTH:
        result.loop = True
        return
    path = path | {addr.key}
    domain = get_domain(conn, addr.domain)
    if domain is None:
        if str(addr) not in result.external:
            result.external.append(str(addr))
        return
    for local_key in (addr.local_key, split_tag(addr.local_key)):
        if local_key is None:
            continue
        if _resolve_exact(conn, domain, local_key, result, path, depth):
            return
    catch_all = _find_alias(conn, domain.id, "")
    if catch_all is not None:
        _expand_alias(conn, catch_all, result, path, depth)


def _resolve_exact(
    conn: sqlite3.Connection,
    domain: Domain,
    local_key: str,
    result: Resolution,
    path: frozenset[str],
    depth: int,
) -> bool:
    row = conn.execute(
        "SELECT id FROM accounts WHERE domain_id = ? AND local_key = ?", (domain.id, local_key)
    ).fetchone()
    if row:
        result.account_ids.add(int(row[0]))
        return True
    alias_id = _find_alias(conn, domain.id, local_key)
    if alias_id is not None:
        _expand_alias(conn, alias_id, result, path, depth)
        return True
    if local_key in ROLE_LOCALS:
        if domain.postmaster:
            _resolve_into(conn, _loose_address(domain.postmaster), result, path, depth + 1)
            return True
        first = conn.execute(
            "SELECT id FROM accounts WHERE domain_id = ? ORDER BY id LIMIT 1", (domain.id,)
        ).fetchone()
        first = first or conn.execute("SELECT id FROM accounts ORDER BY id LIMIT 1").fetchone()
        if first:
            result.account_ids.add(int(first[0]))
            return True
    return False


def _expand_alias(
    conn: sqlite3.Connection, alias_id: int, result: Resolution, path: frozenset[str], depth: int
) -> None:
    for target in _alias_targets(conn, alias_id):
        _resolve_into(conn, _loose_address(target), result, path, depth + 1)
