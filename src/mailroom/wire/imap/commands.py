"""Typed IMAP commands: what :mod:`mailroom.wire.imap.parser` produces and the session consumes.

One frozen dataclass per command; the UID forms share their class with ``uid=True`` (RFC 9051 §6.4.9).
Mailbox names are decoded ``str`` (modified UTF-7 undone unless UTF8=ACCEPT / IMAP4rev2 is enabled),
and the case-insensitive name INBOX is always spelled ``"INBOX"`` (RFC 9051 §5.1).
System flags are spelled canonically (``\\Seen``); keywords keep the client's spelling.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import ClassVar, Literal

from mailroom.wire.imap.sequence import SequenceSet
from mailroom.wire.imap.syntax import astring

__all__ = [
    "Append",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttr",
    "FetchBinary",
    "FetchBinarySize",
    "FetchBody",
    "FetchItem",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "Partial",
    "QResync",
    "Rename",
    "Search",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModSeq",
    "SearchNot",
    "SearchOr",
    "SearchSequence",
    "SearchSize",
    "SearchText",
    "SearchUid",
    "SearchWithin",
    "Section",
    "Select",
    "SelectCommand",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Unselect",
    "Unsubscribe",
]


# --- FETCH items -----------------------------------------------------------------------------------

SectionText = Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 9051 §9 ``section-spec``: part numbers, then an optional text kind.

    ``Section()`` is ``BODY[]``; ``Section((1, 2), "HEADER.FIELDS", ("From", "To"))`` is
    ``BODY[1.2.HEADER.FIELDS (From To)]``.
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        spec = ".".join(str(n) for n in self.part)
        if self.text is not None:
            spec = f"{spec}.{self.text}" if spec else self.text
        out = spec.encode("ascii")
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            out += b" (" + b" ".join(astring(f) for f in self.fields) + b")"
        return out


@dataclass(frozen=True, slots=True)
class Partial:
    """``<origin.length>`` (RFC 9051 §9 ``partial``); the response names only ``<origin>``."""

    origin: int
    length: int


FetchAttrName = Literal[
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",  # non-extensible BODYSTRUCTURE
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",  # RFC 7162
]


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """A fetch-att without a section."""

    name: FetchAttrName

    def response_name(self) -> bytes:
        return self.name.encode("ascii")


@dataclass(frozen=True, slots=True)
class FetchBody:
    """``BODY[section]<partial>`` / ``BODY.PEEK[...]`` (the response always says ``BODY``)."""

    section: Section = Section()
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> bytes:
        name = b"BODY[" + self.section.to_bytes() + b"]"
        if self.partial is not None:
            name += b"<%d>" % self.partial.origin
        return name


@dataclass(frozen=True, slots=True)
class FetchBinary:
    """``BINARY[part]<partial>`` / ``BINARY.PEEK[...]`` (RFC 3516, RFC 9051 §6.4.5)."""

    part: tuple[int, ...] = ()
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> bytes:
        name = b"BINARY[" + ".".join(str(n) for n in self.part).encode("ascii") + b"]"
        if self.partial is not None:
            name += b"<%d>" % self.partial.origin
        return name


@dataclass(frozen=True, slots=True)
class FetchBinarySize:
    """``BINARY.SIZE[part]``."""

    part: tuple[int, ...] = ()

    def response_name(self) -> bytes:
        return b"BINARY.SIZE[" + ".".join(str(n) for n in self.part).encode("ascii") + b"]"


FetchItem = FetchAttr | FetchBody | FetchBinary | FetchBinarySize


# --- SEARCH keys -----------------------------------------------------------------------------------
# The tree is normalised: UNSEEN is SearchNot(SearchFlag("\\Seen")), NEW is
# SearchAnd((SearchFlag("\\Recent"), SearchNot(SearchFlag("\\Seen")))), FROM x is
# SearchHeader("from", x), and a list of keys is a SearchAnd (a single key stands alone).


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """Messages with this flag set (ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT, KEYWORD)."""

    flag: str


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchSequence:
    """A bare sequence-set: message sequence numbers (``$`` is the saved result)."""

    sequence: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchUid:
    sequence: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    field: Literal["INTERNAL", "SENT"]
    op: Literal["BEFORE", "ON", "SINCE"]
    date: _dt.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    op: Literal["LARGER", "SMALLER"]
    size: int


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER field value; BCC/CC/FROM/SUBJECT/TO become their field. ``field`` is lower case."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    where: Literal["BODY", "TEXT"]
    value: str


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """RFC 7162 ``MODSEQ ["/flags/\\Seen" priv|shared|all] n``."""

    modseq: int
    entry: str | None = None
    entry_type: Literal["priv", "shared", "all"] | None = None


@dataclass(frozen=True, slots=True)
class SearchWithin:
    """RFC 5032 OLDER / YOUNGER (seconds, against the internal date)."""

    op: Literal["OLDER", "YOUNGER"]
    seconds: int


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchNot
    | SearchOr
    | SearchAnd
    | SearchSequence
    | SearchUid
    | SearchDate
    | SearchSize
    | SearchHeader
    | SearchText
    | SearchModSeq
    | SearchWithin
)


# --- commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """Base class; ``name`` is the state-table key (``"UID FETCH"`` for the UID forms)."""

    tag: str

    NAME: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.NAME


@dataclass(frozen=True, slots=True)
class Capability(Command):
    NAME: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    NAME: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    NAME: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    NAME: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``initial_response`` is the decoded SASL-IR (RFC 4959): ``None`` when absent, ``b""`` for "="."""

    mechanism: str
    initial_response: bytes | None = None
    NAME: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Login(Command):
    username: str
    password: str
    NAME: ClassVar[str] = "LOGIN"


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]  # upper case
    NAME: ClassVar[str] = "ENABLE"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971; ``None`` for ``ID NIL``."""

    parameters: tuple[tuple[str, str | None], ...] | None
    NAME: ClassVar[str] = "ID"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    NAME: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class QResync:
    """RFC 7162 SELECT/EXAMINE QRESYNC parameters."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (known-sequence-set, known-uid-set)


