"""Routing against FakeResolver: every rule of delivery/routing.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from mailroom.delivery.routing import Relay, Route, SmarthostPolicy, parse_relay, resolve_route
from mailroom.dns import FakeResolver, Resolver

RecordMap = Mapping[str, Mapping[str, str | Sequence[str]]]


def route(domain: str, resolver: Resolver, seed: int = 1, **kw: Any) -> Route:
    return asyncio.run(resolve_route(domain, resolver, rng=random.Random(seed), **kw))


def hosts(r: Route) -> list[str]:
    out: list[str] = []
    for t in r.targets:
        if t.host not in out:
            out.append(t.host)
    return out


WORLD: RecordMap = {
    "example.org": {"MX": ["20 mx3.example.org", "10 mx1.example.org", "10 mx2.example.org"]},
    "mx1.example.org": {"A": "192.0.2.1", "AAAA": "2001:db8::1"},
    "mx2.example.org": {"A": "192.0.2.2"},
    "mx3.example.org": {"AAAA": "2001:db8::3"},
    "implicit.example": {"A": ["192.0.2.50", "192.0.2.51"], "AAAA": "2001:db8::50"},
    "exists.example": {"TXT": "v=spf1 -all"},
    "v6only.example": {"AAAA": "2001:db8::66"},
    "nullmx.example": {"MX": "0 ."},
    "mixednull.example": {"MX": ["0 .", "10 mx2.example.org"]},
    "dead.example": {"MX": ["10 gone.example", "20 noaddr.example"]},
    "noaddr.example": {"TXT": "x"},
    "flaky.example": {"MX": ["10 broken-host.example", "20 gone.example"]},
    "partly.example": {"MX": ["10 broken-host.example", "20 mx2.example.org"]},
    "relay.example": {"A": "192.0.2.25", "AAAA": "2001:db8::25"},
    "self.example": {"MX": ["5 mail.ours.example", "10 backup.example", "1 primary.example"]},
    "primary.example": {"A": "192.0.2.99"},
    "backup.example": {"A": "192.0.2.98"},
    "xn--bcher-kva.example": {"MX": "10 mx2.example.org"},
    "same.example": {"MX": ["10 mx1.example.org", "20 mx1-alias.example.org"]},
    "mx1-alias.example.org": {"A": "192.0.2.1"},
    "many.example": {"MX": [f"{i} h{i}.many.example" for i in range(8)]},
    **{f"h{i}.many.example": {"A": f"192.0.2.{100 + i}"} for i in range(8)},
}
FAKE = FakeResolver(WORLD, tempfail=["servfail.example", "broken-host.example"])


def test_mx_preference_order_ipv6_first_per_host() -> None:
    r = route("example.org", FAKE)
    assert r.failure is None
    assert set(hosts(r)[:2]) == {"mx1.example.org", "mx2.example.org"} and hosts(r)[2] == "mx3.example.org"
    mx1 = [t.address for t in r.targets if t.host == "mx1.example.org"]
    assert mx1 == ["2001:db8::1", "192.0.2.1"]  # IPv6 first, then IPv4, per host
    assert all(t.port == 25 and t.kind == "mx" for t in r.targets)
    assert [t.preference for t in r.targets if t.host == "mx3.example.org"] == [20]


def test_equal_preferences_are_shuffled_by_the_injected_rng() -> None:
    orders = {tuple(hosts(route("example.org", FAKE, seed))[:2]) for seed in range(40)}
    assert orders == {("mx1.example.org", "mx2.example.org"), ("mx2.example.org", "mx1.example.org")}
    assert hosts(route("example.org", FAKE, 7)) == hosts(route("example.org", FAKE, 7))  # reproducible
    # The answer's order does not leak through: the same seed gives the same order.
    reordered = FakeResolver(
        {**WORLD, "example.org": {"MX": ["10 mx2.example.org", "20 mx3.example.org", "10 mx1.example.org"]}}
    )
    assert hosts(route("example.org", reordered, 7)) == hosts(route("example.org", FAKE, 7))


def test_ipv6_off() -> None:
    r = route("example.org", FAKE, ipv6=False)
    assert all(":" not in t.address for t in r.targets)
    assert "mx3.example.org" not in hosts(r)  # AAAA-only host skipped
    assert any("mx3.example.org" in n for n in r.notes)


def test_implicit_mx() -> None:
    r = route("implicit.example", FAKE)
    assert [(t.host, t.address, t.kind) for t in r.targets] == [
        ("implicit.example", "2001:db8::50", "implicit"),
        ("implicit.example", "192.0.2.50", "implicit"),
        ("implicit.example", "192.0.2.51", "implicit"),
    ]


@pytest.mark.parametrize(
    ("domain", "kw", "code", "enhanced"),
    [
        ("nullmx.example", {}, 556, "5.1.10"),  # RFC 7505
        ("nowhere.example", {}, 550, "5.1.2"),  # NXDOMAIN
        ("exists.example", {}, 550, "5.4.4"),  # no MX, no address
        ("v6only.example", {"ipv6": False}, 550, "5.4.4"),
        ("bad..domain", {}, 550, "5.1.2"),
        ("servfail.example", {}, 451, "4.4.3"),  # SERVFAIL on MX
        ("dead.example", {}, 451, "4.4.4"),  # MX hosts without addresses
        ("flaky.example", {}, 451, "4.4.3"),  # an MX host's lookup failed temporarily
        ("self.example", {"self_names": ["primary.example"]}, 554, "5.4.6"),
        ("[192.0.2.300]", {}, 550, "5.1.2"),
        ("[tag:whatever]", {}, 550, "5.1.2"),
        ("[IPv6:2001:db8::9]", {"ipv6": False}, 550, "5.4.4"),
        ("[2001:db8::9]", {}, 550, "5.1.2"),  # RFC 5321 §4.1.3 needs the "IPv6:" tag
    ],
)
def test_failures(domain: str, kw: dict[str, Any], code: int, enhanced: str) -> None:
    r = route(domain, FAKE, **kw)
    assert r.targets == () and r.failure is not None
    assert (r.failure.code, r.failure.enhanced) == (code, enhanced)
    assert r.permanent == (code >= 500) and r.temporary == (code < 500)


def test_v6only_implicit_with_ipv6() -> None:
    assert [t.address for t in route("v6only.example", FAKE).targets] == ["2001:db8::66"]


def test_unusable_hosts_are_skipped_when_another_works() -> None:
    r = route("partly.example", FAKE)
    assert hosts(r) == ["mx2.example.org"] and r.failure is None
    assert any("broken-host.example" in n and "tempfail" in n for n in r.notes)


def test_null_mx_mixed_with_real_ones_is_ignored() -> None:
    r = route("mixednull.example", FAKE)
    assert hosts(r) == ["mx2.example.org"] and r.notes


def test_own_name_drops_it_and_less_preferred_hosts() -> None:
    """RFC 5321 §5.1: discard our own MX record and all with an equal or higher number."""
    r = route("self.example", FAKE, self_names=["MAIL.ours.example"])
    assert hosts(r) == ["primary.example"]


def test_same_address_is_tried_once() -> None:
    r = route("same.example", FAKE)
    assert [t.address for t in r.targets] == ["2001:db8::1", "192.0.2.1"]


def test_caps() -> None:
    r = route("many.example", FAKE)
    assert hosts(r) == [f"h{i}.many.example" for i in range(5)]
    r = route("many.example", FAKE, max_mx_hosts=8, max_targets=3)
    assert len(r.targets) == 3


def test_u_label_domain() -> None:
    r = route("Bücher.example", FAKE)
    assert r.domain == "xn--bcher-kva.example" and hosts(r) == ["mx2.example.org"]


def test_address_literals_need_no_dns() -> None:
    fresh = FakeResolver()
    (t,) = route("[192.0.2.7]", fresh).targets
    assert (t.address, t.port, t.kind, t.host) == ("192.0.2.7", 25, "literal", "[192.0.2.7]")
    (t,) = route("[IPv6:2001:DB8::7]", fresh).targets
    assert t.address == "2001:db8::7"
    assert fresh.queries == []


def test_parse_relay() -> None:
    assert parse_relay("relay.example:587") == Relay("relay.example", 587)
    assert parse_relay("Relay.Example") == Relay("relay.example", 25)
    assert parse_relay("[192.0.2.1]:2525") == Relay("192.0.2.1", 2525)
    assert parse_relay("192.0.2.1:465") == Relay("192.0.2.1", 465)
    assert parse_relay("[2001:db8::1]:587") == Relay("2001:db8::1", 587)
    assert str(Relay("2001:db8::1", 587)) == "[2001:db8::1]:587"
    for bad in ["", "relay:0", "relay:70000", "[relay.example]:25", "a:b:c", "bad..name:25"]:
        with pytest.raises(ValueError):
            parse_relay(bad)


def test_smarthost_for_everything_bypasses_mx() -> None:
    policy = SmarthostPolicy.parse("relay.example:587", {})
    r = route("nullmx.example", FAKE, smarthosts=policy)  # even a null MX: the relay decides
    assert [(t.host, t.address, t.port, t.kind) for t in r.targets] == [
        ("relay.example", "2001:db8::25", 587, "relay"),
        ("relay.example", "192.0.2.25", 587, "relay"),
    ]
    assert r.targets[0].relay == Relay("relay.example", 587)
    assert [t.address for t in route("[192.0.2.7]", FAKE, smarthosts=policy).targets][-1] == "192.0.2.25"


def test_smarthost_per_destination() -> None:
    policy = SmarthostPolicy.parse(
        None, {"outlook.com": "relay.example:2525", ".hotmail.com": "[192.0.2.9]:25"}
    )
    world = FakeResolver({**WORLD, "outlook.com": {"MX": "10 mx1.example.org"}})
    assert route("outlook.com", world, smarthosts=policy).targets[0].port == 2525
    assert route("Outlook.COM", world, smarthosts=policy).targets[0].kind == "relay"
    (t,) = route("eu.hotmail.com", FAKE, smarthosts=policy).targets
    assert (t.address, t.kind) == ("192.0.2.9", "relay")
    assert route("hotmail.com", FAKE, smarthosts=policy).failure is not None  # ".x" means below x only
    assert route("sub.outlook.com", FAKE, smarthosts=policy).failure is not None  # exact key: no subdomains
    assert route("example.org", FAKE, smarthosts=policy).targets[0].kind == "mx"


def test_smarthost_failures_are_temporary() -> None:
    for relay in ["nowhere.example:587", "servfail.example:25", "exists.example:25"]:
        r = route("example.org", FAKE, smarthosts=SmarthostPolicy.parse(relay, {}))
        assert r.temporary, (relay, r)
    r = route("example.org", FAKE, ipv6=False, smarthosts=SmarthostPolicy.parse("[2001:db8::25]:25", {}))
    assert r.temporary
