"""The MX pipeline end to end over a static DNS, and proof that nothing uses the system resolver."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest

from mailroom.mailauth import dkim, inbound, spf
from mailroom.mailauth.resolver import StaticLookup

MESSAGE = (
    b"Authentication-Results: mx.example.net; dmarc=pass header.from=example.org\r\n"
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
    b"Date: Tue, 24 Nov 2026 04:00:00 +0000\r\nMessage-ID: <in1@example.org>\r\n\r\nHello\r\n"
)


@pytest.fixture
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way to the system resolver raises (and is recorded)."""
    calls: list[str] = []

    def refuse(what: str) -> Any:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            calls.append(what)
            raise AssertionError(f"system resolver used: {what}{args}")

        return raiser

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    monkeypatch.setattr(dns.resolver.Resolver, "resolve", refuse("dns.resolver.Resolver.resolve"))
    monkeypatch.setattr(dns.resolver, "resolve", refuse("dns.resolver.resolve"))
    monkeypatch.setattr(dns.resolver, "query", refuse("dns.resolver.query"))
    monkeypatch.setattr(dns.asyncresolver.Resolver, "resolve", refuse("dns.asyncresolver.Resolver.resolve"))
    return calls


def _world(tmp_path: Path) -> tuple[StaticLookup, list[dkim.SigningKey]]:
    keys = [
        dkim.generate_key(tmp_path, "example.org", "r1", "rsa"),
        dkim.generate_key(tmp_path, "example.org", "e1", "ed25519"),
    ]
    records: dict[str, dict[str, Any]] = {
        "example.org": {"TXT": "v=spf1 ip4:192.0.2.10 -all", "MX": "10 mail.example.org"},
        "_dmarc.example.org": {"TXT": "v=DMARC1; p=reject"},
        "nodmarc.example": {"TXT": "v=spf1 ip4:192.0.2.20 -all"},
        "mail.example.org": {"A": "192.0.2.10"},
    }
    for key in keys:
        records[key.record_name] = {"TXT": key.record}
    return StaticLookup(records), keys


def _auth(lookup: StaticLookup, message: bytes, ip: str, mail_from: str) -> inbound.InboundAuth:
    return asyncio.run(
        inbound.authenticate(
            lookup,
            message,
            authserv_id="mx.example.net",
            client_ip=ip,
            helo="mail.example.org",
            mail_from=mail_from,
        )
    )


def test_signed_mail_passes_everything(tmp_path: Path, no_system_dns: list[str]) -> None:
    lookup, keys = _world(tmp_path)
    signed = dkim.sign_headers(MESSAGE, keys) + MESSAGE
    auth = _auth(lookup, signed, "192.0.2.10", "alice@example.org")
    assert auth.spf is not None and auth.spf.result == "pass"
    assert sorted(r.result for r in auth.dkim) == ["pass", "pass"]
    assert auth.dmarc is not None and auth.dmarc.result == "pass"
    assert auth.verdict.action == "accept"
    assert "spf=pass" in auth.header and "dkim=pass" in auth.header and "dmarc=pass" in auth.header
    stamped = inbound.stamp(signed, auth.header, "mx.example.net")
    assert stamped.startswith(auth.header.encode())
    assert stamped.count(b"Authentication-Results: mx.example.net;") == 1  # the forged one is gone
    assert b"dmarc=pass header.from=example.org\r\n" not in stamped
    assert no_system_dns == []


def test_forged_from_of_reject_domain_is_refused(tmp_path: Path, no_system_dns: list[str]) -> None:
    lookup, _keys = _world(tmp_path)
    auth = _auth(lookup, MESSAGE, "203.0.113.5", "alice@example.org")
    assert (auth.spf and auth.spf.result, auth.dmarc and auth.dmarc.result) == ("fail", "fail")
    assert auth.verdict.reply.startswith("550 5.7.1 ")
    assert no_system_dns == []


def test_spf_fail_without_dmarc_is_refused_with_5_7_23(tmp_path: Path, no_system_dns: list[str]) -> None:
    lookup, _keys = _world(tmp_path)
    message = MESSAGE.replace(b"alice@example.org", b"carol@nodmarc.example")
    auth = _auth(lookup, message, "203.0.113.5", "carol@nodmarc.example")
    assert auth.dmarc is not None and auth.dmarc.result == "none"
    assert auth.verdict.reply.startswith("550 5.7.23 ")


def test_dns_failure_is_451(tmp_path: Path, no_system_dns: list[str]) -> None:
    lookup, _keys = _world(tmp_path)
    lookup.tempfail.add("example.org")
    auth = _auth(lookup, MESSAGE, "192.0.2.10", "alice@example.org")
    assert auth.spf is not None and auth.spf.result == "temperror"
    assert auth.verdict.reply.startswith("451 4.4.3 ")


def test_submission_is_not_checked(tmp_path: Path) -> None:
    lookup, _keys = _world(tmp_path)
    auth = asyncio.run(
        inbound.authenticate(
            lookup,
            MESSAGE,
            authserv_id="mx",
            client_ip="203.0.113.5",
            helo="x",
            mail_from="a@example.org",
            is_submission=True,
        )
    )
    assert auth.verdict.action == "accept" and auth.header == "" and lookup.queries == []


def test_pyspf_alone_cannot_reach_dns(no_system_dns: list[str]) -> None:
    """pyspf's module-level DNSLookup is ours from the moment mailroom loads it: outside
    check_host() it answers temperror."""
    pyspf = spf._pyspf()
    result = pyspf.check2(i="192.0.2.1", s="a@example.org", h="mail.example.org")
    assert result[0] == "temperror"
    assert no_system_dns == []


def test_event_loop_stays_free_while_spf_waits() -> None:
    """pyspf runs in a worker thread; its lookups come back to the loop, which keeps running."""
    ticks: list[int] = []
    started = threading.Event()

    class SlowLookup(StaticLookup):
        async def __call__(self, name: str, rdtype: Any, /) -> Any:
            started.set()
            await asyncio.sleep(0.2)
            return await super().__call__(name, rdtype)

    async def main() -> str:
        from mailroom.mailauth.spf import check_host

        async def ticker() -> None:
            for i in range(10):
                ticks.append(i)
                await asyncio.sleep(0.01)

        lookup = SlowLookup({"example.org": {"TXT": "v=spf1 ip4:192.0.2.1 -all"}})
        result, _ = await asyncio.gather(
            check_host(lookup, "192.0.2.1", "a@example.org", "h.example"), ticker()
        )
        return result.result

    assert asyncio.run(main()) == "pass"
    assert started.is_set() and len(ticks) == 10


def test_spf_without_identity_is_none() -> None:
    from mailroom.mailauth.spf import check_helo

    result = asyncio.run(check_helo(StaticLookup(), "192.0.2.1", ""))
    assert (result.result, result.identity) == ("none", "helo")
