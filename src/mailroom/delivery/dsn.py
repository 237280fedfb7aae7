"""Delivery status notifications (RFC 3464 multipart/report), built as bytes with CRLF line ends.

    dsn = build_dsn(DsnReport(hostname="mail.example.org", sender="alice@example.org",
                              recipients=[DsnRecipient("bob@example.net", "failed", "5.1.1",
                                                       reply=Reply(550, "5.1.1", ("User unknown",)),
                                                       remote_mta="mx.example.net", last_attempt=t)],
                              now=t, envid=envid, ret="HDRS"),
                    original=open_stored_message())
    if dsn is not None:          # queue dsn.data from dsn.sender ("", RFC 5321 §4.5.5) to dsn.recipient,
        ...                      # BODY=8BITMIME when dsn.eight_bit, SMTPUTF8 when dsn.smtputf8

``build_dsn`` returns None when nothing is to be sent:

- the original envelope sender is the null sender: never a DSN for a DSN (RFC 3461 §6.2, RFC 5321
  §4.5.5 and §6.1);
- NOTIFY (RFC 3461 §4.1) excludes every recipient: NEVER; or without NOTIFY, only failures and
  delays are reported (the RFC leaves DELAY to the MTA: we report delays by default, as Postfix).

Structure (RFC 3462 / RFC 6522 multipart/report; report-type=delivery-status):

1. text/plain: what happened, one line per recipient (quoted-printable when not ASCII);
2. message/delivery-status (RFC 3464 §2): Reporting-MTA, Original-Envelope-Id (ENVID, decoded),
   Arrival-Date, then per recipient Original-Recipient (ORCPT), Final-Recipient, Action, Status,
   Remote-MTA, Diagnostic-Code (``smtp; 550 5.1.1 ...`` for a remote reply, ``X-mailroom; ...`` for a
   local reason), Last-Attempt-Date, Will-Retry-Until (delayed only); message/global-delivery-status
   (RFC 6533 §6.2) when an address is not ASCII;
3. the original: message/rfc822 for RET=FULL when the report has a failure and the message fits
   ``full_size_limit`` (RFC 3461 §4.3: only failure reports return the content); otherwise
   text/rfc822-headers (message/global-headers when the headers carry UTF-8, RFC 6533 §6.3).

The original message is read from a binary stream; for headers only it is read up to the blank
line (at most ``max_header_bytes``). From is ``MAILER-DAEMON@hostname``, Auto-Submitted is
``auto-replied`` (RFC 3834 §5). Pure: no clock (``now`` is given); the Message-ID is random unless
given.
"""

from __future__ import annotations

import email.quoprimime
import email.utils
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from mailroom.wire.smtp.events import RetType
from mailroom.wire.smtp.replies import Reply

__all__ = [
    "Action",
    "Dsn",
    "DsnRecipient",
    "DsnReport",
    "Readable",
    "build_dsn",
    "status_of",
    "wants_notification",
]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

FULL_SIZE_LIMIT = 512 * 1024
MAX_HEADER_BYTES = 100 * 1024
_READ = 65536
_EOL = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"(?:\r\n|\n)(?:\r\n|\n)")
_MSGID = re.compile(rb"^Message-ID:[ \t]*(<[!-;=?-~]{1,250}>)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class DsnRecipient:
    address: str  # the final recipient: the envelope address delivery was attempted to
    action: Action
    status: str = ""  # RFC 3463 code; "" = derived from ``reply`` (its enhanced code or X.0.0)
    reply: Reply | None = None  # the remote server's reply -> Diagnostic-Code: smtp; ...
    diagnostic: str | None = None  # a local reason (DNS, expiry, TLS...) -> Diagnostic-Code: X-mailroom; ...
    remote_mta: str | None = None  # the host that gave ``reply``
    orcpt: str | None = None  # ORCPT as stored: "rfc822;bob@example.net" (decoded)
    notify: Sequence[str] | None = None  # RFC 3461 NOTIFY values; None when not given
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # "delayed" only


@dataclass(frozen=True)
class DsnReport:
    hostname: str  # Reporting-MTA and the MAILER-DAEMON address
    sender: str  # the original envelope sender: the DSN goes to this address
    recipients: Sequence[DsnRecipient]
    now: datetime  # the Date of the report
    envid: str | None = None  # RFC 3461 ENVID, decoded
    ret: RetType | None = None  # RFC 3461 RET; None = headers only
    arrival_date: datetime | None = None
    message_id: str | None = None  # of the DSN itself, "<...>"; random when None
    full_size_limit: int = FULL_SIZE_LIMIT  # larger originals are returned as headers only
    max_header_bytes: int = MAX_HEADER_BYTES


@dataclass(frozen=True)
class Dsn:
    recipient: str  # where to send it (the original sender)
    data: bytes
    eight_bit: bool  # 8-bit content: send with BODY=8BITMIME
    smtputf8: bool  # UTF-8 in an address header: needs SMTPUTF8
    message_id: str
    sender: str = ""  # always the null reverse-path (RFC 5321 §4.5.5)


_NOTIFY_FOR: dict[str, str] = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
    "expanded": "SUCCESS",
}


