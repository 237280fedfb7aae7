"""IMAP server responses: status responses with response codes, untagged data, FETCH.

Every response is a frozen dataclass with ``to_bytes(utf8=...)`` giving the exact wire bytes
(CRLF included). ``utf8`` is true once the client enabled UTF8=ACCEPT or IMAP4rev2: mailbox names
then go out as UTF-8 instead of modified UTF-7 and quoted strings may carry UTF-8 (RFC 6855,
RFC 9051 §5.1). Hand them to :meth:`IMAPServerEngine.send`, which knows that flag.

RFC 9051 §9:

    response-tagged = tag SP resp-cond-state CRLF
    resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
    resp-cond-bye   = "BYE" SP resp-text
    resp-cond-auth  = ("OK" / "PREAUTH") SP resp-text
    resp-text       = ["[" resp-text-code "]" SP] [text]
    continue-req    = "+" SP (resp-text / base64) CRLF
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from mailroom.wire.imap import mutf7
from mailroom.wire.imap.sequence import SequenceSet, compress
from mailroom.wire.imap.syntax import astring, literal, nstring, quoted

__all__ = [
    "CapabilityResponse",
    "Continuation",
    "ContinuationData",
    "ESearch",
    "Enabled",
    "Exists",
    "ExpungeResponse",
    "FetchResponse",
    "FetchValue",
    "FlagsResponse",
    "IdResponse",
    "ListResponse",
    "NamespaceResponse",
    "QuotaResponse",
    "QuotaRootResponse",
    "Raw",
    "Recent",
    "Response",
    "ResponseCode",
    "SearchResponse",
    "StatusResponse",
    "StreamedLiteral",
    "Tagged",
    "Untagged",
    "Vanished",
    "encode_mailbox",
    "format_date_time",
]

CRLF = b"\r\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Response(Protocol):
    def to_bytes(self, *, utf8: bool = False) -> bytes: ...


def encode_mailbox(name: str, *, utf8: bool = False) -> bytes:
    """RFC 9051 §9 ``mailbox = "INBOX" / astring``: modified UTF-7 (RFC 3501 §5.1.3) unless ``utf8``."""
    if utf8:
        return astring(name, utf8=True)
    return astring(mutf7.encode(name))


def format_date_time(value: _dt.datetime) -> bytes:
    """RFC 9051 §9 ``date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE``.

    A naive datetime is taken as UTC. Months are always English (never the C locale's %b).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    offset = value.utcoffset() or _dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f'"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


def _text(text: str) -> bytes:
    # resp-text: TEXT-CHAR excludes CR and LF (RFC 9051 allows UTF-8 there)
    cleaned = text.replace("\r", " ").replace("\n", " ").strip()
    return (cleaned or "done").encode("utf-8")


def _flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("utf-8") for f in flags) + b")"


def _set_text(value: SequenceSet | Iterable[int], *, sort: bool = True) -> bytes:
    if isinstance(value, SequenceSet):
        return value.to_bytes()
    return compress(value, sort=sort).encode("ascii")


