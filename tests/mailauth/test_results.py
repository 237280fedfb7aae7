"""Authentication-Results (RFC 8601): building ours, removing forged ones with our authserv-id."""

from __future__ import annotations

from mailroom.mailauth import results
from mailroom.mailauth.dkim import DkimResult
from mailroom.mailauth.dmarc import DmarcRecord, DmarcResult
from mailroom.mailauth.spf import SpfResult

SPF_PASS = SpfResult(
    "pass", "mailfrom", "example.com", "alice@example.com", "192.0.2.1", "sender SPF authorized"
)
DKIM_PASS = DkimResult(
    "pass", "example.com", "2026r", "rsa-sha256", "@example.com", "abcd/EFGH+ijklmnop=", ""
)
DMARC_PASS = DmarcResult(
    "pass", "example.com", "reject", "none", "example.com", True, True, "", DmarcRecord("reject")
)


def test_build_full_header() -> None:
    header = results.build("mx.example.org", spf=[SPF_PASS], dkim=[DKIM_PASS], dmarc=DMARC_PASS)
    assert header == (
        "Authentication-Results: mx.example.org;\r\n"
        "\tspf=pass smtp.mailfrom=alice@example.com;\r\n"
        '\tdkim=pass header.d=example.com header.i=@example.com header.s=2026r header.a=rsa-sha256 header.b="abcd/EFGH+ij";\r\n'
        "\tdmarc=pass (p=reject dis=none) header.from=example.com\r\n"
    )
    assert results.authserv_id(header.split(":", 1)[1]) == "mx.example.org"


def test_build_none_and_unsigned() -> None:
    assert results.build("mx.example.org") == "Authentication-Results: mx.example.org; none\r\n"
    header = results.build("mx.example.org", dkim=[])
    assert "dkim=none" in header


def test_helo_identity_and_reasons_are_quoted() -> None:
    helo = SpfResult(
        "temperror", "helo", "mail.example.net", "postmaster@mail.example.net", "192.0.2.9", 'DNS "timeout"'
    )
    bad = DkimResult("fail", "example.com", "s", "ed25519-sha256", "", "", "body hash mismatch")
    header = results.build("mx.example.org", spf=[helo], dkim=[bad])
    assert 'spf=temperror reason="DNS \\"timeout\\"" smtp.helo=mail.example.net' in header
    assert 'dkim=fail reason="body hash mismatch" header.d=example.com' in header
    odd = SpfResult("fail", "mailfrom", "example.com", '"a b"@example.com', "192.0.2.1", "")
    assert 'smtp.mailfrom="\\"a b\\"@example.com"' in results.build("h", spf=[odd])


def test_authserv_id_parsing() -> None:
    assert results.authserv_id(" mx.example.org; spf=pass") == "mx.example.org"
    assert results.authserv_id(" (comment (nested)) MX.Example.ORG 1; none") == "mx.example.org"
    assert results.authserv_id(' "mx.example.org"; none') == "mx.example.org"
    assert results.authserv_id(" mx.example.org;spf=pass") == "mx.example.org"


BLOCK = (
    b"Received: from x by y; Tue, 24 Nov 2026 04:00:00 +0000\r\n"
    b"Authentication-Results: MX.example.org; dkim=pass\r\n"
    b"\theader.d=paypal.com\r\n"
    b"Authentication-Results: other.example.net; spf=pass smtp.mailfrom=a@b.example\r\n"
    b"Authentication-Results: (forged) mx.example.org;\r\n dmarc=pass\r\n"
    b"Authentication-Results: mx.example.org.evil.example; none\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.org; in the body, kept\r\n"
)


def test_remove_ours_keeps_everything_else() -> None:
    cleaned, removed = results.remove_ours(BLOCK, "mx.example.org")
    assert removed == 2
    assert cleaned == (
        b"Received: from x by y; Tue, 24 Nov 2026 04:00:00 +0000\r\n"
        b"Authentication-Results: other.example.net; spf=pass smtp.mailfrom=a@b.example\r\n"
        b"Authentication-Results: mx.example.org.evil.example; none\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; in the body, kept\r\n"
    )


def test_remove_ours_on_lf_and_nothing_to_do() -> None:
    block = b"Authentication-Results: mx.example.org; none\nTo: x\n"
    assert results.remove_ours(block, "mx.example.org") == (b"To: x\n", 1)
    assert results.remove_ours(b"To: x\r\n", "mx.example.org") == (b"To: x\r\n", 0)
