"""Trace headers (RFC 5321 §4.4) and a streaming header scanner for messages being received.

The scanner sees the message as it streams through the SMTP session and remembers only what the
session needs (the count of Received fields for loop detection, whether Date and Message-ID are
present) from the header section, holding at most one header field at a time.
"""

from __future__ import annotations

import datetime
import email.utils
from dataclasses import dataclass

MAX_RECEIVED = 100  # RFC 5321 §6.3: a hop count this high is a loop


@dataclass(frozen=True)
class ReceivedInfo:
    helo: str
    client_ip: str
    hostname: str  # ours
    protocol: str  # SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848)
    queue_id: str
    timestamp: float
    tls: str | None = None  # "TLSv1.3:TLS_AES_256_GCM_SHA384"
    recipient: str | None = None  # only when there is exactly one (RFC 5321 §4.4 "for" clause)


def received_header(info: ReceivedInfo) -> bytes:
    """RFC 5321 §4.4 Time-stamp-line, folded like Postfix's."""
    ip = info.client_ip
    literal = f"IPv6:{ip}" if ":" in ip else ip
    helo = _clean(info.helo) or "unknown"
    lines = [f"Received: from {helo} ([{literal}])"]
    if info.tls:
        version, _, cipher = info.tls.partition(":")
        lines.append(f"\t(using {version} with cipher {cipher})")
    lines.append(f"\tby {info.hostname} (mailroom) with {info.protocol} id {info.queue_id}")
    date = rfc5322_date(info.timestamp)
    if info.recipient:
        lines.append(f"\tfor <{_clean(info.recipient)}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def rfc5322_date(timestamp: float) -> str:
    """RFC 5322 §3.3 date-time in UTC with a numeric "+0000" zone ("-0000" would mean unknown)."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, datetime.UTC))


def return_path(sender: str) -> bytes:
    """RFC 5321 §4.4: the final delivery adds the reverse-path."""
    return f"Return-Path: <{_clean(sender)}>\r\n".encode()


def _clean(text: str) -> str:
    # never let a peer-supplied string break the header structure
    return "".join(c for c in text if c.isprintable() and c not in '()<>;\\"')[:255]


class HeaderScanner:
    """Feed message bytes as they arrive; learns facts about the header section only."""

    def __init__(self, max_header_bytes: int = 102_400) -> None:  # Postfix header_size_limit
        self.received = 0
        self.has_date = False
        self.has_message_id = False
        self.has_from = False
        self.from_value = b""  # the From field body, unfolded (bounded), for submission's owner check
        self._in_from = False
        self._pending = b""
        self._done = False
        self._seen = 0
        self._max = max_header_bytes

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        buf = self._pending + data
        start = 0
        while not self._done:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start : end + 1]
            start = end + 1
            self._seen += len(line)
            if line in (b"\r\n", b"\n") or self._seen > self._max:
                self._done = True  # end of the header section (RFC 5322 §2.1)
                break
            self._field(line)
        self._pending = b"" if self._done else buf[start:][: self._max]

    def _field(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t"):  # continuation of the previous field (RFC 5322 §2.2.3)
            if self._in_from and len(self.from_value) < 4096:
                self.from_value += b" " + line.strip()
            return
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        self._in_from = name == b"from" and not self.has_from
        if self._in_from:
            self.from_value = value.strip()[:4096]
        if name == b"received":
            self.received += 1
        elif name == b"date":
            self.has_date = True
        elif name == b"message-id":
            self.has_message_id = True
        elif name == b"from":
            self.has_from = True
