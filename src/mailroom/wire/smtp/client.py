"""Sans-I/O SMTP client engine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
ENHANCEDSTATUSCODES, DSN, CHUNKING, STARTTLS and AUTH PLAIN/LOGIN).

The queue runner owns the socket. It writes :meth:`SMTPClientEngine.data_to_send` after every call,
feeds what it reads to :meth:`receive_data` (``b""`` at EOF) and pulls events with
:meth:`next_event` until ``NEED_DATA``::

    c = SMTPClientEngine()                     # wait for Greeting
    c.ehlo("mail.example.org")                 # -> HelloReply(reply, capabilities)
    c.starttls()                               # -> StartTLSReply; on 220: handshake, then
    c.tls_started(); c.ehlo(...)               #    (RFC 3207 §4.2: forget everything, EHLO again)
    c.auth("user", "password")                 # -> AuthReply (smarthosts; PLAIN, else LOGIN)
    c.send_mail(Envelope(sender, (Recipient("bob@x.example"),), size=n, body="8BITMIME"))
                                               # -> RecipientReply*, then SendBody or TransactionDone
    c.send_body(chunk); ...; c.end_body()      # after SendBody: dot-stuffed (DATA) or BDAT chunks
                                               # -> TransactionDone(result): one reply per recipient
    c.quit()                                   # -> Closed

Guarantees:

- Every ``send_mail`` ends in exactly one ``TransactionDone`` whose ``result`` has one
  :class:`RecipientResult` per recipient, in order, each with the reply that decided it (MAIL's when
  MAIL failed, else its RCPT reply, else DATA's, else the final reply after the body) and whether it
  is delivered / temporary / permanent. Requirements the server cannot meet (SIZE, 8BITMIME,
  BINARYMIME, SMTPUTF8) fail the transaction locally, before anything is sent, with a 5xx reply.
- A connection that closes (EOF, a 421 at any time, garbage) settles every outstanding command
  with a 4xx reply (``synthetic=True``) and ends in ``Closed``. A body that was sent completely
  but not acknowledged is a temporary failure: the message may have been delivered (RFC 5321
  §6.1: a duplicate is better than a loss).
- PIPELINING (RFC 2920): when advertised, MAIL, every RCPT and DATA go out in one write and replies
  are matched to commands in order; otherwise each command waits for the previous reply and DATA is
  not sent at all when no recipient was accepted. After a transaction that left the server in a
  transaction state, an RSET is sent automatically before the next one.
- Hostile servers: reply lines are at most ``max_line`` octets, replies at most ``max_lines`` lines,
  codes must be 2xx-5xx and the same on every line; anything else yields ``ProtocolFailure`` and
  then ``Closed``. Input never raises. Misuse by the caller raises ``LocalProtocolError``.
- Body bytes after ``SendBody`` are dot-stuffed for DATA (RFC 5321 §4.5.2) across chunk boundaries,
  with bare CR and LF turned into CRLF so no lenient server can see an early end of data (SMTP
  smuggling); the terminator CRLF "." CRLF is added even without a final CRLF. BDAT (RFC 3030) is
  used for BODY=BINARYMIME, or with ``prefer_chunking`` when CHUNKING and PIPELINING are offered;
  BDAT chunks are sent unchanged.
- ``send_body`` and ``end_body`` after the transaction ended early (a failed BDAT chunk, 421) are
  ignored, so the caller may stream without checking between chunks.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from mailroom.wire.buffer import ReceiveBuffer
from mailroom.wire.errors import LineTooLongError, LocalProtocolError, RemoteProtocolError
from mailroom.wire.smtp.events import NEED_DATA, BodyType, RetType, Sentinel
from mailroom.wire.smtp.replies import Reply
from mailroom.wire.smtp.syntax import is_address_literal, is_domain, parse_path

__all__ = [
    "NEED_DATA",
    "TIMEOUT_DATA_BLOCK",
    "AuthReply",
    "Capabilities",
    "ClientConfig",
    "ClientState",
    "Closed",
    "CommandReply",
    "Envelope",
    "Greeting",
    "HelloReply",
    "ProtocolFailure",
    "Recipient",
    "RecipientReply",
    "RecipientResult",
    "ReplyParser",
    "SMTPClientEngine",
    "SendBody",
    "Sentinel",
    "StartTLSReply",
    "TransactionDone",
    "TransactionResult",
    "classify",
    "xtext_encode",
]

# RFC 5321 §4.5.3.2: client timeouts, in seconds, for the reply the engine is waiting for.
TIMEOUT_GREETING: Final = 300.0  # §4.5.3.2.1 initial 220 message: 5 minutes
TIMEOUT_MAIL: Final = 300.0  # §4.5.3.2.2 MAIL command: 5 minutes
TIMEOUT_RCPT: Final = 300.0  # §4.5.3.2.3 RCPT command: 5 minutes
TIMEOUT_DATA: Final = 120.0  # §4.5.3.2.4 DATA initiation: 2 minutes
TIMEOUT_DATA_BLOCK: Final = 180.0  # §4.5.3.2.5 data block (each write of the body): 3 minutes
TIMEOUT_DATA_END: Final = 600.0  # §4.5.3.2.6 DATA termination: 10 minutes

_CODE = re.compile(rb"([2-5][0-5][0-9])([ -]|\r?\n|$)")
_ENHANCED_PREFIX = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |$)")
# RFC 5321 §4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_EHLO_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NOT_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 5321 §4.2 textstring: HT and %d32-126 (+UTF-8)

Outcome = Literal["delivered", "temporary", "permanent"]
Stage = Literal["local", "mail", "rcpt", "data", "body"]


def classify(reply: Reply) -> Outcome:
    """RFC 5321 §4.2.1: 2yz positive completion, 4yz transient, 5yz permanent negative."""
    if reply.code < 400:
        return "delivered"
    return "temporary" if reply.code < 500 else "permanent"


# --- envelopes and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: tuple[str, ...] | None = None  # RFC 3461 §4.1: ("NEVER",) or SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # RFC 3461 §4.2, decoded: "rfc822;bob@example.org"


@dataclass(frozen=True)
class Envelope:
    sender: str  # "" for the null reverse-path
    recipients: tuple[Recipient, ...]
    size: int | None = None  # RFC 1870: the message size, checked against SIZE and declared
    body: BodyType | None = None  # RFC 6152 / RFC 3030
    smtputf8: bool = False  # RFC 6531: the message needs SMTPUTF8
    ret: RetType | None = None  # RFC 3461 §4.3
    envid: str | None = None  # RFC 3461 §4.4, decoded


@dataclass(frozen=True)
class RecipientResult:
    recipient: Recipient
    reply: Reply
    stage: Stage  # which command's reply decided it ("local": nothing was sent)
    synthetic: bool = False  # the engine made the reply up (connection lost, requirement unmet)

    @property
    def outcome(self) -> Outcome:
        return classify(self.reply)

    @property
    def delivered(self) -> bool:
        return self.reply.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.reply.code < 500

    @property
    def permanent(self) -> bool:
        return self.reply.code >= 500


@dataclass(frozen=True)
class TransactionResult:
    envelope: Envelope
    recipients: tuple[RecipientResult, ...]
    mail_reply: Reply | None  # None when nothing was sent
    final_reply: Reply | None  # the reply after the body, when it got that far


@dataclass(frozen=True)
class Capabilities:
    """The EHLO keywords (upper-case) with their parameters."""

    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        return self.has("PIPELINING")

    @property
    def eightbitmime(self) -> bool:
        return self.has("8BITMIME")

    @property
    def smtputf8(self) -> bool:
        return self.has("SMTPUTF8")

    @property
    def starttls(self) -> bool:
        return self.has("STARTTLS")

    @property
    def chunking(self) -> bool:
        return self.has("CHUNKING")

    @property
    def binarymime(self) -> bool:
        return self.has("BINARYMIME")

    @property
    def dsn(self) -> bool:
        return self.has("DSN")

    @property
    def enhanced_status_codes(self) -> bool:
        return self.has("ENHANCEDSTATUSCODES")

    @property
    def size(self) -> int | None:
        """RFC 1870 §4: the fixed maximum; 0 means no fixed limit; None when SIZE is not offered."""
        params = self.keywords.get("SIZE")
        if params is None:
            return None
        if params and params[0].isascii() and params[0].isdigit() and len(params[0]) <= 20:
            return int(params[0])
        return 0

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return self.keywords.get("AUTH", ())

    @classmethod
    def parse(cls, reply: Reply) -> Capabilities:
        """RFC 5321 §4.1.1.1: ehlo-ok-rsp; the lines after the first are ``keyword *(SP param)``.

        Lines that are not keywords are ignored; ``AUTH=LOGIN PLAIN`` (pre-RFC 4954 servers) counts
        as AUTH.
        """
        keywords: dict[str, tuple[str, ...]] = {}
        for line in reply.lines[1:]:
            tokens = line.split()
            if not tokens:
                continue
            keyword = tokens[0]
            params = tokens[1:]
            if keyword.upper().startswith("AUTH="):
                keyword, first = keyword[:4], keyword[5:]
                params = [first, *params] if first else params
            if not _EHLO_KEYWORD.fullmatch(keyword):
                continue
            keyword = keyword.upper()
            if keyword == "AUTH":
                merged = list(keywords.get("AUTH", ()))
                merged += [p.upper() for p in params if p.upper() not in merged]
                keywords[keyword] = tuple(merged)
            elif keyword not in keywords:
                keywords[keyword] = tuple(params)
        return cls(keywords)


# --- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Greeting:
    """The server's banner. Only 220 lets the session go on (RFC 5321 §3.1); after 554 send QUIT."""

    reply: Reply