def wants_notification(notify: Sequence[str] | None, action: Action) -> bool:
    """RFC 3461 §4.1: should a DSN with this action be sent for a recipient with this NOTIFY?"""
    if notify is None:
        # Without NOTIFY: failures, and delays at the MTA's discretion (we do); never success.
        return action in ("failed", "delayed")
    values = {v.strip().upper() for v in notify}
    if "NEVER" in values:
        return False
    return _NOTIFY_FOR[action] in values


def status_of(reply: Reply) -> str:
    """The RFC 3463 status of a reply: its enhanced code, else class.0.0 (RFC 3463 §3.1)."""
    if reply.enhanced and _ENHANCED.fullmatch(reply.enhanced):
        return reply.enhanced
    return f"{str(reply.code)[0]}.0.0"


def build_dsn(report: DsnReport, original: Readable | None) -> Dsn | None:
    if not report.sender:
        return None  # never a DSN for a DSN (RFC 3461 §6.2)
    recipients = [r for r in report.recipients if wants_notification(r.notify, r.action)]
    if not recipients:
        return None
    host = _clean(report.hostname)
    message_id = report.message_id or f"<{uuid.uuid4().hex}@{host}>"
    has_failure = any(r.action == "failed" for r in recipients)

    # --- part 3: the original (headers, or all of it) --------------------------------------------------
    returned: bytes | None = None
    full = False
    headers_truncated = False
    too_big = False
    if original is not None:
        if report.ret == "FULL" and has_failure:
            data = _read_upto(original, report.full_size_limit + 1)
            if len(data) <= report.full_size_limit:
                returned = _EOL.sub(b"\r\n", data)
                full = True
            else:
                too_big = True
                returned, headers_truncated = _headers_of(data, original, report.max_header_bytes)
        else:
            returned, headers_truncated = _headers_of(b"", original, report.max_header_bytes)

    # --- part 1: text ------------------------------------------------------------------------------------
    text = _human_text(host, recipients, returned is not None, full, too_big)

    # --- part 2: delivery-status ------------------------------------------------------------------------------
    status_lines: list[str] = [f"Reporting-MTA: dns; {host}"]
    if report.envid:
        # RFC 3464 §2.2.1: the ENVID as given with MAIL (decoded from xtext), printable US-ASCII.
        status_lines.append(f"Original-Envelope-Id: {_printable_ascii(report.envid)}")
    if report.arrival_date is not None:
        status_lines.append(f"Arrival-Date: {_date(report.arrival_date)}")
    global_status = False
    blocks = ["\r\n".join(_fold(line) for line in status_lines)]
    for r in recipients:
        lines: list[str] = []
        if r.orcpt:
            # RFC 3464 §2.3.1: original-recipient-field = "Original-Recipient" ":" address-type ";" generic-address
            addr_type, semi, addr = r.orcpt.partition(";")
            if not semi:
                addr_type, addr = "rfc822", r.orcpt
            global_status = global_status or not addr.isascii()
            lines.append(f"Original-Recipient: {_clean(addr_type)};{_clean(addr)}")
        # RFC 3464 §2.3.2 Final-Recipient; RFC 6533 §3: "utf-8" address type for non-ASCII.
        final_type = "rfc822" if r.address.isascii() else "utf-8"
        global_status = global_status or final_type == "utf-8"
        lines.append(f"Final-Recipient: {final_type}; {_clean(r.address)}")
        lines.append(f"Action: {r.action}")  # RFC 3464 §2.3.3
        status = r.status or (status_of(r.reply) if r.reply else _default_status(r.action))
        lines.append(f"Status: {status}")  # RFC 3464 §2.3.4
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {_clean(r.remote_mta)}")  # RFC 3464 §2.3.5
        if r.reply is not None:
            # RFC 3464 §2.3.6: diagnostic-code-field = "Diagnostic-Code" ":" diagnostic-type ";" *text
            lines.append(f"Diagnostic-Code: smtp; {_reply_text(r.reply)}")
        elif r.diagnostic:
            lines.append(f"Diagnostic-Code: X-mailroom; {_clean(r.diagnostic)}")
        if r.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")  # RFC 3464 §2.3.7
        if r.action == "delayed" and r.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")  # RFC 3464 §2.3.9
        blocks.append("\r\n".join(_fold(line) for line in lines))
    status_body = ("\r\n\r\n".join(blocks) + "\r\n").encode("utf-8")

    # --- assemble ----------------------------------------------------------------------------------------
    text_bytes = text.encode("utf-8")
    if text.isascii():
        text_part = b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        text_part += text_bytes
    else:
        text_part = (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        # quoprimime encodes code points, not octets: hand it the UTF-8 octets as Latin-1 text
        # (what email.charset does). RFC 2045 §6.7.
        qp = email.quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), eol="\r\n")
        text_part += qp.encode("ascii")
        if not text_part.endswith(b"\r\n"):
            text_part += b"\r\n"
    status_type = "message/global-delivery-status" if global_status else "message/delivery-status"
    status_part = f"Content-Description: Delivery report\r\nContent-Type: {status_type}\r\n".encode()
    if global_status:
        status_part += b"Content-Transfer-Encoding: 8bit\r\n"
    status_part += b"\r\n" + status_body

    parts = [b"Content-Description: Notification\r\n" + text_part, status_part]
    eight_bit = global_status
    if returned is not None:
        returned_8bit = not returned.isascii()
        head_end = _HEADER_END.search(returned)
        headers_8bit = not (returned[: head_end.start()] if head_end else returned).isascii()
        eight_bit = eight_bit or returned_8bit
        if full:
            ctype = "message/global" if headers_8bit else "message/rfc822"  # RFC 6532 §3.7
            desc = "Undelivered message"
        else:
            ctype = "message/global-headers" if headers_8bit else "text/rfc822-headers"  # RFC 6533 §6.3
            desc = "Undelivered message headers" if has_failure else "Message headers"
            if headers_truncated:
                desc += " (truncated)"
        cte = "8bit" if returned_8bit else "7bit"
        body = returned if returned.endswith(b"\r\n") or not returned else returned + b"\r\n"
        parts.append(
            f"Content-Description: {desc}\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
            + body
        )

    boundary = _boundary(message_id, parts)
    to = _clean(report.sender)
    smtputf8 = not to.isascii()
    in_reply_to = _original_message_id(returned) if returned else None
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{to}>",
        f"Subject: {_subject(recipients)}",
        f"Date: {_date(report.now)}",
        f"Message-ID: {_clean(message_id)}",
    ]
    if in_reply_to:
        head += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    head += [
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        # RFC 6522 §3: multipart/report; report-type=delivery-status (RFC 3464 §2.1)
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    if eight_bit:
        head.append("Content-Transfer-Encoding: 8bit")
    out = bytearray("\r\n".join(_fold(h) for h in head).encode("utf-8"))
    out += b"\r\n\r\nThis is a MIME-encapsulated message.\r\n"
    for part in parts:
        out += b"\r\n--" + boundary.encode() + b"\r\n" + part
    out += b"\r\n--" + boundary.encode() + b"--\r\n"
    return Dsn(report.sender, bytes(out), eight_bit, smtputf8, message_id)


# --- helpers --------------------------------------------------------------------------------------


def _read_upto(stream: Readable, limit: int) -> bytes:
    buf = bytearray()
    while len(buf) < limit:
        chunk = stream.read(min(_READ, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _headers_of(prefix: bytes, stream: Readable, cap: int) -> tuple[bytes, bool]:
    """The header section (CRLF line ends, without the blank line, ending in CRLF), and whether it
    was cut at ``cap`` bytes. Reads the stream only as far as the end of the headers."""
    buf = bytearray(prefix)
    while True:
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            return b"", False  # no header section at all
        m = _HEADER_END.search(buf)
        if m is not None:
            return _EOL.sub(b"\r\n", bytes(buf[: m.start()])) + b"\r\n", False
        if len(buf) >= cap:
            cut = bytes(buf[:cap])
            last = max(cut.rfind(b"\n"), 0)
            return _EOL.sub(b"\r\n", cut[:last]).rstrip(b"\r\n") + b"\r\n", True
        chunk = stream.read(_READ)
        if not chunk:
            # The message ends inside its headers (no body).
            data = _EOL.sub(b"\r\n", bytes(buf))
            return (data if data.endswith(b"\r\n") or not data else data + b"\r\n"), False
        buf += chunk


def _original_message_id(returned: bytes) -> str | None:
    head_end = _HEADER_END.search(returned)
    m = _MSGID.search(returned[: head_end.start()] if head_end else returned)
    return m.group(1).decode("ascii") if m else None


def _clean(text: str) -> str:
    """One header-safe line: control characters (CR, LF, NUL, ...) become spaces."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text)[:900]


def _printable_ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:100]


def _reply_text(reply: Reply) -> str:
    code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
    return _clean(f"{code} {reply.text}".rstrip())


def _default_status(action: str) -> str:
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def _date(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return email.utils.format_datetime(when)  # RFC 5322 §3.3 date-time


def _fold(line: str, width: int = 78) -> str:
    """RFC 5322 §2.2.3: fold at spaces so that lines stay short where possible."""
    if len(line) <= width:
        return line
    out: list[str] = []
    current = ""
    for word in line.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > width and current.strip():
            out.append(current)
            current = " " + word  # the continuation line starts with white space
        else:
            current = candidate
    out.append(current)
    return "\r\n".join(out)


def _subject(recipients: Sequence[DsnRecipient]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "Undelivered Mail Returned to Sender"
    if "delayed" in actions:
        return "Delayed Mail (still being retried)"
    if "relayed" in actions or "expanded" in actions:
        return "Delivery Status Notification (relayed)"
    return "Successful Mail Delivery Report"


def _explain(r: DsnRecipient) -> str:
    if r.reply is not None:
        where = f"host {r.remote_mta} said" if r.remote_mta else "the remote server said"
        return _clean(f"{where}: {_reply_text(r.reply)}")
    if r.diagnostic:
        return _clean(r.diagnostic)
    if r.action in ("delivered", "relayed", "expanded"):
        return f"{r.action}" + (f" to {_clean(r.remote_mta)}" if r.remote_mta else "")
    return f"status {r.status or _default_status(r.action)}"


_INTRO = {
    "failed": "Your message could not be delivered to the following recipients:",
    "delayed": (
        "Your message has not been delivered yet to the following recipients.\n"
        "This is a warning only: you do not need to send it again. Delivery will be retried"
    ),
    "delivered": "Your message was delivered to the following recipients:",
    "relayed": (
        "Your message was passed on to the following recipients' systems, which will not\n"
        "send further delivery notifications:"
    ),
    "expanded": "Your message was delivered to these addresses, which forward it further:",
}


def _human_text(
    host: str, recipients: Sequence[DsnRecipient], attached: bool, full: bool, too_big: bool
) -> str:
    lines = [f"This is the mail system at {host}.", ""]
    for action in ("failed", "delayed", "delivered", "relayed", "expanded"):
        group = [r for r in recipients if r.action == action]
        if not group:
            continue
        intro = _INTRO[action]
        if action == "delayed":
            until = [r.will_retry_until for r in group if r.will_retry_until is not None]
            intro += f" until {_date(max(until))}." if until else "."
        lines += [*intro.split("\n"), ""]
        lines += [f"<{_clean(r.address)}>: {_explain(r)}" for r in group]
        lines.append("")
    if attached:
        if full:
            lines.append("The message is attached.")
        elif too_big:
            lines.append("The message was too large to return; its headers are attached.")
        else:
            lines.append("The message's headers are attached.")
    return "\r\n".join(lines) + "\r\n"


def _boundary(message_id: str, parts: Sequence[bytes]) -> str:
    seed = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    for i in range(100):
        boundary = f"=_{seed[i : i + 24]}/report"
        marker = b"--" + boundary.encode()
        if not any(marker in part for part in parts):
            return boundary
    return f"=_{uuid.uuid4().hex}/report"  # pragma: no cover - 100 collisions of a hash prefix
