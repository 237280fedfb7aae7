"""Events the SMTP server engine hands to its session.

"Needs decision" events leave the engine paused until the session calls ``accept()`` or
``reject()`` (or ``auth_challenge()`` for the AUTH events); the others are informational: the
engine has already answered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from mailroom.wire.smtp.replies import Reply

BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
RetType = Literal["FULL", "HDRS"]


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA  # feed more bytes (or EOF) before calling next_event again
PAUSED: Final = Sentinel.PAUSED  # a decision is pending: accept()/reject() first


@dataclass(frozen=True)
class MailParams:
    size: int | None = None  # RFC 1870 SIZE=
    body: BodyType | None = None  # RFC 6152 / RFC 3030 BODY=
    smtputf8: bool = False  # RFC 6531 §3.4
    ret: RetType | None = None  # RFC 3461 §4.3
    envid: str | None = None  # RFC 3461 §4.4, xtext-decoded
    auth: str | None = None  # RFC 4954 §5, xtext-decoded; "<>" kept as "<>"


@dataclass(frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # RFC 3461 §4.1: ("NEVER",) or a subset of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # RFC 3461 §4.2: "addr-type;decoded-address"


@dataclass(frozen=True)
class Hello:
    """EHLO/HELO. Needs decision. A new hello also ends any open transaction (RFC 5321 §4.1.4)."""

    verb: Literal["EHLO", "HELO"]
    name: str


@dataclass(frozen=True)
class MailFrom:
    """MAIL FROM. Needs decision. ``address`` is "" for the null reverse-path ``<>``."""

    address: str
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True)
class RcptTo:
    """RCPT TO. Needs decision. ``address`` may be a bare ``Postmaster`` (RFC 5321 §4.1.1.3)."""

    address: str
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(frozen=True)
class DataStart:
    """The body begins (DATA answered 354, or the first BDAT chunk arrived). Informational."""

    chunking: bool = False  # True for BDAT


@dataclass(frozen=True)
class BodyChunk:
    """Part of the message body: dot-unstuffed for DATA, raw octets for BDAT. Informational."""

    data: bytes


@dataclass(frozen=True)
class BodyEnd:
    """The whole body has arrived. Needs decision: accept() once stored, or reject()."""


@dataclass(frozen=True)
class BodyAborted:
    """The body was refused by the engine (already answered) or the peer went away: discard it."""

    reason: str
    reply: Reply | None = None  # what the engine answered, None when the connection closed


@dataclass(frozen=True)
class StartTLS:
    """STARTTLS. Needs decision: accept() sends 220; then run the handshake and call tls_started()."""


@dataclass(frozen=True)
class AuthStart:
    """AUTH. Needs decision: accept(), reject() or auth_challenge()."""

    mechanism: str  # upper-case
    initial: bytes | None  # base64-decoded initial response; b"" for "="; None when absent


@dataclass(frozen=True)
class AuthResponse:
    """The client's base64-decoded answer to a 334 challenge. Needs decision like AuthStart."""

    data: bytes


@dataclass(frozen=True)
class Reset:
    """RSET, already answered 250. Informational: drop the transaction (and any open body)."""


@dataclass(frozen=True)
class Quit:
    """QUIT, already answered 221. The engine is now closed: flush data_to_send() and close."""


@dataclass(frozen=True)
class ProtocolViolation:
    """The engine answered a peer error on its own. Informational: log one line."""

    reply: Reply
    message: str


@dataclass(frozen=True)
class ConnectionClosed:
    """The engine is closed (EOF, QUIT or too many errors). Returned on every later next_event()."""


Event = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | BodyChunk
    | BodyEnd
    | BodyAborted
    | StartTLS
    | AuthStart
    | AuthResponse
    | Reset
    | Quit
    | ProtocolViolation
    | ConnectionClosed
)
