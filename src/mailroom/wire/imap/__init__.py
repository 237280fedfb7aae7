"""Sans-I/O IMAP server wire layer (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1 and extensions).

- :mod:`.engine`: :class:`IMAPServerEngine` -- bytes in, events out, bytes to send
- :mod:`.events`: the events besides commands (APPEND streaming, IDLE, AUTHENTICATE, ...)
- :mod:`.commands`: one dataclass per command, FETCH items, SEARCH key tree
- :mod:`.parser`: the command grammar; :mod:`.receiver`: line and literal framing
- :mod:`.responses`: response serialisers; :mod:`.states`: the state table
- :mod:`.sequence`: sequence sets and UID set algebra; :mod:`.mutf7`: modified UTF-7
- :mod:`.syntax`: quoted / literal / astring serialisers
"""

from mailroom.wire.imap.engine import DEFAULT_EXTENSIONS, IMAPServerConfig, IMAPServerEngine
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
)
from mailroom.wire.imap.sequence import SequenceSet
from mailroom.wire.imap.states import State

__all__ = [
    "DEFAULT_EXTENSIONS",
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
    "IMAPServerConfig",
    "IMAPServerEngine",
    "IdleDone",
    "ProtocolViolation",
    "SequenceSet",
    "State",
]
