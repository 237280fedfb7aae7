"""RFC 5321 §4.1.2 address grammar, ESMTP parameters and xtext; RFC 3463 replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailroom.wire.smtp.events import MailParams, RcptParams
from mailroom.wire.smtp.replies import Reply, SMTPError, reply
from mailroom.wire.smtp.syntax import (
    decode_base64,
    is_address_literal,
    is_domain,
    parse_auth,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    xtext_decode,
)


@pytest.mark.parametrize(
    ("path", "reverse", "address"),
    [
        ("<>", True, ""),
        ("<a@b.example>", False, "a@b.example"),
        ("<A.B-c+tag@Sub.Example.COM>", False, "A.B-c+tag@Sub.Example.COM"),
        ("<!#$%&'*+-/=?^_`{|}~@x.example>", False, "!#$%&'*+-/=?^_`{|}~@x.example"),
        ('<"john"@x.example>', False, "john@x.example"),
        ('<"john doe"@x.example>', False, '"john doe"@x.example'),
        ('<"a\\"b"@x.example>', False, '"a\\"b"@x.example'),
        ('<"a\\\\b"@x.example>', False, '"a\\\\b"@x.example'),
        ('<"a\\b"@x.example>', False, "ab@x.example"),
        ('<"a..b"@x.example>', False, '"a..b"@x.example'),
        ('<""@x.example>', False, '""@x.example'),
        ("<@r1.example,@r2.example:u@x.example>", False, "u@x.example"),
        ("<@r1.example:u@x.example>", True, "u@x.example"),
        ("<u@[192.0.2.255]>", False, "u@[192.0.2.255]"),
        ("<u@[IPv6:2001:db8::1]>", False, "u@[IPv6:2001:db8::1]"),
        ("<u@[ipv6:::ffff:192.0.2.1]>", False, "u@[ipv6:::ffff:192.0.2.1]"),
        ("<u@[x-tag:anything]>", False, "u@[x-tag:anything]"),
        ("<Postmaster>", False, "Postmaster"),
        ("<pOsTmAsTeR>", False, "pOsTmAsTeR"),
        ("<pelé@exämple.example>", False, "pelé@exämple.example"),
        ('<"用 户"@例子.广告>', False, '"用 户"@例子.广告'),
        ("<a@b>", False, "a@b"),
        ("<1@2>", False, "1@2"),
    ],
)
def test_valid_paths(path: str, reverse: bool, address: str) -> None:
    parsed = parse_path(path + " REST", 0, reverse=reverse)
    assert parsed is not None
    assert parsed.address == address
    assert path[parsed.end :] == ""


@pytest.mark.parametrize(
    ("path", "reverse"),
    [
        ("<>", False),
        ("<Postmaster>", True),
        ("a@b.example", False),
        ("<a@b.example", False),
        ("<a.@b.example>", False),
        ("<.a@b.example>", False),
        ("<a..b@b.example>", False),
        ("<a b@b.example>", False),
        ("<a@b..example>", False),
        ("<a@b.example.>", False),
        ("<a@-b.example>", False),
        ("<a@b-.example>", False),
        ("<a@b_c.example>", False),
        ("<a@>", False),
        ("<@b.example>", False),
        ("<a>", False),
        ("<a@[1.2.3]>", False),
        ("<a@[1.2.3.256]>", False),
        ("<a@[IPv6:1::2::3]>", False),
        ("<a@[IPv6:fe80::1%eth0]>", False),
        ("<a@[tag:with[bracket]>", False),
        ("<a@[:x]>", False),
        ('<"unterminated@b.example>', False),
        ('<"bad\x01char"@b.example>', False),
        ("<@r1.example;u@x.example>", False),
        ("<@r1.example,u@x.example>", False),
        ("<a@" + "x" * 250 + ".example>", False),
    ],
)
def test_invalid_paths(path: str, reverse: bool) -> None:
    assert parse_path(path, 0, reverse=reverse) is None


def test_path_end_leaves_trailing_text_to_the_caller() -> None:
    parsed = parse_path("<a@b.example>> SIZE=1", 0, reverse=False)
    assert parsed is not None and parsed.end == len("<a@b.example>")


def test_domain_and_literal_helpers() -> None:
    assert is_domain("a-b.c1.example")
    assert not is_domain("")
    assert not is_domain("a" * 256)
    assert is_address_literal("[0.0.0.0]")
    assert not is_address_literal("[]")
    assert not is_address_literal("1.2.3.4")


def test_mail_params() -> None:
    p = parse_mail_params(
        " size=12 body=7bit smtputf8 ret=full envid=a+2Bb auth=u+3Dx@y.example", dsn=True, auth=True
    )
    assert p == MailParams(size=12, body="7BIT", smtputf8=True, ret="FULL", envid="a+b", auth="u=x@y.example")
    assert parse_mail_params("", dsn=True, auth=True) == MailParams()
    assert parse_mail_params("  AUTH=<>  ", dsn=False, auth=True) == MailParams(auth="<>")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (" SIZE", 501),
        (" SIZE=", 501),
        (" SIZE=-1", 501),
        (" SIZE=1x", 501),
        (" SIZE=" + "9" * 21, 501),
        (" SIZE=١٢", 501),  # non-ASCII digits
        (" BODY", 501),
        (" SMTPUTF8=yes", 501),
        (" RET=ALL", 501),
        (" ENVID=" + "x" * 101, 501),
        (" ENVID=a+2", 501),
        (" ENVID=a+ZZ", 501),
        (" ENVID=+FF", 501),  # not UTF-8 once decoded
        (" AUTH", 501),
        (" -X=1", 501),
        (" X_Y=1", 501),
        (" X=a\x7fb", 501),
        (" XFORWARD=1", 555),
        (" RET=FULL RET=HDRS", 501),
    ],
)
def test_bad_mail_params(params: str, code: int) -> None:
    with pytest.raises(SMTPError) as info:
        parse_mail_params(params, dsn=True, auth=True)
    assert info.value.smtp_reply.code == code


def test_rcpt_params() -> None:
    assert parse_rcpt_params(" NOTIFY=never", dsn=True) == RcptParams(notify=("NEVER",))
    assert parse_rcpt_params(" NOTIFY=DELAY,SUCCESS", dsn=True).notify == ("DELAY", "SUCCESS")
    assert parse_rcpt_params(" ORCPT=rfc822;a+40b@c", dsn=True).orcpt == "rfc822;a@b@c"
    assert parse_rcpt_params(" ORCPT=utf-8;pel\\x{E9}@c", dsn=True).orcpt == "utf-8;pelé@c"
    assert parse_rcpt_params(" ORCPT=UTF-8;用@c", dsn=True).orcpt == "UTF-8;用@c"
    for bad in (
        " NOTIFY=",
        " NOTIFY=NEVER,DELAY",
        " NOTIFY=SUCCESS,SUCCESS",
        " NOTIFY=SOMETIMES",
        " ORCPT=rfc822",
        " ORCPT=;a@b",
        " ORCPT=rfc822;",
        " ORCPT=rfc 822;a",
        " ORCPT=rfc822;用@c",
        " ORCPT=utf-8;\\x{D800}",
        " ORCPT=utf-8;\\x{110000}",
        " ORCPT=utf-8;\\x{}",
        " ORCPT=rfc822;" + "a" * 500,
    ):
        with pytest.raises(SMTPError) as info:
            parse_rcpt_params(bad, dsn=True)
        assert info.value.smtp_reply.code == 501, bad
    with pytest.raises(SMTPError) as info:
        parse_rcpt_params(" NOTIFY=NEVER", dsn=False)
    assert info.value.smtp_reply.code == 555


def test_xtext() -> None:
    assert xtext_decode("") == ""
    assert xtext_decode("a+2Bb+3D") == "a+b="
    assert xtext_decode("+C3+A9") == "é"
    with pytest.raises(SMTPError):
        xtext_decode("é")


def test_auth_parsing() -> None:
    assert parse_auth("plain") == ("PLAIN", None)
    assert parse_auth("PLAIN =") == ("PLAIN", b"")
    assert parse_auth("SCRAM-SHA-256 biwsbj11c2VyLHI9YWJj") == ("SCRAM-SHA-256", b"n,,n=user,r=abc")
    for bad in ("", "PLAIN a b", "PL@IN", "X" * 21, "PLAIN  "):
        with pytest.raises(SMTPError):
            parse_auth(bad)
    for bad in ("abc", "a b=", "====", "é"):
        with pytest.raises(SMTPError) as info:
            decode_base64(bad)
        assert info.value.smtp_reply.code == 501


@given(st.text(max_size=60))
def test_grammar_never_raises_anything_but_smtp_errors(text: str) -> None:
    for reverse in (True, False):
        parse_path(text, 0, reverse=reverse)
        parse_path("<" + text + ">", 0, reverse=reverse)
    for fn in (
        lambda: parse_mail_params(" " + text, dsn=True, auth=True),
        lambda: parse_rcpt_params(" " + text, dsn=True),
        lambda: parse_auth(text),
        lambda: xtext_decode(text, utf8=True),
    ):
        try:
            fn()
        except SMTPError:
            pass


# --- replies ---------------------------------------------------------------------------------------------


def test_reply_serialisation() -> None:
    assert reply(250, "2.0.0", "Ok").to_bytes() == b"250 2.0.0 Ok\r\n"
    assert reply(250, None, "a", "b", "c").to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert reply(550, "5.1.1", "one", "two").to_bytes() == b"550-5.1.1 one\r\n550 5.1.1 two\r\n"
    assert Reply(334, None, ()).to_bytes() == b"334 \r\n"
    assert reply(250, "2.1.5", "ok").is_positive and not reply(452, "4.5.3", "x").is_positive
    assert reply(553, "5.6.7", "ü").to_bytes() == "553 5.6.7 ü\r\n".encode()


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (199, None, "x"),
        (600, None, "x"),
        (250, "5.0.0", "x"),  # class mismatch
        (250, "2.0", "x"),
        (250, "2.0.1000", "x"),
        (250, None, "a\r\n250 injected"),
        (250, None, "a\nb"),
    ],
)
def test_reply_validation(code: int, enhanced: str | None, text: str) -> None:
    with pytest.raises(ValueError):
        Reply(code, enhanced, (text,))
