"""Knot DNS on 127.0.0.1:5353 / [::1]:5353 (../shared/peers/start-dns.sh) for tests.

The fixture starts Knot only when nothing answers yet (start-dns.sh reloads the zones, which would
drop records other test runs added by dynamic update). Each test run adds its records under a
unique label below ``proj.test`` by RFC 2136 UPDATE and deletes them at the end.

Skips when Knot cannot be had; fails instead when CI=true (tests.interop.conftest.start_peer).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.update
import pytest

from tests.conftest import IN_CI
from tests.interop.conftest import start_peer

HOST = "127.0.0.1"
PORT = 5353
ZONE = "proj.test"


def knot_answers() -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query("peer.test", "SOA"), HOST, port=PORT, timeout=1.0)
    except Exception:
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@dataclass
class Knot:
    """Adds records below a label unique to this test session: ``knot.name("mx1")``."""

    label: str = field(default_factory=lambda: "t" + secrets.token_hex(4))
    names: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"{self.label}.{ZONE}"

    def name(self, sub: str = "") -> str:
        return f"{sub}.{self.base}" if sub else self.base

    def add(self, name: str, rtype: str, *values: str, ttl: int = 60) -> None:
        update = dns.update.Update(ZONE)
        owner = dns.name.from_text(name)
        for value in values:
            update.add(owner, ttl, rtype, value)
        self._send(update)
        self.names.add(name)

    def delete(self, name: str) -> None:
        update = dns.update.Update(ZONE)
        update.delete(dns.name.from_text(name))
        self._send(update)

    def _send(self, update: dns.update.Update) -> None:
        reply = dns.query.tcp(update, HOST, port=PORT, timeout=5.0)
        assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())


def require_knot() -> None:
    if knot_answers():
        return
    start_peer("start-dns.sh")
    if not knot_answers():
        if IN_CI:
            pytest.fail("Knot started but does not answer on 127.0.0.1:5353")
        pytest.skip("Knot does not answer on 127.0.0.1:5353")


@pytest.fixture(scope="session")
def knot() -> Iterator[Knot]:
    require_knot()
    k = Knot()
    yield k
    for name in sorted(k.names, key=len, reverse=True):
        try:
            k.delete(name)
        except Exception:  # best effort: the records live in memory only anyway
            pass
