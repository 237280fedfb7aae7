"""SMTP replies: a code, an optional RFC 3463 enhanced status code and one or more text lines.

RFC 5321 §4.2: ``Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF``.
RFC 2034 §3: when ENHANCEDSTATUSCODES is advertised, every reply except the greeting and the
answer to HELO/EHLO carries an enhanced code, repeated on every line of a multi-line reply.
Intermediate replies (354, 334) have none: RFC 3463 §3.1 defines only the classes 2, 4 and 5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailroom.wire.errors import RemoteProtocolError

# RFC 3463 §2: status-code = class "." subject "." detail; class = "2"/"4"/"5"; 1*3digit each.
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. ``lines`` holds the text of each line, without code or CRLF."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} out of range")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"bad enhanced status code {self.enhanced!r}")
            # RFC 3463 §3.1: the class of the enhanced code matches the reply's first digit.
            if self.enhanced[0] != str(self.code)[0]:
                raise ValueError(f"enhanced code {self.enhanced} does not match {self.code}")
        for line in self.lines:
            # A CR or LF in the text would let a caller inject a second reply.
            if "\r" in line or "\n" in line:
                raise ValueError("reply text may not contain CR or LF")

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def to_bytes(self) -> bytes:
        # RFC 5321 §4.2.1: every line but the last has a hyphen after the code.
        lines = self.lines or ("",)
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            text = f"{prefix}{line}" if prefix else line
            out.append(f"{self.code}{sep}{text}\r\n")
        return "".join(out).encode("utf-8")


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, tuple(lines))


class SMTPError(RemoteProtocolError):
    """A peer error detected by the engine, carrying the structured reply to send."""

    def __init__(self, smtp_reply: Reply, message: str | None = None, *, counts: bool = True) -> None:
        super().__init__(message or smtp_reply.text, smtp_reply.to_bytes())
        self.smtp_reply = smtp_reply
        # Whether the error counts towards ServerConfig.max_errors (policy limits do not).
        self.counts = counts


# --- Positive replies -----------------------------------------------------------------------------
OK = reply(250, "2.0.0", "Ok")
MAIL_OK = reply(250, "2.1.0", "Ok")
RCPT_OK = reply(250, "2.1.5", "Ok")
QUEUED = reply(250, "2.0.0", "Ok: queued")
RESET_OK = reply(250, "2.0.0", "Ok")
HELP = reply(214, "2.0.0", "See https://www.rfc-editor.org/rfc/rfc5321")
# RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail for the address.
VRFY_NO = reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
BYE = reply(221, "2.0.0", "Bye")
START_DATA = reply(354, None, "End data with <CR><LF>.<CR><LF>")
READY_TLS = reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = reply(235, "2.7.0", "Authentication successful")

# --- Engine-generated errors --------------------------------------------------------------------
UNKNOWN_COMMAND = reply(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = reply(500, "5.5.2", "Line too long")
NUL_IN_COMMAND = reply(500, "5.5.2", "NUL byte in command")
BAD_CHARACTER = reply(500, "5.5.2", "Invalid character in command")
NOT_IMPLEMENTED = reply(502, "5.5.1", "Command not implemented")
EXPN_NO = reply(502, "5.5.1", "EXPN not available")
NEED_HELLO = reply(503, "5.5.1", "Send EHLO or HELO first")
NEED_MAIL = reply(503, "5.5.1", "Need MAIL command first")
NESTED_MAIL = reply(503, "5.5.1", "Nested MAIL command")
NEED_RCPT = reply(503, "5.5.1", "No valid recipients")
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "No valid recipients")
NOT_AFTER_BDAT = reply(503, "5.5.1", "Command not allowed during BDAT transfer")
BINARYMIME_NEEDS_BDAT = reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
IN_TRANSACTION = reply(503, "5.5.1", "Not allowed during a mail transaction")
TLS_ACTIVE = reply(503, "5.5.1", "TLS already active")
ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Already authenticated")
UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")
BAD_BASE64 = reply(501, "5.5.2", "Invalid base64 data")
AUTH_LINE_TOO_LONG = reply(500, "5.5.6", "Authentication exchange line is too long")
ENCRYPTION_REQUIRED = reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")
SIZE_EXCEEDED = reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Too many recipients")
NON_ASCII_ADDRESS = reply(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter")
BARE_LF = reply(550, "5.5.2", "Message contains a bare LF; lines must end with CRLF")
BARE_CR = reply(550, "5.5.2", "Message contains a bare CR; lines must end with CRLF")
TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors, closing connection")

# --- Replies the session typically uses in reject() ---------------------------------------------------
MAILBOX_UNAVAILABLE = reply(550, "5.1.1", "Mailbox unavailable")
RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")
SENDER_REJECTED = reply(550, "5.7.1", "Sender rejected")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
TEMPORARY_FAILURE = reply(451, "4.3.0", "Temporary failure, please try again later")
TLS_NOT_AVAILABLE = reply(454, "4.7.0", "TLS not available due to temporary reason")
SERVICE_UNAVAILABLE = reply(421, "4.3.2", "Service not available, closing connection")


def syntax_error(usage: str) -> Reply:
    """RFC 5321 §4.2.4: 501 for a syntax error in the arguments (RFC 3463: X.5.4 invalid arguments)."""
    return reply(501, "5.5.4", usage)


def unknown_parameter(keyword: str) -> Reply:
    """RFC 5321 §4.1.1.11: 555 for an unrecognized or unimplemented MAIL/RCPT parameter."""
    return reply(555, "5.5.4", f"Unsupported parameter {keyword}")