@dataclass(frozen=True)
class HelloReply:
    """The answer to EHLO/HELO. ``capabilities`` is None when it was refused (try HELO)."""

    reply: Reply
    capabilities: Capabilities | None


@dataclass(frozen=True)
class StartTLSReply:
    """On 220: run the handshake, then call tls_started(). ``discarded`` counts the octets the
    server sent after its 220, which were dropped (RFC 3207 §4.2 response injection)."""

    reply: Reply
    discarded: int = 0


@dataclass(frozen=True)
class AuthReply:
    """The final answer to AUTH: 235 authenticated (RFC 4954 §6), otherwise refused."""

    reply: Reply
    synthetic: bool = False


@dataclass(frozen=True)
class RecipientReply:
    """Informational: the RCPT reply for ``envelope.recipients[index]``."""

    index: int
    recipient: Recipient
    reply: Reply


@dataclass(frozen=True)
class SendBody:
    """Send the message now: send_body(chunk)... then end_body()."""

    chunking: bool  # BDAT rather than DATA


@dataclass(frozen=True)
class TransactionDone:
    result: TransactionResult


@dataclass(frozen=True)
class CommandReply:
    """The answer to RSET or NOOP (an automatic RSET is reported only when it fails)."""

    verb: str
    reply: Reply


@dataclass(frozen=True)
class ProtocolFailure:
    """The server broke the protocol; the connection must be dropped (Closed follows)."""

    message: str


@dataclass(frozen=True)
class Closed:
    """The session is over (QUIT answered, 421, EOF, protocol failure). Returned forever after."""

    reason: str
    reply: Reply | None = None


