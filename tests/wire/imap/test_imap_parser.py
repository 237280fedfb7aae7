"""Parse tables: one command (lines and literals, as received) -> the exact dataclass."""

from __future__ import annotations

import datetime as dt

import pytest
from imap_dialog import byte_by_byte, commands, run

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.events import AppendBegin
from mailroom.wire.imap.parser import (
    COMMAND_NAMES,
    MAX_SEARCH_DEPTH,
    ParseError,
    parse_command,
    peek_tag_and_name,
)
from mailroom.wire.imap.responses import ResponseCode
from mailroom.wire.imap.sequence import SequenceSet
from mailroom.wire.imap.states import COMMAND_STATES, State

S = SequenceSet.parse
T = "a1"
F = c.SearchFlag
N = c.SearchNot
FA = c.FetchAttr
UTC = dt.UTC

CASES: list[tuple[bytes, c.Command]] = [
    # --- any state
    (b"a1 CAPABILITY", c.Capability(T)),
    (b"a1 capability", c.Capability(T)),
    (b"a1 NOOP", c.Noop(T)),
    (b"a1 LOGOUT", c.Logout(T)),
    (b'a1 ID ("name" "Thunderbird" "version" NIL)', c.Id(T, (("name", "Thunderbird"), ("version", None)))),
    (b"a1 ID NIL", c.Id(T, None)),
    (b"a1 ID ()", c.Id(T, ())),
    # --- not authenticated
    (b"a1 STARTTLS", c.StartTLS(T)),
    (b"a1 AUTHENTICATE PLAIN", c.Authenticate(T, "PLAIN", None)),
    (b"a1 AUTHENTICATE plain AGZvbwBiYXI=", c.Authenticate(T, "PLAIN", b"\0foo\0bar")),
    (b"a1 AUTHENTICATE PLAIN =", c.Authenticate(T, "PLAIN", b"")),
    (b'a1 LOGIN fred "my \\"pw\\" \\\\"', c.Login(T, "fred", 'my "pw" \\')),
    (b"a1 LOGIN {4}\r\nfred {3}\r\npw!", c.Login(T, "fred", "pw!")),
    (b'a1 LOGIN {4+}\r\nfred "p w"', c.Login(T, "fred", "p w")),
    (b"a1 LOGIN {5}\r\nj\xc3\xb6rg ]]", c.Login(T, "jörg", "]]")),
    # --- authenticated
    (b"a1 ENABLE CONDSTORE utf8=accept", c.Enable(T, ("CONDSTORE", "UTF8=ACCEPT"))),
    (b"a1 NAMESPACE", c.Namespace(T)),
    (b"a1 SELECT inbox", c.Select(T, "INBOX")),
    (b'a1 EXAMINE "Sent Items"', c.Examine(T, "Sent Items")),
    (b"a1 SELECT INBOX (CONDSTORE)", c.Select(T, "INBOX", condstore=True)),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        c.Select(T, "INBOX", qresync=c.QResync(67890007, 20050715194045000, S("41,43:211,214:541"))),
    ),
    (
        b"a1 EXAMINE INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 (1:20,50 41:60,90)) CONDSTORE)",
        c.Examine(
            T,
            "INBOX",
            condstore=True,
            qresync=c.QResync(
                67890007, 90060115194045000, S("41:211,214:541"), (S("1:20,50"), S("41:60,90"))
            ),
        ),
    ),
    (b"a1 SELECT x (QRESYNC (1 2 (1 5)))", c.Select(T, "x", qresync=c.QResync(1, 2, None, (S("1"), S("5"))))),
    (b"a1 SELECT &AOk-t&AOk-", c.Select(T, "été")),
    (b"a1 SELECT ~peter/mail/&U,BTFw-/&ZeVnLIqe-", c.Select(T, "~peter/mail/台北/日本語")),
    (b"a1 SELECT &-x", c.Select(T, "&x")),
    (b"a1 SELECT {5}\r\nINBOX", c.Select(T, "INBOX")),
    (b"a1 CREATE foo/bar", c.Create(T, "foo/bar")),
    (b"a1 CREATE MySent (USE (\\sent \\X-Custom))", c.Create(T, "MySent", ("\\Sent", "\\X-Custom"))),
    (b"a1 DELETE foo", c.Delete(T, "foo")),
    (b"a1 RENAME foo {3}\r\nbar", c.Rename(T, "foo", "bar")),
    (b"a1 SUBSCRIBE foo", c.Subscribe(T, "foo")),
    (b"a1 UNSUBSCRIBE foo", c.Unsubscribe(T, "foo")),
    (b'a1 LIST "" *', c.List(T, "", ("*",))),
    (b'a1 LIST "" ""', c.List(T, "", ("",))),
    (b"a1 LIST ~/Mail/ %", c.List(T, "~/Mail/", ("%",))),
    (b"a1 LIST {0}\r\n {1}\r\n%", c.List(T, "", ("%",))),
    (
        b'a1 LIST (SUBSCRIBED REMOTE) "" ("INBOX" "Drafts" %/x])',
        c.List(T, "", ("INBOX", "Drafts", "%/x]"), frozenset({"SUBSCRIBED", "REMOTE"}), extended=True),
    ),
    (
        b'a1 LIST "" % RETURN (CHILDREN SPECIAL-USE)',
        c.List(T, "", ("%",), return_options=frozenset({"CHILDREN", "SPECIAL-USE"}), extended=True),
    ),
    (
        b'a1 LIST (SPECIAL-USE RECURSIVEMATCH) "" * RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT SIZE))',
        c.List(
            T,
            "",
            ("*",),
            frozenset({"SPECIAL-USE", "RECURSIVEMATCH"}),
            frozenset({"SUBSCRIBED", "STATUS"}),
            ("MESSAGES", "UIDNEXT", "SIZE"),
            extended=True,
        ),
    ),
    (b'a1 LIST () "" %', c.List(T, "", ("%",), extended=True)),
    (b'a1 LIST "" % RETURN ()', c.List(T, "", ("%",), extended=True)),
    (b'a1 LSUB "#news." comp.*', c.Lsub(T, "#news.", "comp.*")),
    (
        b"a1 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT messages)",
        c.Status(
            T,
            "INBOX",
            (
                "MESSAGES",
                "UIDNEXT",
                "UIDVALIDITY",
                "UNSEEN",
                "DELETED",
                "SIZE",
                "RECENT",
                "HIGHESTMODSEQ",
                "APPENDLIMIT",
            ),
        ),
    ),
    (b"a1 IDLE", c.Idle(T)),
    (b"a1 GETQUOTAROOT INBOX", c.GetQuotaRoot(T, "INBOX")),
    (b'a1 GETQUOTA ""', c.GetQuota(T, "")),
    # --- selected
    (b"a1 CHECK", c.Check(T)),
    (b"a1 CLOSE", c.Close(T)),
    (b"a1 UNSELECT", c.Unselect(T)),
    (b"a1 EXPUNGE", c.Expunge(T)),
    (b"a1 UID EXPUNGE 3000:3002,3005", c.Expunge(T, True, S("3000:3002,3005"))),
    # SEARCH: every key
    (b"a1 SEARCH ALL", c.Search(T, False, c.SearchAll())),
    (
        b"a1 SEARCH ANSWERED DELETED DRAFT FLAGGED RECENT SEEN",
        c.Search(
            T,
            False,
            c.SearchAnd(
                (F("\\Answered"), F("\\Deleted"), F("\\Draft"), F("\\Flagged"), F("\\Recent"), F("\\Seen"))
            ),
        ),
    ),
    (
        b"a1 SEARCH UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN",
        c.Search(
            T,
            False,
            c.SearchAnd(
                (N(F("\\Answered")), N(F("\\Deleted")), N(F("\\Draft")), N(F("\\Flagged")), N(F("\\Seen")))
            ),
        ),
    ),
    (
        b"a1 SEARCH NEW OLD",
        c.Search(T, False, c.SearchAnd((c.SearchAnd((F("\\Recent"), N(F("\\Seen")))), N(F("\\Recent"))))),
    ),
    (
        b"a1 SEARCH KEYWORD $Forwarded UNKEYWORD foo",
        c.Search(T, False, c.SearchAnd((F("$Forwarded"), N(F("foo"))))),
    ),
    (
        b'a1 SEARCH BCC a CC b FROM c SUBJECT "d e" TO f',
        c.Search(
            T,
            False,
            c.SearchAnd(
                (
                    c.SearchHeader("bcc", "a"),
                    c.SearchHeader("cc", "b"),
                    c.SearchHeader("from", "c"),
                    c.SearchHeader("subject", "d e"),
                    c.SearchHeader("to", "f"),
                )
            ),
        ),
    ),
    (
        b'a1 SEARCH HEADER Message-ID "<x@y>" HEADER X-Empty ""',
        c.Search(
            T, False, c.SearchAnd((c.SearchHeader("message-id", "<x@y>"), c.SearchHeader("x-empty", "")))
        ),
    ),
    (
        b"a1 SEARCH BODY x TEXT y",
        c.Search(T, False, c.SearchAnd((c.SearchText("BODY", "x"), c.SearchText("TEXT", "y")))),
    ),
    (
        b'a1 SEARCH BEFORE 1-Feb-1994 ON "01-FEB-1994" SINCE 28-feb-2000',
        c.Search(
            T,
            False,
            c.SearchAnd(
                (
                    c.SearchDate("INTERNAL", "BEFORE", dt.date(1994, 2, 1)),
                    c.SearchDate("INTERNAL", "ON", dt.date(1994, 2, 1)),
                    c.SearchDate("INTERNAL", "SINCE", dt.date(2000, 2, 28)),
                )
            ),
        ),
    ),
    (
        b"a1 SEARCH SENTBEFORE 1-Jan-2020 SENTON 29-Feb-2020 SENTSINCE 31-Dec-1999",
        c.Search(
            T,
            False,
            c.SearchAnd(
                (
                    c.SearchDate("SENT", "BEFORE", dt.date(2020, 1, 1)),
                    c.SearchDate("SENT", "ON", dt.date(2020, 2, 29)),
                    c.SearchDate("SENT", "SINCE", dt.date(1999, 12, 31)),
                )
            ),
        ),
    ),
    (
        b"a1 SEARCH LARGER 100 SMALLER 5000000000",
        c.Search(T, False, c.SearchAnd((c.SearchSize("LARGER", 100), c.SearchSize("SMALLER", 5000000000)))),
    ),
    (
        b"a1 SEARCH NOT (SEEN FLAGGED) OR DELETED (DRAFT)",
        c.Search(
            T,
            False,
            c.SearchAnd(
                (N(c.SearchAnd((F("\\Seen"), F("\\Flagged")))), c.SearchOr(F("\\Deleted"), F("\\Draft")))
            ),
        ),
    ),
    (
        b"a1 SEARCH 1:5,7 UID 2:* $",
        c.Search(
            T,
            False,
            c.SearchAnd(
                (
                    c.SearchSequence(S("1:5,7")),
                    c.SearchUid(S("2:*")),
                    c.SearchSequence(SequenceSet((), saved=True)),
                )
            ),
        ),
    ),
    (b"a1 SEARCH MODSEQ 620162338", c.Search(T, False, c.SearchModSeq(620162338))),
    (
        b'a1 SEARCH MODSEQ "/flags/\\\\draft" all 620162338',
        c.Search(T, False, c.SearchModSeq(620162338, "/flags/\\draft", "all")),
    ),
    (
        b"a1 SEARCH OLDER 3600 YOUNGER 60",
        c.Search(T, False, c.SearchAnd((c.SearchWithin("OLDER", 3600), c.SearchWithin("YOUNGER", 60)))),
    ),
    (
        b"a1 SEARCH CHARSET UTF-8 SUBJECT {5}\r\n\xc3\xa9t\xc3\xa9",
        c.Search(T, False, c.SearchHeader("subject", "été"), charset="UTF-8"),
    ),
    (
        b"a1 SEARCH RETURN (MIN MAX COUNT) UNSEEN",
        c.Search(T, False, N(F("\\Seen")), return_options=("MIN", "MAX", "COUNT")),
    ),
    (b"a1 SEARCH RETURN () ALL", c.Search(T, False, c.SearchAll(), return_options=("ALL",))),
    (
        b"a1 SEARCH RETURN (SAVE) CHARSET us-ascii FROM x",
        c.Search(T, False, c.SearchHeader("from", "x"), charset="US-ASCII", return_options=("SAVE",)),
    ),
    (b"a1 UID SEARCH UID 1:*", c.Search(T, True, c.SearchUid(S("1:*")))),
    # FETCH: every item, macros, modifiers
    (
        b"a1 FETCH 1 ALL",
        c.Fetch(T, False, S("1"), (FA("FLAGS"), FA("INTERNALDATE"), FA("RFC822.SIZE"), FA("ENVELOPE"))),
    ),
    (b"a1 FETCH 1 fast", c.Fetch(T, False, S("1"), (FA("FLAGS"), FA("INTERNALDATE"), FA("RFC822.SIZE")))),
    (
        b"a1 FETCH 1 FULL",
        c.Fetch(
            T, False, S("1"), (FA("FLAGS"), FA("INTERNALDATE"), FA("RFC822.SIZE"), FA("ENVELOPE"), FA("BODY"))
        ),
    ),
    (
        b"a1 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            T,
            False,
            S("2:4"),
            (FA("FLAGS"), c.FetchBody(c.Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
        ),
    ),
    (b"a1 FETCH 1 body[]", c.Fetch(T, False, S("1"), (c.FetchBody(c.Section()),))),
    (
        b"a1 FETCH 1 (BODY.PEEK[1.2.MIME] BODY[TEXT]<0.2048> BODY[4.2.HEADER.FIELDS.NOT (Subject {2}\r\nTo)] "
        b"BODY[1.HEADER] BODY[3] BODY[3.TEXT])",
        c.Fetch(
            T,
            False,
            S("1"),
            (
                c.FetchBody(c.Section((1, 2), "MIME"), peek=True),
                c.FetchBody(c.Section((), "TEXT"), c.Partial(0, 2048)),
                c.FetchBody(c.Section((4, 2), "HEADER.FIELDS.NOT", ("Subject", "To"))),
                c.FetchBody(c.Section((1,), "HEADER")),
                c.FetchBody(c.Section((3,))),
                c.FetchBody(c.Section((3,), "TEXT")),
            ),
        ),
    ),
    (
        b"a1 FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE UID ENVELOPE INTERNALDATE BODY "
        b"BODYSTRUCTURE MODSEQ FLAGS)",
        c.Fetch(
            T,
            False,
            S("1"),
            tuple(
                FA(n)
                for n in (
                    "RFC822",
                    "RFC822.HEADER",
                    "RFC822.TEXT",
                    "RFC822.SIZE",
                    "UID",
                    "ENVELOPE",
                    "INTERNALDATE",
                    "BODY",
                    "BODYSTRUCTURE",
                    "MODSEQ",
                    "FLAGS",
                )
            ),
        ),
    ),
    (
        b"a1 FETCH 1 (BINARY[1.2]<0.100> BINARY.PEEK[] BINARY.SIZE[3])",
        c.Fetch(
            T,
            False,
            S("1"),
            (
                c.FetchBinary((1, 2), c.Partial(0, 100)),
                c.FetchBinary((), peek=True),
                c.FetchBinarySize((3,)),
            ),
        ),
    ),
    (
        b"a1 FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        c.Fetch(T, False, S("1:*"), (FA("FLAGS"), FA("MODSEQ")), changed_since=12345),
    ),
    (
        b"a1 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        c.Fetch(
            T, True, S("300:500"), (FA("UID"), FA("FLAGS"), FA("MODSEQ")), changed_since=12345, vanished=True
        ),
    ),
    (b"a1 UID FETCH 5 UID", c.Fetch(T, True, S("5"), (FA("UID"),))),
    (b"a1 FETCH $ FLAGS", c.Fetch(T, False, SequenceSet((), saved=True), (FA("FLAGS"),))),
    # STORE / COPY / MOVE
    (b"a1 STORE 2:4 +FLAGS (\\Deleted)", c.Store(T, False, S("2:4"), "add", ("\\Deleted",))),
    (
        b"a1 STORE 1 -FLAGS.SILENT \\seen $Label1",
        c.Store(T, False, S("1"), "remove", ("\\Seen", "$Label1"), silent=True),
    ),
    (b"a1 STORE 1 FLAGS ()", c.Store(T, False, S("1"), "replace", ())),
    (
        b"a1 UID STORE 7,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        c.Store(T, True, S("7,9"), "add", ("\\Deleted",), silent=True, unchanged_since=320162338),
    ),
    (b"a1 COPY 2:4 MEETING", c.Copy(T, False, S("2:4"), "MEETING")),
    (b'a1 UID COPY 1 "Sent Items"', c.Copy(T, True, S("1"), "Sent Items")),
    (b"a1 MOVE 1 Trash", c.Move(T, False, S("1"), "Trash")),
    (b"a1 UID MOVE 42:69 foo", c.Move(T, True, S("42:69"), "foo")),
]


