"""DnsResolver against a real authoritative server (Knot on 127.0.0.1:5353, records added by RFC 2136).

How the statuses are produced here:
- NXDOMAIN / NODATA: Knot's authoritative answers for names in proj.test / peer.test.
- TEMPFAIL: Knot answers REFUSED for a zone it does not serve (example.com); a stub resolver sees
  that exactly like SERVFAIL (dnspython: NoNameservers). A port nobody listens on gives a timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from mailroom.dns import MX, DnsResolver, Status
from tests.dns.knot import Knot

pytestmark = pytest.mark.interop
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def resolver(timeout: float = 3.0) -> DnsResolver:
    return DnsResolver(["127.0.0.1:5353"], timeout)


def test_zone_contents(knot: Knot) -> None:
    r = resolver()
    assert run(r.mx("peer.test")).records == (MX(10, "mx.peer.test"),)
    assert run(r.addresses("mx.peer.test")).records == ("::1", "127.0.0.1")
    assert run(r.addresses("mx.peer.test", ipv6=False)).records == ("127.0.0.1",)
    assert run(r.ptr("127.0.0.1")).records == ("mx.peer.test",)
    assert run(r.ptr("::1")).records == ("mx.peer.test",)
    (spf,) = run(r.txt("peer.test")).records
    assert spf == "v=spf1 ip4:127.0.0.1 -all"
    (dkim,) = run(r.txt("sel1._domainkey.peer.test")).records
    assert dkim.startswith("v=DKIM1;") and len(dkim) > 255  # several strings, joined


def test_statuses(knot: Knot) -> None:
    r = resolver()
    knot.add(knot.name("nomx"), "A", "192.0.2.7")
    assert run(r.mx(knot.name("missing"))).status is Status.NXDOMAIN
    assert run(r.mx(knot.name("nomx"))).status is Status.NODATA
    refused = run(r.mx("example.com"))
    assert refused.status is Status.TEMPFAIL and "REFUSED" in refused.error
    assert run(r.mx("bad..name")).status is Status.NXDOMAIN


def test_timeout_is_temporary() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound and silent: queries go unanswered
        port = sock.getsockname()[1]
        dead = DnsResolver([f"127.0.0.1:{port}"], 0.3)
        result = run(dead.mx("peer.test"))
    assert result.status is Status.TEMPFAIL and "timeout" in result.error


def test_idna_and_mx_records_added_by_update(knot: Knot) -> None:
    r = resolver()
    ulabel = f"bücher.{knot.base}"
    alabel = f"xn--bcher-kva.{knot.base}"
    knot.add(alabel, "MX", "5 mx.peer.test.", "0 .")
    assert sorted(run(r.mx(ulabel)).records) == [MX(0, "."), MX(5, "mx.peer.test")]
    knot.add(knot.name("txt"), "TXT", '"a" "b c"', '"second"')
    assert sorted(run(r.txt(knot.name("TXT"))).records) == ["ab c", "second"]


def test_ipv6_nameserver(knot: Knot) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    result = run(DnsResolver(["[::1]:5353"], 3.0).mx("peer.test"))
    if result.temporary:
        pytest.skip(f"Knot does not listen on [::1]:5353 here: {result.error}")
    assert result.records == (MX(10, "mx.peer.test"),)
