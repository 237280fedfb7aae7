"""Routing through the real resolver against Knot, with MX/A/AAAA records added by RFC 2136 UPDATE.

TEMPFAIL comes from a zone Knot does not serve: it answers REFUSED, which a stub resolver treats
like SERVFAIL (see tests/dns/test_dns_knot.py).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from mailroom.delivery.routing import Route, SmarthostPolicy, resolve_route
from mailroom.dns import DnsResolver
from tests.dns.knot import Knot

pytestmark = pytest.mark.interop


def route(domain: str, seed: int = 1, **kw: Any) -> Route:
    resolver = DnsResolver(["127.0.0.1:5353"], 3.0)
    return asyncio.run(resolve_route(domain, resolver, rng=random.Random(seed), **kw))


@pytest.fixture(scope="module")
def world(knot: Knot) -> Knot:
    n = knot.name
    knot.add(n("mx-a"), "A", "192.0.2.1")
    knot.add(n("mx-a"), "AAAA", "2001:db8::1")
    knot.add(n("mx-b"), "A", "192.0.2.2")
    knot.add(n("mx-c"), "AAAA", "2001:db8::3")
    knot.add(n("mx-noaddr"), "TXT", '"no address here"')
    knot.add(n("pref"), "MX", f"20 {n('mx-c')}.", f"10 {n('mx-a')}.", f"10 {n('mx-b')}.")
    knot.add(n("null"), "MX", "0 .")
    knot.add(n("implicit"), "A", "192.0.2.50")
    knot.add(n("implicit"), "AAAA", "2001:db8::50")
    knot.add(n("bare"), "TXT", '"exists, but no MX and no address"')
    knot.add(n("dead"), "MX", f"10 {n('mx-noaddr')}.", f"20 {n('gone')}.")
    knot.add(n("partly"), "MX", "5 mx.example.com.", f"10 {n('mx-b')}.")
    knot.add(n("relay"), "A", "192.0.2.25")
    return knot


def test_preference_order_and_families(world: Knot) -> None:
    n = world.name
    r = route(n("pref"))
    assert r.failure is None
    assert [t.preference for t in r.targets] == [10, 10, 10, 20]
    assert [t.address for t in r.targets if t.host == n("mx-a")] == ["2001:db8::1", "192.0.2.1"]
    assert r.targets[-1].host == n("mx-c")
    firsts = {route(n("pref"), seed).targets[0].host for seed in range(30)}
    assert firsts == {n("mx-a"), n("mx-b")}  # equal preferences shuffled by the seeded RNG
    v4 = route(n("pref"), ipv6=False)
    assert [t.address for t in v4.targets] in (["192.0.2.1", "192.0.2.2"], ["192.0.2.2", "192.0.2.1"])


def test_null_mx_and_implicit_mx(world: Knot) -> None:
    n = world.name
    null = route(n("null"))
    assert null.failure is not None and (null.failure.code, null.failure.enhanced) == (556, "5.1.10")
    implicit = route(n("implicit"))
    assert [(t.address, t.kind) for t in implicit.targets] == [
        ("2001:db8::50", "implicit"),
        ("192.0.2.50", "implicit"),
    ]


@pytest.mark.parametrize(
    ("sub", "code", "enhanced"),
    [("missing", 550, "5.1.2"), ("bare", 550, "5.4.4"), ("dead", 451, "4.4.4")],
)
def test_permanent_and_temporary(world: Knot, sub: str, code: int, enhanced: str) -> None:
    r = route(world.name(sub))
    assert r.failure is not None and (r.failure.code, r.failure.enhanced) == (code, enhanced)


def test_refused_zone_is_temporary(world: Knot) -> None:
    r = route("example.com")
    assert r.failure is not None and (r.failure.code, r.failure.enhanced) == (451, "4.4.3")
    assert "REFUSED" in r.failure.text
    partly = route(world.name("partly"))  # the best MX host is in a zone Knot refuses: skipped
    assert [t.host for t in partly.targets] == [world.name("mx-b")]


def test_smarthost_resolved_through_dns(world: Knot) -> None:
    policy = SmarthostPolicy.parse(f"{world.name('relay')}:587", {})
    (t,) = route(world.name("null"), smarthosts=policy).targets
    assert (t.address, t.port, t.kind) == ("192.0.2.25", 587, "relay")