@pytest.mark.parametrize(("wire", "expected"), CASES, ids=[w[:40].decode("latin-1") for w, _ in CASES])
def test_parse_table(wire: bytes, expected: c.Command) -> None:
    assert parse_command(wire + b"\r\n") == expected


def test_every_command_has_a_case() -> None:
    names = {cmd.name for _, cmd in CASES}
    assert names | {"APPEND"} == set(COMMAND_NAMES)


def test_parser_and_state_table_name_the_same_commands() -> None:
    assert set(COMMAND_NAMES) == set(COMMAND_STATES)


def _via_engine(wire: bytes) -> list[c.Command]:
    # Sync literals become "+" continuations, LITERAL+ ones are read straight away.
    events, _out = run([wire + b"\r\n"], state=State.SELECTED, literal_plus=True)
    return commands(events)


@pytest.mark.parametrize(("wire", "expected"), CASES, ids=[w[:40].decode("latin-1") for w, _ in CASES])
def test_parse_table_through_the_engine(wire: bytes, expected: c.Command) -> None:
    if expected.name in ("LOGIN", "AUTHENTICATE", "STARTTLS"):
        events, _ = run([wire + b"\r\n"], tls_active=False, starttls_available=True, login_requires_tls=False)
        got = commands(events)
    elif expected.name == "ENABLE":
        events, _ = run([wire + b"\r\n"], state=State.AUTHENTICATED)
        got = commands(events)
    else:
        got = _via_engine(wire)
    assert got == [expected]


