"""mailroom.dns without a network: names, the fake (dict and zone text), the disabled resolver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailroom.config import DNSConfig
from mailroom.dns import (
    MX,
    FakeResolver,
    LazyResolver,
    Lookup,
    NoDnsResolver,
    Status,
    from_config,
    parse_nameserver,
    to_ascii,
)
from mailroom.dnsquery import DnsResolver

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def test_to_ascii() -> None:
    assert to_ascii("Example.ORG.") == "example.org"
    assert to_ascii("bücher.example") == "xn--bcher-kva.example"
    assert to_ascii("_dmarc.Example.org") == "_dmarc.example.org"
    for bad in [
        "",
        ".",
        "a..b",
        "-a.example",
        "a-.example",
        "a b.example",
        "x" * 64 + ".example",
        "a." * 127 + "a",
    ]:
        with pytest.raises(ValueError):
            to_ascii(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["ns.example:53", "127.0.0.1:0", "[::1]", "localhost", "1.2.3.4:99999"])
def test_parse_nameserver_refuses_names_and_bad_ports(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


FAKE = FakeResolver(
    {
        "example.org": {
            "MX": ["20 MX2.example.org.", "10 mx1.example.org"],
            "TXT": "v=spf1 -all",
            "A": "192.0.2.10",
        },
        "mx1.example.org": {"A": ["192.0.2.1"], "AAAA": "2001:db8::1"},
        "mx2.example.org": {"A": "192.0.2.2"},
        "alias.example.org": {"CNAME": "mx1.example.org"},
        "deep.sub.example.org": {"TXT": "x"},
        "loop1.example.org": {"CNAME": "loop2.example.org"},
        "loop2.example.org": {"CNAME": "loop1.example.org"},
        "xn--bcher-kva.example": {"MX": "0 ."},
        "1.2.0.192.in-addr.arpa": {"PTR": "mx1.example.org."},
    },
    tempfail=["broken.example", ("example.net", "MX")],
)


def test_fake_statuses() -> None:
    mx = run(FAKE.mx("EXAMPLE.org"))
    assert mx.ok and sorted(mx.records) == [MX(10, "mx1.example.org"), MX(20, "mx2.example.org")]
    assert run(FAKE.mx("nope.example.org")).status is Status.NXDOMAIN
    assert run(FAKE.mx("mx2.example.org")).status is Status.NODATA
    assert run(FAKE.mx("sub.example.org")).status is Status.NODATA  # empty non-terminal (RFC 8020)
    assert run(FAKE.mx("broken.example")).status is Status.TEMPFAIL
    assert run(FAKE.mx("example.net")).status is Status.TEMPFAIL
    assert run(FAKE.txt("example.net")).status is Status.NXDOMAIN  # only MX was made to fail
    assert run(FAKE.mx("bad..name")).status is Status.NXDOMAIN


def test_fake_addresses_order_and_families() -> None:
    assert run(FAKE.addresses("mx1.example.org")).records == ("2001:db8::1", "192.0.2.1")
    assert run(FAKE.addresses("mx1.example.org", ipv6=False)).records == ("192.0.2.1",)
    assert run(FAKE.addresses("mx2.example.org")).records == ("192.0.2.2",)  # AAAA NODATA tolerated
    assert run(FAKE.addresses("alias.example.org")).records == ("2001:db8::1", "192.0.2.1")
    assert run(FAKE.addresses("loop1.example.org")).status is Status.TEMPFAIL


def test_fake_idna_txt_ptr_query() -> None:
    assert run(FAKE.mx("bücher.example")).records == (MX(0, "."),)
    assert run(FAKE.mx("bücher.example")).records[0].is_null
    assert ("xn--bcher-kva.example", "MX") in FAKE.queries
    assert run(FAKE.txt("example.org")).records == ("v=spf1 -all",)
    assert run(FAKE.ptr("192.0.2.1")).records == ("mx1.example.org",)
    assert run(FAKE.ptr("not-an-ip")).status is Status.NXDOMAIN
    assert run(FAKE.query("mx1.example.org", "aaaa")).records == ("2001:db8::1",)


ZONE = """
$ORIGIN example.com.
@        SOA   ns1 hostmaster 1 3600 600 86400 300
@        MX    10 mail
@        MX    10 mail2.example.net.
mail     A     192.0.2.25
mail     AAAA  2001:DB8::25
sel._domainkey TXT ( "v=DKIM1; k=rsa; "
                     "p=MIIBIjAN" )
$ORIGIN example.net.
mail2    A     192.0.2.26
null     MX    0 .
"""


def test_fake_from_zone_text() -> None:
    fake = FakeResolver.from_zone(ZONE, tempfail=["down.example.net"])
    assert sorted(run(fake.mx("example.com")).records) == [
        MX(10, "mail.example.com"),
        MX(10, "mail2.example.net"),
    ]
    assert run(fake.addresses("mail.example.com")).records == ("2001:db8::25", "192.0.2.25")
    assert run(fake.txt("sel._domainkey.example.com")).records == ("v=DKIM1; k=rsa; p=MIIBIjAN",)
    assert run(fake.mx("null.example.net")).records == (MX(0, "."),)
    assert run(fake.mx("down.example.net")).temporary


def test_lookup_flags() -> None:
    assert Lookup(Status.NODATA).permanent and Lookup(Status.NXDOMAIN).permanent
    assert Lookup(Status.TEMPFAIL).temporary and not Lookup(Status.TEMPFAIL).permanent
    assert Lookup(Status.OK, ("x",)).ok


def test_disabled_resolver_is_temporary_everywhere() -> None:
    off = NoDnsResolver()
    results: list[Lookup[Any]] = [
        run(off.mx("a.example")),
        run(off.addresses("a.example")),
        run(off.txt("a")),
        run(off.ptr("::1")),
        run(off.query("a", "A")),
    ]
    for result in results:
        assert result.status is Status.TEMPFAIL and "disabled" in result.error


def test_from_config(tmp_path: Path) -> None:
    assert isinstance(from_config(DNSConfig(nameservers=())), NoDnsResolver)
    lazy = from_config(DNSConfig(nameservers=("127.0.0.1:5353", "[::1]:5353"), timeout=2.0))
    assert isinstance(lazy, LazyResolver)
    real = lazy._resolver()
    assert isinstance(real, DnsResolver) and real.servers == (("127.0.0.1", 5353), ("::1", 5353))
    assert real._resolver.cache is not None and real._resolver.lifetime == 2.0


def test_dnspython_is_loaded_at_the_first_lookup_only() -> None:
    code = (
        "import sys, asyncio\n"
        "from mailroom.config import DNSConfig\n"
        "from mailroom.dns import from_config\n"
        "r = from_config(DNSConfig(nameservers=('127.0.0.1:9',), timeout=0.2))\n"
        "assert not any(m == 'dns' or m.startswith('dns.') for m in sys.modules), 'eager'\n"
        "result = asyncio.run(r.txt('example.org'))\n"
        "assert result.temporary and 'dns.asyncresolver' in sys.modules, result\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_system_reads_resolv_conf_explicitly(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org\n")
    resolver = DnsResolver(["system", "127.0.0.1:5353"], 1.0, resolv_conf=str(conf))
    assert resolver.servers == (("192.0.2.53", 53), ("2001:db8::53", 53), ("127.0.0.1", 5353))
    with pytest.raises(ValueError):
        DnsResolver([], 1.0)
