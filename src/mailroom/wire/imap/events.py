"""Events the IMAP server engine hands to its session (besides the :mod:`commands` dataclasses).

A command event leaves the engine PAUSED until the session sends the command's tagged response
(or calls ``accept_idle()`` / ``auth_challenge()``). APPEND arrives as a stream instead of a
command: ``AppendBegin``, ``AppendChunk``..., ``AppendEnd`` per message, and the tagged response
is due after ``AppendEnd(last=True)``. The remaining events are informational.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Final

from mailroom.wire.imap.commands import Command

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AppendAborted",
    "AppendBegin",
    "AppendChunk",
    "AppendEnd",
    "AuthAborted",
    "AuthResponse",
    "ConnectionClosed",
    "Event",
    "IdleDone",
    "ProtocolViolation",
    "Sentinel",
]


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA  # feed more bytes (or b"" for EOF), then ask again
PAUSED: Final = Sentinel.PAUSED  # the session owes an answer (tagged response, accept_idle, tls_started...)


@dataclass(frozen=True, slots=True)
class AppendBegin:
    """One APPEND message starts (RFC 9051 §6.3.12; several with RFC 3502 MULTIAPPEND).

    The engine has checked the state, the syntax before the literal and ``size`` against the
    append limit, and has sent the continuation for a synchronizing literal. ``binary``: the data
    came as ``~{n}`` (RFC 3516); ``utf8``: as ``UTF8 (~{n})`` (RFC 6855).
    """

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    date: _dt.datetime | None
    size: int
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class AppendChunk:
    """Message octets, in order; chunk boundaries mean nothing."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AppendEnd:
    """The message's data is complete and the syntax after it checked. ``last``: the command is
    complete; store every message of it (MULTIAPPEND is all or nothing) and send the tagged
    response. Otherwise another ``AppendBegin`` follows."""

    tag: str
    last: bool = True


@dataclass(frozen=True, slots=True)
class AppendAborted:
    """Drop whatever this APPEND spooled. The engine has answered (or will, once it has read
    past the data), or the connection closed. No tagged response is due from the session."""

    tag: str
    reason: str


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The client ended IDLE. ``ok``: it sent DONE, and the session now sends the tagged OK.
    Otherwise the engine already answered BAD and IDLE is over (RFC 2177)."""

    tag: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The client's answer to ``auth_challenge()``, base64-decoded. Continue with another
    challenge or send the tagged response."""

    tag: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthAborted:
    """The client cancelled AUTHENTICATE with "*" or sent invalid base64; the engine answered
    BAD (RFC 9051 §6.2.2). Drop the SASL exchange."""

    tag: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The engine answered a client error on its own (``response`` is what it sent). Log one line."""

    response: bytes
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """EOF, LOGOUT, or the engine gave up (BYE sent). Returned by every later next_event()."""

    reason: str = ""


Event = (
    Command
    | AppendBegin
    | AppendChunk
    | AppendEnd
    | AppendAborted
    | IdleDone
    | AuthResponse
    | AuthAborted
    | ProtocolViolation
    | ConnectionClosed
)
