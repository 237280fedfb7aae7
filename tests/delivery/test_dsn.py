"""RFC 3464 DSNs, parsed back with the stdlib email package."""

from __future__ import annotations

import email
import email.policy
import io
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from typing import Any

import pytest

from mailroom.delivery.dsn import (
    Action,
    Dsn,
    DsnRecipient,
    DsnReport,
    build_dsn,
    status_of,
    wants_notification,
)
from mailroom.wire.smtp.replies import Reply

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
    b".\r\n"
)


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def failed(address: str = "bob@example.net", **kw: Any) -> DsnRecipient:
    base: dict[str, Any] = {
        "address": address,
        "action": "failed",
        "status": "5.1.1",
        "reply": Reply(550, "5.1.1", ("<bob@example.net>: Recipient address rejected", "User unknown")),
        "remote_mta": "mx.example.net",
        "last_attempt": NOW - timedelta(minutes=1),
    }
    base.update(kw)
    return DsnRecipient(**base)


def report(*recipients: DsnRecipient, **kw: Any) -> DsnReport:
    base: dict[str, Any] = {
        "hostname": "mail.example.org",
        "sender": "alice@example.org",
        "recipients": recipients,
        "now": NOW,
        "message_id": "<dsn-1@mail.example.org>",
    }
    base.update(kw)
    return DsnReport(**base)


def parse(dsn: Dsn) -> EmailMessage:
    msg = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: Message) -> list[EmailMessage]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    return [p for p in payload if isinstance(p, EmailMessage)]


def text_of(msg: EmailMessage) -> str:
    content = parts(msg)[0].get_content()
    assert isinstance(content, str)
    return content


def status_blocks(msg: EmailMessage) -> list[Message]:
    part = parts(msg)[1]
    assert part.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    return list(parts(part))


def test_failure_report_structure() -> None:
    dsn = build_dsn(
        report(
            failed(orcpt="rfc822;Bob@Example.NET"),
            envid="ENV-42",
            arrival_date=NOW - timedelta(hours=1),
        ),
        CountingStream(ORIGINAL),
    )
    assert dsn is not None
    assert dsn.sender == "" and dsn.recipient == "alice@example.org" and not dsn.eight_bit
    assert b"\n" not in dsn.data.replace(b"\r\n", b"")  # CRLF only
    assert all(len(line) <= 998 for line in dsn.data.split(b"\r\n"))
    msg = parse(dsn)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.org>"
    assert msg["To"] == "alice@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<dsn-1@mail.example.org>"
    assert msg["In-Reply-To"] == "<orig-1@example.org>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    text = text_of(msg)
    assert "<bob@example.net>: host mx.example.net said: 550 5.1.1" in text
    per_message, per_rcpt = status_blocks(msg)
    assert per_message["Reporting-MTA"] == "dns; mail.example.org"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert per_message["Arrival-Date"] == "Sun, 01 Mar 2026 11:00:00 +0000"
    assert per_rcpt["Original-Recipient"] == "rfc822;Bob@Example.NET"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert " ".join(per_rcpt["Diagnostic-Code"].split()) == (
        "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected User unknown"
    )
    assert per_rcpt["Last-Attempt-Date"] == "Sun, 01 Mar 2026 11:59:00 +0000"
    headers = parts(msg)[2].get_payload()
    assert "Subject: lunch" in str(headers) and "See you at noon" not in str(headers)


def test_headers_only_reads_only_the_headers() -> None:
    big = ORIGINAL.replace(b"See you at noon.\r\n", b"x" * 2_000_000 + b"\r\n")
    stream = CountingStream(big)
    dsn = build_dsn(report(failed()), stream)
    assert dsn is not None and stream.consumed <= 65536
    assert b"x" * 100 not in dsn.data


def test_ret_full_returns_the_message() -> None:
    dsn = build_dsn(report(failed(), ret="FULL"), io.BytesIO(ORIGINAL))
    assert dsn is not None
    msg = parse(dsn)
    third = parts(msg)[2]
    assert third.get_content_type() == "message/rfc822"
    (inner,) = parts(third)
    assert inner["Subject"] == "lunch" and "See you at noon." in inner.get_payload()
    assert "The message is attached." in text_of(msg)


def test_ret_full_over_the_cap_falls_back_to_headers() -> None:
    stream = CountingStream(ORIGINAL + b"y" * 5000 + b"\r\n")
    dsn = build_dsn(report(failed(), ret="FULL", full_size_limit=1000), stream)
    assert dsn is not None and stream.consumed <= 1001 + 65536
    msg = parse(dsn)
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "too large" in text_of(msg)


def test_ret_full_only_for_failures() -> None:
    """RFC 3461 §4.3: RET applies to failure reports; a delay report returns headers."""
    delayed = DsnRecipient(
        "bob@example.net",
        "delayed",
        "4.4.1",
        diagnostic="connection refused by mx.example.net",
        will_retry_until=NOW + timedelta(days=4),
    )
    dsn = build_dsn(report(delayed, ret="FULL"), io.BytesIO(ORIGINAL))
    assert dsn is not None
    msg = parse(dsn)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    (_, block) = status_blocks(msg)
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert block["Diagnostic-Code"] == "X-mailroom; connection refused by mx.example.net"
    assert block["Will-Retry-Until"] == "Thu, 05 Mar 2026 12:00:00 +0000"
    assert "Remote-MTA" not in block
    assert "Thu, 05 Mar 2026" in text_of(msg)


