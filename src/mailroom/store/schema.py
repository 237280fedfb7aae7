"""Numbered, forward-only migrations. ``PRAGMA user_version`` records how many have run.

Never edit a migration that has shipped: add a new one. Migration 1 runs on an empty file right
after ``PRAGMA auto_vacuum = INCREMENTAL`` (which cannot be turned on later without a VACUUM).
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: domains, accounts, aliases, mailboxes, messages with shared bodies, the outbound queue
    """
    CREATE TABLE domains (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,       -- lower-case IDNA A-label
        postmaster  TEXT,                       -- where postmaster@ and abuse@ go; NULL: first account
        created     INTEGER NOT NULL
    );

    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY,
        domain_id     INTEGER NOT NULL REFERENCES domains(id),
        local         TEXT NOT NULL,            -- as the administrator typed it
        local_key     TEXT NOT NULL,            -- NFC + case fold: what matching uses
        password_hash TEXT NOT NULL,            -- argon2id, PHC string format
        scram_sha256  TEXT,                     -- RFC 7677 keys: "iterations$salt$storedkey$serverkey" (base64)
        quota_bytes   INTEGER NOT NULL DEFAULT 0,   -- 0: no quota
        disabled      INTEGER NOT NULL DEFAULT 0,
        created       INTEGER NOT NULL,
        UNIQUE (domain_id, local_key)
    );

    CREATE TABLE aliases (
        id         INTEGER PRIMARY KEY,
        domain_id  INTEGER NOT NULL REFERENCES domains(id),
        local      TEXT NOT NULL,               -- '' is the domain's catch-all
        local_key  TEXT NOT NULL,
        created    INTEGER NOT NULL,
        UNIQUE (domain_id, local_key)
    );

    CREATE TABLE alias_targets (
        alias_id  INTEGER NOT NULL REFERENCES aliases(id) ON DELETE CASCADE,
        target    TEXT NOT NULL,                -- an address, local (resolved again) or external (forwarded)
        PRIMARY KEY (alias_id, target)
    ) WITHOUT ROWID;

    CREATE TABLE mailboxes (
        id             INTEGER PRIMARY KEY,
        account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,           -- UTF-8, "/" separates levels, "INBOX" upper case
        uidvalidity    INTEGER NOT NULL,
        uidnext        INTEGER NOT NULL DEFAULT 1,
        highestmodseq  INTEGER NOT NULL DEFAULT 1,
        special_use    TEXT,                    -- RFC 6154: \\Sent \\Drafts \\Trash \\Junk \\Archive
        subscribed     INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account_id, name)
    );

    -- One row per distinct stored message text; messages and queue entries share it.
    CREATE TABLE bodies (
        id    INTEGER PRIMARY KEY,
        size  INTEGER NOT NULL,
        refs  INTEGER NOT NULL DEFAULT 0,       -- maintained by the triggers below
        data  BLOB NOT NULL                     -- written and read in chunks (incremental blob I/O)
    );

    CREATE TABLE messages (
        id             INTEGER PRIMARY KEY,
        mailbox_id     INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid            INTEGER NOT NULL,
        modseq         INTEGER NOT NULL,
        flags          INTEGER NOT NULL DEFAULT 0,   -- bits: 1 \\Seen 2 \\Answered 4 \\Flagged 8 \\Deleted 16 \\Draft
        keywords       TEXT NOT NULL DEFAULT '',     -- space-separated IMAP keywords
        internal_date  INTEGER NOT NULL,             -- unix seconds
        internal_tz    INTEGER NOT NULL DEFAULT 0,   -- offset east of UTC in minutes, for INTERNALDATE
        size           INTEGER NOT NULL,
        body_id        INTEGER NOT NULL REFERENCES bodies(id),
        UNIQUE (mailbox_id, uid)
    );
    CREATE INDEX messages_by_modseq ON messages (mailbox_id, modseq);

    -- Expunged UIDs with the MODSEQ of their removal (RFC 7162 QRESYNC VANISHED)
    CREATE TABLE expunged (
        mailbox_id  INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid         INTEGER NOT NULL,
        modseq      INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID;

    CREATE TABLE queue (
        id          INTEGER PRIMARY KEY,
        body_id     INTEGER NOT NULL REFERENCES bodies(id),
        sender      TEXT NOT NULL,              -- reverse path; '' for bounces
        account_id  INTEGER REFERENCES accounts(id) ON DELETE SET NULL,   -- who submitted it
        envid       TEXT,                       -- RFC 3461 ENVID
        ret         TEXT,                       -- RFC 3461 RET: FULL or HDRS
        body_type   TEXT,                       -- 7BIT, 8BITMIME, BINARYMIME
        smtputf8    INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL
    );

    CREATE TABLE queue_recipients (
        id            INTEGER PRIMARY KEY,
        queue_id      INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
        address       TEXT NOT NULL,
        domain        TEXT NOT NULL,            -- A-label of address, for grouping per destination
        orcpt         TEXT,                     -- RFC 3461 ORCPT
        notify        TEXT,                     -- RFC 3461 NOTIFY, comma-separated
        state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        next_attempt  INTEGER NOT NULL,
        last_reply    TEXT,
        last_host     TEXT,
        updated       INTEGER NOT NULL
    );
    CREATE INDEX queue_recipients_due ON queue_recipients (state, next_attempt);
    CREATE INDEX queue_recipients_by_message ON queue_recipients (queue_id);
    CREATE INDEX accounts_by_domain ON accounts (domain_id);
    CREATE INDEX aliases_by_domain ON aliases (domain_id);

    -- A body lives while a message or a queue entry references it.
    CREATE TRIGGER messages_body_ref AFTER INSERT ON messages BEGIN
        UPDATE bodies SET refs = refs + 1 WHERE id = NEW.body_id;
    END;
    CREATE TRIGGER messages_body_unref AFTER DELETE ON messages BEGIN
        UPDATE bodies SET refs = refs - 1 WHERE id = OLD.body_id;
        DELETE FROM bodies WHERE id = OLD.body_id AND refs <= 0;
    END;
    CREATE TRIGGER queue_body_ref AFTER INSERT ON queue BEGIN
        UPDATE bodies SET refs = refs + 1 WHERE id = NEW.body_id;
    END;
    CREATE TRIGGER queue_body_unref AFTER DELETE ON queue BEGIN
        UPDATE bodies SET refs = refs - 1 WHERE id = OLD.body_id;
        DELETE FROM bodies WHERE id = OLD.body_id AND refs <= 0;
    END;
    """,
    # 2: per-account sending limits for submission (a stolen password must not make us a spam source)
    """
    CREATE TABLE submission_days (
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        day             INTEGER NOT NULL,       -- days since the epoch, UTC
        messages        INTEGER NOT NULL DEFAULT 0,
        new_recipients  INTEGER NOT NULL DEFAULT 0,   -- remote recipients never written to before
        PRIMARY KEY (account_id, day)
    ) WITHOUT ROWID;

    CREATE TABLE known_recipients (
        account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        address     TEXT NOT NULL,              -- match form (case-folded local part, A-label domain)
        first_sent  INTEGER NOT NULL,
        PRIMARY KEY (account_id, address)
    ) WITHOUT ROWID;
    """,
    # 3: IMAP: the \\Recent high-water mark, subscriptions that outlive their mailbox (RFC 9051 §6.3.7),
    #    a per-body cache of MIME structure (BODYSTRUCTURE, ENVELOPE, part offsets), and indexes for
    #    SELECT (first unseen message, keywords in use)
    """
    ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1;  -- UIDs >= this are \\Recent for the next SELECT
    ALTER TABLE accounts ADD COLUMN uidvalidity_last INTEGER NOT NULL DEFAULT 0;  -- last UIDVALIDITY handed out by CREATE/RENAME

    CREATE TABLE subscriptions (
        account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        PRIMARY KEY (account_id, name)
    ) WITHOUT ROWID;
    INSERT INTO subscriptions (account_id, name) SELECT account_id, name FROM mailboxes WHERE subscribed = 1;
    -- mailboxes made elsewhere (new accounts) keep starting out subscribed
    CREATE TRIGGER mailboxes_subscribe AFTER INSERT ON mailboxes WHEN NEW.subscribed = 1 BEGIN
        INSERT OR IGNORE INTO subscriptions (account_id, name) VALUES (NEW.account_id, NEW.name);
    END;

    CREATE TABLE imap_cache (
        body_id        INTEGER PRIMARY KEY REFERENCES bodies(id) ON DELETE CASCADE,
        bodystructure  BLOB NOT NULL,
        body           BLOB NOT NULL,
        envelope       BLOB NOT NULL,
        parts          TEXT NOT NULL            -- JSON part tree: offsets, sizes, encodings (mailroom.imap.structure)
    );

    CREATE INDEX messages_unseen ON messages (mailbox_id, uid) WHERE flags & 1 = 0;
    CREATE INDEX messages_keywords ON messages (mailbox_id, keywords) WHERE keywords != '';
    CREATE INDEX expunged_by_modseq ON expunged (mailbox_id, modseq);
    """,
    # 4: outbound queue: the delay warning is sent once per recipient (RFC 3464 "delayed")
    """
    ALTER TABLE queue_recipients ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: reference counts leave the bodies row. SQLite rewrites a whole record to change one of
    # its columns, so `refs = refs + 1` on a 20 MiB body read all 20 MiB into memory and wrote
    # them to the WAL a second time, for every message stored. bodies.refs stays, unused:
    # dropping the column would copy every body once more.
    """
    CREATE TABLE body_refs (
        body_id  INTEGER PRIMARY KEY REFERENCES bodies(id) ON DELETE CASCADE,
        refs     INTEGER NOT NULL
    );
    INSERT INTO body_refs (body_id, refs) SELECT id, refs FROM bodies WHERE refs > 0;
    DROP TRIGGER messages_body_ref;
    DROP TRIGGER messages_body_unref;
    DROP TRIGGER queue_body_ref;
    DROP TRIGGER queue_body_unref;
    -- A body lives while a message or a queue entry references it.
    CREATE TRIGGER messages_body_ref AFTER INSERT ON messages BEGIN
        INSERT INTO body_refs (body_id, refs) VALUES (NEW.body_id, 1)
            ON CONFLICT (body_id) DO UPDATE SET refs = refs + 1;
    END;
    CREATE TRIGGER messages_body_unref AFTER DELETE ON messages BEGIN
        UPDATE body_refs SET refs = refs - 1 WHERE body_id = OLD.body_id;
        DELETE FROM bodies WHERE id = OLD.body_id
            AND NOT EXISTS (SELECT 1 FROM body_refs WHERE body_id = OLD.body_id AND refs > 0);
    END;
    CREATE TRIGGER queue_body_ref AFTER INSERT ON queue BEGIN
        INSERT INTO body_refs (body_id, refs) VALUES (NEW.body_id, 1)
            ON CONFLICT (body_id) DO UPDATE SET refs = refs + 1;
    END;
    CREATE TRIGGER queue_body_unref AFTER DELETE ON queue BEGIN
        UPDATE body_refs SET refs = refs - 1 WHERE body_id = OLD.body_id;
        DELETE FROM bodies WHERE id = OLD.body_id
            AND NOT EXISTS (SELECT 1 FROM body_refs WHERE body_id = OLD.body_id AND refs > 0);
    END;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
