"""The sans-I/O IMAP server engine (h11 style): bytes in, events out, bytes to send.

    engine = IMAPServerEngine(IMAPServerConfig(...))
    engine.greeting()
    loop:
        engine.receive_data(await read())          # b"" at EOF
        while (event := engine.next_event()) not in (NEED_DATA, PAUSED):
            ... handle event, engine.send(response) ...
        await write(engine.data_to_send())

What the engine does on its own, so the session never has to:

- frames commands and literals (:mod:`receiver`), sends "+" for synchronizing literals, refuses
  what is too big, and consumes any literal it refuses so it never loses step (RFC 9051 §4.3,
  RFC 7888);
- answers BAD for syntax errors and for commands not valid in the current state (the state
  table is :mod:`states`), tagged when the tag could be read, else ``* BAD``;
- answers ``NO [PRIVACYREQUIRED]`` to LOGIN and AUTHENTICATE before TLS when
  ``login_requires_tls`` (RFC 9051 §6.2.3, LOGINDISABLED is advertised then) and BAD to STARTTLS
  when TLS is on or not offered;
- streams APPEND messages (``AppendBegin``/``AppendChunk``/``AppendEnd``), refusing one over the
  APPENDLIMIT with ``NO [TOOBIG]`` before the continuation (RFC 7889) or, for a
  non-synchronizing literal, after reading and dropping it;
- reads IDLE's DONE and AUTHENTICATE's responses (``*`` cancels: BAD, RFC 9051 §6.2.2);
- after ``Tagged OK`` to STARTTLS, stops reading until :meth:`tls_started`, which drops any
  plaintext pipelined behind STARTTLS (RFC 9051 §6.2.1; the command-injection attack of
  CVE-2011-0411 style).

Commands are handled one at a time: after a command event the engine is PAUSED until the session
sends that command's tagged response. The session changes the state with :meth:`logged_in`,
:meth:`selected`, :meth:`unselected` and :meth:`logout`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.imap.commands import Command
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendAborted,
    AppendBegin,
    AppendChunk,
    AppendEnd,
    AuthAborted,
    AuthResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ProtocolViolation,
    Sentinel,
)
from mailroom.wire.imap.parser import (
    COMMAND_NAMES,
    AppendMessage,
    Incomplete,
    ParseError,
    decode_base64,
    parse_append_head,
    parse_append_next,
    parse_command,
    peek_tag_and_name,
)
from mailroom.wire.imap.receiver import CommandReceiver, Line, LiteralChunk, LiteralData, NeedLiteral
from mailroom.wire.imap.responses import (
    Continuation,
    ContinuationData,
    FetchResponse,
    Response,
    ResponseCode,
    Tagged,
    Untagged,
)
from mailroom.wire.imap.states import State, allowed

__all__ = ["DEFAULT_EXTENSIONS", "NON_SYNC_LITERAL_MAX", "IMAPServerConfig", "IMAPServerEngine"]

NON_SYNC_LITERAL_MAX = 4096  # RFC 7888 (LITERAL-) and RFC 9051 §4.3

# Capabilities beyond IMAP4rev1 that the wire layer parses; the session must implement what it keeps.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    "IMAP4rev2",  # RFC 9051
    "SASL-IR",  # RFC 4959
    "ENABLE",  # RFC 5161
    "ID",  # RFC 2971
    "IDLE",  # RFC 2177
    "NAMESPACE",  # RFC 2342
    "UNSELECT",  # RFC 3691
    "UIDPLUS",  # RFC 4315
    "MOVE",  # RFC 6851
    "CHILDREN",  # RFC 3348
    "LIST-EXTENDED",  # RFC 5258
    "LIST-STATUS",  # RFC 5819
    "SPECIAL-USE",  # RFC 6154
    "CREATE-SPECIAL-USE",  # RFC 6154
    "ESEARCH",  # RFC 4731
    "SEARCHRES",  # RFC 5182
    "WITHIN",  # RFC 5032
    "CONDSTORE",  # RFC 7162
    "QRESYNC",  # RFC 7162
    "BINARY",  # RFC 3516
    "MULTIAPPEND",  # RFC 3502
    "UTF8=ACCEPT",  # RFC 6855
    "STATUS=SIZE",  # RFC 8438
)

# RFC 5161 capabilities a client may ENABLE here, in their canonical spelling
_ENABLEABLE = {
    "CONDSTORE": "CONDSTORE",
    "QRESYNC": "QRESYNC",
    "UTF8=ACCEPT": "UTF8=ACCEPT",
    "IMAP4REV2": "IMAP4rev2",
}


@dataclass(frozen=True, slots=True)
class IMAPServerConfig:
    tls_active: bool = False  # True from the start on implicit-TLS listeners (993)
    starttls_available: bool = True  # offer STARTTLS on a cleartext connection
    login_requires_tls: bool = True  # LOGINDISABLED and NO [PRIVACYREQUIRED] before TLS
    auth_mechanisms: tuple[str, ...] = ("PLAIN",)  # advertised as AUTH=...
    append_limit: int = 50 * 1024 * 1024  # APPENDLIMIT (RFC 7889); also settable per engine
    max_command_size: int = 64 * 1024  # lines + literals of one command, APPEND's messages excluded
    max_literals: int = 64  # literals in one command (APPEND's messages excluded)
    max_discard: int = 256 * 1024 * 1024  # a refused non-synchronizing literal larger than this closes
    literal_plus: bool = True  # LITERAL+ (RFC 7888); False advertises LITERAL- (<= 4096 octets)
    max_errors: int = 20  # consecutive BAD answers before "* BYE" and close
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS


class _Mode(enum.Enum):
    COMMAND = "command"  # reading a command's lines
    LITERAL = "literal"  # collecting a literal of the current command
    APPEND_DATA = "append data"  # streaming an APPEND message
    APPEND_TAIL = "append tail"  # the line after an APPEND message: end, or the next message
    WAIT = "wait"  # a command is with the session
    IDLE = "idle"  # "+ idling" sent: waiting for DONE
    AUTH = "auth"  # a SASL challenge sent: waiting for the client's line
    TLS = "tls"  # STARTTLS accepted: waiting for tls_started()
    CLOSED = "closed"


@dataclass
class _Cmd:
    """A command being received."""

    tag: str | None
    name: str | None
    raw: bytearray = field(default_factory=bytearray)
    size: int = 0
    literals: int = 0
    doom: Tagged | Untagged | None = None  # the answer owed once the command's bytes are consumed
    mailbox: str = ""  # APPEND
    messages: int = 0  # APPEND messages begun
    utf8_form: bool = False  # the current APPEND message came as UTF8 (~{n})


class IMAPServerEngine:
    """One IMAP server connection, without I/O."""

    def __init__(self, config: IMAPServerConfig | None = None) -> None:
        self.config = config if config is not None else IMAPServerConfig()
        self._rx = CommandReceiver(max_line=self.config.max_command_size)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._state = State.NOT_AUTHENTICATED
        self._mode = _Mode.COMMAND
        self._cmd: _Cmd | None = None
        self._pending_tag: str | None = None  # the command the session owes a tagged response
        self._pending_name = ""
        self._append_open: str | None = None  # tag of an APPEND whose messages the session spools
        self._stream_remaining = -1  # octets of a streamed FETCH literal still due; -1: none
        self._eof = False
        self._errors = 0
        self._closed_reason = ""
        self._enabled: set[str] = set()
        self._extensions = frozenset(e.upper() for e in self.config.extensions)
        self.tls_active = self.config.tls_active
        self.append_limit = self.config.append_limit
        self.read_only = False  # of the selected mailbox

    # --- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._mode is _Mode.CLOSED or self._state is State.LOGOUT

    @property
    def enabled(self) -> frozenset[str]:
        return frozenset(self._enabled)

    @property
    def utf8(self) -> bool:
        """UTF-8 mailbox names and strings (RFC 6855 UTF8=ACCEPT, RFC 9051 §5.1 IMAP4rev2)."""
        return "UTF8=ACCEPT" in self._enabled or "IMAP4rev2" in self._enabled

    def _auth_allowed(self) -> bool:
        return self.tls_active or not self.config.login_requires_tls

    def capabilities(self) -> tuple[str, ...]:
        """The CAPABILITY list for the current state: the one place deciding what we advertise."""
        cfg = self.config
        caps = ["IMAP4rev1"]
        ext = list(cfg.extensions)
        if "IMAP4rev2" in ext:
            caps.append("IMAP4rev2")
            ext.remove("IMAP4rev2")
        if self._state is State.NOT_AUTHENTICATED:
            if cfg.starttls_available and not self.tls_active:
                caps.append("STARTTLS")  # RFC 9051 §6.2.1
            if self._auth_allowed():
                caps.extend(f"AUTH={m.upper()}" for m in cfg.auth_mechanisms)
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3
        caps.append("LITERAL+" if cfg.literal_plus else "LITERAL-")
        caps.extend(ext)
        caps.append(f"APPENDLIMIT={self.append_limit}")  # RFC 7889
        return tuple(caps)

    def enable(self, names: Iterable[str]) -> tuple[str, ...]:
        """Apply an ENABLE (RFC 5161): returns the capabilities newly enabled, for ``* ENABLED``.
        QRESYNC also turns on CONDSTORE (RFC 7162)."""
        offered = {c.upper() for c in self.capabilities()}
        newly: list[str] = []
        for name in names:
            canon = _ENABLEABLE.get(name.upper())
            if canon is not None and canon.upper() in offered and canon not in self._enabled:
                self._enabled.add(canon)
                newly.append(canon)
        if "QRESYNC" in self._enabled:
            self._enabled.add("CONDSTORE")
        return tuple(newly)

    def logged_in(self) -> None:
        """LOGIN or AUTHENTICATE succeeded (send the tagged OK too)."""
        if self._state is not State.NOT_AUTHENTICATED:
            raise LocalProtocolError(f"logged_in() in state {self._state.value}")
        self._state = State.AUTHENTICATED

    def selected(self, read_only: bool = False) -> None:
        """SELECT/EXAMINE succeeded."""
        if self._state not in (State.AUTHENTICATED, State.SELECTED):
            raise LocalProtocolError(f"selected() in state {self._state.value}")
        self._state = State.SELECTED
        self.read_only = read_only

    def unselected(self) -> None:
        """CLOSE, UNSELECT, or a failed SELECT (RFC 9051 §6.3.2) left no mailbox selected."""
        if self._state not in (State.AUTHENTICATED, State.SELECTED):
            raise LocalProtocolError(f"unselected() in state {self._state.value}")
        self._state = State.AUTHENTICATED
        self.read_only = False

    def logout(self) -> None:
        """LOGOUT (or a server-side BYE): send ``* BYE`` and the tagged OK, flush, close."""
        self._state = State.LOGOUT

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS completed: forget buffered plaintext, read again."""
        if self._mode is not _Mode.TLS:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        self._rx.clear()
        self.tls_active = True
        self._mode = _Mode.COMMAND

    # --- output ---------------------------------------------------------------------------------

    def greeting(self, text: str = "mailroom ready", *, preauth: bool = False) -> None:
        """``greeting = "*" SP (resp-cond-auth / resp-cond-bye) CRLF`` with a CAPABILITY code."""
        if preauth:
            self._state = State.AUTHENTICATED
        status: Literal["OK", "PREAUTH"] = "PREAUTH" if preauth else "OK"
        self._out += Untagged(status, text, ResponseCode.capability(self.capabilities())).to_bytes()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send(self, response: Response) -> None:
        """Queue a response. A :class:`Tagged` one completes the pending command."""
        if self._mode is _Mode.CLOSED:
            return  # the engine already said BYE (or the peer left): drop it
        if self._stream_remaining >= 0:
            raise LocalProtocolError("a streamed FETCH literal is unfinished")
        if isinstance(response, Continuation | ContinuationData):
            raise LocalProtocolError("continuations come from accept_idle() and auth_challenge()")
        if isinstance(response, Tagged):
            if self._mode is not _Mode.WAIT or response.tag != self._pending_tag:
                raise LocalProtocolError(f"no command {response.tag!r} is waiting for its tagged response")
            starttls = self._pending_name == "STARTTLS" and response.status == "OK"
            self._pending_tag = None
            self._pending_name = ""
            self._mode = _Mode.TLS if starttls else _Mode.COMMAND
        self._out += response.to_bytes(utf8=self.utf8)
        if isinstance(response, FetchResponse) and (streamed := response.streamed) is not None:
            self._stream_remaining = streamed.size
            self._end_stream_if_done()

    def send_literal_data(self, data: bytes) -> None:
        """Octets of a :class:`StreamedLiteral` announced by the last FETCH response."""
        if self._stream_remaining < 0 or len(data) > self._stream_remaining:
            raise LocalProtocolError("more literal data than announced")
        self._out += data
        self._stream_remaining -= len(data)
        self._end_stream_if_done()

    def _end_stream_if_done(self) -> None:
        if self._stream_remaining == 0:
            self._out += b")\r\n"
            self._stream_remaining = -1

    def accept_idle(self, text: str = "idling") -> None:
        """Accept the pending IDLE (RFC 2177): ``+ idling``; the engine then reads DONE."""
        if self._mode is not _Mode.WAIT or self._pending_name != "IDLE":
            raise LocalProtocolError("no IDLE is waiting")
        self._out += Continuation(text).to_bytes()
        self._mode = _Mode.IDLE

    def auth_challenge(self, data: bytes = b"") -> None:
        """Send a SASL challenge (``+ base64``) for the pending AUTHENTICATE; the client's answer
        comes back as :class:`AuthResponse` (RFC 9051 §6.2.2)."""
        if self._mode is not _Mode.WAIT or self._pending_name != "AUTHENTICATE":
            raise LocalProtocolError("no AUTHENTICATE is waiting")
        self._out += ContinuationData(data).to_bytes()
        self._mode = _Mode.AUTH

    # --- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means the client closed its side."""
        if self._mode is _Mode.CLOSED or self._eof:
            return
        if not data:
            self._eof = True
            return
        self._rx.feed(data)

    def next_event(self) -> Event | Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self._mode is _Mode.CLOSED:
                return ConnectionClosed(self._closed_reason)
            if self._state is State.LOGOUT:
                return ConnectionClosed("logout")
            if self._mode in (_Mode.WAIT, _Mode.TLS):
                return PAUSED
            frame = self._rx.next_frame()
            if frame is None:
                if not self._eof:
                    return NEED_DATA
                self._abort_append("connection closed")
                midway = self._cmd is not None or self._rx.in_line or self._rx.in_literal
                self._close("EOF in the middle of a command" if midway else "EOF")
                continue
            mode = self._mode
            if isinstance(frame, LiteralData):
                self._on_literal_data(frame)
            elif isinstance(frame, LiteralChunk):
                self._on_append_chunk(frame)
            elif mode is _Mode.APPEND_TAIL:
                self._on_append_tail(frame)
            elif mode is _Mode.IDLE:
                self._on_idle_line(frame)
            elif mode is _Mode.AUTH:
                self._on_auth_line(frame)
            else:
                self._on_command_line(frame)

    # --- commands -------------------------------------------------------------------------------

    def _on_command_line(self, line: Line) -> None:
        cmd = self._cmd
        if cmd is None:
            if line.data == b"\r\n" and not line.overlong:
                return  # an empty line is not a command; ignore it as most servers do
            cmd = self._cmd = self._begin(line)
        if line.overlong:
            self._doom(cmd, "BAD", "Command line too long", ResponseCode.TOOBIG)
        elif cmd.doom is None:
            cmd.raw += line.data
            cmd.size += len(line.data)
            if cmd.size > self.config.max_command_size:
                self._doom(cmd, "BAD", "Command too long", ResponseCode.TOOBIG)
        if line.literal is None:
            self._complete(cmd)
        else:
            self._on_literal(cmd, line.literal)

    def _begin(self, line: Line) -> _Cmd:
        tag, name = peek_tag_and_name(line.data)
        cmd = _Cmd(tag, name)
        if tag is None:
            self._doom(cmd, "BAD", "Invalid tag")
        elif name is None:
            self._doom(cmd, "BAD", "Missing command")
        elif name not in COMMAND_NAMES:
            self._doom(cmd, "BAD", "Unknown command")
        elif not allowed(name, self._state):
            self._doom(cmd, "BAD", f"{name} is not valid in the {self._state.value} state")
        elif name in ("LOGIN", "AUTHENTICATE") and not self._auth_allowed():
            self._doom(cmd, "NO", "Use STARTTLS first", ResponseCode.PRIVACYREQUIRED)
        elif name == "STARTTLS" and (self.tls_active or not self.config.starttls_available):
            self._doom(cmd, "BAD", "STARTTLS is not available")
        return cmd

    def _doom(
        self, cmd: _Cmd, status: Literal["BAD", "NO"], text: str, code: ResponseCode | None = None
    ) -> None:
        if cmd.doom is None:
            cmd.doom = (
                Tagged(cmd.tag, status, text, code) if cmd.tag is not None else Untagged("BAD", text, code)
            )

    def _complete(self, cmd: _Cmd) -> None:
        """The command's last line arrived."""
        self._cmd = None
        if cmd.doom is not None:
            self._answer(cmd.doom)
            return
        try:
            command = parse_command(bytes(cmd.raw), utf8=self.utf8)
        except ParseError as exc:
            assert cmd.tag is not None
            self._answer(Tagged(cmd.tag, exc.status, exc.message, exc.code))
            return
        self._dispatch(command.tag, command.name, command)

    def _dispatch(self, tag: str, name: str, event: Command | AppendEnd) -> None:
        self._errors = 0
        self._pending_tag = tag
        self._pending_name = name
        self._mode = _Mode.WAIT
        self._events.append(event)

    def _on_literal(self, cmd: _Cmd, lit: NeedLiteral) -> None:
        if cmd.doom is None and cmd.name == "APPEND":
            try:
                _tag, mailbox, message = parse_append_head(bytes(cmd.raw), utf8=self.utf8)
            except Incomplete:
                pass  # this literal is the mailbox name
            except ParseError as exc:
                self._doom(cmd, exc.status, exc.message, exc.code)
            else:
                cmd.mailbox = mailbox
                self._begin_message(cmd, message, lit)
                return
        if cmd.doom is None:
            if not lit.synchronizing and not self.config.literal_plus and lit.size > NON_SYNC_LITERAL_MAX:
                self._doom(cmd, "BAD", "Non-synchronizing literal over 4096 octets", ResponseCode.TOOBIG)
            elif cmd.literals >= self.config.max_literals:
                self._doom(cmd, "BAD", "Too many literals", ResponseCode.LIMIT)
            elif cmd.size + lit.size > self.config.max_command_size:
                self._doom(cmd, "BAD", "Command too long", ResponseCode.TOOBIG)
        if cmd.doom is not None:
            self._refuse_literal(cmd, lit)
            return
        cmd.literals += 1
        if lit.synchronizing:
            self._out += Continuation("Ready for literal data").to_bytes()
        self._rx.read_literal(lit.size)
        self._mode = _Mode.LITERAL

    def _refuse_literal(self, cmd: _Cmd, lit: NeedLiteral) -> None:
        """A doomed command announced a literal."""
        self._mode = _Mode.COMMAND
        if lit.synchronizing:
            # RFC 9051 §4.3 / §7: a tagged answer instead of "+"; the client sends no octets and the
            # command ends here.
            self._complete(cmd)
        elif lit.size > self.config.max_discard:
            # The octets are already on their way and too many to read and drop: answer, then hang up.
            self._complete(cmd)
            self._close("Literal too large to skip")
        else:
            self._rx.discard_literal(lit.size)  # then read the rest of the command, still doomed

    def _on_literal_data(self, frame: LiteralData) -> None:
        cmd = self._cmd
        assert cmd is not None and self._mode is _Mode.LITERAL
        cmd.raw += frame.data
        cmd.size += len(frame.data)
        self._mode = _Mode.COMMAND

    # --- APPEND ---------------------------------------------------------------------------------

    def _begin_message(self, cmd: _Cmd, message: AppendMessage, lit: NeedLiteral) -> None:
        assert cmd.tag is not None
        if cmd.messages and "MULTIAPPEND" not in self._extensions:
            self._doom(cmd, "BAD", "MULTIAPPEND is not supported")
        elif not lit.synchronizing and not self.config.literal_plus and lit.size > NON_SYNC_LITERAL_MAX:
            self._doom(cmd, "BAD", "Non-synchronizing literal over 4096 octets", ResponseCode.TOOBIG)
        elif lit.size > self.append_limit:
            # RFC 7889 / RFC 9051 §7.1: before the continuation, so the client sends nothing
            self._doom(cmd, "NO", f"Message larger than {self.append_limit} octets", ResponseCode.TOOBIG)
        if cmd.doom is not None:
            self._abort_append(cmd.doom.text)
            self._refuse_literal(cmd, lit)
            return
        cmd.messages += 1
        cmd.utf8_form = message.utf8
        if lit.synchronizing:
            self._out += Continuation("Ready for message data").to_bytes()
        self._append_open = cmd.tag
        self._events.append(
            AppendBegin(
                cmd.tag, cmd.mailbox, message.flags, message.date, lit.size, message.binary, message.utf8
            )
        )
        self._rx.stream_literal(lit.size)
        self._mode = _Mode.APPEND_DATA

    def _on_append_chunk(self, frame: LiteralChunk) -> None:
        assert self._mode is _Mode.APPEND_DATA
        if frame.data:
            self._events.append(AppendChunk(frame.data))
        if frame.end:
            self._mode = _Mode.APPEND_TAIL

    def _on_append_tail(self, line: Line) -> None:
        cmd = self._cmd
        assert cmd is not None and cmd.tag is not None
        following: AppendMessage | None = None
        if line.overlong:
            self._doom(cmd, "BAD", "Command line too long", ResponseCode.TOOBIG)
        else:
            try:
                following = parse_append_next(line.data, after_utf8=cmd.utf8_form, utf8=self.utf8)
            except ParseError as exc:
                self._doom(cmd, exc.status, exc.message, exc.code)
        self._mode = _Mode.COMMAND
        if cmd.doom is not None:
            self._abort_append(cmd.doom.text)
            if line.literal is None:
                self._complete(cmd)
            else:
                self._refuse_literal(cmd, line.literal)
            return
        if following is None:
            self._cmd = None
            self._append_open = None
            self._dispatch(cmd.tag, "APPEND", AppendEnd(cmd.tag, last=True))
            return
        assert line.literal is not None  # parse_append_next demands the announcement at the end
        self._events.append(AppendEnd(cmd.tag, last=False))
        self._begin_message(cmd, following, line.literal)

    def _abort_append(self, reason: str) -> None:
        if self._append_open is not None:
            self._events.append(AppendAborted(self._append_open, reason))
            self._append_open = None

    # --- IDLE and AUTHENTICATE ------------------------------------------------------------------

    def _on_idle_line(self, line: Line) -> None:
        tag = self._pending_tag
        assert tag is not None
        if not line.overlong and line.literal is None and line.data.upper() == b"DONE\r\n":
            self._mode = _Mode.WAIT  # RFC 2177: the session now sends the tagged OK
            self._events.append(IdleDone(tag, ok=True))
            return
        self._events.append(IdleDone(tag, ok=False))
        self._end_exchange(Tagged(tag, "BAD", "Expected DONE"), line)

    def _on_auth_line(self, line: Line) -> None:
        tag = self._pending_tag
        assert tag is not None
        text = line.data[:-2]
        if line.overlong or line.literal is not None:
            reason = "Invalid AUTHENTICATE response"
        elif text == b"*":
            reason = "AUTHENTICATE cancelled"
        else:
            try:
                data = decode_base64(text)
            except ParseError:
                reason = "Invalid base64"
            else:
                self._mode = _Mode.WAIT
                self._events.append(AuthResponse(tag, data))
                return
        # RFC 9051 §6.2.2: "*" or invalid BASE64 -> tagged BAD
        self._events.append(AuthAborted(tag, reason))
        self._end_exchange(Tagged(tag, "BAD", reason), line)

    def _end_exchange(self, answer: Tagged, line: Line) -> None:
        self._pending_tag = None
        self._pending_name = ""
        self._mode = _Mode.COMMAND
        self._answer(answer)
        lit = line.literal
        if lit is not None and not lit.synchronizing and self._mode is not _Mode.CLOSED:
            if lit.size > self.config.max_discard:
                self._close("Literal too large to skip")
            else:
                self._rx.discard_literal(lit.size)

    # --- answers of our own ---------------------------------------------------------------------

    def _answer(self, response: Tagged | Untagged) -> None:
        data = response.to_bytes(utf8=self.utf8)
        self._out += data
        self._events.append(ProtocolViolation(data, response.text))
        if response.status == "BAD":
            self._errors += 1
            if self._errors > self.config.max_errors:
                self._close("Too many invalid commands")

    def _close(self, reason: str) -> None:
        if self._mode is _Mode.CLOSED:
            return
        self._abort_append(reason)
        if not reason.startswith("EOF"):
            bye = Untagged("BYE", reason).to_bytes()
            self._out += bye
            self._events.append(ProtocolViolation(bye, reason))
        self._cmd = None
        self._mode = _Mode.CLOSED
        self._closed_reason = reason