@dataclass(frozen=True, slots=True)
class SelectCommand(Command):
    """Common shape of SELECT and EXAMINE; match on the subclasses."""

    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None

    @property
    def read_only(self) -> bool:
        return isinstance(self, Examine)


@dataclass(frozen=True, slots=True)
class Select(SelectCommand):
    NAME: ClassVar[str] = "SELECT"


@dataclass(frozen=True, slots=True)
class Examine(SelectCommand):
    NAME: ClassVar[str] = "EXAMINE"


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 CREATE ... (USE (\Sent))
    NAME: ClassVar[str] = "CREATE"


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str
    NAME: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    mailbox: str
    new_name: str
    NAME: ClassVar[str] = "RENAME"


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str
    NAME: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str
    NAME: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST, with RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE and RFC 5819 LIST-STATUS.

    ``select_options`` ⊆ {SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE};
    ``return_options`` ⊆ {SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS}; ``status_items`` are the
    STATUS return option's attributes. ``extended`` says the LIST-EXTENDED syntax was used
    (select options, a pattern list or RETURN), which changes what the response must carry.
    """

    reference: str
    patterns: tuple[str, ...]
    select_options: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False
    NAME: ClassVar[str] = "LIST"


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str
    pattern: str
    NAME: ClassVar[str] = "LSUB"


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]  # upper case, duplicates removed
    NAME: ClassVar[str] = "STATUS"


@dataclass(frozen=True, slots=True)
class Append(Command):
    """Never emitted: APPEND streams as AppendBegin / AppendChunk / AppendEnd events. Kept so the
    state table and the parser table name every command."""

    mailbox: str
    NAME: ClassVar[str] = "APPEND"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    NAME: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class Check(Command):
    NAME: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    NAME: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    NAME: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE uid-set (RFC 4315) with ``uid=True``."""

    uid: bool = False
    sequence: SequenceSet | None = None
    NAME: ClassVar[str] = "EXPUNGE"

    @property
    def name(self) -> str:
        return "UID EXPUNGE" if self.uid else "EXPUNGE"


@dataclass(frozen=True, slots=True)
class Search(Command):
    """``return_options`` is ``None`` for a plain SEARCH, else the ESEARCH options
    (RFC 4731: ``RETURN ()`` means ``RETURN (ALL)``)."""

    uid: bool
    criteria: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    NAME: ClassVar[str] = "SEARCH"

    @property
    def name(self) -> str:
        return "UID SEARCH" if self.uid else "SEARCH"


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """Macros are expanded (ALL, FAST, FULL). UID FETCH always includes UID (RFC 9051 §6.4.9) and
    CHANGEDSINCE always includes MODSEQ (RFC 7162): the parser adds them when missing."""

    uid: bool
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None
    vanished: bool = False
    NAME: ClassVar[str] = "FETCH"

    @property
    def name(self) -> str:
        return "UID FETCH" if self.uid else "FETCH"


@dataclass(frozen=True, slots=True)
class Store(Command):
    """``mode``: ``"replace"`` (FLAGS), ``"add"`` (+FLAGS) or ``"remove"`` (-FLAGS)."""

    uid: bool
    sequence: SequenceSet
    mode: Literal["replace", "add", "remove"]
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None
    NAME: ClassVar[str] = "STORE"

    @property
    def name(self) -> str:
        return "UID STORE" if self.uid else "STORE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    uid: bool
    sequence: SequenceSet
    mailbox: str
    NAME: ClassVar[str] = "COPY"

    @property
    def name(self) -> str:
        return "UID COPY" if self.uid else "COPY"


@dataclass(frozen=True, slots=True)
class Move(Command):
    uid: bool
    sequence: SequenceSet
    mailbox: str
    NAME: ClassVar[str] = "MOVE"

    @property
    def name(self) -> str:
        return "UID MOVE" if self.uid else "MOVE"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str
    NAME: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str
    NAME: ClassVar[str] = "GETQUOTA"