Event = (
    Greeting
    | HelloReply
    | StartTLSReply
    | AuthReply
    | RecipientReply
    | SendBody
    | TransactionDone
    | CommandReply
    | ProtocolFailure
    | Closed
)


# --- reply parsing ------------------------------------------------------------------------------------


class ReplyError(RemoteProtocolError):
    """A malformed reply from the server."""


class ReplyParser:
    """RFC 5321 §4.2: ``*( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF``.

    Feed bytes, take complete replies. Raises only :class:`ReplyError` (including an over-long
    line); after an error the parser should be discarded. Bare LF line ends are tolerated. Text is
    decoded as UTF-8 (RFC 6531 §3.7.4), invalid octets and control characters replaced.
    """

    def __init__(self, max_line: int = 4096, max_lines: int = 100) -> None:
        self._buf = ReceiveBuffer(max_line=max_line)
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._code = 0

    def feed(self, data: bytes) -> None:
        self._buf.feed(data)

    def clear(self) -> int:
        """Drop everything buffered (after STARTTLS); return how many octets were dropped."""
        n = len(self._buf) + sum(len(x) for x in self._lines)
        self._buf.clear()
        self._lines = []
        self._code = 0
        return n

    @property
    def pending(self) -> bool:
        """Part of a reply has been received."""
        return bool(self._buf) or bool(self._lines)

    def next_reply(self) -> Reply | None:
        while True:
            try:
                raw = self._buf.next_line()
            except LineTooLongError as exc:
                raise ReplyError(f"reply line too long ({exc})") from None
            if raw is None:
                return None
            m = _CODE.match(raw)
            if m is None:
                raise ReplyError(f"malformed reply line {_show(raw)!r}")
            code = int(m.group(1))
            if self._lines and code != self._code:
                # RFC 5321 §4.2.1: every line of a multiline reply has the same code.
                raise ReplyError(f"reply code changed from {self._code} to {code} within a reply")
            self._code = code
            sep = m.group(2)
            text = raw[m.end(1) + (1 if sep in (b" ", b"-") else 0) :].rstrip(b"\r\n")
            self._lines.append(_NOT_TEXT.sub("?", text.decode("utf-8", "replace")))
            if len(self._lines) > self.max_lines:
                raise ReplyError(f"reply longer than {self.max_lines} lines")
            if sep != b"-":
                lines, self._lines = self._lines, []
                return _make_reply(code, lines)


def _make_reply(code: int, lines: list[str]) -> Reply:
    # RFC 2034 §3 / RFC 3463: an enhanced code leads the text of every line; its class matches.
    enhanced = None
    m = _ENHANCED_PREFIX.match(lines[0])
    if m and m.group(1) == str(code)[0] and code >= 200 and str(code)[0] in "245":
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        prefix = enhanced
        lines = [line[len(prefix) :].lstrip(" ") if line.startswith(prefix) else line for line in lines]
    return Reply(code, enhanced, tuple(lines))


def _show(raw: bytes) -> str:
    return "".join(chr(c) if 32 <= c < 127 else "?" for c in raw[:40])


# --- command encoding ----------------------------------------------------------------------------------


def xtext_encode(value: str) -> str:
    """RFC 3461 §4: xtext; xchar = %d33-42 / %d44-60 / %d62-126, everything else "+" 2HEXUPPER."""
    out = []
    for byte in value.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}")
    return "".join(out)


def _utf8_addr_xtext(value: str) -> str:
    """RFC 6533 §3: utf-8-addr-xtext; QCHAR = %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e, else \\x{HEX}."""
    return "".join(c if 0x21 <= ord(c) <= 0x7E and c not in "+=\\" else f"\\x{{{ord(c):X}}}" for c in value)


def _orcpt_param(orcpt: str) -> str:
    addr_type, semi, addr = orcpt.partition(";")
    if not semi:
        addr_type, addr = "rfc822", orcpt
    addr_type = addr_type.strip() or "rfc822"
    if addr_type.lower() == "utf-8":
        return f"ORCPT={addr_type};{_utf8_addr_xtext(addr)}"
    return f"ORCPT={xtext_encode(addr_type)};{xtext_encode(addr)}"


def _valid_path(address: str, *, reverse: bool) -> bool:
    text = f"<{address}>"
    path = parse_path(text, 0, reverse=reverse)
    return path is not None and path.end == len(text)


# --- the engine -------------------------------------------------------------------------------------------


class ClientState(enum.Enum):
    GREETING = "greeting"  # waiting for the banner
    CONNECTED = "connected"  # greeted (or after STARTTLS): EHLO/HELO next
    READY = "ready"  # hello accepted: transactions, AUTH, STARTTLS, RSET, NOOP
    TLS = "tls"  # STARTTLS accepted: handshake, then tls_started()
    CLOSED = "closed"


class _Kind(enum.Enum):
    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    DATA_END = "end of data"
    BDAT = "BDAT"
    BDAT_LAST = "BDAT LAST"
    RSET = "RSET"
    AUTO_RSET = "RSET (automatic)"
    NOOP = "NOOP"
    QUIT = "QUIT"


# RFC 2920 §3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP may only be last in a group; STARTTLS
# (RFC 3207 §4) and AUTH (RFC 4954 §4) wait for their answers as well.
_GROUP_END = frozenset(
    {
        _Kind.GREETING,
        _Kind.EHLO,
        _Kind.HELO,
        _Kind.STARTTLS,
        _Kind.AUTH,
        _Kind.DATA,
        _Kind.DATA_END,
        _Kind.BDAT_LAST,
        _Kind.NOOP,
        _Kind.QUIT,
    }
)
_TIMEOUTS = {
    _Kind.GREETING: TIMEOUT_GREETING,
    _Kind.MAIL: TIMEOUT_MAIL,
    _Kind.RCPT: TIMEOUT_RCPT,
    _Kind.DATA: TIMEOUT_DATA,
    _Kind.DATA_END: TIMEOUT_DATA_END,
    _Kind.BDAT: TIMEOUT_DATA_BLOCK,
    _Kind.BDAT_LAST: TIMEOUT_DATA_END,
}


