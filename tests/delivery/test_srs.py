"""SRS: byte-compatible with postsrsd/libsrs2, round trips, expiry, tampering, SRS1 chains."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.delivery.srs import SRS, SRSInvalid, is_srs

KEY = b"tops3cret"
NOW = 1795502422  # day 20781: timestamp "JN"
DAY = 86400

# Produced by postsrsd 1.10 (Debian 12) with secret "tops3cret", domain fwd.example, at NOW.
POSTSRSD = [
    ("alice@example.org", "SRS0=OFpo=JN=example.org=alice@fwd.example"),
    ("Alice.B+x@Example.ORG", "SRS0=Mzp/=JN=Example.ORG=Alice.B+x@fwd.example"),
    (
        "SRS0=abcd=TT=orig.example=bob@hop.example",
        "SRS1=w4Wu=hop.example==abcd=TT=orig.example=bob@fwd.example",
    ),
    (
        "SRS1=XyZw=hop.example==abcd=TT=orig.example=bob@hop2.example",
        "SRS1=w4Wu=hop.example==abcd=TT=orig.example=bob@fwd.example",
    ),
    ("bob@fwd.example", "bob@fwd.example"),
]


@pytest.mark.parametrize(("sender", "expected"), POSTSRSD)
def test_postsrsd_known_answers(sender: str, expected: str) -> None:
    assert SRS([KEY]).forward(sender, "fwd.example", NOW) == expected


def test_round_trip_and_case_insensitivity() -> None:
    srs = SRS([KEY])
    for sender in ["alice@example.org", "Alice.B+x@Example.ORG", "a=b@c.example", "x@[192.0.2.1]"]:
        rewritten = srs.forward(sender, "fwd.example", NOW)
        assert is_srs(rewritten) and rewritten.endswith("@fwd.example")
        assert srs.reverse(rewritten, NOW) == sender
        assert srs.reverse(rewritten.upper(), NOW + 3 * DAY) == sender.upper()  # case-smashed on the way
        assert srs.reverse(rewritten.lower(), NOW) == sender.lower()


def test_expiry_21_days_and_future_stamps() -> None:
    srs = SRS([KEY])
    rewritten = srs.forward("alice@example.org", "fwd.example", NOW)
    assert srs.reverse(rewritten, NOW + 21 * DAY) == "alice@example.org"
    old = srs.reverse(rewritten, NOW + 22 * DAY)
    assert isinstance(old, SRSInvalid) and old.reason == "expired"
    future = srs.reverse(rewritten, NOW - DAY)  # a stamp from "tomorrow" wraps to 1023 days old
    assert isinstance(future, SRSInvalid) and future.reason == "expired"
    wrapped = srs.forward("alice@example.org", "fwd.example", NOW + 1023 * DAY)
    assert srs.reverse(wrapped, NOW + 1024 * DAY) == "alice@example.org"  # across the 1024-day cycle
    assert SRS([KEY], max_age_days=1).reverse(rewritten, NOW + 2 * DAY) == SRSInvalid(
        "expired", "SRS address is 2 days old"
    )


def test_tampering_and_malformed() -> None:
    srs = SRS([KEY])
    good = srs.forward("alice@example.org", "fwd.example", NOW)
    tampered = good.replace("alice", "mallory")
    assert srs.reverse(tampered, NOW) == SRSInvalid("bad-hash", "SRS0 hash does not match")
    assert isinstance(SRS([b"other"]).reverse(good, NOW), SRSInvalid)
    for bad, reason in [
        ("SRS0=OFpo=JN=example.org@fwd.example", "malformed"),
        ("SRS0=OFpo@fwd.example", "malformed"),
        ("SRS0=OFpo=J1=example.org=alice@fwd.example", "malformed"),
        ("SRS0=OFpo=JNN=example.org=alice@fwd.example", "malformed"),
        ("SRS0==JN=example.org=alice@fwd.example", "malformed"),
        ("SRS0=OFp=JN=example.org=alice@fwd.example", "bad-hash"),
        ("SRS1=abcd=hop.example@fwd.example", "malformed"),
        ("alice@fwd.example", "not-srs"),
        ("SRS2=a=b=c=d@fwd.example", "not-srs"),
        ("SRS0@fwd.example", "not-srs"),
    ]:
        result = srs.reverse(bad, NOW)
        assert isinstance(result, SRSInvalid) and result.reason == reason, (bad, result)


def test_separators_and_longer_hashes_are_accepted_on_input() -> None:
    srs = SRS([KEY])
    good = srs.forward("alice@example.org", "fwd.example", NOW)
    assert srs.reverse(good.replace("SRS0=", "SRS0+", 1), NOW) == "alice@example.org"
    assert srs.reverse(good.replace("SRS0=", "SRS0-", 1), NOW) == "alice@example.org"
    long_hash = SRS([KEY], hash_length=8).forward("alice@example.org", "fwd.example", NOW)
    assert srs.reverse(long_hash, NOW) == "alice@example.org"  # libsrs2 compares hash_length chars


def test_srs1_chain_reverses_to_the_first_hop() -> None:
    first = SRS([b"first hop key"])
    ours = SRS([KEY])
    srs0 = first.forward("alice@example.org", "hop.example", NOW)
    srs1 = ours.forward(srs0, "fwd.example", NOW)
    assert srs1.startswith("SRS1=") and "=hop.example==" in srs1
    # A third forwarder re-signs, keeping the first hop.
    srs1b = SRS([b"third"]).forward(srs1, "third.example", NOW)
    assert srs1b.split("=", 2)[2] == srs1.split("=", 2)[2].replace("@fwd.example", "@third.example")
    back = ours.reverse(srs1, NOW + 30 * DAY)  # SRS1 carries no timestamp of its own
    assert back == srs0
    assert first.reverse(back, NOW) == "alice@example.org"


def test_key_rotation_null_sender_and_bad_input() -> None:
    old = SRS([b"old key"])
    rotated = SRS([b"new key", b"old key"])
    made_before = old.forward("alice@example.org", "fwd.example", NOW)
    assert rotated.reverse(made_before, NOW) == "alice@example.org"
    assert rotated.forward("alice@example.org", "fwd.example", NOW) == SRS([b"new key"]).forward(
        "alice@example.org", "fwd.example", NOW
    )
    assert rotated.forward("", "fwd.example", NOW) == ""
    assert rotated.forward("bob@FWD.example", "fwd.example", NOW) == "bob@FWD.example"
    with pytest.raises(ValueError):
        rotated.forward("no-domain", "fwd.example", NOW)
    with pytest.raises(ValueError):
        SRS([])
    with pytest.raises(ValueError):
        SRS([KEY], hash_length=2)


# --- live interop with postsrsd, when it is installed ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postsrsd(tmp_path: Path) -> Iterator[tuple[int, int]]:
    binary = shutil.which("postsrsd") or (
        "/usr/sbin/postsrsd" if Path("/usr/sbin/postsrsd").exists() else None
    )
    if binary is None:
        pytest.skip("postsrsd not installed (apt-get install postsrsd); the known answers above cover CI")
    secret = tmp_path / "secret"
    secret.write_bytes(KEY + b"\n")
    fwd, rev = _free_port(), _free_port()
    proc = subprocess.Popen(
        [binary, f"-s{secret}", "-dfwd.example", "-l127.0.0.1", f"-f{fwd}", f"-r{rev}", "-4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", fwd), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield fwd, rev
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _ask(port: int, query: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"get {query}\n".encode())
        return s.recv(4096).decode().strip()


@pytest.mark.interop
def test_live_postsrsd_agrees(postsrsd: tuple[int, int]) -> None:
    fwd, rev = postsrsd
    srs = SRS([KEY])
    for sender in ["alice@example.org", "Mixed.Case+tag@Example.NET", "SRS0=abcd=TT=o.example=u@hop.example"]:
        now = time.time()
        theirs = _ask(fwd, sender)
        ours = srs.forward(sender, "fwd.example", now)
        if theirs != f"200 {ours}":  # a day boundary between the two calls
            ours = srs.forward(sender, "fwd.example", time.time())
        assert theirs == f"200 {ours}"
        assert _ask(rev, ours) == f"200 {srs.reverse(ours, time.time())}"
