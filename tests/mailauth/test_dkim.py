"""DKIM: dkimpy's vectors (RFC 8463 dual signature, Exim ed25519, key-record edge cases), sign-then-verify
with both algorithms, RFC 8301 rules, key generation."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.conftest import TESTDATA, require_path

from mailroom.mailauth import dkim
from mailroom.mailauth.resolver import StaticLookup

DATA = TESTDATA / "dkim-dkimpy" / "data"
FOOTBALL = "football.example.com"
BRISBANE = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: round trip\r\n"
    b"Date: Tue, 24 Nov 2026 04:00:00 +0000\r\nMessage-ID: <rt1@example.org>\r\n\r\nHello DKIM\r\n"
)


def data(name: str) -> bytes:
    return (require_path(DATA, "dkimpy test data") / name).read_bytes()


def record(name: str) -> str:
    return data(name).decode().strip()


def run_verify(lookup: StaticLookup, message: bytes) -> list[dkim.DkimResult]:
    return asyncio.run(dkim.verify(lookup, message))


def football() -> StaticLookup:
    return StaticLookup(
        {
            f"brisbane._domainkey.{FOOTBALL}": {"TXT": BRISBANE},
            f"test._domainkey.{FOOTBALL}": {"TXT": record("test.txt")},
        }
    )


# --- fixed vectors -------------------------------------------------------------------------------------


def test_rfc8463_message_verifies_both_signatures() -> None:
    results = run_verify(football(), data("rfc6376.signed.msg"))
    assert [(r.result, r.algorithm, r.selector, r.domain) for r in results] == [
        ("pass", "ed25519-sha256", "brisbane", FOOTBALL),
        ("pass", "rsa-sha256", "test", FOOTBALL),
    ]
    assert results[0].header_b.startswith("9/dsDChY0YMT")


def test_rsa_only_variant_verifies() -> None:
    assert [r.result for r in run_verify(football(), data("rfc6376.signed.rsa.msg"))] == ["pass"]


def test_tampered_body_fails_both() -> None:
    message = data("rfc6376.signed.msg").replace(b"We lost the game.", b"We won the game.")
    results = run_verify(football(), message)
    assert [r.result for r in results] == ["fail", "fail"]
    assert all("body hash" in r.reason for r in results)


def test_tampered_header_fails() -> None:
    message = data("rfc6376.signed.msg").replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
    assert [r.result for r in run_verify(football(), message)] == ["fail", "fail"]


def test_signature_without_t_does_not_crash() -> None:
    results = run_verify(football(), data("rfc6376.signed.no_t.msg"))
    assert results and all(r.result != "pass" for r in results)


def test_exim_ed25519_relaxed() -> None:
    lookup = StaticLookup({"sed._domainkey.test.ex": {"TXT": record("eximtest.dns")}})
    results = run_verify(lookup, data("ed25519test2.msg"))
    assert [(r.result, r.algorithm, r.domain) for r in results] == [("pass", "ed25519-sha256", "test.ex")]


def test_baddomain_does_not_verify_and_asks_no_dns() -> None:
    lookup = StaticLookup({"test._domainkey.legitimate.com": {"TXT": record("test.txt")}})
    results = run_verify(lookup, data("test.message.baddomain"))
    assert len(results) == 1 and results[0].result in ("neutral", "permerror")
    assert lookup.queries == []


def test_unsigned_message_has_no_results() -> None:
    assert run_verify(StaticLookup(), data("test.message")) == []


# --- key records: sign test.message with test.private, serve a variant key record ------------------------


def _signed_test_message() -> bytes:
    key = dkim.parse_private_key(data("test.private"), "example.com", "test")
    message = data("test.message")
    return dkim.sign_headers(message, [key]) + message


@pytest.mark.parametrize(
    ("key_file", "expected"),
    [
        ("test.txt", "pass"),
        ("test2.txt", "pass"),  # no k=: rsa is the default (RFC 6376 §3.6.1)
        ("badversion.txt", "permerror"),  # v= is not DKIM1
        ("badk.txt", "permerror"),  # unknown k=
        ("1024_testkey_wo_markers.pub.txt", "fail"),  # a different key
    ],
)
def test_key_record_variants(key_file: str, expected: str) -> None:
    lookup = StaticLookup({"test._domainkey.example.com": {"TXT": record(key_file)}})
    assert [r.result for r in run_verify(lookup, _signed_test_message())] == [expected]


def test_missing_revoked_and_temporary_keys() -> None:
    signed = _signed_test_message()
    assert run_verify(StaticLookup(), signed)[0].result == "permerror"
    revoked = StaticLookup({"test._domainkey.example.com": {"TXT": "v=DKIM1; k=rsa; p="}})
    assert run_verify(revoked, signed)[0].reason == "key revoked"
    broken = StaticLookup(tempfail=["test._domainkey.example.com"])
    assert run_verify(broken, signed)[0].result == "temperror"


# --- RFC 8301 ----------------------------------------------------------------------------------------


def test_rsa_sha1_never_passes() -> None:
    import dkim as dkimpy

    message = data("test.message")
    header = dkimpy.sign(
        message, b"test", b"example.com", data("test.private"), signature_algorithm=b"rsa-sha1"
    )
    lookup = StaticLookup({"test._domainkey.example.com": {"TXT": record("test.txt")}})
    assert dkimpy.verify(header + message, dnsfunc=lambda name, timeout=5: record("test.txt").encode())
    results = run_verify(lookup, header + message)
    assert results[0].result == "fail" and "rsa-sha1" in results[0].reason
    assert lookup.queries == []


def _small_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """cryptography refuses to generate keys under 1024 bits: make one from two primes."""
    rng = random.Random(8301)

    def is_prime(n: int) -> bool:
        if n % 2 == 0:
            return False
        d, s = n - 1, 0
        while d % 2 == 0:
            d, s = d // 2, s + 1
        for _ in range(24):
            x = pow(rng.randrange(2, n - 1), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True

    def prime(size: int) -> int:
        while True:
            candidate = rng.getrandbits(size) | (3 << (size - 2)) | 1  # top bits set: p*q has 2*size bits
            if (candidate - 1) % 65537 and is_prime(candidate):
                return candidate

    p, q = prime(bits // 2), prime(bits // 2)
    d = pow(65537, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(65537, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public).private_key()


def test_rsa_key_under_1024_bits_fails() -> None:
    import dkim as dkimpy

    small = _small_rsa_key(768)
    pem = small.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    header = dkimpy.sign(MESSAGE, b"small", b"example.org", pem, include_headers=[b"from"])
    lookup = StaticLookup({"small._domainkey.example.org": {"TXT": dkim.public_key_record(small)}})
    results = run_verify(lookup, header + MESSAGE)
    assert results[0].result == "fail" and "768" in results[0].reason
    with pytest.raises(ValueError, match="at least 1024"):
        dkim.parse_private_key(pem, "example.org", "small")


# --- sign, then verify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_round_trip(tmp_path: Path, key_type: dkim.KeyType) -> None:
    key = dkim.generate_key(tmp_path, "example.org", "s1", key_type)
    signed = asyncio.run(dkim.sign(MESSAGE, [key])) + MESSAGE
    header = signed.split(b"\r\n\r\n")[0].decode()
    assert f"a={key.algorithm}" in header and "c=relaxed/relaxed" in header
    lookup = StaticLookup({key.record_name: {"TXT": key.record}})
    results = run_verify(lookup, signed)
    assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
        ("pass", "example.org", "s1", key.algorithm)
    ]
    # relaxed/relaxed survives re-folding and trailing whitespace; over-signed From blocks a second From
    refolded = signed.replace(b"Subject: round trip", b"Subject:   round\r\n  trip").replace(
        b"Hello DKIM\r\n", b"Hello   DKIM  \r\n"
    )
    assert run_verify(lookup, refolded)[0].result == "pass"
    assert (
        run_verify(lookup, signed.replace(b"To: bob", b"From: mallory@evil.example\r\nTo: bob"))[0].result
        == "fail"
    )


def test_rsa_signature_by_openssl_is_byte_identical_to_dkimpys(tmp_path: Path) -> None:
    """The RSA step runs in OpenSSL; PKCS#1 v1.5 is deterministic, so dkimpy's own pure-Python
    signing of the same header must give the very same bytes (same t= made equal first)."""
    import dkim as dkimpy

    key = dkim.generate_key(tmp_path, "example.org", "s1", "rsa")
    ours = dkim.sign_headers(MESSAGE, [key])
    assert dkimpy.RSASSA_PKCS1_v1_5_sign is dkim._rsa_sign_with_openssl  # the fast path is in use
    t = re.search(rb"t=(\d+)", ours)
    assert t is not None
    include = dkim.signed_header_list(MESSAGE)
    original = dkim._dkimpy_rsa_sign
    signer = dkimpy.DKIM(MESSAGE, linesep=b"\r\n")
    dkimpy.RSASSA_PKCS1_v1_5_sign = original  # dkimpy alone, for this one signature
    try:
        reference = signer.sign(
            b"s1",
            b"example.org",
            key.dkimpy_private(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            signature_algorithm=b"rsa-sha256",
        )
    finally:
        dkimpy.RSASSA_PKCS1_v1_5_sign = dkim._rsa_sign_with_openssl
    if re.search(rb"t=(\d+)", reference).group(1) != t.group(1):  # type: ignore[union-attr]
        pytest.skip("the clock ticked between the two signatures")
    assert ours == reference


def test_two_selectors_sign_twice(tmp_path: Path) -> None:
    rsa_key = dkim.generate_key(tmp_path, "example.org", "2026r", "rsa")
    ed_key = dkim.generate_key(tmp_path, "example.org", "2026e", "ed25519")
    keys = dkim.load_keys(tmp_path, "example.org")
    assert [k.selector for k in keys] == ["2026e", "2026r"]
    signed = dkim.sign_headers(MESSAGE, keys) + MESSAGE
    lookup = StaticLookup({k.record_name: {"TXT": k.record} for k in (rsa_key, ed_key)})
    results = run_verify(lookup, signed)
    assert sorted((r.selector, r.result) for r in results) == [("2026e", "pass"), ("2026r", "pass")]


def test_signed_header_list_oversigns_from() -> None:
    names = dkim.signed_header_list(MESSAGE + b"")
    assert names.count(b"from") == 2 and b"subject" in names and b"received" not in names


def test_sign_without_from_is_refused(tmp_path: Path) -> None:
    key = dkim.generate_key(tmp_path, "example.org", "s1", "ed25519")
    with pytest.raises(ValueError, match="From"):
        dkim.sign_headers(b"To: bob@example.net\r\n\r\nhi\r\n", [key])


def test_generated_key_files(tmp_path: Path) -> None:
    key = dkim.generate_key(tmp_path, "Example.ORG", "sel", "rsa")
    path = dkim.key_path(tmp_path, "example.org", "sel")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert key.record_name == "sel._domainkey.example.org"
    assert key.private_key.key_size == 2048  # type: ignore[union-attr]
    assert key.record.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    with pytest.raises(FileExistsError):
        dkim.generate_key(tmp_path, "example.org", "sel", "ed25519")
    ed = dkim.generate_key(tmp_path, "example.org", "ed", "ed25519")
    assert len(base64.b64decode(ed.record.split("p=")[1])) == 32  # RFC 8463 §4.2
    assert dkim.key_domains(tmp_path) == ["example.org"]


def test_rfc8032_seed_key_resigns_rfc8463_message() -> None:
    key = dkim.parse_private_key(data("rfc8032_7_1.key"), FOOTBALL, "brisbane")
    assert key.record == BRISBANE
    message = data("rfc6376.msg")
    signed = dkim.sign_headers(message, [key]) + message
    assert [r.result for r in run_verify(football(), signed)] == ["pass"]


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="selector"):
        dkim.generate_key(tmp_path, "example.org", "../x", "rsa")
    with pytest.raises(ValueError, match="domain"):
        dkim.generate_key(tmp_path, "exa mple.org", "s", "rsa")


def test_signature_must_cover_from(tmp_path: Path) -> None:
    key = dkim.generate_key(tmp_path, "example.org", "s1", "ed25519")
    signed = dkim.sign_headers(MESSAGE, [key]) + MESSAGE
    header, _, rest = signed.partition(b"\r\nFrom:")
    stripped = re.sub(rb"h=[^;]*;", b"h=subject : date;", header)
    assert stripped != header
    lookup = StaticLookup({key.record_name: {"TXT": key.record}})
    result = run_verify(lookup, stripped + b"\r\nFrom:" + rest)[0]
    assert (result.result, result.reason) == ("permerror", "From field not signed")  # RFC 6376 §6.1.1