@dataclass
class _Cmd:
    kind: _Kind
    line: bytes = b""
    index: int = -1  # RCPT: the recipient's index
    txn: _Txn | None = None


@dataclass
class _Txn:
    envelope: Envelope
    chunking: bool
    mail: tuple[Reply, bool] | None = None
    rcpts: dict[int, tuple[Reply, bool]] = field(default_factory=dict)
    local: dict[int, Reply] = field(default_factory=dict)  # recipients refused before sending
    data: tuple[Reply, bool] | None = None  # DATA refused (or a BDAT chunk refused)
    final: tuple[Reply, bool] | None = None
    outstanding: int = 0  # commands of this transaction not answered yet
    body: bool = False  # SendBody was emitted
    ended_body: bool = False  # end_body() was called
    done: bool = False

    def accepted(self) -> bool:
        return any(r.code < 400 for r, _ in self.rcpts.values())


@dataclass(frozen=True)
class ClientConfig:
    max_line: int = 4096  # longest reply line accepted (RFC 5321 §4.5.3.1.5 asks for 512)
    max_lines: int = 100  # most lines in one reply
    tls_active: bool = False  # implicit TLS (port 465): AUTH allowed from the start
    prefer_chunking: bool = False  # use BDAT when CHUNKING and PIPELINING are offered


_CLOSING = Reply(421, "4.4.2", ("Connection closed by the remote server",))


