"""SEARCH evaluation over stored messages: decoded headers and bodies, big bodies read in
chunks, and parsed structures handed back for the cache."""

from __future__ import annotations

import base64
import datetime as dt
import io
import sqlite3

from mailroom.imap.search import SearchContext, evaluate, needs_content
from mailroom.store import directory, mail
from mailroom.store import imap_messages as im
from mailroom.store.database import transaction
from mailroom.wire.imap import commands as c
from mailroom.wire.imap.sequence import SequenceSet

MESSAGES = [
    b"Subject: =?iso-8859-1?q?Caf=E9_ouvert?=\r\nFrom: Ann <ann@example.org>\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Le caf=E9 est ouvert.\r\n",
    b"Subject: plain\r\nFrom: bob@example.org\r\nDate: Fri, 5 Jan 2024 23:30:00 -0800\r\n\r\n"
    + b"filler line\r\n" * 200_000
    + b"needle at the very end\r\n",
    b"Subject: attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"needle hidden in a binary part")
    + b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"visible text part")
    + b"--b--\r\n",
]


def store(conn: sqlite3.Connection) -> int:
    with transaction(conn):
        directory.add_domain(conn, "example.org")
        account = directory.add_account(conn, "a@example.org", "password1")
        box = mail.inbox(conn, account.id)
        for i, data in enumerate(MESSAGES):
            mail.store_message(
                conn, io.BytesIO(data), len(data), [mail.Placement(box.id, flags=i % 2)], 1_704_500_000 + i
            )
    return box.id


def run(conn: sqlite3.Connection, mailbox_id: int, key: c.SearchKey) -> list[int]:
    headers, bodies = needs_content(key)
    rows = im.search_rows(conn, mailbox_id, [(1, 3)], headers, bodies)
    ctx = SearchContext([1, 2, 3], {3}, [], 1_704_600_000.0)
    outcome = evaluate(rows, key, ctx, lambda b, o, n: mail.read_chunk(conn, b, o, n))
    return outcome.uids


def test_decoded_headers_and_bodies(conn: sqlite3.Connection) -> None:
    box = store(conn)
    assert run(conn, box, c.SearchHeader("subject", "café")) == [1]
    assert run(conn, box, c.SearchText("BODY", "CAFÉ EST")) == [1]  # QP + latin-1, case-folded
    assert run(conn, box, c.SearchText("BODY", "needle")) == [2]  # not in the binary part of 3
    assert run(conn, box, c.SearchText("BODY", "visible text")) == [3]
    assert run(conn, box, c.SearchText("TEXT", "ann@example")) == [1]
    assert run(conn, box, c.SearchHeader("from", "")) == [1, 2]
    assert run(conn, box, c.SearchNot(c.SearchHeader("subject", "plain"))) == [1, 3]
    assert run(conn, box, c.SearchOr(c.SearchFlag("\\Recent"), c.SearchFlag("\\Seen"))) == [2, 3]
    assert run(
        conn, box, c.SearchAnd((c.SearchSequence(SequenceSet.parse("2:*")), c.SearchFlag("\\Seen")))
    ) == [2]
    # SENTON compares the Date: header's own day, not UTC's
    assert run(conn, box, c.SearchDate("SENT", "ON", dt.date(2024, 1, 5))) == [2]
    assert run(conn, box, c.SearchWithin("YOUNGER", 99_999)) == [2, 3]
    assert run(conn, box, c.SearchWithin("OLDER", 100_000)) == [1]


def test_parsed_structures_are_returned_for_the_cache(conn: sqlite3.Connection) -> None:
    box = store(conn)
    rows = im.search_rows(conn, box, [(1, 3)], True, True)
    ctx = SearchContext([1, 2, 3], set(), [], 0.0)
    outcome = evaluate(rows, c.SearchText("BODY", "zzz"), ctx, lambda b, o, n: mail.read_chunk(conn, b, o, n))
    assert outcome.uids == []
    parsed = {body_id for body_id, _entry in outcome.new_cache}
    assert len(parsed) == 2  # the multipart one and the QP one; the big plain one needed no parse