# --- response codes (RFC 9051 §7.1 and extensions) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``[NAME]`` or ``[NAME value]``. Simple codes are class attributes (``ResponseCode.ALERT``);
    codes with data have factories (``ResponseCode.uidnext(42)``)."""

    name: str
    value: bytes | None = None

    def to_bytes(self) -> bytes:
        inner = self.name.encode("ascii")
        if self.value is not None:
            inner += b" " + self.value
        return b"[" + inner + b"]"

    ALERT: ClassVar[ResponseCode]
    PARSE: ClassVar[ResponseCode]
    READ_ONLY: ClassVar[ResponseCode]
    READ_WRITE: ClassVar[ResponseCode]
    TRYCREATE: ClassVar[ResponseCode]
    UIDNOTSTICKY: ClassVar[ResponseCode]  # RFC 4315
    NOMODSEQ: ClassVar[ResponseCode]  # RFC 7162
    CLOSED: ClassVar[ResponseCode]  # RFC 7162
    OVERQUOTA: ClassVar[ResponseCode]  # RFC 9208 / RFC 9051 §7.1
    TOOBIG: ClassVar[ResponseCode]  # RFC 7888 / RFC 4469 / RFC 7889
    ALREADYEXISTS: ClassVar[ResponseCode]  # RFC 5530 and RFC 9051 §7.1 from here on
    NONEXISTENT: ClassVar[ResponseCode]
    INUSE: ClassVar[ResponseCode]
    CANNOT: ClassVar[ResponseCode]
    LIMIT: ClassVar[ResponseCode]
    SERVERBUG: ClassVar[ResponseCode]
    CLIENTBUG: ClassVar[ResponseCode]
    AUTHENTICATIONFAILED: ClassVar[ResponseCode]
    AUTHORIZATIONFAILED: ClassVar[ResponseCode]
    EXPIRED: ClassVar[ResponseCode]
    PRIVACYREQUIRED: ClassVar[ResponseCode]
    UNAVAILABLE: ClassVar[ResponseCode]
    CONTACTADMIN: ClassVar[ResponseCode]
    EXPUNGEISSUED: ClassVar[ResponseCode]
    NOPERM: ClassVar[ResponseCode]
    CORRUPTION: ClassVar[ResponseCode]
    HASCHILDREN: ClassVar[ResponseCode]
    UNKNOWN_CTE: ClassVar[ResponseCode]  # RFC 3516
    USEATTR: ClassVar[ResponseCode]  # RFC 6154
    NOTSAVED: ClassVar[ResponseCode]  # RFC 5182

    @classmethod
    def badcharset(cls, charsets: Iterable[str] = ()) -> ResponseCode:
        """``"BADCHARSET" [SP "(" charset *(SP charset) ")"]``."""
        names = [astring(c) for c in charsets]
        return cls("BADCHARSET", b"(" + b" ".join(names) + b")" if names else None)

    @classmethod
    def capability(cls, capabilities: Iterable[str]) -> ResponseCode:
        """``capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev2" *(SP capability)``."""
        return cls("CAPABILITY", " ".join(capabilities).encode("ascii"))

    @classmethod
    def permanentflags(cls, flags: Iterable[str]) -> ResponseCode:
        """``"PERMANENTFLAGS" SP "(" [flag-perm *(SP flag-perm)] ")"`` (include ``\\*`` yourself)."""
        return cls("PERMANENTFLAGS", _flag_list(flags))

    @classmethod
    def uidnext(cls, uid: int) -> ResponseCode:
        return cls("UIDNEXT", b"%d" % uid)

    @classmethod
    def uidvalidity(cls, value: int) -> ResponseCode:
        return cls("UIDVALIDITY", b"%d" % value)

    @classmethod
    def unseen(cls, seq: int) -> ResponseCode:
        return cls("UNSEEN", b"%d" % seq)

    @classmethod
    def highestmodseq(cls, modseq: int) -> ResponseCode:
        return cls("HIGHESTMODSEQ", b"%d" % modseq)

    @classmethod
    def appenduid(cls, uidvalidity: int, uids: SequenceSet | Iterable[int]) -> ResponseCode:
        """RFC 4315 ``"APPENDUID" SP nz-number SP append-uid`` (a set with MULTIAPPEND)."""
        return cls("APPENDUID", b"%d " % uidvalidity + _set_text(uids, sort=False))

    @classmethod
    def copyuid(
        cls, uidvalidity: int, source: SequenceSet | Iterable[int], dest: SequenceSet | Iterable[int]
    ) -> ResponseCode:
        """RFC 4315 ``"COPYUID" SP nz-number SP uid-set SP uid-set``: the two sets pair up in
        order, so lists are compressed without sorting."""
        return cls(
            "COPYUID",
            b"%d " % uidvalidity + _set_text(source, sort=False) + b" " + _set_text(dest, sort=False),
        )

    @classmethod
    def modified(cls, sequence: SequenceSet | Iterable[int]) -> ResponseCode:
        """RFC 7162 ``"MODIFIED" SP sequence-set``."""
        return cls("MODIFIED", _set_text(sequence))

    @classmethod
    def appendlimit(cls, limit: int) -> ResponseCode:
        return cls("APPENDLIMIT", b"%d" % limit)


