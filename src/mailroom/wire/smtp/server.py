"""Sans-I/O SMTP server engine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
ENHANCEDSTATUSCODES, CHUNKING/BINARYMIME, DSN, STARTTLS and AUTH).

The session feeds bytes with :meth:`receive_data`, pulls events with :meth:`next_event`, answers
the events that need a decision with :meth:`accept` / :meth:`reject` / :meth:`auth_challenge`, and
writes :meth:`data_to_send` to the socket. The engine answers protocol errors by itself.

Invariants the session can rely on:

- Commands are processed strictly in order (RFC 2920 §3.2); while a decision is pending
  :meth:`next_event` returns ``PAUSED`` and later input waits in the buffer.
- Every ``DataStart`` is followed by exactly one ``BodyEnd`` or ``BodyAborted`` (a RSET, EHLO,
  QUIT, EOF or error close during a BDAT transfer yields ``BodyAborted`` before its own event).
- After close (QUIT, EOF, too many errors, a 421 rejection) :meth:`next_event` returns
  ``ConnectionClosed()`` forever and input is ignored.
- No input, however hostile, raises; misuse by the session raises ``LocalProtocolError``.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass

from mailroom.wire.buffer import ReceiveBuffer
from mailroom.wire.errors import LineTooLongError, LocalProtocolError
from mailroom.wire.smtp import replies as R
from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BodyAborted,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Event,
    Hello,
    MailFrom,
    MailParams,
    ProtocolViolation,
    Quit,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
)
from mailroom.wire.smtp.replies import Reply, SMTPError, syntax_error
from mailroom.wire.smtp.state import SEQUENCE, VERBS, State
from mailroom.wire.smtp.syntax import (
    BAD_RECIPIENT,
    BAD_SENDER,
    MAIL_USAGE,
    RCPT_USAGE,
    decode_base64,
    parse_auth,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
)

__all__ = ["SMTPServerEngine", "ServerConfig", "State"]

# RFC 4954 §4: an AUTH command line (with its initial response) may be up to 12288 octets.
AUTH_LINE_MAX = 12288
# Body bytes handled per step: bounds the size of one BodyChunk.
_CHUNK = 65536
# RFC 1870 §3 size-value is at most 20 digits; BDAT sizes get the same bound.
_MAX_DIGITS = 20

_CR_OR_LF = re.compile(rb"[\r\n]")
# Control characters other than the line ending have no place in a command line.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_FROM = re.compile(r"FROM:", re.IGNORECASE)
_TO = re.compile(r"TO:", re.IGNORECASE)


class _Pending(enum.Enum):
    HELLO = "hello"
    MAIL = "mail"
    RCPT = "rcpt"
    BODY = "body"
    STARTTLS = "starttls"
    AUTH = "auth"


class _Dot(enum.IntEnum):
    """Position inside a DATA body, carried across receive_data() calls."""

    BOL = 0  # at the start of a line (after CRLF, or right after the 354)
    DOT = 1  # a "." at the start of a line, withheld
    DOT_CR = 2  # "." CR at the start of a line, withheld: LF next ends the body
    MID = 3  # inside a line
    CR = 4  # a CR inside a line, withheld until we know whether LF follows


@dataclass(frozen=True)
class ServerConfig:
    hostname: str
    max_message_size: int  # SIZE advertised and enforced while streaming
    tls_active: bool = False  # True from the start on implicit-TLS listeners (465)
    starttls_available: bool = False
    auth_mechanisms: tuple[str, ...] = ()  # advertised only when AUTH is allowed in the current state
    auth_requires_tls: bool = True
    auth_required: bool = False  # submission: MAIL before AUTH -> 530 5.7.0
    max_recipients: int = 100  # beyond: 452 4.5.3 (RFC 5321 §4.5.3.1.8)
    max_command_line: int = 4096
    max_errors: int = 20  # then 421 4.7.0 and close
    max_junk_commands: int = (
        100  # NOOP/HELP/VRFY/EXPN/RSET beyond this count as errors (Postfix smtpd_junk_command_limit)
    )
    forbid_bare_lf: bool = True  # bare LF / bare CR in DATA rejects the message (SMTP smuggling)
    dsn: bool = True


class SMTPServerEngine:
    """One SMTP server connection, without I/O."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        max_line = config.max_command_line
        if config.auth_mechanisms:
            max_line = max(max_line, AUTH_LINE_MAX)
        self._buf = ReceiveBuffer(max_line=max_line)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._state = State.INITIAL
        self._pending: _Pending | None = None
        self._pending_verb = "EHLO"
        self._pending_mail: MailParams | None = None
        self._eof = False
        self._errors = 0
        self._junk = 0
        self.tls_active = config.tls_active
        self.authenticated = False
        self.esmtp = False  # the accepted hello was EHLO
        self.recipient_count = 0
        self.mail_params: MailParams | None = None  # of the open transaction
        # Body state, shared by DATA and BDAT.
        self._body_open = False  # DataStart emitted, no BodyEnd/BodyAborted yet
        self._body_size = 0
        self._too_big = False
        self._bare: str | None = None  # "LF" or "CR": first bare line-break character seen
        self._dot = _Dot.BOL
        # BDAT chunk in progress.
        self._bdat_remaining = 0
        self._bdat_chunk = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None  # consume the octets, then send this
        self._bdat_return = State.READY

    # --- public surface ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    def capabilities(self) -> list[str]:
        """The EHLO keywords for the current state: the single place that decides what we offer."""
        cfg = self.config
        caps = [
            "PIPELINING",  # RFC 2920
            f"SIZE {cfg.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
            "BINARYMIME",  # RFC 3030
        ]
        if cfg.dsn:
            caps.append("DSN")  # RFC 3461
        if cfg.starttls_available and not self.tls_active:
            caps.append("STARTTLS")  # RFC 3207
        if self._auth_allowed():
            caps.append("AUTH " + " ".join(m.upper() for m in cfg.auth_mechanisms))  # RFC 4954
        return caps

    def greeting(self) -> None:
        # RFC 5321 §4.2: the greeting carries no enhanced code (RFC 2034 §3).
        self._send(Reply(220, None, (f"{self.config.hostname} ESMTP mailroom",)))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self.closed or self._eof:
            return
        if not data:
            self._eof = True
            return
        self._buf.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return PAUSED
            if self._state is State.CLOSED:
                return ConnectionClosed()
            if self._state is State.TLS:
                if self._eof:
                    self._close()
                    continue
                return PAUSED
            if not self._step():
                if not self._eof:
                    return NEED_DATA
                self._close("connection closed by peer")

    def accept(self, text: str | None = None) -> None:
        """Give the positive answer to the pending decision (``text`` replaces the default text)."""
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("no decision is pending")
        try:
            answer = self._positive_reply(pending, text)
        except ValueError as exc:
            # The decision stays pending: the session may still answer it properly.
            raise LocalProtocolError(f"bad reply text: {exc}") from exc
        self._pending = None
        self._send(answer)
        if pending is _Pending.HELLO:
            self.esmtp = self._pending_verb == "EHLO"
            self._state = State.READY
        elif pending is _Pending.MAIL:
            self.mail_params = self._pending_mail
            self._state = State.MAIL
        elif pending is _Pending.RCPT:
            self.recipient_count += 1
            self._state = State.RCPT
        elif pending is _Pending.BODY:
            self._body_open = False
            self._end_transaction()
        elif pending is _Pending.STARTTLS:
            # RFC 3207 §4: after 220 the TLS handshake starts at once; nothing buffered counts.
            self._buf.clear()
            self._state = State.TLS
        else:
            self.authenticated = True
            self._state = State.READY

    def _positive_reply(self, pending: _Pending, text: str | None) -> Reply:
        if pending is _Pending.HELLO:
            first = self.config.hostname + (f" {text}" if text else "")
            if self._pending_verb == "EHLO":
                # RFC 5321 §4.1.1.1: the EHLO reply lists one extension keyword per line.
                return Reply(250, None, (first, *self.capabilities()))
            return Reply(250, None, (first,))
        base = {
            _Pending.MAIL: R.MAIL_OK,
            _Pending.RCPT: R.RCPT_OK,
            _Pending.BODY: R.QUEUED,
            _Pending.STARTTLS: R.READY_TLS,  # RFC 3207 §4: 220 Ready to start TLS
            _Pending.AUTH: R.AUTH_OK,  # RFC 4954 §6: 235 2.7.0
        }[pending]
        return base if text is None else Reply(base.code, base.enhanced, (text,))

    def reject(self, reply: Reply) -> None:
        """Give a negative answer (4xx/5xx) to the pending decision. A 421 also closes."""
        if reply.code < 400:
            raise LocalProtocolError(f"reject() needs a 4xx or 5xx reply, got {reply.code}")
        pending = self._take_pending()
        self._send(reply)
        if pending is _Pending.HELLO:
            self._state = State.INITIAL
        elif pending is _Pending.MAIL:
            self._state = State.READY
        elif pending is _Pending.BODY:
            # RFC 5321 §4.1.1.4: the transaction ends whatever the answer to the body.
            self._body_open = False
            self._end_transaction()
        elif pending is _Pending.AUTH:
            self._state = State.READY
        # RCPT: a rejected recipient is not counted and the state is unchanged; STARTTLS: unchanged.
        if reply.code == 421:
            # RFC 5321 §3.8: 421 means the server is closing the connection.
            self._close("closed after 421 reply")

    def auth_challenge(self, data: bytes) -> None:
        """Send ``334 base64(data)``; the next line is read as an AuthResponse (RFC 4954 §4)."""
        if self._pending is not _Pending.AUTH:
            raise LocalProtocolError("auth_challenge() without a pending AUTH decision")
        self._pending = None
        self._out += b"334 " + base64.b64encode(data) + b"\r\n"
        self._state = State.AUTH

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS completed."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        # RFC 3207 §4.2: discard any knowledge obtained from the client before TLS, and any
        # plaintext pipelined after STARTTLS (CVE-2011-0411 command injection).
        self._buf.clear()
        self._reset_transaction()
        self.tls_active = True
        self.authenticated = False
        self.esmtp = False
        self._state = State.INITIAL

    # --- internals: output, errors, pending ------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _take_pending(self) -> _Pending:
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("no decision is pending")
        self._pending = None
        return pending

    def _decide(self, kind: _Pending, event: Event) -> None:
        self._pending = kind
        self._events.append(event)

    def _error(self, reply: Reply, message: str, *, counts: bool = True) -> None:
        if counts:
            self._errors += 1
            if self._errors > self.config.max_errors:
                self._send(R.TOO_MANY_ERRORS)
                self._events.append(ProtocolViolation(R.TOO_MANY_ERRORS, f"too many errors; last: {message}"))
                self._close("too many errors")
                return
        self._send(reply)
        self._events.append(ProtocolViolation(reply, message))

    def _junk_command(self) -> bool:
        """Count a NOOP/HELP/VRFY/EXPN/RSET; past the junk limit each one is also an error, so a
        peer cannot hold a connection open forever with them. False: the session was closed."""
        self._junk += 1
        if self._junk <= self.config.max_junk_commands:
            return True
        self._errors += 1
        if self._errors > self.config.max_errors:
            self._send(R.TOO_MANY_ERRORS)
            self._events.append(ProtocolViolation(R.TOO_MANY_ERRORS, "too many junk commands"))
            self._close("too many junk commands")
            return False
        return True

    def _close(self, reason: str = "connection closed") -> None:
        self._abort_body(reason)
        self._pending = None
        self._buf.clear()
        self._state = State.CLOSED

    def _abort_body(self, reason: str, reply: Reply | None = None) -> None:
        if self._body_open:
            self._body_open = False
            self._events.append(BodyAborted(reason, reply))

    def _reset_transaction(self) -> None:
        """RFC 5321 §4.1.1.5: drop the envelope and any partial body."""
        self.recipient_count = 0
        self.mail_params = None
        self._pending_mail = None
        self._body_open = False
        self._body_size = 0
        self._too_big = False
        self._bare = None
        self._dot = _Dot.BOL

    def _end_transaction(self) -> None:
        self._reset_transaction()
        self._state = State.READY

    def _auth_allowed(self) -> bool:
        cfg = self.config
        return (
            bool(cfg.auth_mechanisms)
            and not self.authenticated
            and (self.tls_active or not cfg.auth_requires_tls)
        )

    # --- the input loop ------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Consume some input; False when nothing complete is buffered."""
        if self._state is State.DATA:
            return self._read_data()
        if self._state is State.BDAT:
            return self._read_bdat()
        try:
            line = self._buf.next_line()
        except LineTooLongError:
            if self._state is State.AUTH:
                # RFC 4954 §6: 500 5.5.6 Authentication Exchange line is too long.
                self._state = State.READY
                self._error(R.AUTH_LINE_TOO_LONG, "AUTH response line too long")
            else:
                # RFC 5321 §4.5.3.1.4 / §4.2.4: 500 Line too long.
                self._error(R.LINE_TOO_LONG, "command line too long")
            return True
        if line is None:
            return False
        if self._state is State.AUTH:
            self._auth_response(_strip_eol(line))
        else:
            self._command(line)
        return True

    def _command(self, line: bytes) -> None:
        raw = _strip_eol(line)
        verb_b, _, args_b = raw.partition(b" ")
        verb = verb_b.decode("ascii").upper() if verb_b.isalpha() else ""
        if b"\0" in raw:
            self._error(R.NUL_IN_COMMAND, "NUL byte in command")
            return
        if verb not in _HANDLERS:
            self._error(R.UNKNOWN_COMMAND, f"unknown command {_show(verb_b)}")
            return
        if verb != "AUTH" and len(line) > self.config.max_command_line:
            self._error(R.LINE_TOO_LONG, "command line too long")
            return
        # RFC 5321 §2.3.8 / §4.1.1: no control characters (a bare CR in particular) in commands.
        if _CONTROL.search(args_b):
            self._error(R.BAD_CHARACTER, f"control character in {verb}")
            return
        try:
            # RFC 6531 §3.3: arguments may be UTF-8; anything else is a syntax error.
            args = args_b.decode("utf-8")
        except UnicodeDecodeError:
            self._error(syntax_error("Invalid UTF-8 in command"), f"invalid UTF-8 in {verb}")
            return
        try:
            _HANDLERS[verb](self, args)
        except SMTPError as exc:
            self._error(exc.smtp_reply, f"{verb}: {exc.message}", counts=exc.counts)

    def _check_sequence(self, verb: str) -> None:
        reply = SEQUENCE[(self._state, verb)]
        if reply is not None:
            raise SMTPError(reply, f"out of sequence in state {self._state.value}")

    # --- command handlers (each may raise SMTPError) ---------------------------------------------

    def _cmd_hello(self, verb: str, args: str) -> None:
        # RFC 5321 §4.1.1.1: ehlo = "EHLO" SP ( Domain / address-literal ). The name is checked
        # by policy, not here: real clients send bare names, underscores and worse.
        name = args.strip(" ")
        if not name:
            raise SMTPError(syntax_error(f"Syntax: {verb} <hostname>"))
        # RFC 5321 §4.1.4: a hello in the middle of a session resets it like RSET.
        self._abort_body(f"transaction reset by {verb}")
        self._reset_transaction()
        self._state = State.INITIAL
        self._pending_verb = verb
        self._decide(_Pending.HELLO, Hello("EHLO" if verb == "EHLO" else "HELO", name))

    def _cmd_ehlo(self, args: str) -> None:
        self._cmd_hello("EHLO", args)

    def _cmd_helo(self, args: str) -> None:
        self._cmd_hello("HELO", args)

    def _cmd_mail(self, args: str) -> None:
        self._check_sequence("MAIL")
        if self.config.auth_required and not self.authenticated:
            # RFC 4954 §6: 530 5.7.0 Authentication required.
            raise SMTPError(R.AUTH_REQUIRED, counts=False)
        # RFC 5321 §4.1.1.2: mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF.
        # Lenient: spaces after the colon ("MAIL FROM: <a@b>"), as sent by many real clients.
        if not _FROM.match(args):
            raise SMTPError(syntax_error(MAIL_USAGE))
        pos = _skip_spaces(args, 5)
        path = parse_path(args, pos, reverse=True)
        if path is None:
            raise SMTPError(BAD_SENDER if args[pos : pos + 1] == "<" else syntax_error(MAIL_USAGE))
        rest = args[path.end :]
        if rest and not rest.startswith(" "):
            raise SMTPError(syntax_error(MAIL_USAGE))
        params = parse_mail_params(rest, dsn=self.config.dsn, auth=bool(self.config.auth_mechanisms))
        if params.size is not None and params.size > self.config.max_message_size:
            # RFC 1870 §6.1: 552 when the declared size exceeds the fixed maximum.
            raise SMTPError(R.SIZE_EXCEEDED, counts=False)
        if not params.smtputf8 and not path.address.isascii():
            # RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter: 553 5.6.7.
            raise SMTPError(R.NON_ASCII_ADDRESS, counts=False)
        self._pending_mail = params
        self._decide(_Pending.MAIL, MailFrom(path.address, params))

    def _cmd_rcpt(self, args: str) -> None:
        self._check_sequence("RCPT")
        # RFC 5321 §4.1.1.3: rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" /
        #   Forward-path ) [SP Rcpt-parameters] CRLF
        if not _TO.match(args):
            raise SMTPError(syntax_error(RCPT_USAGE))
        pos = _skip_spaces(args, 3)
        path = parse_path(args, pos, reverse=False)
        if path is None:
            raise SMTPError(BAD_RECIPIENT if args[pos : pos + 1] == "<" else syntax_error(RCPT_USAGE))
        rest = args[path.end :]
        if rest and not rest.startswith(" "):
            raise SMTPError(syntax_error(RCPT_USAGE))
        params = parse_rcpt_params(rest, dsn=self.config.dsn)
        if self.recipient_count >= self.config.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 too many recipients (the client sends the rest later).
            raise SMTPError(R.TOO_MANY_RECIPIENTS, counts=False)
        mail = self.mail_params
        if not (mail is not None and mail.smtputf8) and not path.address.isascii():
            # RFC 6531 §3.4: non-ASCII recipient without SMTPUTF8 on MAIL: 553 5.6.7.
            raise SMTPError(R.NON_ASCII_ADDRESS, counts=False)
        self._decide(_Pending.RCPT, RcptTo(path.address, params))

    def _cmd_data(self, args: str) -> None:
        # RFC 5321 §4.1.1.4: data = "DATA" CRLF
        if args:
            raise SMTPError(syntax_error("Syntax: DATA"))
        self._check_sequence("DATA")
        if self.mail_params is not None and self.mail_params.body == "BINARYMIME":
            # RFC 3030 §3: a BINARYMIME body can only be sent with BDAT.
            raise SMTPError(R.BINARYMIME_NEEDS_BDAT)
        self._send(R.START_DATA)
        self._start_body(chunking=False)
        self._state = State.DATA

    def _cmd_bdat(self, args: str) -> None:
        # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF;
        #   chunk-size = 1*DIGIT; end-marker = "LAST"
        parts = args.split(" ")
        size_s = parts[0]
        if (
            not 1 <= len(parts) <= 2
            or not (size_s.isascii() and size_s.isdigit())
            or len(size_s) > _MAX_DIGITS
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            # The chunk length is unknown, so nothing can be skipped: the next line is a command.
            raise SMTPError(syntax_error("Syntax: BDAT <size> [LAST]"))
        self._bdat_remaining = int(size_s)
        self._bdat_last = len(parts) == 2
        self._bdat_chunk = self._bdat_remaining
        refusal = SEQUENCE[(self._state, "BDAT")]
        self._bdat_return = self._state
        # RFC 3030 §2: the octets of a refused BDAT are still read before the error reply.
        self._bdat_refusal = refusal
        if refusal is None and self._state is not State.CHUNKING:
            self._start_body(chunking=True)
        self._state = State.BDAT

    def _cmd_rset(self, args: str) -> None:
        # RFC 5321 §4.1.1.5: rset = "RSET" CRLF; the EHLO state survives.
        if args:
            raise SMTPError(syntax_error("Syntax: RSET"))
        if not self._junk_command():
            return
        self._abort_body("transaction reset by RSET")
        greeted = self._state is not State.INITIAL
        self._reset_transaction()
        self._state = State.READY if greeted else State.INITIAL
        self._send(R.RESET_OK)
        self._events.append(Reset())

    def _cmd_noop(self, args: str) -> None:
        # RFC 5321 §4.1.1.9: noop = "NOOP" [ SP String ] CRLF; the argument is ignored.
        if self._junk_command():
            self._send(R.OK)

    def _cmd_help(self, args: str) -> None:
        # RFC 5321 §4.1.1.8: help = "HELP" [ SP String ] CRLF
        if self._junk_command():
            self._send(R.HELP)

    def _cmd_vrfy(self, args: str) -> None:
        # RFC 5321 §4.1.1.6: vrfy = "VRFY" SP String CRLF. §7.3: never confirm addresses;
        # §3.5.3: 252 says "not verified, but I will try to deliver".
        if not args.strip(" "):
            raise SMTPError(syntax_error("Syntax: VRFY <address>"))
        if self._junk_command():
            self._send(R.VRFY_NO)

    def _cmd_expn(self, args: str) -> None:
        # RFC 5321 §3.5.2 / §7.3: EXPN may be disabled; 502 says so without revealing anything.
        if self._junk_command():
            self._send(R.EXPN_NO)

    def _cmd_quit(self, args: str) -> None:
        # RFC 5321 §4.1.1.10: quit = "QUIT" CRLF; 221, then the server closes.
        if args:
            raise SMTPError(syntax_error("Syntax: QUIT"))
        self._send(R.BYE)
        self._abort_body("connection closed by QUIT")
        self._events.append(Quit())
        self._close()

    def _cmd_starttls(self, args: str) -> None:
        if not self.config.starttls_available:
            raise SMTPError(R.NOT_IMPLEMENTED, "STARTTLS not offered")
        if self.tls_active:
            # RFC 3207 §4: STARTTLS is not offered (and not allowed) once TLS is active.
            raise SMTPError(R.TLS_ACTIVE)
        # RFC 3207 §4: starttls = "STARTTLS" CRLF; "501 Syntax error (no parameters allowed)".
        if args:
            raise SMTPError(syntax_error("Syntax error (no parameters allowed)"))
        self._check_sequence("STARTTLS")
        self._decide(_Pending.STARTTLS, StartTLS())

    def _cmd_auth(self, args: str) -> None:
        cfg = self.config
        if not cfg.auth_mechanisms:
            raise SMTPError(R.NOT_IMPLEMENTED, "AUTH not offered")
        if self.authenticated:
            # RFC 4954 §4: after a successful AUTH, further AUTH commands get 503.
            raise SMTPError(R.ALREADY_AUTHENTICATED)
        self._check_sequence("AUTH")
        if cfg.auth_requires_tls and not self.tls_active:
            # RFC 4954 §4/§6: 538 5.7.11 Encryption required for requested authentication mechanism.
            # Checked before parsing so plaintext credentials are not even decoded.
            raise SMTPError(R.ENCRYPTION_REQUIRED, counts=False)
        mechanism, initial = parse_auth(args)
        if mechanism not in (m.upper() for m in cfg.auth_mechanisms):
            # RFC 4954 §4: 504 5.5.4 for an unsupported mechanism.
            raise SMTPError(R.UNKNOWN_MECHANISM, f"unknown mechanism {mechanism}", counts=False)
        self._decide(_Pending.AUTH, AuthStart(mechanism, initial))

    def _auth_response(self, raw: bytes) -> None:
        self._state = State.READY
        if raw == b"*":
            # RFC 4954 §4: "*" cancels the exchange; the server answers 501.
            self._error(R.AUTH_CANCELLED, "AUTH cancelled by client", counts=False)
            return
        try:
            data = decode_base64(raw.decode("ascii"))
        except (UnicodeDecodeError, SMTPError):
            # RFC 4954 §4: a response that is not valid base64 is rejected with 501.
            self._error(R.BAD_BASE64, "invalid base64 in AUTH response")
            return
        self._decide(_Pending.AUTH, AuthResponse(data))

    # --- bodies ------------------------------------------------------------------------------------------

    def _start_body(self, *, chunking: bool) -> None:
        self._body_open = True
        self._body_size = 0
        self._too_big = False
        self._bare = None
        self._dot = _Dot.BOL
        self._events.append(DataStart(chunking=chunking))

    def _admit(self, n: int) -> int:
        """Account ``n`` body octets; return how many of them may still be emitted.

        RFC 1870 §6.3: past the limit nothing more is emitted (the body is still read to its end).
        Emission stops exactly at the limit, so the events do not depend on how input was split.
        """
        if self._too_big:
            return 0
        room = self.config.max_message_size - self._body_size
        self._body_size += n
        if n > room:
            self._too_big = True
            return room
        return n

    def _read_data(self) -> bool:
        """Stream a DATA body: RFC 5321 §4.5.2 dot-unstuffing, ending only at CRLF "." CRLF."""
        data = self._buf.take(_CHUNK)
        if not data:
            return False
        out: list[bytes] = []
        st = self._dot
        i = 0
        n = len(data)
        end = -1
        while i < n:
            if st is _Dot.MID or (st is _Dot.BOL and data[i] != 0x2E):
                # Fast path: every line up to the next CRLF "." at once, when the run holds only
                # CRLF line ends (count() runs in C); otherwise the exact state machine below.
                k = data.find(b"\r\n.", i)
                stop = seg_end = n if k < 0 else k + 2
                tail = _Dot.BOL
                if k < 0:
                    if data.endswith(b"\r"):
                        seg_end, tail = n - 1, _Dot.CR
                    elif not data.endswith(b"\r\n"):
                        tail = _Dot.MID
                seg = data[i:seg_end]
                crlf = seg.count(b"\r\n")
                if seg.count(b"\r") == crlf and seg.count(b"\n") == crlf:
                    out.append(seg)
                    i, st = stop, tail
                    continue
                st = _Dot.MID
            if st is _Dot.MID:
                m = _CR_OR_LF.search(data, i)
                if m is None:
                    out.append(data[i:])
                    i = n
                    break
                j = m.start()
                if data[j] == 0x0A:
                    # RFC 5321 §2.3.8: a bare LF is not a line ending (SMTP smuggling defence).
                    self._saw_bare("LF")
                    out.append(data[i : j + 1])
                    i = j + 1
                elif j + 1 < n and data[j + 1] == 0x0A:
                    out.append(data[i : j + 2])
                    i = j + 2
                    st = _Dot.BOL
                else:
                    out.append(data[i:j])
                    i = j + 1
                    st = _Dot.CR
            elif st is _Dot.BOL:
                if data[i] == 0x2E:
                    st = _Dot.DOT
                    i += 1
                else:
                    st = _Dot.MID
            elif st is _Dot.DOT:
                if data[i] == 0x0D:
                    st = _Dot.DOT_CR
                    i += 1
                else:
                    # RFC 5321 §4.5.2: a line starting with "." has that first "." removed.
                    st = _Dot.MID
            elif st is _Dot.DOT_CR:
                if data[i] == 0x0A:
                    # RFC 5321 §4.1.1.4: the body ends with CRLF "." CRLF (the first CRLF is
                    # the end of the last line, or of the DATA command itself).
                    end = i + 1
                    break
                # "." CR followed by something else: the dot was stuffing; the CR is bare.
                self._saw_bare("CR")
                out.append(b"\r")
                st = _Dot.MID
            else:  # _Dot.CR
                if data[i] == 0x0A:
                    out.append(b"\r\n")
                    i += 1
                    st = _Dot.BOL
                else:
                    self._saw_bare("CR")
                    out.append(b"\r")
                    st = _Dot.MID
        self._dot = st
        chunk = b"".join(out)
        keep = self._admit(len(chunk))
        if keep:
            self._events.append(BodyChunk(chunk[:keep]))
        if end >= 0:
            # Bytes after the terminator are pipelined commands: put them back in front.
            leftover = data[end:]
            if leftover:
                self._buf.feed(leftover + self._buf.take_all())
            self._finish_body(last=True)
        return True

    def _saw_bare(self, which: str) -> None:
        if self._bare is None:
            self._bare = which

    def _read_bdat(self) -> bool:
        """Consume the octets of one BDAT chunk (RFC 3030 §2), streaming them as BodyChunks."""
        if self._bdat_remaining:
            data = self._buf.take(min(self._bdat_remaining, _CHUNK))
            if not data:
                return False
            self._bdat_remaining -= len(data)
            if self._bdat_refusal is None:
                keep = self._admit(len(data))
                if keep:
                    self._events.append(BodyChunk(data[:keep]))
            if self._bdat_remaining:
                return True
        refusal = self._bdat_refusal
        if refusal is not None:
            self._bdat_refusal = None
            self._state = self._bdat_return
            self._error(refusal, f"BDAT out of sequence in state {self._bdat_return.value}")
        else:
            self._finish_body(last=self._bdat_last)
        return True

    def _finish_body(self, *, last: bool) -> None:
        if self._too_big:
            # RFC 1870 §6.3 / RFC 3030 §2: the body was read to its end, then refused with 552.
            self._send(R.SIZE_EXCEEDED)
            self._abort_body("message size exceeds the maximum", R.SIZE_EXCEEDED)
            self._end_transaction()
        elif last and self._bare is not None and self._state is State.DATA and self.config.forbid_bare_lf:
            # RFC 5321 §2.3.8: CR and LF only as CRLF; refusing bare ones defeats SMTP smuggling.
            reply = R.BARE_LF if self._bare == "LF" else R.BARE_CR
            self._send(reply)
            self._abort_body(f"bare {self._bare} in DATA", reply)
            self._end_transaction()
        elif last:
            self._state = State.CHUNKING if self._state is State.BDAT else State.READY
            self._decide(_Pending.BODY, BodyEnd())
        else:
            # RFC 3030 §2: each non-LAST chunk is acknowledged with 250.
            self._send(R.reply(250, "2.0.0", f"{self._bdat_chunk} octets received"))
            self._state = State.CHUNKING


def _strip_eol(line: bytes) -> bytes:
    # Lenient: a command line may end in a bare LF (only DATA is strict about line endings).
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def _skip_spaces(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] == " ":
        pos += 1
    return pos


def _show(b: bytes) -> str:
    return "".join(chr(c) if 32 < c < 127 else "?" for c in b[:32])


_HANDLERS = {
    "EHLO": SMTPServerEngine._cmd_ehlo,
    "HELO": SMTPServerEngine._cmd_helo,
    "MAIL": SMTPServerEngine._cmd_mail,
    "RCPT": SMTPServerEngine._cmd_rcpt,
    "DATA": SMTPServerEngine._cmd_data,
    "BDAT": SMTPServerEngine._cmd_bdat,
    "RSET": SMTPServerEngine._cmd_rset,
    "NOOP": SMTPServerEngine._cmd_noop,
    "HELP": SMTPServerEngine._cmd_help,
    "VRFY": SMTPServerEngine._cmd_vrfy,
    "EXPN": SMTPServerEngine._cmd_expn,
    "QUIT": SMTPServerEngine._cmd_quit,
    "STARTTLS": SMTPServerEngine._cmd_starttls,
    "AUTH": SMTPServerEngine._cmd_auth,
}
assert set(_HANDLERS) == set(VERBS), "handlers and state table differ"