def test_never_a_dsn_for_a_dsn_and_notify() -> None:
    assert build_dsn(report(failed(), sender=""), io.BytesIO(ORIGINAL)) is None
    assert build_dsn(report(failed(notify=("NEVER",))), io.BytesIO(ORIGINAL)) is None
    assert build_dsn(report(failed(notify=("SUCCESS", "DELAY"))), io.BytesIO(ORIGINAL)) is None
    delivered = DsnRecipient("bob@example.net", "delivered", "2.0.0", remote_mta="mx.example.net")
    assert build_dsn(report(delivered), io.BytesIO(ORIGINAL)) is None  # no NOTIFY: no success DSN
    dsn = build_dsn(report(failed(notify=("NEVER",)), failed("carol@example.net")), io.BytesIO(ORIGINAL))
    assert dsn is not None
    blocks = status_blocks(parse(dsn))
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; carol@example.net"]


def test_relayed_success_report() -> None:
    relayed = DsnRecipient(
        "bob@example.net", "relayed", "2.0.0", remote_mta="mx.example.net", notify=("SUCCESS",)
    )
    dsn = build_dsn(report(relayed, ret="FULL"), io.BytesIO(ORIGINAL))
    assert dsn is not None
    msg = parse(dsn)
    assert msg["Subject"] == "Delivery Status Notification (relayed)"
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"


@pytest.mark.parametrize(
    ("notify", "action", "expected"),
    [
        (None, "failed", True),
        (None, "delayed", True),
        (None, "delivered", False),
        (("NEVER",), "failed", False),
        (("success",), "relayed", True),
        (("FAILURE",), "delayed", False),
        (("DELAY", "FAILURE"), "delayed", True),
    ],
)
def test_wants_notification(notify: tuple[str, ...] | None, action: Action, expected: bool) -> None:
    assert wants_notification(notify, action) is expected


def test_status_of() -> None:
    assert status_of(Reply(550, "5.7.1", ("x",))) == "5.7.1"
    assert status_of(Reply(451, None, ("x",))) == "4.0.0"
    no_status = DsnRecipient("bob@example.net", "failed", reply=Reply(554, None, ("no",)))
    dsn = build_dsn(report(no_status), None)
    assert dsn is not None and status_blocks(parse(dsn))[1]["Status"] == "5.0.0"
    assert len(parts(parse(dsn))) == 2  # no original given: no third part


def test_utf8_addresses_and_8bit_content() -> None:
    original = "From: Jürgen <j@example.org>\r\nSubject: grüße\r\n\r\nbody ü\r\n".encode()
    dsn = build_dsn(
        report(failed("jürgen@bücher.example", orcpt="utf-8;jürgen@bücher.example"), sender="jö@example.org"),
        io.BytesIO(original),
    )
    assert dsn is not None and dsn.eight_bit and dsn.smtputf8
    msg = parse(dsn)
    types = [p.get_content_type() for p in parts(msg)]
    assert types == ["text/plain", "message/global-delivery-status", "message/global-headers"]
    assert parts(msg)[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert "jürgen@bücher.example" in text_of(msg)
    assert "Final-Recipient: utf-8; jürgen@bücher.example" in dsn.data.decode()


def test_hostile_reply_text_cannot_inject_fields_and_long_lines_fold() -> None:
    evil = failed(reply=Reply(550, "5.1.1", ("no\tsuch" + " word" * 60, "Action: delivered")))
    dsn = build_dsn(report(evil, envid="a\x00b"), io.BytesIO(ORIGINAL))
    assert dsn is not None
    blocks = status_blocks(parse(dsn))
    assert blocks[1]["Action"] == "failed" and len(blocks[1].get_all("Action", [])) == 1
    assert blocks[0]["Original-Envelope-Id"] == "a?b"
    assert all(len(line) <= 80 for line in dsn.data.split(b"\r\n") if line.startswith((b"Diagnostic", b" ")))


def test_boundary_never_occurs_in_the_content() -> None:
    first = build_dsn(report(failed()), io.BytesIO(ORIGINAL))
    assert first is not None
    boundary = parse(first).get_boundary()
    assert boundary
    hostile = ORIGINAL.replace(b"Subject: lunch", b"Subject: --" + boundary.encode())
    second = build_dsn(report(failed()), io.BytesIO(hostile))
    assert second is not None
    msg = parse(second)
    assert msg.get_boundary() != boundary and len(parts(msg)) == 3


@pytest.mark.parametrize(
    "original",
    [b"", b"Subject: headers only", b"Subject: lf only\n\nBODY\n", b"\r\nBODY without headers\r\n"],
)
def test_odd_originals(original: bytes) -> None:
    dsn = build_dsn(report(failed()), io.BytesIO(original))
    assert dsn is not None
    msg = parse(dsn)
    assert len(parts(msg)) == 3
    assert b"\n" not in dsn.data.replace(b"\r\n", b"")
    assert b"BODY" not in dsn.data


def test_random_message_id_and_naive_dates() -> None:
    dsn = build_dsn(report(failed(last_attempt=datetime(2026, 1, 1)), message_id=None), None)
    assert dsn is not None and dsn.message_id.endswith("@mail.example.org>")
    assert status_blocks(parse(dsn))[1]["Last-Attempt-Date"] == "Thu, 01 Jan 2026 00:00:00 +0000"
