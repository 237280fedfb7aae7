"""POP3 server engine, sans-I/O: RFC 1939, RFC 2449 (CAPA, response codes), RFC 2595 (STLS),
RFC 3206 (SYS and AUTH response codes), RFC 5034 (SASL AUTH).

The session feeds bytes with :meth:`POP3ServerEngine.receive_data`, pulls events with
:meth:`~POP3ServerEngine.next_event` and writes :meth:`~POP3ServerEngine.data_to_send`. The engine
answers everything it can decide alone (CAPA, STAT, LIST, UIDL, DELE, RSET, NOOP, syntax errors)
and stops at the events that need the outside world:

===============  ===========================================================================
event            the session answers with
===============  ===========================================================================
UserPass         ``login_succeeded(drop)`` or ``reject(text, "AUTH" | "IN-USE" | "SYS/TEMP")``
AuthStart,       ``auth_challenge(data)`` (sends "+ base64", the next client line becomes an
AuthResponse     AuthResponse), ``login_succeeded(drop, username=...)`` or ``reject(...)``
StartTLS         ``accept()`` -> "+OK Begin TLS negotiation", handshake, then ``tls_started()``;
                 or ``reject(text)``
Retrieve         ``begin_message()``, ``message_data(chunk)`` while ``wants_more_message_data``,
                 ``end_message()``; or ``reject(text, "SYS/TEMP")`` before ``begin_message``
Update           delete for real, then ``accept()`` (signs off) or ``reject(text, "SYS/TEMP")``;
                 the engine closes either way (RFC 1939 §6)
===============  ===========================================================================

Informational events need no answer: :class:`Quit`, :class:`AuthCancelled`,
:class:`ProtocolViolation` (log one line; the engine already queued its reply) and
:class:`ConnectionClosed` (returned for ever once ``closed`` is set: flush, then close).
While an answer is outstanding :meth:`next_event` returns :data:`PAUSED` and no further input is
read, so pipelined commands (RFC 2449 §6.6) are answered strictly in order; the session should stop
reading from the socket meanwhile (backpressure), as the engine buffers whatever it is fed. Call
:meth:`data_to_send` after every ``message_data`` so a message never sits whole in memory.

Credentials are only accepted under TLS (RFC 2595 §2.2): before it USER, PASS and AUTH answer
``-ERR [AUTH] TLS required`` and nothing is stored. CAPA follows Dovecot with
``disable_plaintext_auth = yes`` (which omits USER and filters plaintext mechanisms out of SASL
until the connection is secured), going one step further because no mechanism at all is usable
before TLS here: STLS is listed, USER and SASL are not. After TLS it is the reverse.

Passwords are handed over exactly as sent (see :mod:`mailroom.wire.sasl` for normalisation).
"""

from __future__ import annotations

import binascii
import enum
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple

from mailroom.wire.buffer import ReceiveBuffer
from mailroom.wire.errors import LineTooLongError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "COMMANDS",
    "NEED_DATA",
    "PAUSED",
    "AuthCancelled",
    "AuthResponse",
    "AuthStart",
    "ConnectionClosed",
    "DropEntry",
    "Event",
    "POP3Config",
    "POP3ServerEngine",
    "ProtocolViolation",
    "Quit",
    "Retrieve",
    "StartTLS",
    "State",
    "Update",
    "UserPass",
]

CRLF: Final = b"\r\n"