@pytest.mark.parametrize(("wire", "expected"), CASES, ids=[w[:40].decode("latin-1") for w, _ in CASES])
def test_parse_table_byte_by_byte(wire: bytes, expected: c.Command) -> None:
    state = State.SELECTED
    if expected.name in ("LOGIN", "AUTHENTICATE", "STARTTLS"):
        state = State.NOT_AUTHENTICATED
    elif expected.name == "ENABLE":
        state = State.AUTHENTICATED
    events, _ = run(
        byte_by_byte(wire + b"\r\n"),
        state=state,
        tls_active=False,
        starttls_available=True,
        login_requires_tls=False,
    )
    assert commands(events) == [expected]


def test_non_synchronizing_literals_parse_the_same() -> None:
    wire = b"a1 LOGIN {4+}\r\nfred {3+}\r\npw!\r\n"
    events, out = run([wire])
    assert commands(events) == [c.Login(T, "fred", "pw!")]
    assert b"+ " not in out  # no continuation for LITERAL+


ERRORS: list[bytes] = [
    b"a1 FOO",
    b"a1 UID FOO 1",
    b"a1 UID",
    b"a1 NOOP extra",
    b"a1  NOOP",
    b"a1 LOGIN onlyuser",
    b"a1 LOGIN {3}\r\na\x00b pw",  # NUL is not a CHAR8
    b'a1 LOGIN "a\\b" pw',  # only \" and \\ may be escaped
    b'a1 LOGIN "abc pw',
    b"a1 LOGIN ~{3}\r\nabc pw",  # literal8 only where binary data may go
    b"a1 AUTHENTICATE PLAIN ====",
    b"a1 AUTHENTICATE PLAIN AB=C",
    b"a1 AUTHENTICATE",
    b"a1 ENABLE",
    b'a1 ID ("a")',
    b"a1 ID (a b)",
    b"a1 SELECT",
    b"a1 SELECT INBOX (FOO)",
    b"a1 SELECT INBOX ()",
    b"a1 SELECT INBOX (CONDSTORE CONDSTORE)",
    b"a1 SELECT INBOX (QRESYNC (0 1))",
    b"a1 SELECT INBOX (QRESYNC (1 1 1:*))",
    b"a1 SELECT INBOX (QRESYNC (1 1 1:5 ))",
    b"a1 SELECT &Jjo!",
    b"a1 SELECT &AGE-",  # "a" hidden in base64
    b"a1 SELECT &U,BTFw-&ZeVnLIqe-",  # two adjacent base64 runs
    b"a1 SELECT caf\xc3\xa9",
    b'a1 SELECT "caf\xc3\xa9"',  # 8-bit without UTF8=ACCEPT
    b"a1 CREATE x (USE (Sent))",
    b"a1 CREATE x (FOO)",
    b"a1 RENAME x",
    b'a1 LIST (RECURSIVEMATCH) "" *',
    b'a1 LIST (FOO) "" *',
    b'a1 LIST "" * RETURN (FOO)',
    b'a1 LIST "" ()',
    b'a1 LIST "" * RETURN (STATUS ())',
    b'a1 LIST ""',
    b"a1 STATUS INBOX ()",
    b"a1 STATUS INBOX (FOO)",
    b"a1 STATUS INBOX",
    b"a1 APPEND INBOX",
    b"a1 FETCH 1 (FLAGS",
    b"a1 FETCH 1 FLAGS)",
    b"a1 FETCH 0 FLAGS",
    b"a1 FETCH 4294967296 FLAGS",
    b"a1 FETCH 1:5,$ FLAGS",
    b"a1 FETCH 1 BODY[1.0]",
    b"a1 FETCH 1 BODY[1..2]",
    b"a1 FETCH 1 BODY[MIME]",
    b"a1 FETCH 1 BODY[FOO]",
    b"a1 FETCH 1 BODY.PEEK",
    b"a1 FETCH 1 (ALL)",
    b"a1 FETCH 1 BODY[]<10>",
    b"a1 FETCH 1 BODY[]<0.0>",
    b"a1 FETCH 1 BODY[HEADER.FIELDS ()]",
    b"a1 FETCH 1 BODY[HEADER.FIELDS (a:b)]",
    b"a1 FETCH 1 BODY[HEADER.FIELDS]",
    b"a1 FETCH 1 BINARY[TEXT]",
    b"a1 FETCH 1 XFOO",
    b"a1 FETCH 1 FLAGS (VANISHED)",
    b"a1 FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)",
    b"a1 UID FETCH 1 FLAGS (VANISHED)",
    b"a1 FETCH 1 FLAGS (CHANGEDSINCE 0)",
    b"a1 FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)",
    b"a1 FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)",
    b"a1 SEARCH",
    b"a1 SEARCH FOO",
    b"a1 SEARCH (ALL",
    b"a1 SEARCH ALL)",
    b"a1 SEARCH ()",
    b"a1 SEARCH NOT",
    b"a1 SEARCH OR ALL",
    b"a1 SEARCH BEFORE 30-Feb-2020",
    b"a1 SEARCH BEFORE 1-Foo-2020",
    b'a1 SEARCH BEFORE "1-Jan-2020',
    b"a1 SEARCH RETURN (FOO) ALL",
    b'a1 SEARCH SUBJECT "\xff"',
    b'a1 SEARCH HEADER "a b" c',
    b'a1 SEARCH MODSEQ "/foo" all 1',
    b'a1 SEARCH MODSEQ "/flags/\\\\Seen" some 1',
    b"a1 SEARCH LARGER x",
    b"a1 SEARCH UID",
    b"a1 STORE 1 FLAGS",
    b"a1 STORE 1 XFLAGS (\\Seen)",
    b"a1 STORE 1 +FLAGS (\\*)",
    b"a1 STORE 1 (FOO 1) FLAGS ()",
    b"a1 COPY 1",
    b"a1 UID EXPUNGE",
    b"a1 MOVE x y",
]


