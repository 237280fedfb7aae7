"""Small pieces shared by the IMAP session modules."""

from __future__ import annotations

import datetime as _dt

from mailroom.wire.imap.responses import ResponseCode


class Preformatted:
    """Untagged responses already in wire form (the bulk FETCH and SELECT paths)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self, *, utf8: bool = False) -> bytes:
        return self.data


class Disconnect(Exception):
    """End the session after what has been queued (BYE already sent)."""


class CommandFailed(Exception):
    """A tagged NO (or BAD) for the command at hand."""

    def __init__(self, text: str, code: ResponseCode | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


def internal_datetime(ts: int, tz_minutes: int) -> _dt.datetime:
    """INTERNALDATE in the zone it was given in (RFC 9051 §2.3.3)."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone(_dt.timedelta(minutes=tz_minutes)))
