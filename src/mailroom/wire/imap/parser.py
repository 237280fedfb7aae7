"""IMAP command parsers: a complete command's bytes in, a typed :mod:`commands` dataclass out.

The receiver hands over the command exactly as the client sent it: its lines (each ending in CRLF)
with every literal's data in place after its ``{n}`` CRLF, so the parser follows the ABNF directly
(RFC 9051 §9 and RFC 3501 §9, plus the extension RFCs named beside each function). Syntax errors raise
:class:`ParseError`, which carries the status (BAD, or NO for an unsupported charset) and code.

APPEND is never parsed whole: :func:`parse_append_head` and :func:`parse_append_next` read the part
before each message literal so the engine can stream the message.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, get_args

from mailroom.wire.imap import commands as c
from mailroom.wire.imap import mutf7
from mailroom.wire.imap.responses import ResponseCode
from mailroom.wire.imap.sequence import SequenceSet, SequenceSetError

__all__ = [
    "COMMAND_NAMES",
    "MAX_SEARCH_DEPTH",
    "STATUS_ITEMS",
    "AppendMessage",
    "Incomplete",
    "ParseError",
    "parse_append_head",
    "parse_append_next",
    "parse_command",
    "peek_tag_and_name",
]

MAX_SEARCH_DEPTH: Final = 64  # nesting of "(", NOT and OR in SEARCH; deeper is BAD, not a RecursionError
MAX_NUMBER = 4_294_967_295  # RFC 9051 §9 number: unsigned 32-bit
MAX_NUMBER64 = 9_223_372_036_854_775_807  # RFC 9051 §9 number64 / RFC 7162 mod-sequence-value: 63-bit

# RFC 9051 §9 status-att, plus RECENT (RFC 3501), HIGHESTMODSEQ (RFC 7162), APPENDLIMIT (RFC 7889)
STATUS_ITEMS: Final = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "SIZE",
        "RECENT",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
    }
)
_SEARCH_CHARSETS = ("UTF-8", "US-ASCII")
_SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
# RFC 6154 and RFC 8457 (\Important)
_SPECIAL_USE = {
    f.upper(): f
    for f in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash", "\\Important")
}

# RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
#              ATOM-CHAR = <any CHAR except atom-specials>; ASTRING-CHAR = ATOM-CHAR / resp-specials
#              tag = 1*<any ASTRING-CHAR except "+">; list-char = ATOM-CHAR / list-wildcards / resp-specials
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_LIST_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
_DIGITS = re.compile(rb"[0-9]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
# literal = "{" number64 ["+"] "}" CRLF *CHAR8 ; literal8 = "~{" number64 ["+"] "}" CRLF *OCTET
_LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r\n")
_SEQ_SET = re.compile(rb"[0-9*:,$]+")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_SPEC = re.compile(rb"[A-Za-z0-9.]+")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DATE = re.compile(rb'("?)([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})("?)')
# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext


class ParseError(Exception):
    """A command the server must refuse; ``status``/``code`` say how (BAD unless noted)."""

    def __init__(
        self, message: str, *, status: Literal["BAD", "NO"] = "BAD", code: ResponseCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status: Literal["BAD", "NO"] = status
        self.code = code


class Incomplete(Exception):
    """The bytes end inside a literal whose data has not arrived (used to place APPEND's message)."""


def decode_base64(data: bytes) -> bytes:
    """RFC 9051 §9 ``base64 = *(4base64-char) [base64-terminal]``, strictly."""
    if not _BASE64.fullmatch(data):
        raise ParseError("Invalid base64")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex already checked
        raise ParseError("Invalid base64") from exc


class _Parser:
    __slots__ = ("data", "depth", "pos", "utf8")

    def __init__(self, data: bytes, *, utf8: bool) -> None:
        self.data = data
        self.pos = 0
        self.utf8 = utf8
        self.depth = 0

    # --- primitives ---------------------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        raise ParseError(message)

    def peek(self) -> bytes:
        return self.data[self.pos : self.pos + 1]

    def at_end(self) -> bool:
        return self.data.startswith(b"\r\n", self.pos) and self.pos + 2 == len(self.data)

    def end(self) -> None:
        if not self.at_end():
            self.fail("Unexpected characters at end of command")

    def match(self, regex: re.Pattern[bytes]) -> re.Match[bytes] | None:
        m = regex.match(self.data, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def expect(self, token: bytes) -> None:
        if self.data[self.pos : self.pos + len(token)].upper() != token.upper():
            self.fail(f"Expected {token.decode()!r}")
        self.pos += len(token)

    def sp(self) -> None:
        if self.peek() != b" ":
            self.fail("Expected a space")
        self.pos += 1

    def try_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def try_token(self, token: bytes) -> bool:
        """Consume ``token`` (case-insensitive) when it is next and not followed by more atom chars."""
        end = self.pos + len(token)
        if self.data[self.pos : end].upper() == token.upper() and not _ATOM.match(self.data, end):
            self.pos = end
            return True
        return False

    def atom(self) -> bytes:
        """``atom = 1*ATOM-CHAR``."""
        m = self.match(_ATOM)
        if m is None:
            self.fail("Expected an atom")
        return m.group()

    def word(self) -> str:
        """An atom used as a keyword, upper case."""
        return self.atom().decode("ascii").upper()

    def number(self, *, nonzero: bool = False, limit: int = MAX_NUMBER) -> int:
        """``number = 1*DIGIT`` (32-bit), ``nz-number = digit-nz *DIGIT``, ``number64``."""
        m = self.match(_DIGITS)
        if m is None:
            self.fail("Expected a number")
        digits = m.group()
        if len(digits) > 20 or int(digits) > limit:
            self.fail("Number out of range")
        value = int(digits)
        if nonzero and value == 0:
            self.fail("Expected a non-zero number")
        return value

    def quoted(self) -> bytes:
        """``quoted = DQUOTE *QUOTED-CHAR DQUOTE`` (UTF-8 admitted, RFC 9051 §9)."""
        m = self.match(_QUOTED)
        if m is None:
            self.fail("Invalid quoted string")
        return _UNESCAPE.sub(rb"\1", m.group(1))

    def literal(self, *, allow8: bool = False) -> bytes:
        """``literal = "{" number64 ["+"] "}" CRLF *CHAR8`` (``literal8`` with ``allow8``)."""
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            self.fail("Invalid literal")
        if m.group(1) and not allow8:
            self.fail("literal8 is not allowed here")
        if len(m.group(2)) > 20:
            self.fail("Literal too large")
        size = int(m.group(2))
        start = m.end()
        if start + size > len(self.data):
            raise Incomplete
        value = self.data[start : start + size]
        if not allow8 and b"\0" in value:
            self.fail("NUL in literal")  # CHAR8 = %x01-ff
        self.pos = start + size
        return value

    def string(self) -> bytes:
        """``string = quoted / literal``."""
        return self.quoted() if self.peek() == b'"' else self.literal()

    def astring(self) -> bytes:
        """``astring = 1*ASTRING-CHAR / string``."""
        if self.peek() in (b'"', b"{"):
            return self.string()
        m = self.match(_ASTRING_ATOM)
        if m is None:
            self.fail("Expected a string")
        return m.group()

    def nstring(self) -> bytes | None:
        """``nstring = string / nil``."""
        if self.try_token(b"NIL"):
            return None
        return self.string()

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("Invalid UTF-8")

    def ascii(self, raw: bytes) -> str:
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.fail("Expected US-ASCII")

    # --- IMAP productions -----------------------------------------------------------------------

    def tag(self) -> str:
        """``tag = 1*<any ASTRING-CHAR except "+">``."""
        m = self.match(_TAG)
        if m is None:
            self.fail("Invalid tag")
        return m.group().decode("ascii")

    def _mailbox_name(self, raw: bytes) -> str:
        # RFC 9051 §5.1: UTF-8 once IMAP4rev2 / UTF8=ACCEPT (RFC 6855) is enabled, else modified UTF-7
        if self.utf8:
            name = self.text(raw)
        else:
            try:
                name = mutf7.decode(raw)
            except mutf7.MUTF7Error as exc:
                self.fail(f"Mailbox name is not valid modified UTF-7: {exc}")
        if any(ch in "\r\n\0" for ch in name):
            self.fail("Invalid character in mailbox name")
        return "INBOX" if name.upper() == "INBOX" else name

    def mailbox(self) -> str:
        """``mailbox = "INBOX" / astring`` -- INBOX is case-insensitive (RFC 9051 §5.1)."""
        return self._mailbox_name(self.astring())

    def list_mailbox(self) -> str:
        """``list-mailbox = 1*list-char / string``."""
        if self.peek() in (b'"', b"{"):
            raw = self.string()
        else:
            m = self.match(_LIST_ATOM)
            if m is None:
                self.fail("Expected a mailbox pattern")
            raw = m.group()
        return self._mailbox_name(raw)

    def flag(self) -> str:
        """``flag = "\\Answered" / "\\Flagged" / "\\Deleted" / "\\Seen" / "\\Draft" / flag-keyword /
        flag-extension``; ``flag-extension = "\\" atom``; ``flag-keyword = atom``."""
        backslash = self.peek() == b"\\"
        if backslash:
            self.pos += 1
        name = self.ascii(self.atom())
        if not backslash:
            return name
        flag = "\\" + name
        return _SYSTEM_FLAGS.get(flag.upper(), flag)

    def flag_list(self) -> tuple[str, ...]:
        """``flag-list = "(" [flag *(SP flag)] ")"``."""
        self.expect(b"(")
        flags: list[str] = []
        if self.peek() != b")":
            flags.append(self.flag())
            while self.try_sp():
                flags.append(self.flag())
        self.expect(b")")
        return tuple(dict.fromkeys(flags))

    def sequence_set(self, *, allow_star: bool = True, allow_saved: bool = True) -> SequenceSet:
        """``sequence-set`` (see :mod:`sequence`)."""
        m = self.match(_SEQ_SET)
        if m is None:
            self.fail("Expected a sequence set")
        try:
            return SequenceSet.parse(m.group(), allow_star=allow_star, allow_saved=allow_saved)
        except SequenceSetError as exc:
            self.fail(f"Invalid sequence set: {exc}")

    def date(self) -> _dt.date:
        """``date = date-text / DQUOTE date-text DQUOTE``;
        ``date-text = date-day "-" date-month "-" date-year``."""
        m = self.match(_DATE)
        if m is None or m.group(1) != m.group(5):
            self.fail("Invalid date")
        month = _MONTHS.get(m.group(3).decode().upper())
        if month is None:
            self.fail("Invalid month")
        try:
            return _dt.date(int(m.group(4)), month, int(m.group(2)))
        except ValueError:
            self.fail("Invalid date")

    def date_time(self) -> _dt.datetime:
        """``date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE``
        (a day without its leading space is accepted too)."""
        m = self.match(_DATE_TIME)
        if m is None:
            self.fail("Invalid date-time")
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.decode().upper())
        if month is None or int(zm) > 59 or int(zh) > 23:
            self.fail("Invalid date-time")
        offset = _dt.timedelta(hours=int(zh), minutes=int(zm))
        tz = _dt.timezone(-offset if sign == b"-" else offset)
        try:
            return _dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
        except ValueError:
            self.fail("Invalid date-time")

    def paren_list(self, item: Callable[[], str]) -> list[str]:
        """``"(" [item *(SP item)] ")"``."""
        self.expect(b"(")
        out: list[str] = []
        if self.peek() != b")":
            out.append(item())
            while self.try_sp():
                out.append(item())
        self.expect(b")")
        return out

    # --- commands -----------------------------------------------------------------------------

    def command(self) -> c.Command:
        """``command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF``."""
        tag = self.tag()
        self.sp()
        name = self.word()
        if name == "UID":
            self.sp()
            sub = self.word()
            parse = _UID_COMMANDS.get(sub)
            if parse is None:
                self.fail("Unknown UID command")
            cmd = parse(self, tag, True)
        else:
            simple = _SIMPLE_COMMANDS.get(name)
            if simple is not None:
                cmd = simple(tag)
            else:
                handler = _COMMANDS.get(name)
                if handler is None:
                    self.fail("Unknown command")
                cmd = handler(self, tag)
        self.end()
        return cmd

    def authenticate(self, tag: str) -> c.Authenticate:
        """RFC 9051 §9 / RFC 4959:
        ``authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp] *(CRLF base64)``;
        ``initial-resp = (base64 / "=")``; ``auth-type = atom``."""
        self.sp()
        mechanism = self.word()
        initial: bytes | None = None
        if self.try_sp():
            if self.peek() == b"=" and self.data.startswith(b"\r\n", self.pos + 1):
                self.pos += 1
                initial = b""
            else:
                m = self.match(_BASE64)
                if m is None or not m.group():
                    self.fail("Invalid initial response")
                initial = decode_base64(m.group())
        return c.Authenticate(tag, mechanism, initial)

    def login(self, tag: str) -> c.Login:
        """``login = "LOGIN" SP userid SP password``; ``userid = astring``; ``password = astring``."""
        self.sp()
        user = self.text(self.astring())
        self.sp()
        password = self.text(self.astring())
        return c.Login(tag, user, password)

    def enable(self, tag: str) -> c.Enable:
        """RFC 5161: ``enable = "ENABLE" 1*(SP capability)``; ``capability = ("AUTH=" auth-type) / atom``."""
        caps = []
        self.sp()
        caps.append(self.word())
        while self.try_sp():
            caps.append(self.word())
        return c.Enable(tag, tuple(dict.fromkeys(caps)))

    def id(self, tag: str) -> c.Id:
        """RFC 2971: ``id = "ID" SP id-params-list``;
        ``id-params-list = "(" #(string SP nstring) ")" / nil`` (pairs separated by SP in practice)."""
        self.sp()
        if self.try_token(b"NIL"):
            return c.Id(tag, None)
        self.expect(b"(")
        params: list[tuple[str, str | None]] = []
        while self.peek() != b")":
            if params:
                self.sp()
            key = self.string().decode("utf-8", "replace")
            self.sp()
            value = self.nstring()
            params.append((key, None if value is None else value.decode("utf-8", "replace")))
        self.expect(b")")
        return c.Id(tag, tuple(params))

    def select(self, tag: str) -> c.SelectCommand:
        return self._select(tag, c.Select)

    def examine(self, tag: str) -> c.SelectCommand:
        return self._select(tag, c.Examine)

    def _select(self, tag: str, cls: type[c.SelectCommand]) -> c.SelectCommand:
        """RFC 4466: ``select = "SELECT" SP mailbox [select-params]``;
        ``select-params = SP "(" select-param *(SP select-param) ")"``. RFC 7162:
        ``select-param =/ condstore-param / "QRESYNC" SP "(" uidvalidity SP mod-sequence-value
        [SP known-uids] [SP seq-match-data] ")"``; ``seq-match-data = "(" known-sequence-set SP known-uid-set ")"``."""
        self.sp()
        mailbox = self.mailbox()
        condstore = False
        qresync: c.QResync | None = None
        if self.try_sp():
            self.expect(b"(")
            seen: set[str] = set()
            while True:
                param = self.word()
                if param in seen:
                    self.fail(f"Duplicate {param} parameter")
                seen.add(param)
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    qresync = self.qresync_param()
                else:
                    self.fail(f"Unknown SELECT parameter {param}")
                if not self.try_sp():
                    break
            self.expect(b")")
        return cls(tag, mailbox, condstore, qresync)

    def qresync_param(self) -> c.QResync:
        self.sp()
        self.expect(b"(")
        uidvalidity = self.number(nonzero=True)
        self.sp()
        modseq = self.number(nonzero=True, limit=MAX_NUMBER64)
        known: SequenceSet | None = None
        match: tuple[SequenceSet, SequenceSet] | None = None
        if self.try_sp():
            if self.peek() != b"(":
                known = self.sequence_set(allow_star=False, allow_saved=False)
                if self.try_sp():
                    match = self.seq_match_data()
            else:
                match = self.seq_match_data()
        self.expect(b")")
        return c.QResync(uidvalidity, modseq, known, match)

    def seq_match_data(self) -> tuple[SequenceSet, SequenceSet]:
        """``seq-match-data = "(" known-sequence-set SP known-uid-set ")"`` (RFC 7162)."""
        self.expect(b"(")
        seqs = self.sequence_set(allow_star=False, allow_saved=False)
        self.sp()
        uids = self.sequence_set(allow_star=False, allow_saved=False)
        self.expect(b")")
        return seqs, uids

    def create(self, tag: str) -> c.Create:
        """RFC 4466: ``create = "CREATE" SP mailbox [create-params]``;
        RFC 6154: ``create-param =/ "USE" SP "(" [use-attr *(SP use-attr)] ")"``."""
        self.sp()
        mailbox = self.mailbox()
        uses: list[str] = []
        if self.try_sp():
            self.expect(b"(")
            seen = False
            while True:
                if self.word() != "USE" or seen:
                    self.fail("Unknown CREATE parameter")
                seen = True
                self.sp()
                uses.extend(self.paren_list(self.use_attr))
                if not self.try_sp():
                    break
            self.expect(b")")
        return c.Create(tag, mailbox, tuple(dict.fromkeys(uses)))

    def use_attr(self) -> str:
        """``use-attr = "\\All" / "\\Archive" / ... / use-attr-ext``; ``use-attr-ext = "\\" atom``."""
        self.expect(b"\\")
        attr = "\\" + self.ascii(self.atom())
        return _SPECIAL_USE.get(attr.upper(), attr)

    def delete(self, tag: str) -> c.Delete:
        """``delete = "DELETE" SP mailbox``."""
        self.sp()
        return c.Delete(tag, self.mailbox())

    def rename(self, tag: str) -> c.Rename:
        """``rename = "RENAME" SP mailbox SP mailbox``."""
        self.sp()
        old = self.mailbox()
        self.sp()
        return c.Rename(tag, old, self.mailbox())

    def subscribe(self, tag: str) -> c.Subscribe:
        """``subscribe = "SUBSCRIBE" SP mailbox``."""
        self.sp()
        return c.Subscribe(tag, self.mailbox())

    def unsubscribe(self, tag: str) -> c.Unsubscribe:
        """``unsubscribe = "UNSUBSCRIBE" SP mailbox``."""
        self.sp()
        return c.Unsubscribe(tag, self.mailbox())

    def list(self, tag: str) -> c.List:
        """RFC 5258 (as in RFC 9051 §9), RFC 6154, RFC 5819::

        list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
        list-select-opts = "(" [(*(list-select-mod-opt SP) list-select-base-opt
                           *(SP list-select-opt)) / (list-select-independent-opt
                           *(SP list-select-independent-opt))] ")"
        list-select-base-opt = "SUBSCRIBED" / "SPECIAL-USE" / option-extension
        list-select-independent-opt = "REMOTE" / option-extension
        list-select-mod-opt = "RECURSIVEMATCH" / option-extension
        mbox-or-pat = list-mailbox / patterns
        patterns = "(" list-mailbox *(SP list-mailbox) ")"
        list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
        return-option = "SUBSCRIBED" / "CHILDREN" / "SPECIAL-USE" / status-option
        status-option = "STATUS" SP "(" status-att *(SP status-att) ")"
        """
        self.sp()
        extended = False
        select: set[str] = set()
        if self.peek() == b"(":
            extended = True
            for opt in self.paren_list(self.word):
                if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
                    self.fail(f"Unknown LIST selection option {opt}")
                select.add(opt)
            if "RECURSIVEMATCH" in select and not select & {"SUBSCRIBED", "SPECIAL-USE"}:
                self.fail("RECURSIVEMATCH needs a base selection option")  # RFC 5258
            self.sp()
        reference = self.mailbox()
        self.sp()
        patterns: list[str] = []
        if self.peek() == b"(":
            extended = True
            patterns = self.paren_list(self.list_mailbox)
            if not patterns:
                self.fail("Empty pattern list")
        else:
            patterns = [self.list_mailbox()]
        returns: set[str] = set()
        status_items: tuple[str, ...] = ()
        if self.try_sp():
            extended = True
            self.expect(b"RETURN ")
            self.expect(b"(")
            first = True
            while self.peek() != b")":
                if not first:
                    self.sp()
                first = False
                opt = self.word()
                if opt == "STATUS":
                    self.sp()
                    status_items = self.status_atts()
                elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                    self.fail(f"Unknown LIST return option {opt}")
                returns.add(opt)
            self.expect(b")")
        return c.List(
            tag, reference, tuple(patterns), frozenset(select), frozenset(returns), status_items, extended
        )

    def lsub(self, tag: str) -> c.Lsub:
        """``lsub = "LSUB" SP mailbox SP list-mailbox`` (RFC 3501)."""
        self.sp()
        reference = self.mailbox()
        self.sp()
        return c.Lsub(tag, reference, self.list_mailbox())

    def status_atts(self) -> tuple[str, ...]:
        """``"(" status-att *(SP status-att) ")"``."""
        items = self.paren_list(self.word)
        if not items:
            self.fail("Empty status attribute list")
        for item in items:
            if item not in STATUS_ITEMS:
                self.fail(f"Unknown status attribute {item}")
        return tuple(dict.fromkeys(items))

    def status(self, tag: str) -> c.Status:
        """``status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"``."""
        self.sp()
        mailbox = self.mailbox()
        self.sp()
        return c.Status(tag, mailbox, self.status_atts())

    def append(self, tag: str) -> c.Command:
        self.fail("APPEND needs a message literal")

    def expunge(self, tag: str, uid: bool = False) -> c.Expunge:
        """``"EXPUNGE"``; RFC 4315: ``uid-expunge = "UID" SP "EXPUNGE" SP sequence-set``."""
        if not uid:
            return c.Expunge(tag)
        self.sp()
        return c.Expunge(tag, True, self.sequence_set())

    # --- SEARCH -------------------------------------------------------------------------------

    def search(self, tag: str, uid: bool = False) -> c.Search:
        """RFC 9051 §9 / RFC 4731 / RFC 5182::

        search = "SEARCH" [search-return-opts] SP search-program
        search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
        search-return-opt = "MIN" / "MAX" / "ALL" / "COUNT" / "SAVE"
        search-program = ["CHARSET" SP charset SP] search-key *(SP search-key)
        """
        self.sp()
        returns: tuple[str, ...] | None = None
        if self.try_token(b"RETURN"):
            self.sp()
            opts = self.paren_list(self.word)
            for opt in opts:
                if opt not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                    self.fail(f"Unknown SEARCH return option {opt}")
            returns = tuple(dict.fromkeys(opts)) or ("ALL",)  # RFC 4731: RETURN () is ALL
            self.sp()
        charset: str | None = None
        if self.try_token(b"CHARSET"):
            self.sp()
            charset = self.ascii(self.astring()).upper()
            if charset not in _SEARCH_CHARSETS:
                # RFC 9051 §6.4.4: tagged NO with BADCHARSET listing what we support
                raise ParseError(
                    "Unsupported charset", status="NO", code=ResponseCode.badcharset(_SEARCH_CHARSETS)
                )
            self.sp()
        keys = [self.search_key()]
        while self.try_sp():
            keys.append(self.search_key())
        return c.Search(tag, uid, _and(keys), charset, returns)

    def search_string(self) -> str:
        return self.text(self.astring())

    def search_key(self) -> c.SearchKey:
        """RFC 9051 §9 ``search-key`` (with RFC 3501's NEW/OLD/RECENT, RFC 7162 MODSEQ and
        RFC 5032 OLDER/YOUNGER)."""
        self.depth += 1
        if self.depth > MAX_SEARCH_DEPTH:
            self.fail("SEARCH nested too deeply")
        try:
            return self._search_key()
        finally:
            self.depth -= 1

    def _search_key(self) -> c.SearchKey:
        first = self.peek()
        if first == b"(":
            self.pos += 1
            keys = [self.search_key()]
            while self.try_sp():
                keys.append(self.search_key())
            self.expect(b")")
            return _and(keys)
        if first and first in b"0123456789*$":
            return c.SearchSequence(self.sequence_set())
        key = self.word()
        simple = _SEARCH_SIMPLE.get(key)
        if simple is not None:
            return simple
        if key in _SEARCH_FLAG_KEYS:
            flag, negate = _SEARCH_FLAG_KEYS[key]
            result: c.SearchKey = c.SearchFlag(flag)
            return c.SearchNot(result) if negate else result
        self.sp()
        if key in ("BCC", "CC", "FROM", "SUBJECT", "TO"):
            return c.SearchHeader(key.lower(), self.search_string())
        if key in ("BODY", "TEXT"):
            return c.SearchText("BODY" if key == "BODY" else "TEXT", self.search_string())
        if key == "HEADER":
            name = self.ascii(self.astring())
            if not _HEADER_NAME.fullmatch(name):
                self.fail("Invalid header field name")
            self.sp()
            return c.SearchHeader(name.lower(), self.search_string())
        if key in ("KEYWORD", "UNKEYWORD"):
            kw = c.SearchFlag(self.flag())
            return kw if key == "KEYWORD" else c.SearchNot(kw)
        if key in _SEARCH_DATES:
            where, op = _SEARCH_DATES[key]
            return c.SearchDate(where, op, self.date())
        if key in ("LARGER", "SMALLER"):
            return c.SearchSize("LARGER" if key == "LARGER" else "SMALLER", self.number(limit=MAX_NUMBER64))
        if key in ("OLDER", "YOUNGER"):
            return c.SearchWithin("OLDER" if key == "OLDER" else "YOUNGER", self.number(nonzero=True))
        if key == "NOT":
            return c.SearchNot(self.search_key())
        if key == "OR":
            left = self.search_key()
            self.sp()
            return c.SearchOr(left, self.search_key())
        if key == "UID":
            return c.SearchUid(self.sequence_set())
        if key == "MODSEQ":
            return self.search_modseq()
        self.fail(f"Unknown search key {key}")

    def search_modseq(self) -> c.SearchModSeq:
        """RFC 7162: ``search-modsequence = "MODSEQ" [search-modseq-ext] SP mod-sequence-valzer``;
        ``search-modseq-ext = SP entry-name SP entry-type-req``;
        ``entry-name = DQUOTE "/flags/" attr-flag DQUOTE``; ``entry-type-req = "priv" / "shared" / "all"``."""
        entry: str | None = None
        entry_type: Literal["priv", "shared", "all"] | None = None
        if self.peek() == b'"':
            name = self.ascii(self.quoted())
            if not name.lower().startswith("/flags/") or len(name) == 7:
                self.fail("Invalid MODSEQ entry name")
            entry = name
            self.sp()
            kind = self.word().lower()
            if kind == "priv":
                entry_type = "priv"
            elif kind == "shared":
                entry_type = "shared"
            elif kind == "all":
                entry_type = "all"
            else:
                self.fail("Invalid MODSEQ entry type")
            self.sp()
        return c.SearchModSeq(self.number(limit=MAX_NUMBER64), entry, entry_type)

    # --- FETCH --------------------------------------------------------------------------------

    def fetch(self, tag: str, uid: bool = False) -> c.Fetch:
        """RFC 9051 §9 / RFC 4466 / RFC 7162::

        fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
                "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers]
        fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")"
        fetch-modifier =/ chgsince-fetch-mod / "VANISHED"
        chgsince-fetch-mod = "CHANGEDSINCE" SP mod-sequence-value
        """
        self.sp()
        sequence = self.sequence_set()
        self.sp()
        items: list[c.FetchItem]
        if self.peek() == b"(":
            self.pos += 1
            items = [self.fetch_att()]
            while self.try_sp():
                items.append(self.fetch_att())
            self.expect(b")")
        elif self.try_token(b"ALL"):
            items = [*_FAST, c.FetchAttr("ENVELOPE")]
        elif self.try_token(b"FAST"):
            items = list(_FAST)
        elif self.try_token(b"FULL"):
            items = [*_FAST, c.FetchAttr("ENVELOPE"), c.FetchAttr("BODY")]
        else:
            items = [self.fetch_att()]
        changed_since: int | None = None
        vanished = False
        if self.try_sp():
            self.expect(b"(")
            while True:
                mod = self.word()
                if mod == "CHANGEDSINCE" and changed_since is None:
                    self.sp()
                    changed_since = self.number(nonzero=True, limit=MAX_NUMBER64)
                elif mod == "VANISHED" and not vanished:
                    vanished = True
                else:
                    self.fail(f"Unknown or repeated FETCH modifier {mod}")
                if not self.try_sp():
                    break
            self.expect(b")")
        if vanished and (not uid or changed_since is None):
            # RFC 7162: VANISHED only in UID FETCH, and only with CHANGEDSINCE
            self.fail("VANISHED needs UID FETCH and CHANGEDSINCE")
        if uid and c.FetchAttr("UID") not in items:
            items.insert(0, c.FetchAttr("UID"))
        if changed_since is not None and c.FetchAttr("MODSEQ") not in items:
            items.append(c.FetchAttr("MODSEQ"))
        return c.Fetch(tag, uid, sequence, tuple(dict.fromkeys(items)), changed_since, vanished)

    def fetch_att(self) -> c.FetchItem:
        """``fetch-att = "ENVELOPE" / "FLAGS" / "INTERNALDATE" / "RFC822" [".HEADER" / ".SIZE" / ".TEXT"] /
        "BODY" ["STRUCTURE"] / "UID" / "BODY" section [partial] / "BODY.PEEK" section [partial] /
        "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary`` (RFC 9051 §9)
        ``/ "MODSEQ"`` (RFC 7162)."""
        m = self.match(_FETCH_NAME)
        if m is None:
            self.fail("Expected a FETCH attribute")
        name = m.group().decode("ascii").upper()
        attr = _FETCH_SIMPLE.get(name)
        if attr is not None:
            if name == "BODY" and self.peek() == b"[":
                section = self.section()
                return c.FetchBody(section, self.partial(), peek=False)
            return attr
        if name == "BODY.PEEK":
            section = self.section()
            return c.FetchBody(section, self.partial(), peek=True)
        if name in ("BINARY", "BINARY.PEEK"):
            part = self.section_binary()
            return c.FetchBinary(part, self.partial(), peek=name == "BINARY.PEEK")
        if name == "BINARY.SIZE":
            return c.FetchBinarySize(self.section_binary())
        self.fail(f"Unknown FETCH attribute {name}")

    def section(self) -> c.Section:
        """``section = "[" [section-spec] "]"``;
        ``section-spec = section-msgtext / (section-part ["." section-text])``;
        ``section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"``;
        ``section-part = nz-number *("." nz-number)``; ``section-text = section-msgtext / "MIME"``."""
        self.expect(b"[")
        if self.peek() == b"]":
            self.pos += 1
            return c.Section()
        m = self.match(_SECTION_SPEC)
        if m is None:
            self.fail("Invalid section")
        pieces = m.group().decode("ascii").upper().split(".")
        if "" in pieces:
            self.fail("Invalid section")
        part: list[int] = []
        while pieces and pieces[0].isdigit():
            digits = pieces.pop(0)
            if digits.startswith("0") or len(digits) > 10 or int(digits) > MAX_NUMBER:
                self.fail("Invalid section part")
            part.append(int(digits))
        text = ".".join(pieces)
        fields: tuple[str, ...] = ()
        kind: c.SectionText | None
        if not text:
            kind = None
        elif text == "HEADER":
            kind = "HEADER"
        elif text == "TEXT":
            kind = "TEXT"
        elif text == "MIME" and part:
            kind = "MIME"
        elif text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            kind = "HEADER.FIELDS" if text == "HEADER.FIELDS" else "HEADER.FIELDS.NOT"
            self.sp()
            names = self.paren_list(self.header_field_name)
            if not names:
                self.fail("Empty header list")
            fields = tuple(names)
        else:
            self.fail("Invalid section text")
        self.expect(b"]")
        return c.Section(tuple(part), kind, fields)

    def header_field_name(self) -> str:
        """``header-fld-name = astring`` (and RFC 5322 ftext)."""
        name = self.ascii(self.astring())
        if not _HEADER_NAME.fullmatch(name):
            self.fail("Invalid header field name")
        return name

    def section_binary(self) -> tuple[int, ...]:
        """``section-binary = "[" [section-part] "]"``."""
        self.expect(b"[")
        part: list[int] = []
        if self.peek() != b"]":
            part.append(self.number(nonzero=True))
            while self.peek() == b".":
                self.pos += 1
                part.append(self.number(nonzero=True))
        self.expect(b"]")
        return tuple(part)

    def partial(self) -> c.Partial | None:
        """``partial = "<" number64 "." nz-number64 ">"``."""
        if self.peek() != b"<":
            return None
        self.pos += 1
        origin = self.number(limit=MAX_NUMBER64)
        self.expect(b".")
        length = self.number(nonzero=True, limit=MAX_NUMBER64)
        self.expect(b">")
        return c.Partial(origin, length)

    # --- STORE / COPY / MOVE / quota ------------------------------------------------------------

    def store(self, tag: str, uid: bool = False) -> c.Store:
        """RFC 9051 §9 / RFC 4466 / RFC 7162::

        store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags
        store-modifiers = SP "(" store-modifier *(SP store-modifier) ")"
        store-modifier =/ "UNCHANGEDSINCE" SP mod-sequence-valzer
        store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
        """
        self.sp()
        sequence = self.sequence_set()
        self.sp()
        unchanged: int | None = None
        if self.peek() == b"(":
            self.pos += 1
            if self.word() != "UNCHANGEDSINCE":
                self.fail("Unknown STORE modifier")
            self.sp()
            unchanged = self.number(limit=MAX_NUMBER64)
            self.expect(b")")
            self.sp()
        mode: Literal["replace", "add", "remove"] = "replace"
        if self.peek() == b"+":
            mode = "add"
            self.pos += 1
        elif self.peek() == b"-":
            mode = "remove"
            self.pos += 1
        att = self.word()
        if att not in ("FLAGS", "FLAGS.SILENT"):
            self.fail("Expected FLAGS")
        self.sp()
        if self.peek() == b"(":
            flags = self.flag_list()
        else:
            items = [self.flag()]
            while self.try_sp():
                items.append(self.flag())
            flags = tuple(dict.fromkeys(items))
        return c.Store(tag, uid, sequence, mode, flags, att == "FLAGS.SILENT", unchanged)

    def copy(self, tag: str, uid: bool = False) -> c.Copy:
        """``copy = "COPY" SP sequence-set SP mailbox``."""
        self.sp()
        sequence = self.sequence_set()
        self.sp()
        return c.Copy(tag, uid, sequence, self.mailbox())

    def move(self, tag: str, uid: bool = False) -> c.Move:
        """RFC 6851: ``move = "MOVE" SP sequence-set SP mailbox``."""
        self.sp()
        sequence = self.sequence_set()
        self.sp()
        return c.Move(tag, uid, sequence, self.mailbox())

    def getquotaroot(self, tag: str) -> c.GetQuotaRoot:
        """RFC 9208: ``getquotaroot = "GETQUOTAROOT" SP mailbox``."""
        self.sp()
        return c.GetQuotaRoot(tag, self.mailbox())

    def getquota(self, tag: str) -> c.GetQuota:
        """RFC 9208: ``getquota = "GETQUOTA" SP quota-root-name``; ``quota-root-name = astring``."""
        self.sp()
        return c.GetQuota(tag, self.text(self.astring()))

    # --- APPEND (streamed) --------------------------------------------------------------------

    def append_message(self) -> AppendMessage:
        """RFC 4466 / RFC 3502 / RFC 6855 up to the message literal's announcement::

            append-message = append-opts SP append-data
            append-opts    = [SP flag-list] [SP date-time] *(SP append-ext)
            append-data    = literal / literal8 / "UTF8" SP "(" literal8 ")"

        The bytes must end with the announcement ``{n}`` CRLF; the data is not parsed here.
        """
        self.sp()
        flags: tuple[str, ...] = ()
        date: _dt.datetime | None = None
        if self.peek() == b"(":
            flags = self.flag_list()
            self.sp()
        if self.peek() == b'"':
            date = self.date_time()
            self.sp()
        utf8 = False
        if self.try_token(b"UTF8"):
            self.expect(b" (")
            utf8 = True
        m = _LITERAL.match(self.data, self.pos)
        if m is None or m.end() != len(self.data):
            self.fail("Expected the message literal")
        if utf8 and not m.group(1):
            self.fail("UTF8 APPEND data must be a literal8")
        self.pos = m.end()
        return AppendMessage(flags, date, binary=bool(m.group(1)), utf8=utf8)


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """What precedes one APPEND message literal."""

    flags: tuple[str, ...]
    date: _dt.datetime | None
    binary: bool = False  # "~{n}" literal8 (RFC 3516)
    utf8: bool = False  # "UTF8 (~{n})" (RFC 6855): the ")" follows the data


def _and(keys: list[c.SearchKey]) -> c.SearchKey:
    return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))