for _name in [
    "ALERT",
    "PARSE",
    "READ-ONLY",
    "READ-WRITE",
    "TRYCREATE",
    "UIDNOTSTICKY",
    "NOMODSEQ",
    "CLOSED",
    "OVERQUOTA",
    "TOOBIG",
    "ALREADYEXISTS",
    "NONEXISTENT",
    "INUSE",
    "CANNOT",
    "LIMIT",
    "SERVERBUG",
    "CLIENTBUG",
    "AUTHENTICATIONFAILED",
    "AUTHORIZATIONFAILED",
    "EXPIRED",
    "PRIVACYREQUIRED",
    "UNAVAILABLE",
    "CONTACTADMIN",
    "EXPUNGEISSUED",
    "NOPERM",
    "CORRUPTION",
    "HASCHILDREN",
    "UNKNOWN-CTE",
    "USEATTR",
    "NOTSAVED",
]:
    setattr(ResponseCode, _name.replace("-", "_"), ResponseCode(_name))


# --- status responses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tagged:
    """``tag OK|NO|BAD [code] text`` -- completes the command with that tag."""

    tag: str
    status: Literal["OK", "NO", "BAD"]
    text: str
    code: ResponseCode | None = None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        code = self.code.to_bytes() + b" " if self.code is not None else b""
        return self.tag.encode("ascii") + b" " + self.status.encode() + b" " + code + _text(self.text) + CRLF


@dataclass(frozen=True, slots=True)
class Untagged:
    """``* OK|NO|BAD|BYE|PREAUTH [code] text``."""

    status: Literal["OK", "NO", "BAD", "BYE", "PREAUTH"]
    text: str
    code: ResponseCode | None = None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        code = self.code.to_bytes() + b" " if self.code is not None else b""
        return b"* " + self.status.encode() + b" " + code + _text(self.text) + CRLF


@dataclass(frozen=True, slots=True)
class Continuation:
    """``+ text`` (a continuation request carrying human-readable text)."""

    text: str = "Ready"

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"+ " + _text(self.text) + CRLF


@dataclass(frozen=True, slots=True)
class ContinuationData:
    """``+ base64`` (a SASL challenge, RFC 9051 §6.2.2); empty data gives ``+ ``."""

    data: bytes

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"+ " + base64.b64encode(self.data) + CRLF


# --- untagged data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapabilityResponse:
    capabilities: Sequence[str]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* CAPABILITY " + " ".join(self.capabilities).encode("ascii") + CRLF


@dataclass(frozen=True, slots=True)
class Enabled:
    """RFC 5161 ``enable-data = "ENABLED" *(SP capability)``."""

    capabilities: Sequence[str]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* ENABLED" + b"".join(b" " + c.encode("ascii") for c in self.capabilities) + CRLF


@dataclass(frozen=True, slots=True)
class Exists:
    count: int

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* %d EXISTS\r\n" % self.count


@dataclass(frozen=True, slots=True)
class Recent:
    count: int

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* %d RECENT\r\n" % self.count


@dataclass(frozen=True, slots=True)
class ExpungeResponse:
    seq: int

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* %d EXPUNGE\r\n" % self.seq


@dataclass(frozen=True, slots=True)
class Vanished:
    """RFC 7162 ``"VANISHED" [SP "(EARLIER)"] SP known-uids``."""

    uids: SequenceSet | Iterable[int]
    earlier: bool = False

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* VANISHED " + (b"(EARLIER) " if self.earlier else b"") + _set_text(self.uids) + CRLF


@dataclass(frozen=True, slots=True)
class FlagsResponse:
    flags: Sequence[str]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return b"* FLAGS " + _flag_list(self.flags) + CRLF