class SMTPClientEngine:
    """One SMTP client connection, without I/O."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self._parser = ReplyParser(self.config.max_line, self.config.max_lines)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._unsent: deque[_Cmd] = deque()
        self._pending: deque[_Cmd] = deque([_Cmd(_Kind.GREETING)])
        self._state = ClientState.GREETING
        self._eof = False
        self._closing = False
        self.capabilities: Capabilities | None = None
        self.tls_active = self.config.tls_active
        self.authenticated = False
        self._txn: _Txn | None = None
        self._body_at_bol = True  # DATA: the next octet starts a line
        self._body_cr = False  # DATA: a CR was withheld at the end of the last chunk
        self._discard_body = False  # the transaction ended while the caller was streaming
        self._auth_steps: list[bytes] = []
        self._auth_answered = 0

    # --- public surface --------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ClientState.CLOSED

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    @property
    def reply_timeout(self) -> float | None:
        """RFC 5321 §4.5.3.2: how long to wait for the reply expected next (None: none expected)."""
        if not self._pending:
            return None
        return _TIMEOUTS.get(self._pending[0].kind, 300.0)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` when it closed its side."""
        if self.closed or self._eof:
            return
        if not data:
            self._eof = True
            return
        if self._state is ClientState.TLS:
            return  # nothing may arrive in the clear between 220 and the handshake
        self._parser.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self._state is ClientState.CLOSED:
                return Closed("connection closed")
            if self._state is ClientState.TLS:
                if self._eof:
                    self._shutdown(_CLOSING, "connection closed during STARTTLS")
                    continue
                return NEED_DATA
            try:
                reply = self._parser.next_reply()
            except ReplyError as exc:
                self._events.append(ProtocolFailure(exc.message))
                self._shutdown(
                    Reply(421, "4.5.0", (f"Protocol error from the remote server: {exc.message}",)),
                    f"protocol error: {exc.message}",
                )
                continue
            if reply is not None:
                self._on_reply(reply)
                continue
            if self._eof:
                self._shutdown(_CLOSING, "connection closed by the remote server")
                continue
            return NEED_DATA

    # --- commands --------------------------------------------------------------------------------

    def ehlo(self, name: str) -> None:
        """RFC 5321 §4.1.1.1: ehlo = "EHLO" SP ( Domain / address-literal ) CRLF."""
        self._hello(_Kind.EHLO, name)

    def helo(self, name: str) -> None:
        """RFC 5321 §4.1.1.1: helo = "HELO" SP Domain CRLF (when EHLO is refused)."""
        self._hello(_Kind.HELO, name)

    def _hello(self, kind: _Kind, name: str) -> None:
        self._require(ClientState.CONNECTED, ClientState.READY)
        if self._txn is not None:
            raise LocalProtocolError("EHLO during a transaction")
        if not (name.isascii() and (is_domain(name) or is_address_literal(name))):
            raise LocalProtocolError(f"not a valid EHLO name: {name!r}")
        self.capabilities = None
        self._queue(_Cmd(kind, f"{kind.value} {name}\r\n".encode()))

    def starttls(self) -> None:
        """RFC 3207 §4: starttls = "STARTTLS" CRLF."""
        self._require(ClientState.READY)
        if self.tls_active or self._txn is not None:
            raise LocalProtocolError("STARTTLS with TLS active or during a transaction")
        self._queue(_Cmd(_Kind.STARTTLS, b"STARTTLS\r\n"))

    def tls_started(self) -> None:
        """The handshake after 220 completed: RFC 3207 §4.2, forget the EHLO answer; EHLO again."""
        if self._state is not ClientState.TLS:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        self._parser.clear()
        self.tls_active = True
        self.capabilities = None
        self._state = ClientState.CONNECTED

    def auth(
        self, username: str, password: str, mechanism: str | None = None, *, allow_plaintext: bool = False
    ) -> None:
        """RFC 4954 AUTH with PLAIN (RFC 4616) or LOGIN; the mechanism defaults to PLAIN, else LOGIN.

        Refused (LocalProtocolError) without TLS unless ``allow_plaintext``. When the server offers
        neither mechanism the answer is a synthetic ``AuthReply`` 504 5.5.4.
        """
        self._require(ClientState.READY)
        if self._txn is not None:
            raise LocalProtocolError("AUTH during a transaction")
        if not (self.tls_active or allow_plaintext):
            raise LocalProtocolError("refusing to send credentials without TLS")
        offered = self.capabilities.auth_mechanisms if self.capabilities else ()
        if mechanism is None:
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
        mechanism = (mechanism or "").upper()
        if mechanism not in ("PLAIN", "LOGIN") or mechanism not in offered:
            text = f"No usable AUTH mechanism (offered: {' '.join(offered) or 'none'})"
            self._events.append(AuthReply(Reply(504, "5.5.4", (text,)), synthetic=True))
            return
        user = username.encode("utf-8")
        secret = password.encode("utf-8")
        if mechanism == "PLAIN":
            # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, as the initial response
            # (RFC 4954 §4); a server that still sends "334 " gets it once more.
            initial = base64.b64encode(b"\0" + user + b"\0" + secret)
            self._auth_steps = [initial]
            line = b"AUTH PLAIN " + initial + b"\r\n"
        else:
            # LOGIN (draft-murchison-sasl-login): 334 "Username:", then 334 "Password:".
            self._auth_steps = [base64.b64encode(user), base64.b64encode(secret)]
            line = b"AUTH LOGIN\r\n"
        self._auth_answered = 0
        self._queue(_Cmd(_Kind.AUTH, line))

    def send_mail(self, envelope: Envelope) -> None:
        """Start a transaction: MAIL, RCPT for every recipient, DATA (or BDAT later)."""
        self._require(ClientState.READY)
        if self._txn is not None:
            raise LocalProtocolError("a transaction is already in progress")
        if not envelope.recipients:
            raise LocalProtocolError("an envelope needs at least one recipient")
        caps = self.capabilities or Capabilities()
        chunking = envelope.body == "BINARYMIME" or (
            self.config.prefer_chunking and caps.chunking and caps.pipelining
        )
        txn = _Txn(envelope, chunking)
        self._discard_body = False
        for i, rcpt in enumerate(envelope.recipients):
            if not _valid_path(rcpt.address, reverse=False):
                # RFC 3463 X.1.3: bad destination mailbox address syntax; never sent.
                txn.local[i] = Reply(553, "5.1.3", (f"Invalid recipient address {_printable(rcpt.address)}",))
        problem = self._unmet_requirement(envelope, caps)
        if problem is not None or len(txn.local) == len(envelope.recipients):
            self._finish_local(txn, problem)
            return
        self._txn = txn
        params = self._mail_params(envelope, caps)
        self._queue(_Cmd(_Kind.MAIL, f"MAIL FROM:<{envelope.sender}>{params}\r\n".encode(), txn=txn))
        for i, rcpt in enumerate(envelope.recipients):
            if i not in txn.local:
                line = f"RCPT TO:<{rcpt.address}>{self._rcpt_params(rcpt, caps)}\r\n"
                self._queue(_Cmd(_Kind.RCPT, line.encode(), index=i, txn=txn))
        if not chunking:
            self._queue(_Cmd(_Kind.DATA, b"DATA\r\n", txn=txn))

    def send_body(self, data: bytes) -> None:
        """Body octets, after SendBody. Ignored once the transaction has ended early."""
        txn = self._body_txn()
        if txn is None or not data:
            return
        if txn.chunking:
            # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF, then the octets.
            self._send_now(_Cmd(_Kind.BDAT, f"BDAT {len(data)}\r\n".encode() + data, txn=txn))
        else:
            self._out += self._stuff(data)

    def end_body(self) -> None:
        """The body is complete: CRLF "." CRLF (RFC 5321 §4.1.1.4) or BDAT 0 LAST."""
        txn = self._txn
        if txn is None or not txn.body or txn.ended_body:
            if self._discard_body:
                self._discard_body = False
                return
            raise LocalProtocolError("no message body is being sent")
        txn.ended_body = True
        if txn.data is not None or txn.final is not None:
            # A chunk was refused: the transaction ends without BDAT LAST.
            self._maybe_finish(txn)
            self._release()
            return
        if txn.chunking:
            self._send_now(_Cmd(_Kind.BDAT_LAST, b"BDAT 0 LAST\r\n", txn=txn))
            return
        tail = b""
        if self._body_cr:
            tail = b"\r\n"
        elif not self._body_at_bol:
            tail = b"\r\n"  # the body did not end with CRLF: end its last line first
        self._body_cr = False
        self._body_at_bol = True
        self._send_now(_Cmd(_Kind.DATA_END, tail + b".\r\n", txn=txn))

    def rset(self) -> None:
        """RFC 5321 §4.1.1.5: rset = "RSET" CRLF; abandons a transaction not yet sending its body."""
        self._require(ClientState.READY)
        if self._txn is not None and self._txn.body:
            raise LocalProtocolError("RSET while the body is being sent: end_body() first")
        self._queue(_Cmd(_Kind.RSET, b"RSET\r\n"))

    def noop(self) -> None:
        """RFC 5321 §4.1.1.9: noop = "NOOP" CRLF (checks that a reused connection still works)."""
        self._require(ClientState.READY, ClientState.CONNECTED)
        self._queue(_Cmd(_Kind.NOOP, b"NOOP\r\n"))

    def quit(self) -> None:
        """RFC 5321 §4.1.1.10: quit = "QUIT" CRLF. A no-op when closed, closing or in the TLS
        handshake; not while a body is being sent (drop the connection instead)."""
        if self._state in (ClientState.CLOSED, ClientState.TLS) or self._closing:
            return
        if self._streaming():
            raise LocalProtocolError("the message body is being sent: end_body() first")
        self._queue(_Cmd(_Kind.QUIT, b"QUIT\r\n"))

    # --- internals: sending -------------------------------------------------------------------------

    def _require(self, *states: ClientState) -> None:
        if self._state not in states:
            raise LocalProtocolError(f"not allowed in state {self._state.value}")
        if self._closing:
            raise LocalProtocolError("QUIT was already sent")
        if self._streaming():
            raise LocalProtocolError("the message body is being sent: end_body() first")

    def _streaming(self) -> bool:
        txn = self._txn
        return txn is not None and txn.body and not txn.ended_body

    def _queue(self, cmd: _Cmd) -> None:
        if cmd.kind is _Kind.QUIT:
            self._closing = True
        if cmd.txn is not None:
            cmd.txn.outstanding += 1
        self._unsent.append(cmd)
        self._release()

    def _send_now(self, cmd: _Cmd) -> None:
        """Body-phase commands: written at once (the server is reading the body)."""
        if cmd.txn is not None:
            cmd.txn.outstanding += 1
        self._out += cmd.line
        self._pending.append(cmd)

    def _release(self) -> None:
        """Write queued commands as far as RFC 2920 allows."""
        pipelining = self.capabilities is not None and self.capabilities.pipelining
        while self._unsent and self._state is not ClientState.CLOSED:
            if self._pending and not (pipelining and self._pending[-1].kind not in _GROUP_END):
                return
            if self._state is ClientState.TLS or self._streaming():
                return
            cmd = self._unsent.popleft()
            txn = cmd.txn
            if txn is not None and txn.done:
                continue
            if cmd.kind is _Kind.DATA and txn is not None and not pipelining:
                # Without pipelining every RCPT has been answered: no accepted recipient, no DATA.
                txn.outstanding -= 1
                if not txn.accepted():
                    self._maybe_finish(txn)
                    continue
                txn.outstanding += 1
            if (
                cmd.kind is _Kind.RCPT
                and txn is not None
                and not pipelining
                and txn.mail is not None
                and txn.mail[0].code >= 400
            ):
                # Without pipelining MAIL has been answered: refused, so RCPT would only draw 503s.
                txn.outstanding -= 1
                self._maybe_finish(txn)
                continue
            self._out += cmd.line
            self._pending.append(cmd)

    def _unmet_requirement(self, env: Envelope, caps: Capabilities) -> Reply | None:
        if env.sender and not _valid_path(env.sender, reverse=True):
            return Reply(553, "5.1.7", (f"Invalid sender address {env.sender!r}",))
        limit = caps.size
        if limit and env.size is not None and env.size > limit:
            # RFC 1870 §4/§6.1: the message exceeds the server's fixed maximum.
            return Reply(552, "5.3.4", (f"Message size {env.size} exceeds the remote limit of {limit}",))
        if env.body == "8BITMIME" and not caps.eightbitmime:
            # RFC 6152 §3: without 8BITMIME an 8-bit message must be converted or returned.
            return Reply(554, "5.6.3", ("The remote server does not accept 8-bit messages (no 8BITMIME)",))
        if env.body == "BINARYMIME" and not (caps.binarymime and caps.chunking):
            return Reply(554, "5.6.3", ("The remote server does not accept binary messages (no BINARYMIME)",))
        addresses = [env.sender, *(r.address for r in env.recipients)]
        if not all(a.isascii() for a in addresses) and not (env.smtputf8 and caps.smtputf8):
            # RFC 6531 §3.2 / RFC 6533: 5.6.7 non-ASCII addresses not permitted.
            return Reply(
                553, "5.6.7", ("The remote server does not accept non-ASCII addresses (no SMTPUTF8)",)
            )
        if env.smtputf8 and not caps.smtputf8:
            # RFC 6531 §3.2: 5.6.9 UTF-8 header message cannot be transferred.
            return Reply(554, "5.6.9", ("The remote server does not accept UTF-8 headers (no SMTPUTF8)",))
        return None

    @staticmethod
    def _mail_params(env: Envelope, caps: Capabilities) -> str:
        params = []
        if caps.size is not None and env.size is not None:
            params.append(f"SIZE={env.size}")  # RFC 1870 §3
        if env.body is not None and (caps.eightbitmime or caps.binarymime):
            params.append(f"BODY={env.body}")  # RFC 6152 §2, RFC 3030 §3
        if env.smtputf8 and caps.smtputf8:
            params.append("SMTPUTF8")  # RFC 6531 §3.4
        if caps.dsn:
            if env.ret is not None:
                params.append(f"RET={env.ret}")  # RFC 3461 §4.3
            if env.envid:
                params.append(f"ENVID={xtext_encode(env.envid)}")  # RFC 3461 §4.4
        return "".join(" " + p for p in params)

    @staticmethod
    def _rcpt_params(rcpt: Recipient, caps: Capabilities) -> str:
        if not caps.dsn:
            return ""
        params = []
        if rcpt.notify:
            params.append("NOTIFY=" + ",".join(v.upper() for v in rcpt.notify))  # RFC 3461 §4.1
        if rcpt.orcpt:
            params.append(_orcpt_param(rcpt.orcpt))  # RFC 3461 §4.2
        return "".join(" " + p for p in params)

    def _body_txn(self) -> _Txn | None:
        txn = self._txn
        if txn is not None and txn.body and not txn.ended_body:
            if txn.data is None and txn.final is None:
                return txn
            return None  # a chunk was refused: the rest is not sent
        if self._discard_body:
            return None
        raise LocalProtocolError("no message body is expected now (wait for SendBody)")

    def _stuff(self, data: bytes) -> bytes:
        """RFC 5321 §4.5.2: double a "." that starts a line; every line end becomes CRLF."""
        if self._body_cr:
            data = b"\r" + data
            self._body_cr = False
        if data.endswith(b"\r"):
            # The LF may come with the next chunk: hold the CR back.
            data = data[:-1]
            self._body_cr = True
        if not data:
            return b""
        # RFC 5321 §2.3.8: lines end in CRLF; a bare CR or LF is sent as CRLF.
        data = _EOL.sub(b"\r\n", data)
        out = data.replace(b"\r\n.", b"\r\n..")
        if self._body_at_bol and out.startswith(b"."):
            out = b"." + out
        self._body_at_bol = out.endswith(b"\n")
        return out

    # --- internals: replies -------------------------------------------------------------------------

    def _on_reply(self, reply: Reply, synthetic: bool = False) -> None:
        if not self._pending:
            if reply.code == 421:
                # RFC 5321 §3.8: the server may announce its shutdown at any time.
                self._shutdown(reply, "the server closed the connection (421)")
            else:
                self._events.append(ProtocolFailure(f"unexpected reply {reply.code} {reply.text[:80]}"))
                self._shutdown(
                    Reply(421, "4.5.0", ("Unexpected reply from the remote server",)), "unsolicited reply"
                )
            return
        cmd = self._pending[0]
        if reply.code // 100 == 3 and not (
            (cmd.kind is _Kind.DATA and reply.code == 354) or (cmd.kind is _Kind.AUTH and reply.code == 334)
        ):
            self._events.append(ProtocolFailure(f"unexpected {reply.code} reply to {cmd.kind.value}"))
            self._shutdown(Reply(421, "4.5.0", (f"Unexpected {reply.code} reply",)), "protocol error")
            return
        if cmd.kind is _Kind.DATA and reply.code < 300:
            self._events.append(ProtocolFailure(f"{reply.code} instead of 354 to DATA"))
            self._shutdown(Reply(421, "4.5.0", ("Unexpected reply to DATA",)), "protocol error")
            return
        if cmd.kind is _Kind.AUTH and reply.code == 334 and not synthetic:
            self._auth_continue()
            return
        self._pending.popleft()
        if cmd.txn is not None:
            cmd.txn.outstanding -= 1
        handler = _HANDLERS[cmd.kind]
        handler(self, cmd, reply, synthetic)
        if self._state is not ClientState.CLOSED and reply.code == 421 and not synthetic:
            self._shutdown(reply, "the server closed the connection (421)")
            return
        if cmd.txn is not None:
            self._maybe_finish(cmd.txn)
        self._release()

    def _on_greeting(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        if reply.code == 220 and self._state is ClientState.GREETING:
            self._state = ClientState.CONNECTED
        self._events.append(Greeting(reply))

    def _on_hello(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        if reply.code // 100 == 2:
            self.capabilities = Capabilities.parse(reply) if cmd.kind is _Kind.EHLO else Capabilities()
            self._state = ClientState.READY
            self._events.append(HelloReply(reply, self.capabilities))
        else:
            self._events.append(HelloReply(reply, None))

    def _on_starttls(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        discarded = 0
        if reply.code == 220 and not synthetic:
            # RFC 3207 §4.2: nothing received in the clear after 220 may be used.
            discarded = self._parser.clear()
            self._state = ClientState.TLS
        self._events.append(StartTLSReply(reply, discarded))

    def _auth_continue(self) -> None:
        # RFC 4954 §4: each 334 challenge is answered with one base64 line; "*" cancels.
        if self._auth_answered < len(self._auth_steps):
            self._out += self._auth_steps[self._auth_answered] + b"\r\n"
            self._auth_answered += 1
        else:
            self._out += b"*\r\n"

    def _on_auth(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        self._auth_steps = []
        if reply.code // 100 == 2:
            self.authenticated = True
        self._events.append(AuthReply(reply, synthetic))

    def _on_mail(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        assert cmd.txn is not None
        cmd.txn.mail = (reply, synthetic)

    def _on_rcpt(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        txn = cmd.txn
        assert txn is not None
        txn.rcpts[cmd.index] = (reply, synthetic)
        self._events.append(RecipientReply(cmd.index, txn.envelope.recipients[cmd.index], reply))

    def _maybe_start_bdat(self, txn: _Txn) -> None:
        mail_ok = txn.mail is not None and txn.mail[0].code < 400
        if mail_ok and txn.accepted() and self._state is not ClientState.CLOSED:
            txn.body = True
            self._body_at_bol, self._body_cr = True, False
            self._events.append(SendBody(chunking=True))

    def _on_data(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        txn = cmd.txn
        assert txn is not None
        if reply.code != 354:
            txn.data = (reply, synthetic)
            return
        if not txn.accepted() or txn.mail is None or txn.mail[0].code >= 400:
            # RFC 2920 §3.1: DATA was pipelined and no recipient was accepted, yet the server
            # answered 354: send an empty message to end the data phase; the reply is ignored.
            txn.data = (reply, synthetic)
            self._send_now(_Cmd(_Kind.DATA_END, b".\r\n", txn=txn))
            txn.ended_body = True
            return
        txn.body = True
        self._body_at_bol, self._body_cr = True, False
        self._events.append(SendBody(chunking=False))

    def _on_body_end(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        txn = cmd.txn
        assert txn is not None
        if txn.data is None:  # (data is set when "." only closed an empty, recipient-less DATA)
            txn.final = (reply, synthetic)

    def _on_bdat(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        txn = cmd.txn
        assert txn is not None
        if reply.code >= 400 and txn.data is None and txn.final is None:
            # RFC 3030 §2: a refused chunk ends the transaction; later chunks are not looked at.
            txn.data = (reply, synthetic)

    def _on_bdat_last(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        txn = cmd.txn
        assert txn is not None
        if txn.data is None:
            txn.final = (reply, synthetic)

    def _on_rset(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        if (cmd.kind is _Kind.RSET or reply.code >= 400) and not synthetic:
            self._events.append(CommandReply("RSET", reply))

    def _on_noop(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        if not synthetic:
            self._events.append(CommandReply("NOOP", reply))

    def _on_quit(self, cmd: _Cmd, reply: Reply, synthetic: bool) -> None:
        self._shutdown(reply if not synthetic else None, "QUIT")

    # --- internals: ending transactions and connections ------------------------------------------------

    def _maybe_finish(self, txn: _Txn) -> None:
        if txn.done or txn.outstanding > 0:
            return
        if txn.body and not txn.ended_body and txn.data is None and txn.final is None:
            return  # the caller is streaming the body
        if txn.chunking and not txn.body and txn.data is None:
            # All RCPT replies are in; the body starts now unless nothing was accepted.
            self._maybe_start_bdat(txn)
            if txn.body:
                return
        txn.done = True
        if txn.body and not txn.ended_body:
            self._discard_body = True
        self._txn = None
        result = self._result(txn)
        self._events.append(TransactionDone(result))
        mail_ok = txn.mail is not None and txn.mail[0].code < 400 and not txn.mail[1]
        if mail_ok and txn.final is None and self._state is ClientState.READY and not self._closing:
            # The server may still hold the envelope (refused recipients or DATA, a failed chunk).
            self._queue(_Cmd(_Kind.AUTO_RSET, b"RSET\r\n"))

    def _finish_local(self, txn: _Txn, problem: Reply | None) -> None:
        """Nothing is sent: a requirement is unmet, or no recipient address is valid."""
        txn.done = True
        results = tuple(
            RecipientResult(r, problem or txn.local[i], "local", True)
            for i, r in enumerate(txn.envelope.recipients)
        )
        self._events.append(TransactionDone(TransactionResult(txn.envelope, results, None, None)))

    @staticmethod
    def _result(txn: _Txn) -> TransactionResult:
        results: list[RecipientResult] = []
        for i, rcpt in enumerate(txn.envelope.recipients):
            decided: tuple[Reply, bool]
            stage: Stage
            got = txn.rcpts.get(i)
            if i in txn.local:
                decided, stage = (txn.local[i], True), "local"
            elif txn.mail is not None and txn.mail[0].code >= 400:
                decided, stage = txn.mail, "mail"  # RFC 2920 §3.1: later 503s are MAIL's fault
            elif got is None:
                decided, stage = (_CLOSING, True), "rcpt"
            elif got[0].code >= 400:
                decided, stage = got, "rcpt"
            elif txn.data is not None and txn.data[0].code >= 400:
                decided, stage = txn.data, "data" if not txn.chunking else "body"
            elif txn.final is not None:
                decided, stage = txn.final, "body"
            else:
                decided, stage = (_CLOSING, True), "body"
            results.append(RecipientResult(rcpt, decided[0], stage, decided[1]))
        mail = txn.mail[0] if txn.mail else None
        final = txn.final[0] if txn.final else None
        return TransactionResult(txn.envelope, tuple(results), mail, final)

    def _shutdown(self, reply: Reply | None, reason: str) -> None:
        """Settle everything outstanding with ``reply`` (or a 421), then close."""
        if self._state is ClientState.CLOSED:
            return
        settle = reply if reply is not None and reply.code >= 400 else _CLOSING
        self._closing = True
        self._state = ClientState.CLOSED
        pending = list(self._pending) + list(self._unsent)
        self._pending.clear()
        self._unsent.clear()
        for cmd in pending:
            if cmd.txn is not None:
                cmd.txn.outstanding -= 1
            if cmd.kind is not _Kind.QUIT:
                _HANDLERS[cmd.kind](self, cmd, settle, True)
        txn = self._txn
        if txn is not None and not txn.done:
            if txn.body and txn.data is None and txn.final is None:
                txn.final = (settle, True)
            txn.outstanding = 0
            self._force_finish(txn)
        self._parser.clear()
        self._events.append(Closed(reason, reply))

    def _force_finish(self, txn: _Txn) -> None:
        txn.done = True
        if txn.body and not txn.ended_body:
            self._discard_body = True
        self._txn = None
        self._events.append(TransactionDone(self._result(txn)))


_EOL = re.compile(rb"\r\n|\r|\n")

_HANDLERS = {
    _Kind.GREETING: SMTPClientEngine._on_greeting,
    _Kind.EHLO: SMTPClientEngine._on_hello,
    _Kind.HELO: SMTPClientEngine._on_hello,
    _Kind.STARTTLS: SMTPClientEngine._on_starttls,
    _Kind.AUTH: SMTPClientEngine._on_auth,
    _Kind.MAIL: SMTPClientEngine._on_mail,
    _Kind.RCPT: SMTPClientEngine._on_rcpt,
    _Kind.DATA: SMTPClientEngine._on_data,
    _Kind.DATA_END: SMTPClientEngine._on_body_end,
    _Kind.BDAT: SMTPClientEngine._on_bdat,
    _Kind.BDAT_LAST: SMTPClientEngine._on_bdat_last,
    _Kind.RSET: SMTPClientEngine._on_rset,
    _Kind.AUTO_RSET: SMTPClientEngine._on_rset,
    _Kind.NOOP: SMTPClientEngine._on_noop,
    _Kind.QUIT: SMTPClientEngine._on_quit,
}
assert set(_HANDLERS) == set(_Kind), "every command kind needs a reply handler"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]
