"""Errors raised by the sans-I/O protocol engines.

Each error carries the wire answer the session should send (mox's smtpError, chasquid's
``(err, permanent)``), so a session turns exceptions into replies in exactly one place.

- :class:`RemoteProtocolError`: the peer broke the protocol. The session sends ``reply`` (when not
  empty), logs one line and, when ``fatal`` is set, closes the connection.
- :class:`LocalProtocolError`: our own code asked the engine for something the protocol forbids
  (a bug on our side). The session logs a traceback and answers with a temporary failure.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: ``reply`` is the exact bytes to put on the wire (may be empty)."""

    def __init__(self, message: str, reply: bytes = b"", *, fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reply = reply
        self.fatal = fatal


class RemoteProtocolError(ProtocolError):
    """The peer's fault: malformed input, a command out of sequence, a limit exceeded."""


class LocalProtocolError(ProtocolError):
    """Our fault: the server code misused an engine (wrong state, bad reply)."""


class LineTooLongError(RemoteProtocolError):
    """A line exceeded the buffer's cap; the rest of it up to the next LF is discarded."""