class State(enum.Enum):
    """RFC 1939 §3: the three states of a POP3 session."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


# The state table: which command keywords are valid in which state.
#   RFC 1939 §4 (QUIT), §7 (USER, PASS; APOP is not offered), RFC 2449 §5 (CAPA, both states),
#   RFC 2595 §4 (STLS: AUTHORIZATION only), RFC 5034 §4 (AUTH: AUTHORIZATION only),
#   RFC 1939 §5 and §7 (STAT LIST RETR DELE NOOP RSET QUIT TOP UIDL: TRANSACTION),
#   RFC 1939 §6: no command is read in UPDATE; the session ends.
COMMANDS: Final[Mapping[State, frozenset[str]]] = MappingProxyType(
    {
        State.AUTHORIZATION: frozenset({"USER", "PASS", "AUTH", "STLS", "CAPA", "QUIT"}),
        State.TRANSACTION: frozenset(
            {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"}
        ),
        State.UPDATE: frozenset(),
    }
)
_KNOWN_COMMANDS: Final[frozenset[str]] = frozenset[str]().union(*COMMANDS.values())


@dataclass(frozen=True)
class POP3Config:
    tls_active: bool  # implicit TLS (port 995, RFC 8314) is on before the greeting
    stls_available: bool  # a TLS context exists, so STLS can be offered
    sasl_mechanisms: tuple[str, ...] = ("PLAIN",)
    implementation: str = "mailroom"
    # RFC 2449 §4: a command line is at most 255 octets with CRLF; allow some slack
    max_line: int = 512
    # protocol errors in a row (as Dovecot counts them) before "-ERR too many errors" and close: a
    # long session may meet many harmless -ERRs (RETR of a message gone, probing LAST/XTND ...)
    max_errors: int = 10
    # RFC 5034 §4: SASL responses are not commands; PLAIN with a long password must still fit
    max_auth_line: int = 8192


class DropEntry(NamedTuple):
    """One message of the maildrop: its size in octets exactly as RETR sends it (CRLF line ends,
    before byte-stuffing, RFC 1939 §5 "exact size") and its unique-id (RFC 1939 §7). A tuple:
    a login makes one per message."""

    size: int
    uid: str


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Event:
    """Base class of everything :meth:`POP3ServerEngine.next_event` returns besides sentinels."""


@dataclass(frozen=True)
class UserPass(Event):
    """USER + PASS (RFC 1939 §7). Needs ``login_succeeded`` or ``reject``."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class AuthStart(Event):
    """AUTH mechanism [initial-response] (RFC 5034 §4). ``initial`` is decoded; None = absent,
    b"" = the "=" empty response. ``mechanism`` is upper-case and one of the configured ones."""

    mechanism: str
    initial: bytes | None = field(repr=False)


@dataclass(frozen=True)
class AuthResponse(Event):
    """The client's (decoded) answer to the last ``auth_challenge``."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class AuthCancelled(Event):
    """The client answered a challenge with "*" (RFC 5034 §4); the engine already sent -ERR."""


@dataclass(frozen=True)
class StartTLS(Event):
    """STLS (RFC 2595 §4). Needs ``accept`` (then ``tls_started``) or ``reject``."""


@dataclass(frozen=True)
class Retrieve(Event):
    """RETR (top_lines None) or TOP (RFC 1939 §5, §7). ``index`` is 0-based into the drop."""

    index: int
    uid: str
    top_lines: int | None


@dataclass(frozen=True)
class Update(Event):
    """QUIT in TRANSACTION: enter UPDATE (RFC 1939 §6). Delete these messages, then answer."""

    deleted: tuple[int, ...]  # 0-based indexes, ascending
    uids: tuple[str, ...]  # their unique-ids, same order


@dataclass(frozen=True)
class Quit(Event):
    """QUIT in AUTHORIZATION (RFC 1939 §4): the engine signed off and closed."""


@dataclass(frozen=True)
class ProtocolViolation(Event):
    """The peer erred; ``reply_line`` is already queued. ``fatal``: the engine has closed."""

    reply_line: bytes
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The conversation is over (QUIT, EOF, too many errors): flush and close the transport."""


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"


NEED_DATA: Final = _Sentinel.NEED_DATA  # feed more bytes with receive_data
PAUSED: Final = _Sentinel.PAUSED  # an event awaits the session's answer

# ---------------------------------------------------------------------------------------------
# Reply helpers

_RESP_CODE = re.compile(r"[A-Z0-9][A-Z0-9/-]*")  # RFC 2449 §8: resp-code = "[" resp-level *("/" ...) "]"