@pytest.mark.parametrize("wire", ERRORS, ids=[w[:40].decode("latin-1") for w in ERRORS])
def test_syntax_errors(wire: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_command(wire + b"\r\n")
    assert info.value.status == "BAD"


def test_unknown_charset_is_no_badcharset() -> None:
    with pytest.raises(ParseError) as info:
        parse_command(b"a1 SEARCH CHARSET KOI8-R ALL\r\n")
    assert info.value.status == "NO"
    assert info.value.code == ResponseCode.badcharset(("UTF-8", "US-ASCII"))


def test_utf8_mailbox_names_once_enabled() -> None:
    assert parse_command(b'a1 SELECT "caf\xc3\xa9"\r\n', utf8=True) == c.Select(T, "café")
    # modified UTF-7 is not decoded then: "&" is just "&"
    assert parse_command(b"a1 SELECT &AOk-\r\n", utf8=True) == c.Select(T, "&AOk-")
    with pytest.raises(ParseError):
        parse_command(b'a1 SELECT "caf\xe9"\r\n', utf8=True)


def test_append_date_time_and_flags_via_engine() -> None:
    wire = b'a1 APPEND Drafts (\\Draft $MDNSent) " 7-Feb-1994 21:52:25 -0800" {3+}\r\nabc\r\n'
    events, _ = run([wire], state=State.AUTHENTICATED)
    begin = events[0]
    assert begin == c_append_begin(
        "Drafts",
        ("\\Draft", "$MDNSent"),
        dt.datetime(1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(-dt.timedelta(hours=8))),
        3,
    )


def c_append_begin(mailbox: str, flags: tuple[str, ...], date: dt.datetime | None, size: int) -> AppendBegin:
    return AppendBegin(T, mailbox, flags, date, size)


@pytest.mark.parametrize(
    "wire",
    [
        b"a1 SEARCH " + b"(" * 10_000 + b"ALL" + b")" * 10_000,
        b"a1 SEARCH " + b"NOT " * 10_000 + b"ALL",
        b"a1 SEARCH " + b"OR ALL " * 10_000 + b"ALL",
        b"a1 SEARCH " + b"(" * (MAX_SEARCH_DEPTH + 1) + b"ALL" + b")" * (MAX_SEARCH_DEPTH + 1),
    ],
)
def test_deep_search_nesting_is_bad_not_a_crash(wire: bytes) -> None:
    with pytest.raises(ParseError, match="nested"):
        parse_command(wire + b"\r\n")


def test_search_nesting_up_to_the_limit_works() -> None:
    depth = MAX_SEARCH_DEPTH
    wire = b"a1 SEARCH " + b"(" * (depth - 1) + b"ALL" + b")" * (depth - 1) + b"\r\n"
    assert parse_command(wire) == c.Search(T, False, c.SearchAll())


def test_peek_tag_and_name() -> None:
    assert peek_tag_and_name(b"a1 uid fetch 1 FLAGS\r\n") == ("a1", "UID FETCH")
    assert peek_tag_and_name(b"a1 NOOP\r\n") == ("a1", "NOOP")
    assert peek_tag_and_name(b"a1\r\n") == ("a1", None)
    assert peek_tag_and_name(b"+a NOOP\r\n") == (None, None)
    assert peek_tag_and_name(b"(x NOOP\r\n") == (None, None)


def test_section_round_trip() -> None:
    for wire in (
        b"",
        b"1.2.MIME",
        b"HEADER.FIELDS (From To)",
        b"3.TEXT",
        b"2",
        b'1.HEADER.FIELDS.NOT ("A B")',
    ):
        if wire == b'1.HEADER.FIELDS.NOT ("A B")':
            continue  # not a valid field name, so never produced
        fetch = parse_command(b"a1 FETCH 1 BODY[" + wire + b"]\r\n")
        assert isinstance(fetch, c.Fetch)
        item = fetch.items[0]
        assert isinstance(item, c.FetchBody)
        assert item.section.to_bytes() == wire
        assert item.response_name() == b"BODY[" + wire + b"]"
    fetch = parse_command(b"a1 FETCH 1 (BODY.PEEK[1]<5.10> BINARY.PEEK[1.2]<0.3> BINARY.SIZE[])\r\n")
    assert isinstance(fetch, c.Fetch)
    assert [i.response_name() for i in fetch.items] == [b"BODY[1]<5>", b"BINARY[1.2]<0>", b"BINARY.SIZE[]"]