@dataclass(frozen=True, slots=True)
class ListResponse:
    """``mailbox-list = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
    [SP mbox-list-extended]`` (RFC 9051 §9, RFC 5258: CHILDINFO, OLDNAME).

    ``command`` is ``"LSUB"`` for LSUB answers.
    """

    mailbox: str
    delimiter: str | None = "/"
    attributes: Sequence[str] = ()
    child_info: Sequence[str] = ()  # RFC 5258: ("CHILDINFO" ("SUBSCRIBED"))
    old_name: str | None = None  # RFC 9051 §6.3.9 ("OLDNAME" ("old"))
    command: Literal["LIST", "LSUB"] = "LIST"

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        delim = b"NIL" if self.delimiter is None else quoted(self.delimiter)
        out = (
            b"* "
            + self.command.encode()
            + b" "
            + _flag_list(self.attributes)
            + b" "
            + delim
            + b" "
            + encode_mailbox(self.mailbox, utf8=utf8)
        )
        ext: list[bytes] = []
        if self.child_info:
            ext.append(b'"CHILDINFO" (' + b" ".join(quoted(c) for c in self.child_info) + b")")
        if self.old_name is not None:
            ext.append(b'"OLDNAME" (' + encode_mailbox(self.old_name, utf8=utf8) + b")")
        if ext:
            out += b" (" + b" ".join(ext) + b")"
        return out + CRLF


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """``"STATUS" SP mailbox SP "(" [status-att-list] ")"``."""

    mailbox: str
    items: Sequence[tuple[str, int]]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        atts = b" ".join(b"%s %d" % (name.encode("ascii"), value) for name, value in self.items)
        return b"* STATUS " + encode_mailbox(self.mailbox, utf8=utf8) + b" (" + atts + b")" + CRLF


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """``"SEARCH" *(SP nz-number) [SP search-sort-mod-seq]`` (RFC 7162: ``(MODSEQ n)``)."""

    numbers: Sequence[int]
    modseq: int | None = None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        out = b"* SEARCH" + b"".join(b" %d" % n for n in self.numbers)
        if self.modseq is not None and self.numbers:
            out += b" (MODSEQ %d)" % self.modseq
        return out + CRLF


@dataclass(frozen=True, slots=True)
class ESearch:
    """RFC 4731 / RFC 9051 §7.3:
    ``esearch-response = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)``.
    ALL is left out when it is empty (no message matched)."""

    tag: str | None = None
    uid: bool = False
    min: int | None = None
    max: int | None = None
    count: int | None = None
    all: SequenceSet | Sequence[int] | None = None
    modseq: int | None = None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        out = b"* ESEARCH"
        if self.tag is not None:
            out += b" (TAG " + quoted(self.tag) + b")"
        if self.uid:
            out += b" UID"
        if self.min is not None:
            out += b" MIN %d" % self.min
        if self.max is not None:
            out += b" MAX %d" % self.max
        if self.count is not None:
            out += b" COUNT %d" % self.count
        if self.all is not None:
            text = _set_text(self.all)
            if text:
                out += b" ALL " + text
        if self.modseq is not None:
            out += b" MODSEQ %d" % self.modseq
        return out + CRLF


@dataclass(frozen=True, slots=True)
class IdResponse:
    """RFC 2971 ``id-response = "ID" SP id-params-list``."""

    parameters: Sequence[tuple[str, str | None]] | None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        if not self.parameters:
            return b"* ID NIL\r\n"
        pairs = b" ".join(quoted(k, utf8=utf8) + b" " + nstring(v, utf8=utf8) for k, v in self.parameters)
        return b"* ID (" + pairs + b")" + CRLF


NamespaceList = Sequence[tuple[str, str | None]]


@dataclass(frozen=True, slots=True)
class NamespaceResponse:
    """RFC 9051 §7.3 ``namespace-response = "NAMESPACE" SP namespace SP namespace SP namespace``;
    each is ``None`` (NIL) or ``[(prefix, delimiter), ...]``."""

    personal: NamespaceList | None = (("", "/"),)
    other: NamespaceList | None = None
    shared: NamespaceList | None = None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        def one(spaces: NamespaceList | None) -> bytes:
            if not spaces:
                return b"NIL"
            descrs = []
            for prefix, delim in spaces:
                name = prefix if utf8 else mutf7.encode(prefix)
                d = b"NIL" if delim is None else quoted(delim)
                descrs.append(b"(" + quoted(name, utf8=utf8) + b" " + d + b")")
            return b"(" + b"".join(descrs) + b")"

        return b"* NAMESPACE " + one(self.personal) + b" " + one(self.other) + b" " + one(self.shared) + CRLF


