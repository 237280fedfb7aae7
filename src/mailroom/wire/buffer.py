"""A bounded receive buffer for line-oriented protocols (SMTP, IMAP, POP3).

Engines feed it raw bytes and pull complete lines or counted chunks. It never grows past its cap
with a partial line: an over-long line raises :class:`LineTooLongError` once, and the rest of that
line (up to and including the next LF) is dropped, so the engine can answer and stay in sync.
"""

from __future__ import annotations

from mailroom.wire.errors import LineTooLongError


class ReceiveBuffer:
    """Bytes received but not yet consumed, with a hard cap on the length of a pending line."""

    __slots__ = ("_buf", "_discarding", "_scan_from", "_start", "max_line")

    def __init__(self, max_line: int = 4096) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._start = 0  # read offset into _buf; compacted lazily
        self._scan_from = 0  # where the next LF search starts (avoids quadratic rescans)
        self._discarding = False  # dropping the tail of an over-long line

    def __len__(self) -> int:
        return len(self._buf) - self._start

    def __bool__(self) -> bool:
        return len(self._buf) > self._start

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._start and self._start > len(self._buf) // 2:
            del self._buf[: self._start]
            self._scan_from -= self._start
            self._start = 0
        self._buf += data

    def next_line(self) -> bytes | None:
        """Return the next line including its LF (CRLF or bare LF), or None if incomplete.

        Raises LineTooLongError when a line exceeds ``max_line`` bytes; the remainder of the
        line is then discarded as it arrives, and the next call starts at the following line.
        """
        while True:
            pos = self._buf.find(b"\n", max(self._scan_from, self._start))
            if pos < 0:
                pending = len(self._buf) - self._start
                if self._discarding:
                    self._drop_all()
                    return None
                if pending > self.max_line:
                    self._discarding = True
                    self._drop_all()
                    raise LineTooLongError(f"line longer than {self.max_line} bytes")
                self._scan_from = len(self._buf)
                return None
            end = pos + 1
            if self._discarding:
                self._discarding = False
                self._consume_to(end)
                continue
            if end - self._start > self.max_line:
                self._consume_to(end)
                raise LineTooLongError(f"line longer than {self.max_line} bytes")
            line = bytes(self._buf[self._start : end])
            self._consume_to(end)
            return line

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` bytes (fewer if fewer are buffered)."""
        end = min(self._start + n, len(self._buf))
        chunk = bytes(self._buf[self._start : end])
        self._consume_to(end)
        return chunk

    def take_all(self) -> bytes:
        return self.take(len(self))

    def peek(self) -> bytes:
        return bytes(self._buf[self._start :])

    def clear(self) -> None:
        """Drop everything buffered (after STARTTLS: pipelined plaintext must not be honoured)."""
        self._drop_all()
        self._discarding = False

    def _consume_to(self, end: int) -> None:
        self._start = end
        if self._scan_from < end:
            self._scan_from = end
        if self._start == len(self._buf):
            self._buf.clear()
            self._start = 0
            self._scan_from = 0

    def _drop_all(self) -> None:
        self._buf.clear()
        self._start = 0
        self._scan_from = 0
