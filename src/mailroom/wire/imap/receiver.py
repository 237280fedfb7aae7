"""Incremental IMAP command framing: lines, literal announcements, literal data.

RFC 9051 §4.3 / RFC 7888: a line that ends with ``{n}`` (synchronizing), ``{n+}`` (non-synchronizing,
LITERAL+/LITERAL-) or ``~{n}`` (literal8, RFC 3516) announces n octets that follow the CRLF:

    literal  = "{" number64 ["+"] "}" CRLF *CHAR8
    literal8 = "~{" number64 ["+"] "}" CRLF *OCTET

The receiver only frames. Every :class:`Line` reports its announcement as a :class:`NeedLiteral`;
the engine then says what to do with those octets: :meth:`read_literal` (collect them),
:meth:`stream_literal` (hand them over in chunks: APPEND), :meth:`discard_literal` (drop them:
a refused non-synchronizing literal), or nothing (a refused synchronizing literal never comes).

A line longer than ``max_line`` never sits whole in memory: the receiver keeps its head (for the
tag) and its tail (for a literal announcement, which must still be honoured to stay in step) and
drops the middle, then reports the line with ``overlong=True``.
"""

from __future__ import annotations

import enum
import re
import sys
from dataclasses import dataclass

from mailroom.wire.buffer import ReceiveBuffer

__all__ = ["UNKNOWN_SIZE", "CommandReceiver", "Line", "LiteralChunk", "LiteralData", "NeedLiteral"]

UNKNOWN_SIZE = 1 << 64  # an announced size we cannot represent (too many digits): larger than any limit
_HEAD = 256  # bytes of an over-long line kept for its tag
_TAIL = 64  # bytes kept for a literal announcement at its end
_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
_CUT_MARKER = re.compile(rb"[0-9]+(\+?)\}\Z")  # the "{" fell into the dropped middle


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    size: int  # UNKNOWN_SIZE when the digits do not fit
    synchronizing: bool  # False for "{n+}": the data follows without waiting for "+"
    binary: bool = False  # "~{n}" literal8


@dataclass(frozen=True, slots=True)
class Line:
    """One line, its line ending normalised to CRLF (a bare LF is accepted).

    For an over-long line ``data`` is only its first bytes (followed by CRLF), kept for the tag.
    """

    data: bytes
    literal: NeedLiteral | None = None
    overlong: bool = False


@dataclass(frozen=True, slots=True)
class LiteralData:
    """A whole literal collected after :meth:`CommandReceiver.read_literal`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """Part of a streamed literal; ``end`` marks the last (possibly empty) chunk."""

    data: bytes
    end: bool = False


Frame = Line | LiteralData | LiteralChunk


class _Mode(enum.Enum):
    LINE = "line"
    COLLECT = "collect"
    STREAM = "stream"
    DISCARD = "discard"


def _literal_of(line: bytes, *, cut: bool) -> NeedLiteral | None:
    m = _MARKER.search(line)
    if m is not None:
        digits = m.group(2)
        if len(digits) > 20:
            return NeedLiteral(UNKNOWN_SIZE, synchronizing=not m.group(3))
        return NeedLiteral(int(digits), synchronizing=not m.group(3), binary=bool(m.group(1)))
    if cut:
        m = _CUT_MARKER.search(line)
        if m is not None:
            return NeedLiteral(UNKNOWN_SIZE, synchronizing=not m.group(1))
    return None


class CommandReceiver:
    """Frames bytes from the client; see the module docstring."""

    __slots__ = ("_buf", "_collected", "_head", "_head_len", "_mode", "_overlong", "_remaining", "max_line")

    def __init__(self, max_line: int = 65536) -> None:
        self.max_line = max_line
        self._head_len = min(_HEAD, max_line)  # the same head however the line was split
        # The buffer's own cap would drop an over-long line's tail, and with it a literal
        # announcement we must honour; this class enforces max_line itself.
        self._buf = ReceiveBuffer(max_line=sys.maxsize)
        self._mode = _Mode.LINE
        self._remaining = 0
        self._collected = bytearray()
        self._overlong = False
        self._head = b""

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def in_literal(self) -> bool:
        """Octets of a literal are still expected."""
        return self._mode is not _Mode.LINE

    @property
    def in_line(self) -> bool:
        """Part of a line has arrived (not yet its end)."""
        return self._mode is _Mode.LINE and (bool(self._buf) or self._overlong)

    def feed(self, data: bytes) -> None:
        self._buf.feed(data)

    def clear(self) -> None:
        """Forget everything buffered and any literal in progress (after STARTTLS, RFC 9051 §6.2.1)."""
        self._buf.clear()
        self._mode = _Mode.LINE
        self._remaining = 0
        self._collected.clear()
        self._overlong = False
        self._head = b""

    # --- the engine's instructions after a NeedLiteral ----------------------------------------------

    def read_literal(self, size: int) -> None:
        self._start(_Mode.COLLECT, size)

    def stream_literal(self, size: int) -> None:
        self._start(_Mode.STREAM, size)

    def discard_literal(self, size: int) -> None:
        self._start(_Mode.DISCARD, size)

    def _start(self, mode: _Mode, size: int) -> None:
        if self._mode is not _Mode.LINE:
            raise RuntimeError("a literal is already in progress")
        self._mode = mode
        self._remaining = size

    # --- framing ------------------------------------------------------------------------------------

    def next_frame(self) -> Frame | None:
        """The next frame, or None when more bytes are needed."""
        while True:
            mode = self._mode
            if mode is _Mode.LINE:
                return self._next_line()
            if mode is _Mode.DISCARD:
                dropped = self._buf.take(self._remaining)
                self._remaining -= len(dropped)
                if self._remaining:
                    return None
                self._mode = _Mode.LINE
                continue
            if mode is _Mode.COLLECT:
                self._collected += self._buf.take(self._remaining - len(self._collected))
                if len(self._collected) < self._remaining:
                    return None
                data = bytes(self._collected)
                self._collected.clear()
                self._mode = _Mode.LINE
                return LiteralData(data)
            # STREAM
            if self._remaining and not self._buf:
                return None
            chunk = self._buf.take(self._remaining)
            self._remaining -= len(chunk)
            if self._remaining:
                return LiteralChunk(chunk)
            self._mode = _Mode.LINE
            return LiteralChunk(chunk, end=True)

    def _next_line(self) -> Line | None:
        raw = self._buf.next_line()
        if raw is None:
            pending = len(self._buf)
            if pending > self.max_line and not self._overlong:
                self._head = self._buf.peek()[: self._head_len]
                self._overlong = True
            if self._overlong and pending > _TAIL:
                self._buf.take(pending - _TAIL)
            return None
        body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if self._overlong or len(body) > self.max_line:
            # Judge only the kept tail, so the verdict is the same however the line was split.
            head = self._head if self._overlong else body[: self._head_len]
            self._overlong = False
            self._head = b""
            return Line(head + b"\r\n", _literal_of(body[-_TAIL:], cut=True), overlong=True)
        return Line(body + b"\r\n", _literal_of(body, cut=False))