@dataclass(frozen=True, slots=True)
class QuotaRootResponse:
    """RFC 9208 ``quotaroot-response = "QUOTAROOT" SP mailbox *(SP quota-root-name)``."""

    mailbox: str
    roots: Sequence[str]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        roots = b"".join(b" " + astring(r, utf8=utf8) for r in self.roots)
        return b"* QUOTAROOT " + encode_mailbox(self.mailbox, utf8=utf8) + roots + CRLF


@dataclass(frozen=True, slots=True)
class QuotaResponse:
    """RFC 9208 ``quota-response = "QUOTA" SP quota-root-name SP quota-list``;
    resources are ``(name, usage, limit)``, STORAGE in KiB."""

    root: str
    resources: Sequence[tuple[str, int, int]]

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        res = b" ".join(b"%s %d %d" % (n.encode("ascii"), u, lim) for n, u, lim in self.resources)
        return b"* QUOTA " + astring(self.root, utf8=utf8) + b" (" + res + b")" + CRLF


# --- FETCH -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes already in IMAP syntax (ENVELOPE and BODYSTRUCTURE from mailroom.message)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StreamedLiteral:
    """Placeholder for a literal too big to hold: only the ``{size}`` header goes out with the
    response; the caller then hands the engine exactly ``size`` octets with
    :meth:`IMAPServerEngine.send_literal_data`, and the engine closes the response. Must be the
    value of the last item. ``binary`` gives ``~{size}`` (RFC 3516 literal8, for NUL octets)."""

    size: int
    binary: bool = False


FetchValue = int | str | bytes | None | _dt.datetime | tuple[str, ...] | list[str] | Raw | StreamedLiteral
"""How a FETCH item value is written:

- ``int``: a number; for ``MODSEQ`` the RFC 7162 ``(n)`` form
- ``str``: quoted string (``nstring``)
- ``bytes``: a literal (``~{n}`` literal8 if it holds NUL, RFC 3516)
- ``None``: ``NIL``
- ``datetime``: INTERNALDATE's date-time
- ``tuple``/``list`` of str: a parenthesised flag list
- :class:`Raw`: verbatim; :class:`StreamedLiteral`: a literal header, data to follow
"""


def _fetch_value(name: bytes, value: FetchValue, *, utf8: bool) -> bytes:
    if isinstance(value, bool):  # pragma: no cover - a programming error, bool is an int
        raise TypeError("bool is not a FETCH value")
    if isinstance(value, int):
        return b"(%d)" % value if name.upper() == b"MODSEQ" else b"%d" % value
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        return quoted(value, utf8=utf8)
    if isinstance(value, bytes):
        if b"\0" in value:
            return b"~{%d}\r\n" % len(value) + value
        return literal(value)
    if isinstance(value, _dt.datetime):
        return format_date_time(value)
    if isinstance(value, tuple | list):
        return _flag_list(value)
    if isinstance(value, Raw):
        return value.data
    return (b"~{%d}\r\n" if value.binary else b"{%d}\r\n") % value.size


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """``message-data = nz-number SP "FETCH" SP msg-att``; items are ``(name, value)`` pairs with
    names like ``"FLAGS"`` or ``FetchBody.response_name()``. See :data:`FetchValue`."""

    seq: int
    items: Sequence[tuple[str | bytes, FetchValue]] = field(default_factory=tuple)

    @property
    def streamed(self) -> StreamedLiteral | None:
        if self.items and isinstance(self.items[-1][1], StreamedLiteral):
            return self.items[-1][1]
        return None

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        parts = []
        for i, (name, value) in enumerate(self.items):
            if isinstance(value, StreamedLiteral) and i != len(self.items) - 1:
                raise ValueError("a StreamedLiteral must be the last FETCH item")
            bname = name.encode("ascii") if isinstance(name, str) else name
            parts.append(bname + b" " + _fetch_value(bname, value, utf8=utf8))
        out = b"* %d FETCH (" % self.seq + b" ".join(parts)
        if self.streamed is not None:
            return out  # the engine adds the data and ")\r\n"
        return out + b")" + CRLF
