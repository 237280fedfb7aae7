"""Response serialisers: exact bytes."""

from __future__ import annotations

import datetime as dt

import pytest

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.responses import (
    CapabilityResponse,
    Continuation,
    ContinuationData,
    Enabled,
    ESearch,
    Exists,
    ExpungeResponse,
    FetchResponse,
    FlagsResponse,
    IdResponse,
    ListResponse,
    NamespaceResponse,
    QuotaResponse,
    QuotaRootResponse,
    Raw,
    Recent,
    Response,
    ResponseCode,
    SearchResponse,
    StatusResponse,
    StreamedLiteral,
    Tagged,
    Untagged,
    Vanished,
    format_date_time,
)
from mailroom.wire.imap.sequence import SequenceSet

RC = ResponseCode
CASES: list[tuple[Response, bytes]] = [
    (Tagged("a1", "OK", "done"), b"a1 OK done\r\n"),
    (Tagged("a1", "NO", "x\r\ny"), b"a1 NO x  y\r\n"),
    (Tagged("a1", "BAD", ""), b"a1 BAD done\r\n"),
    (Tagged("a1", "OK", "[READ-WRITE] SELECT completed", None), b"a1 OK [READ-WRITE] SELECT completed\r\n"),
    (
        Untagged("OK", "ready", RC.capability(["IMAP4rev1", "IDLE"])),
        b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n",
    ),
    (Untagged("BYE", "bye"), b"* BYE bye\r\n"),
    (Untagged("PREAUTH", "hi"), b"* PREAUTH hi\r\n"),
    (Continuation(), b"+ Ready\r\n"),
    (ContinuationData(b""), b"+ \r\n"),
    (ContinuationData(b"\x00abc"), b"+ AGFiYw==\r\n"),
    (CapabilityResponse(["IMAP4rev1", "AUTH=PLAIN"]), b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
    (Enabled(["CONDSTORE"]), b"* ENABLED CONDSTORE\r\n"),
    (Enabled([]), b"* ENABLED\r\n"),
    (Exists(23), b"* 23 EXISTS\r\n"),
    (Recent(0), b"* 0 RECENT\r\n"),
    (ExpungeResponse(3), b"* 3 EXPUNGE\r\n"),
    (Vanished([405, 407, 406, 410]), b"* VANISHED 405:407,410\r\n"),
    (Vanished(SequenceSet.parse("1:5"), earlier=True), b"* VANISHED (EARLIER) 1:5\r\n"),
    (FlagsResponse(["\\Answered", "\\Seen", "$Forwarded"]), b"* FLAGS (\\Answered \\Seen $Forwarded)\r\n"),
    (ListResponse("INBOX", "/", ["\\HasNoChildren"]), b'* LIST (\\HasNoChildren) "/" INBOX\r\n'),
    (ListResponse("", "/", ["\\Noselect"]), b'* LIST (\\Noselect) "/" ""\r\n'),
    (ListResponse("a b", None, []), b'* LIST () NIL "a b"\r\n'),
    (ListResponse("Entwürfe", "/", ["\\Drafts"]), b'* LIST (\\Drafts) "/" Entw&APw-rfe\r\n'),
    (ListResponse("a&b", "/", []), b'* LIST () "/" a&-b\r\n'),
    (ListResponse("100%", ".", []), b'* LIST () "." "100%"\r\n'),
    (ListResponse('q"x', "\\", []), b'* LIST () "\\\\" "q\\"x"\r\n'),
    (
        ListResponse("Foo", "/", [], child_info=["SUBSCRIBED"]),
        b'* LIST () "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n',
    ),
    (
        ListResponse("New", "/", [], old_name="Old"),
        b'* LIST () "/" New ("OLDNAME" (Old))\r\n',
    ),
    (ListResponse("INBOX", "/", [], command="LSUB"), b'* LSUB () "/" INBOX\r\n'),
    (
        StatusResponse("blurdybloop", [("MESSAGES", 231), ("UIDNEXT", 44292)]),
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
    ),
    (SearchResponse([2, 3, 6]), b"* SEARCH 2 3 6\r\n"),
    (SearchResponse([]), b"* SEARCH\r\n"),
    (SearchResponse([2, 5], modseq=917162500), b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"),
    (
        ESearch("A282", uid=True, min=2, max=47, count=8, all=[2, 3, 4, 10, 11, 47, 45, 46], modseq=5),
        b'* ESEARCH (TAG "A282") UID MIN 2 MAX 47 COUNT 8 ALL 2:4,10:11,45:47 MODSEQ 5\r\n',
    ),
    (ESearch("a", count=0, all=[]), b'* ESEARCH (TAG "a") COUNT 0\r\n'),
    (ESearch(), b"* ESEARCH\r\n"),
    (IdResponse(None), b"* ID NIL\r\n"),
    (IdResponse([("name", "mailroom"), ("os", None)]), b'* ID ("name" "mailroom" "os" NIL)\r\n'),
    (NamespaceResponse(), b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
    (
        NamespaceResponse([("", "/")], [("~", "/")], [("#shared/", "/"), ("#public/", None)]),
        b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" NIL))\r\n',
    ),
    (QuotaRootResponse("INBOX", [""]), b'* QUOTAROOT INBOX ""\r\n'),
    (QuotaRootResponse("comp.mail", []), b"* QUOTAROOT comp.mail\r\n"),
    (QuotaResponse("", [("STORAGE", 10, 512)]), b'* QUOTA "" (STORAGE 10 512)\r\n'),
]


@pytest.mark.parametrize(("response", "wire"), CASES, ids=[w[:30].decode() for _, w in CASES])
def test_serialise(response: Response, wire: bytes) -> None:
    assert response.to_bytes() == wire


def test_utf8_mailbox_names() -> None:
    assert ListResponse("Entwürfe", "/", []).to_bytes(utf8=True) == '* LIST () "/" "Entwürfe"\r\n'.encode()
    assert (
        StatusResponse("été", [("MESSAGES", 1)]).to_bytes(utf8=True)
        == '* STATUS "été" (MESSAGES 1)\r\n'.encode()
    )
    assert NamespaceResponse([("é/", "/")]).to_bytes() == b'* NAMESPACE (("&AOk-/" "/")) NIL NIL\r\n'


CODES: list[tuple[ResponseCode, bytes]] = [
    (RC.ALERT, b"[ALERT]"),
    (RC.badcharset(), b"[BADCHARSET]"),
    (RC.badcharset(["UTF-8", "US-ASCII"]), b"[BADCHARSET (UTF-8 US-ASCII)]"),
    (RC.capability(["IMAP4rev2"]), b"[CAPABILITY IMAP4rev2]"),
    (RC.PARSE, b"[PARSE]"),
    (RC.permanentflags(["\\Deleted", "\\Seen", "\\*"]), b"[PERMANENTFLAGS (\\Deleted \\Seen \\*)]"),
    (RC.READ_ONLY, b"[READ-ONLY]"),
    (RC.READ_WRITE, b"[READ-WRITE]"),
    (RC.TRYCREATE, b"[TRYCREATE]"),
    (RC.uidnext(4392), b"[UIDNEXT 4392]"),
    (RC.uidvalidity(3857529045), b"[UIDVALIDITY 3857529045]"),
    (RC.unseen(12), b"[UNSEEN 12]"),
    (RC.appenduid(38505, [3955]), b"[APPENDUID 38505 3955]"),
    (RC.appenduid(38505, [3955, 3956, 3957]), b"[APPENDUID 38505 3955:3957]"),
    (RC.copyuid(38505, [304, 319, 320], [3956, 3957, 3958]), b"[COPYUID 38505 304,319:320 3956:3958]"),
    (RC.copyuid(1, [5, 4], [10, 11]), b"[COPYUID 1 5,4 10:11]"),
    (RC.UIDNOTSTICKY, b"[UIDNOTSTICKY]"),
    (RC.highestmodseq(715194045007), b"[HIGHESTMODSEQ 715194045007]"),
    (RC.NOMODSEQ, b"[NOMODSEQ]"),
    (RC.modified([7, 9]), b"[MODIFIED 7,9]"),
    (RC.CLOSED, b"[CLOSED]"),
    (RC.OVERQUOTA, b"[OVERQUOTA]"),
    (RC.TOOBIG, b"[TOOBIG]"),
    (RC.ALREADYEXISTS, b"[ALREADYEXISTS]"),
    (RC.NONEXISTENT, b"[NONEXISTENT]"),
    (RC.INUSE, b"[INUSE]"),
    (RC.CANNOT, b"[CANNOT]"),
    (RC.LIMIT, b"[LIMIT]"),
    (RC.SERVERBUG, b"[SERVERBUG]"),
    (RC.CLIENTBUG, b"[CLIENTBUG]"),
    (RC.AUTHENTICATIONFAILED, b"[AUTHENTICATIONFAILED]"),
    (RC.AUTHORIZATIONFAILED, b"[AUTHORIZATIONFAILED]"),
    (RC.EXPIRED, b"[EXPIRED]"),
    (RC.PRIVACYREQUIRED, b"[PRIVACYREQUIRED]"),
    (RC.UNAVAILABLE, b"[UNAVAILABLE]"),
    (RC.CONTACTADMIN, b"[CONTACTADMIN]"),
    (RC.EXPUNGEISSUED, b"[EXPUNGEISSUED]"),
    (RC.NOPERM, b"[NOPERM]"),
    (RC.CORRUPTION, b"[CORRUPTION]"),
    (RC.HASCHILDREN, b"[HASCHILDREN]"),
    (RC.UNKNOWN_CTE, b"[UNKNOWN-CTE]"),
    (RC.USEATTR, b"[USEATTR]"),
    (RC.NOTSAVED, b"[NOTSAVED]"),
    (RC.appendlimit(1024), b"[APPENDLIMIT 1024]"),
]


@pytest.mark.parametrize(("code", "wire"), CODES, ids=[w.decode() for _, w in CODES])
def test_response_codes(code: ResponseCode, wire: bytes) -> None:
    assert code.to_bytes() == wire
    assert Tagged("t", "NO", "x", code).to_bytes() == b"t NO " + wire + b" x\r\n"


def test_date_time() -> None:
    tz = dt.timezone(-dt.timedelta(hours=7, minutes=30))
    assert format_date_time(dt.datetime(1996, 7, 1, 2, 44, 25, tzinfo=tz)) == b'"01-Jul-1996 02:44:25 -0730"'
    assert format_date_time(dt.datetime(2024, 12, 31, 23, 59, 59)) == b'"31-Dec-2024 23:59:59 +0000"'


def test_fetch_response_values() -> None:
    when = dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7)))
    body = c.FetchBody(c.Section((1,), "HEADER.FIELDS", ("From", "To")), c.Partial(0, 100), peek=True)
    resp = FetchResponse(
        12,
        [
            ("UID", 4827313),
            ("FLAGS", ("\\Seen", "$Junk")),
            ("INTERNALDATE", when),
            ("RFC822.SIZE", 44827),
            ("MODSEQ", 12121231000),
            ("ENVELOPE", Raw(b'("date" NIL NIL NIL NIL NIL NIL NIL NIL NIL)')),
            (body.response_name(), b"From: a\r\n\r\n"),
            ("BINARY[2]", b"a\x00b"),
            ("BODY[9]", None),
            ("X-GM-LABELS", "é"),
        ],
    )
    assert resp.to_bytes() == (
        b"* 12 FETCH (UID 4827313 FLAGS (\\Seen $Junk) "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 44827 MODSEQ (12121231000) '
        b'ENVELOPE ("date" NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        b"BODY[1.HEADER.FIELDS (From To)]<0> {11}\r\nFrom: a\r\n\r\n "
        b"BINARY[2] ~{3}\r\na\x00b BODY[9] NIL X-GM-LABELS {2}\r\n\xc3\xa9)\r\n"
    )
    assert FetchResponse(1, [("X", "é")]).to_bytes(utf8=True) == '* 1 FETCH (X "é")\r\n'.encode()


def test_streamed_literal_header() -> None:
    resp = FetchResponse(3, [("UID", 9), ("BODY[]", StreamedLiteral(50_000_000))])
    assert resp.to_bytes() == b"* 3 FETCH (UID 9 BODY[] {50000000}\r\n"
    assert FetchResponse(3, [("BINARY[]", StreamedLiteral(5, binary=True))]).to_bytes() == (
        b"* 3 FETCH (BINARY[] ~{5}\r\n"
    )
    with pytest.raises(ValueError):
        FetchResponse(3, [("BODY[]", StreamedLiteral(5)), ("UID", 1)]).to_bytes()