_FAST = (c.FetchAttr("FLAGS"), c.FetchAttr("INTERNALDATE"), c.FetchAttr("RFC822.SIZE"))
_FETCH_SIMPLE: dict[str, c.FetchAttr] = {name: c.FetchAttr(name) for name in get_args(c.FetchAttrName)}
_SEARCH_SIMPLE: dict[str, c.SearchKey] = {
    "ALL": c.SearchAll(),
    "NEW": c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchNot(c.SearchFlag("\\Seen")))),
    "OLD": c.SearchNot(c.SearchFlag("\\Recent")),
}
_SEARCH_FLAG_KEYS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", False),
    "RECENT": ("\\Recent", False),
    "SEEN": ("\\Seen", False),
    "UNANSWERED": ("\\Answered", True),
    "UNDELETED": ("\\Deleted", True),
    "UNDRAFT": ("\\Draft", True),
    "UNFLAGGED": ("\\Flagged", True),
    "UNSEEN": ("\\Seen", True),
}
_SEARCH_DATES: dict[str, tuple[Literal["INTERNAL", "SENT"], Literal["BEFORE", "ON", "SINCE"]]] = {
    "BEFORE": ("INTERNAL", "BEFORE"),
    "ON": ("INTERNAL", "ON"),
    "SINCE": ("INTERNAL", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"),
    "SENTON": ("SENT", "ON"),
    "SENTSINCE": ("SENT", "SINCE"),
}

# command-any / command-nonauth / command-auth / command-select without arguments
_SIMPLE_COMMANDS: dict[str, Callable[[str], c.Command]] = {
    "CAPABILITY": c.Capability,
    "NOOP": c.Noop,
    "LOGOUT": c.Logout,
    "STARTTLS": c.StartTLS,
    "NAMESPACE": c.Namespace,  # RFC 2342
    "IDLE": c.Idle,  # RFC 2177: idle = "IDLE" CRLF "DONE"
    "CHECK": c.Check,
    "CLOSE": c.Close,
    "UNSELECT": c.Unselect,  # RFC 3691
}
_COMMANDS: dict[str, Callable[[_Parser, str], c.Command]] = {
    "AUTHENTICATE": _Parser.authenticate,
    "LOGIN": _Parser.login,
    "ENABLE": _Parser.enable,
    "ID": _Parser.id,
    "SELECT": _Parser.select,
    "EXAMINE": _Parser.examine,
    "CREATE": _Parser.create,
    "DELETE": _Parser.delete,
    "RENAME": _Parser.rename,
    "SUBSCRIBE": _Parser.subscribe,
    "UNSUBSCRIBE": _Parser.unsubscribe,
    "LIST": _Parser.list,
    "LSUB": _Parser.lsub,
    "STATUS": _Parser.status,
    "APPEND": _Parser.append,
    "EXPUNGE": _Parser.expunge,
    "SEARCH": _Parser.search,
    "FETCH": _Parser.fetch,
    "STORE": _Parser.store,
    "COPY": _Parser.copy,
    "MOVE": _Parser.move,
    "GETQUOTAROOT": _Parser.getquotaroot,
    "GETQUOTA": _Parser.getquota,
}
# RFC 9051 §9: uid = "UID" SP (copy / move / fetch / search / store / uid-expunge)
_UID_COMMANDS: dict[str, Callable[[_Parser, str, bool], c.Command]] = {
    "COPY": _Parser.copy,
    "MOVE": _Parser.move,
    "FETCH": _Parser.fetch,
    "SEARCH": _Parser.search,
    "STORE": _Parser.store,
    "EXPUNGE": _Parser.expunge,
}

COMMAND_NAMES: Final = frozenset([*_SIMPLE_COMMANDS, *_COMMANDS, *(f"UID {name}" for name in _UID_COMMANDS)])


# ``tag SP ["UID" SP] "FETCH" SP sequence-set SP``: the head of the commonest command there is
# (a sync client sends one per message, each with the same items)
_FETCH_HEAD = re.compile(rb'([^\x00-\x20\x7f-\xff(){%*"\\+]+) (?:(UID) )?FETCH ([0-9:,*]+) ', re.IGNORECASE)


_FETCH_CACHED_MAX = 512  # longer item lists (header field lists, literals) are parsed each time


@functools.lru_cache(maxsize=128)
def _fetch_items(rest: bytes, uid: bool, utf8: bool) -> tuple[c.FetchItem, ...] | None:
    """The items of a FETCH whose sequence set is followed by ``rest``, parsed once per distinct
    ``rest``; None when that has modifiers or does not parse (the whole command is parsed then,
    for the one true answer or error)."""
    head = b"t UID FETCH 1 " if uid else b"t FETCH 1 "
    try:
        cmd = _Parser(head + rest + b"\r\n", utf8=utf8).command()
    except Exception:
        return None
    if not isinstance(cmd, c.Fetch) or cmd.changed_since is not None or cmd.vanished:
        return None
    return cmd.items


def parse_command(data: bytes, *, utf8: bool = False) -> c.Command:
    """Parse one complete command (its final CRLF included). Raises :class:`ParseError`."""
    m = _FETCH_HEAD.match(data)
    if m is not None and data.endswith(b"\r\n") and len(data) - m.end() <= _FETCH_CACHED_MAX:
        uid = m.group(2) is not None
        items = _fetch_items(data[m.end() : -2], uid, utf8)
        if items is not None:
            try:
                sequence = SequenceSet.parse(m.group(3))
            except SequenceSetError:
                pass
            else:
                return c.Fetch(m.group(1).decode("ascii"), uid, sequence, items)
    parser = _Parser(data, utf8=utf8)
    try:
        return parser.command()
    except Incomplete:
        raise ParseError("Literal data missing") from None


def peek_tag_and_name(line: bytes) -> tuple[str | None, str | None]:
    """The tag and upper-case command name (``"UID FETCH"``) at the start of a command's first line.
    Either is ``None`` when it cannot be read; the name may be one we do not know."""
    m = _TAG.match(line)
    if m is None or line[m.end() : m.end() + 1] != b" ":
        return (m.group().decode("ascii") if m else None), None
    tag = m.group().decode("ascii")
    w = _ATOM.match(line, m.end() + 1)
    if w is None:
        return tag, None
    name = w.group().decode("ascii").upper()
    if name == "UID" and line[w.end() : w.end() + 1] == b" ":
        sub = _ATOM.match(line, w.end() + 1)
        if sub is not None:
            name = "UID " + sub.group().decode("ascii").upper()
    return tag, name


def parse_append_head(data: bytes, *, utf8: bool = False) -> tuple[str, str, AppendMessage]:
    """``tag SP "APPEND" SP mailbox append-message-up-to-its-literal``: (tag, mailbox, message).

    Raises :class:`Incomplete` when the pending literal is the mailbox name rather than the message,
    and :class:`ParseError` on bad syntax.
    """
    p = _Parser(data, utf8=utf8)
    tag = p.tag()
    p.sp()
    if p.word() != "APPEND":
        p.fail("Not an APPEND command")
    p.sp()
    mailbox = p.mailbox()
    return tag, mailbox, p.append_message()


def parse_append_next(line: bytes, *, after_utf8: bool, utf8: bool = False) -> AppendMessage | None:
    """The rest of an APPEND after a message's data (RFC 3502 MULTIAPPEND): ``None`` at the
    command's end, else the next message's options. ``after_utf8`` expects the ")" of the
    RFC 6855 ``UTF8 (`` form first."""
    p = _Parser(line, utf8=utf8)
    if after_utf8:
        p.expect(b")")
    if p.at_end():
        return None
    return p.append_message()