def _line(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise LocalProtocolError(f"reply text contains a line break: {text!r}")
    return text.encode("utf-8") + CRLF


def _ok(text: str = "") -> bytes:
    return _line(f"+OK {text}" if text else "+OK")  # RFC 1939 §3: "+OK" [SP text]


def _err(text: str, code: str | None = None) -> bytes:
    if code is not None:
        if not _RESP_CODE.fullmatch(code):
            raise LocalProtocolError(f"bad POP3 response code {code!r}")
        text = f"[{code}] {text}"  # RFC 2449 §8: -ERR SP "[" resp-code "]" SP text
    return _line(f"-ERR {text}")


def _bad(message: str, code: str | None = None) -> RemoteProtocolError:
    """A peer error whose reply is "-ERR <message>"."""
    return RemoteProtocolError(message, _err(message, code))


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _parse_number(arg: bytes) -> int:
    """RFC 1939 §3/§5: a message number or line count is 1*DIGIT; strictly ASCII digits (no
    sign, no space, no "_"), at most 10 of them so nothing ever overflows a 32-bit client."""
    if not 1 <= len(arg) <= 10 or not arg.isdigit():
        raise _bad("invalid number")
    return int(arg)


def _strip_eol(line: bytes) -> bytes:
    return line[:-2] if line.endswith(CRLF) else line[:-1]


class _Phase(enum.Enum):
    READY = "ready"  # reading commands
    DECISION = "decision"  # an event waits for accept/reject/...
    SASL = "sasl"  # the next line answers a SASL challenge
    TLS = "tls"  # STLS accepted, waiting for tls_started()
    MESSAGE = "message"  # streaming RETR/TOP
    CLOSED = "closed"


# ---------------------------------------------------------------------------------------------
# RETR/TOP output


class _MessageWriter:
    """Byte-stuffs a message (RFC 1939 §3) and, for TOP, cuts it after the header, the empty line
    and ``top_lines`` body lines (RFC 1939 §7). Both work across arbitrary chunk boundaries."""

    def __init__(self, top_lines: int | None) -> None:
        self.top_lines = top_lines
        self.done = False  # TOP limit reached: the rest of the message is not wanted
        self._in_body = False
        self._line_head = b""  # first two octets of the current header line
        self._body_lines = 0
        self._at_line_start = True
        self._last = b""

    def write(self, chunk: bytes) -> bytes:
        if self.done or not chunk:
            return b""
        if self.top_lines is not None:
            chunk = self._cut(chunk, self.top_lines)
        # RFC 1939 §3: a line starting with the termination octet gets one more "." in front
        out = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and chunk[:1] == b".":
            out = b"." + out
        self._at_line_start = chunk.endswith(b"\n")
        self._last = chunk[-1:]
        return out

    def finish(self) -> bytes:
        # RFC 1939 §3: the multi-line response ends with CRLF "." CRLF; add the line end a
        # message without a final CRLF lacks.
        if self._at_line_start:
            return b".\r\n"
        if self._last == b"\r":
            return b"\n.\r\n"
        return b"\r\n.\r\n"

    def _cut(self, chunk: bytes, top_lines: int) -> bytes:
        pos = 0
        while not self._in_body:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                self._line_head = (self._line_head + chunk[pos : pos + 2])[:2]
                return chunk
            head = (self._line_head + chunk[pos : min(nl, pos + 2)])[:2]
            self._line_head = b""
            pos = nl + 1
            if head in (b"", b"\r"):  # RFC 5322 §2.1: an empty line ends the header section
                self._in_body = True
                if top_lines == 0:
                    self.done = True
                    return chunk[:pos]
        remaining = top_lines - self._body_lines
        available = chunk.count(b"\n", pos)
        if available < remaining:
            self._body_lines += available
            return chunk
        for _ in range(remaining):
            pos = chunk.find(b"\n", pos) + 1
        self.done = True  # RFC 1939 §7: header, empty line, then n lines of the body
        return chunk[:pos]


# ---------------------------------------------------------------------------------------------
# The engine

_DECISIONS: Final = (UserPass, AuthStart, AuthResponse, StartTLS, Retrieve, Update)


class POP3ServerEngine:
    def __init__(self, config: POP3Config) -> None:
        self.config = config
        self.tls_active = config.tls_active
        self.state = State.AUTHORIZATION
        self.username: str | None = None  # set by login_succeeded
        self.closed = False
        self.wants_more_message_data = False
        self._buffer = ReceiveBuffer(config.max_line)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._phase = _Phase.READY
        self._pending: Event | None = None
        self._eof = False
        self._errors = 0
        self._greeted = False
        self._user: str | None = None  # from USER, waiting for PASS
        self._drop: tuple[DropEntry, ...] = ()
        self._deleted: set[int] = set()
        self._writer: _MessageWriter | None = None
        self._handlers: dict[str, Callable[[bytes | None], None]] = {
            "USER": self._cmd_user,
            "PASS": self._cmd_pass,
            "AUTH": self._cmd_auth,
            "STLS": self._cmd_stls,
            "CAPA": self._cmd_capa,
            "QUIT": self._cmd_quit,
            "STAT": self._cmd_stat,
            "LIST": self._cmd_list,
            "UIDL": self._cmd_uidl,
            "RETR": self._cmd_retr,
            "TOP": self._cmd_top,
            "DELE": self._cmd_dele,
            "RSET": self._cmd_rset,
            "NOOP": self._cmd_noop,
        }

    # -- I/O surface -------------------------------------------------------------------------

    def greeting(self) -> None:
        if self._greeted:
            raise LocalProtocolError("greeting already sent")
        self._greeted = True
        impl = self.config.implementation
        # RFC 1939 §4: the server greets with a positive response (no APOP timestamp: no APOP)
        self._out += _ok(f"{impl} POP3 server ready" if impl else "POP3 server ready")

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means end of file."""
        if self.closed:
            return
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after end of file")
            return
        if not data:
            self._eof = True
            return
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Event | _Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self.closed:
                return ConnectionClosed()
            if self._phase not in (_Phase.READY, _Phase.SASL):
                return PAUSED
            try:
                line = self._buffer.next_line()
            except LineTooLongError as exc:
                self._leave_sasl()
                self._violation(_err("line too long"), str(exc))
                continue
            if line is None:
                if not self._eof:
                    return NEED_DATA
                self._close()  # RFC 1939 §6: without QUIT there is no UPDATE state
                continue
            try:
                if self._phase is _Phase.SASL:
                    self._sasl_line(line)
                else:
                    self._command_line(line)
            except RemoteProtocolError as exc:
                self._violation(exc.reply, exc.message)
            else:
                self._errors = 0  # a valid command: the count is of errors in a row

    def capabilities(self) -> list[str]:
        """RFC 2449 §5: what CAPA lists now; the one place that says what is advertised."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]  # RFC 2449 §6, RFC 3206
        if self.config.stls_available and not self.tls_active:
            caps.append("STLS")  # RFC 2595 §4
        if self.tls_active:
            # RFC 2595 §2.2: clear-text credentials only under TLS; so USER (RFC 2449 §6.2) and
            # SASL (RFC 2449 §6.3, RFC 5034 §3) appear once TLS is active. RFC 2449 §5 wants
            # AUTHORIZATION capabilities in TRANSACTION too, which holds: TRANSACTION implies TLS.
            caps.append("USER")
            if self.config.sasl_mechanisms:
                caps.append("SASL " + " ".join(m.upper() for m in self.config.sasl_mechanisms))
        if self.config.implementation:
            caps.append(f"IMPLEMENTATION {self.config.implementation}")  # RFC 2449 §6.9
        return caps

    @property
    def decision_pending(self) -> bool:
        """An event waits for accept/reject/login_succeeded/...: ``reject`` may be called now (it
        may not once ``begin_message`` has started a multi-line answer)."""
        return self._phase is _Phase.DECISION and isinstance(self._pending, _DECISIONS)

    # -- answers to pending events -----------------------------------------------------------

    def accept(self, text: str = "") -> None:
        """Accept a pending StartTLS or Update."""
        pending = self._pending
        if isinstance(pending, StartTLS) and self._phase is _Phase.DECISION:
            self._out += _ok(text or "Begin TLS negotiation")  # RFC 2595 §4
            self._pending = None
            self._phase = _Phase.TLS  # read nothing more until tls_started()
        elif isinstance(pending, Update) and self._phase is _Phase.DECISION:
            impl = self.config.implementation
            self._out += _ok(text or (f"{impl} POP3 server signing off" if impl else "signing off"))
            self._close()  # RFC 1939 §6: after UPDATE the connection is closed
        else:
            raise LocalProtocolError(f"accept() with {type(pending).__name__} pending")

    def reject(self, text: str, code: str | None = None) -> None:
        """Answer a pending decision with "-ERR [code] text" (RFC 2449 §8, RFC 3206)."""
        pending = self._pending
        if not isinstance(pending, _DECISIONS) or self._phase is not _Phase.DECISION:
            raise LocalProtocolError(f"reject() with {type(pending).__name__} pending")
        self._out += _err(text, code)
        self._pending = None
        if isinstance(pending, Update):
            self._close()  # RFC 1939 §6: -ERR "some deleted messages not removed", then close
            return
        if isinstance(pending, UserPass):
            self._user = None  # RFC 1939 §7: after a failed PASS, start again with USER
        self._phase = _Phase.READY

    def login_succeeded(self, drop: Sequence[DropEntry], *, username: str | None = None) -> None:
        """Credentials verified and maildrop locked: enter TRANSACTION (RFC 1939 §4).

        After SASL pass ``username`` (the mechanism's Success.username) so ``self.username`` is
        set; after USER/PASS it defaults to the USER name."""
        pending = self._pending
        if not isinstance(pending, UserPass | AuthStart | AuthResponse) or self._phase is not _Phase.DECISION:
            raise LocalProtocolError(f"login_succeeded() with {type(pending).__name__} pending")
        entries = tuple(drop)
        for entry in entries:
            if entry.size < 0:
                raise LocalProtocolError(f"negative message size {entry.size}")
            uid = entry.uid
            # RFC 1939 §7: unique-id = 1*70 characters in the range 0x21 to 0x7E (printable ASCII
            # is 0x20-0x7E, so: printable ASCII without the space)
            if not (1 <= len(uid) <= 70 and uid.isascii() and uid.isprintable() and " " not in uid):
                raise LocalProtocolError(f"invalid POP3 unique-id {entry.uid!r}")
        if len({entry.uid for entry in entries}) != len(entries):
            raise LocalProtocolError("duplicate POP3 unique-ids")  # RFC 1939 §7: unique
        self.username = username if username is not None else self._user
        self._user = None
        self._drop = entries
        self._deleted = set()
        self.state = State.TRANSACTION
        self._pending = None
        self._phase = _Phase.READY
        count, octets = self._totals()
        self._out += _ok(f"maildrop has {_messages(count)} ({octets} octets)")  # RFC 1939 §7 PASS

    def auth_challenge(self, data: bytes) -> None:
        """Send a SASL challenge (RFC 5034 §4: "+" SP base64; empty data is "+ " alone)."""
        pending = self._pending
        if not isinstance(pending, AuthStart | AuthResponse) or self._phase is not _Phase.DECISION:
            raise LocalProtocolError(f"auth_challenge() with {type(pending).__name__} pending")
        self._out += b"+ " + binascii.b2a_base64(data, newline=False) + CRLF
        self._pending = None
        self._phase = _Phase.SASL
        self._buffer.max_line = self.config.max_auth_line

    def tls_started(self) -> None:
        """The TLS handshake after STLS completed. Call it before feeding any decrypted bytes:
        everything buffered until now is discarded. The session must likewise drop plaintext it
        read ahead (e.g. in a StreamReader) before starting TLS."""
        if self._phase is not _Phase.TLS:
            raise LocalProtocolError("tls_started() without an accepted STLS")
        # RFC 2595 §4 (and the STARTTLS command-injection class of bugs): plaintext pipelined
        # after STLS must not be executed; the client must discard what it knew, and so do we.
        self._buffer.clear()
        self._user = None
        self.tls_active = True
        self._phase = _Phase.READY

    def begin_message(self) -> None:
        pending = self._pending
        if not isinstance(pending, Retrieve) or self._phase is not _Phase.DECISION:
            raise LocalProtocolError(f"begin_message() with {type(pending).__name__} pending")
        if pending.top_lines is None:
            # RFC 1939 §5 RETR: "+OK 120 octets"
            self._out += _ok(f"{self._drop[pending.index].size} octets")
        else:
            self._out += _ok("top of message follows")  # RFC 1939 §7 TOP
        self._writer = _MessageWriter(pending.top_lines)
        self._phase = _Phase.MESSAGE
        self.wants_more_message_data = True

    def message_data(self, chunk: bytes) -> None:
        writer = self._writer
        if writer is None or self._phase is not _Phase.MESSAGE:
            raise LocalProtocolError("message_data() outside begin_message()/end_message()")
        self._out += writer.write(chunk)
        self.wants_more_message_data = not writer.done

    def end_message(self) -> None:
        writer = self._writer
        if writer is None or self._phase is not _Phase.MESSAGE:
            raise LocalProtocolError("end_message() without begin_message()")
        self._out += writer.finish()
        self._writer = None
        self._pending = None
        self.wants_more_message_data = False
        self._phase = _Phase.READY

    # -- internals ---------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if isinstance(event, _DECISIONS):
            self._pending = event
            self._phase = _Phase.DECISION

    def _violation(self, reply: bytes, message: str) -> None:
        self._errors += 1
        if self._errors >= self.config.max_errors:
            reply = _err("too many errors, closing connection")
            self._out += reply
            self._events.append(ProtocolViolation(reply, message, fatal=True))
            self._close()
            return
        self._out += reply
        self._events.append(ProtocolViolation(reply, message))

    def _close(self) -> None:
        self.closed = True
        self._phase = _Phase.CLOSED
        self._pending = None
        self._writer = None
        self.wants_more_message_data = False
        self._buffer.clear()

    def _leave_sasl(self) -> None:
        if self._phase is _Phase.SASL:
            self._phase = _Phase.READY
            self._buffer.max_line = self.config.max_line

    def _sasl_line(self, line: bytes) -> None:
        self._leave_sasl()
        body = _strip_eol(line)
        if body == b"*":
            # RFC 5034 §4: "*" cancels; the server MUST reject the AUTH command with -ERR
            self._out += _err("authentication cancelled")
            self._events.append(AuthCancelled())
            return
        try:
            # RFC 5034 §4: the client response is a line of base64 (RFC 4648 §4); empty = no data
            data = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error as exc:
            raise _bad("invalid base64 in SASL response") from exc
        self._emit(AuthResponse(data))

    def _command_line(self, line: bytes) -> None:
        body = _strip_eol(line)
        # RFC 1939 §3: a case-insensitive keyword, then arguments separated by a single space
        raw_keyword, sep, rest = body.partition(b" ")
        keyword = raw_keyword.decode("ascii").upper() if raw_keyword.isalpha() else ""
        if keyword not in _KNOWN_COMMANDS:
            raise _bad("unknown command")
        if keyword not in COMMANDS[self.state]:
            raise _bad("command not valid in this state")
        self._handlers[keyword](rest if sep else None)

    def _totals(self) -> tuple[int, int]:
        live = [e.size for i, e in enumerate(self._drop) if i not in self._deleted]
        return len(live), sum(live)

    def _message(self, arg: bytes) -> int:
        """RFC 1939 §5: a message-number; deleted messages may not be referred to."""
        number = _parse_number(arg)
        if not 1 <= number <= len(self._drop):
            raise _bad("no such message")
        index = number - 1
        if index in self._deleted:
            raise _bad(f"message {number} is deleted")
        return index

    def _require_tls(self) -> None:
        if not self.tls_active:
            # RFC 2595 §2.2: refuse clear-text credentials until TLS is active (RFC 3206 [AUTH])
            raise _bad("TLS required", "AUTH")

    @staticmethod
    def _args(rest: bytes | None, low: int, high: int) -> list[bytes]:
        args = [] if rest is None else [a for a in rest.split(b" ") if a]
        if not low <= len(args) <= high:
            raise _bad("syntax error")
        return args

    @staticmethod
    def _text_arg(rest: bytes | None, what: str) -> str:
        """The rest of the line as one argument (RFC 1939 §7: spaces may be part of it)."""
        if not rest:
            raise _bad(f"missing {what}")
        if b"\0" in rest or b"\r" in rest:
            raise _bad(f"invalid characters in {what}")
        try:
            return rest.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"{what} is not UTF-8") from exc

    # -- AUTHORIZATION -----------------------------------------------------------------------

    def _cmd_user(self, rest: bytes | None) -> None:
        self._require_tls()
        name = self._text_arg(rest, "user name")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise _bad("invalid characters in user name")
        self._user = name
        # RFC 1939 §7 USER: the same answer for every name, so mailboxes cannot be enumerated
        self._out += _ok()

    def _cmd_pass(self, rest: bytes | None) -> None:
        self._require_tls()
        if self._user is None:
            raise _bad("no USER given")  # RFC 1939 §7: PASS only after a successful USER
        password = self._text_arg(rest, "password")
        self._emit(UserPass(self._user, password))

    def _cmd_auth(self, rest: bytes | None) -> None:
        self._require_tls()
        args = self._args(rest, 0, 2)
        mechanisms = [m.upper() for m in self.config.sasl_mechanisms]
        if not args:
            # Not in RFC 5034: the RFC 1734-era listing form (AUTH alone) older Outlook sends
            self._out += _ok() + b"".join(m.encode("ascii") + CRLF for m in mechanisms) + b".\r\n"
            return
        mechanism = args[0].decode("ascii", "replace").upper()
        if mechanism not in mechanisms:
            # RFC 5034 §4: an unsupported mechanism is rejected with a negative response
            raise _bad("unsupported authentication mechanism")
        initial: bytes | None = None
        if len(args) == 2:
            if args[1] == b"=":
                initial = b""  # RFC 5034 §4: "=" is a zero-length initial response
            else:
                try:
                    initial = binascii.a2b_base64(args[1], strict_mode=True)
                except binascii.Error as exc:
                    raise _bad("invalid base64 in initial response") from exc
        self._user = None
        self._emit(AuthStart(mechanism, initial))

    def _cmd_stls(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        if self.tls_active:
            raise _bad("command not permitted when TLS active")  # RFC 2595 §4
        if not self.config.stls_available:
            raise _bad("STLS not available")
        self._emit(StartTLS())

    def _cmd_capa(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        # RFC 2449 §5: +OK, one capability per line, "." terminator
        lines = b"".join(_line(cap) for cap in self.capabilities())
        self._out += _ok("Capability list follows") + lines + b".\r\n"

    def _cmd_quit(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        if self.state is State.AUTHORIZATION:
            # RFC 1939 §4: QUIT in AUTHORIZATION ends the session without entering UPDATE
            impl = self.config.implementation
            self._out += _ok(f"{impl} POP3 server signing off" if impl else "signing off")
            self._events.append(Quit())
            self._close()
            return
        # RFC 1939 §6: QUIT in TRANSACTION enters UPDATE; the marked messages are removed
        self.state = State.UPDATE
        deleted = tuple(sorted(self._deleted))
        self._emit(Update(deleted, tuple(self._drop[i].uid for i in deleted)))

    # -- TRANSACTION -------------------------------------------------------------------------

    def _cmd_stat(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        count, octets = self._totals()
        self._out += _ok(f"{count} {octets}")  # RFC 1939 §5 STAT: "+OK" SP count SP octets

    def _cmd_list(self, rest: bytes | None) -> None:
        args = self._args(rest, 0, 1)
        if args:
            index = self._message(args[0])
            self._out += _ok(f"{index + 1} {self._drop[index].size}")  # RFC 1939 §5 LIST msg
            return
        count, octets = self._totals()
        # RFC 1939 §5 LIST: a scan listing per message not marked as deleted
        self._out += _ok(f"{_messages(count)} ({octets} octets)")
        self._out += b"".join(
            b"%d %d\r\n" % (i + 1, e.size) for i, e in enumerate(self._drop) if i not in self._deleted
        )
        self._out += b".\r\n"

    def _cmd_uidl(self, rest: bytes | None) -> None:
        args = self._args(rest, 0, 1)
        if args:
            index = self._message(args[0])
            self._out += _ok(f"{index + 1} {self._drop[index].uid}")  # RFC 1939 §7 UIDL msg
            return
        # RFC 1939 §7 UIDL: one "msg uid" line per message not marked as deleted
        self._out += _ok()
        self._out += b"".join(
            b"%d %s\r\n" % (i + 1, e.uid.encode("ascii"))
            for i, e in enumerate(self._drop)
            if i not in self._deleted
        )
        self._out += b".\r\n"

    def _cmd_retr(self, rest: bytes | None) -> None:
        (arg,) = self._args(rest, 1, 1)
        index = self._message(arg)
        self._emit(Retrieve(index, self._drop[index].uid, None))

    def _cmd_top(self, rest: bytes | None) -> None:
        msg, lines = self._args(rest, 2, 2)  # RFC 1939 §7: TOP msg n, both required
        index = self._message(msg)
        self._emit(Retrieve(index, self._drop[index].uid, _parse_number(lines)))

    def _cmd_dele(self, rest: bytes | None) -> None:
        (arg,) = self._args(rest, 1, 1)
        index = self._message(arg)  # RFC 1939 §5: an already deleted message is an error
        self._deleted.add(index)
        self._out += _ok(f"message {index + 1} deleted")

    def _cmd_rset(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        self._deleted.clear()  # RFC 1939 §5 RSET: unmark every message marked as deleted
        count, octets = self._totals()
        self._out += _ok(f"maildrop has {_messages(count)} ({octets} octets)")

    def _cmd_noop(self, rest: bytes | None) -> None:
        self._args(rest, 0, 0)
        self._out += _ok()  # RFC 1939 §5 NOOP
