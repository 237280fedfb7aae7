"""Pure and in-memory TLS pieces: ClientHello peek, pair checks, hot swap, policy, schedule, RFC 8737 cert."""

from __future__ import annotations

import datetime
import hashlib
import random
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from mailroom.acme.challenges import ID_PE_ACME_IDENTIFIER, alpn_challenge_cert
from mailroom.acme.manager import renewal_time, retry_delay
from mailroom.net.tls import (
    NotTLS,
    ServerTLS,
    TLSError,
    check_pair,
    hello_records_complete,
    parse_client_hello,
)
from tests.tls.certs import make_pair, serial_of


def client_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def handshake_serial(server: ssl.SSLContext, server_name: str = "mx.example.org") -> int:
    """Run a whole handshake in memory against ``server``; the serial the client saw."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return serial_of(c.getpeercert(binary_form=True))


def test_client_hello_sni_and_alpn() -> None:
    data = client_hello("Mail.Example.org", ["acme-tls/1", "http/1.1"])
    assert hello_records_complete(data) == len(data)
    hello = parse_client_hello(data)
    assert hello.server_name == "mail.example.org"
    assert hello.alpn == ("acme-tls/1", "http/1.1")


def test_client_hello_without_extensions_of_interest() -> None:
    hello = parse_client_hello(client_hello(None, None))
    assert hello.server_name == "" and hello.alpn == ()


def test_client_hello_incomplete_and_split_over_records() -> None:
    data = client_hello("mx.example.org", ["acme-tls/1"])
    for cut in (1, 4, 5, 40, len(data) - 1):
        assert hello_records_complete(data[:cut]) is None
    # the same handshake message split over two TLS records (RFC 8446 §5.1 allows it)
    body = data[5:]
    half = len(body) // 2
    split = b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half]
    split += b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:]
    assert hello_records_complete(split) == len(split)
    assert parse_client_hello(split).alpn == ("acme-tls/1",)


@pytest.mark.parametrize(
    "junk", [b"GET / HTTP/1.1\r\n", b"\x16\x02\x00\x00\x01", b"\x15\x03\x03\x00\x02\x02\x28"]
)
def test_not_tls(junk: bytes) -> None:
    with pytest.raises(NotTLS):
        hello_records_complete(junk)


def test_check_pair_names_the_problem(tmp_path: Path) -> None:
    cert, key, _ = make_pair(tmp_path, "a")
    _, other_key, _ = make_pair(tmp_path, "b")
    with pytest.raises(
        TLSError, match=r"^tls\.key: .*b\.key is not the private key of the certificate in .*a\.crt"
    ):
        check_pair(cert.read_bytes(), other_key.read_bytes(), cert, other_key)
    with pytest.raises(TLSError, match=r"^tls\.cert: .*: no PEM certificate"):
        check_pair(b"junk", key.read_bytes(), cert, key)
    with pytest.raises(TLSError, match=r"^tls\.key: .*: no usable PEM private key"):
        check_pair(cert.read_bytes(), cert.read_bytes(), cert, key)


@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
def test_encrypted_key_is_refused_without_prompting(tmp_path: Path, form: str) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key, _ = make_pair(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    fmt = (
        serialization.PrivateFormat.PKCS8
        if form == "pkcs8"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    locked = private.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(b"secret")
    )
    with pytest.raises(TLSError, match=r"^tls\.key: .*: the key is encrypted"):
        check_pair(cert.read_bytes(), locked, cert, key)
    # a key whose PEM armour hides no key at all
    with pytest.raises(TLSError, match=r"^tls\.key: .*: no usable PEM private key"):
        check_pair(
            cert.read_bytes(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", cert, key
        )


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    cert, _, _ = make_pair(tmp_path)
    with pytest.raises(TLSError) as info:
        ServerTLS(cert, tmp_path / "nope.key", scratch_dir=tmp_path / "scratch")
    assert str(info.value) == f"tls.key: key {tmp_path / 'nope.key'}: no such file"


def test_bad_new_pair_keeps_the_old_one_in_the_shared_context(tmp_path: Path) -> None:
    cert, key, serial = make_pair(tmp_path, "one")
    tls = ServerTLS(cert, key, scratch_dir=tmp_path / "scratch")
    context = tls.context
    assert handshake_serial(context) == serial
    cert2, _, _ = make_pair(tmp_path, "two")
    with pytest.raises(TLSError, match="wrong key"):
        tls.load(cert2, key)  # a certificate with someone else's key: never half-applied
    assert handshake_serial(context) == serial
    assert tls.cert == cert
    cert3, key3, serial3 = make_pair(tmp_path, "three")
    tls.load(cert3, key3)
    assert tls.context is context  # the same object every listener holds
    assert handshake_serial(context) == serial3
    scratch = tmp_path / "scratch"  # Linux loads from memfds and never needs it
    assert not scratch.exists() or not list(scratch.iterdir())  # snapshots are removed


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_policy_tls12_minimum(tmp_path: Path) -> None:
    cert, key, _ = make_pair(tmp_path)
    tls = ServerTLS(cert, key, scratch_dir=tmp_path)
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    try:
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
        client.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="x")
    s = tls.context.wrap_bio(s_in, s_out, server_side=True)
    with pytest.raises(ssl.SSLError):
        for _ in range(5):
            for side in (c, s):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())


def test_renewal_when_a_third_of_the_lifetime_remains() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert renewal_time(start, start + datetime.timedelta(days=90)) == start + datetime.timedelta(days=60)
    # short-lived certificates (6 days, 6 hours) renew just as well
    assert renewal_time(start, start + datetime.timedelta(days=6)) == start + datetime.timedelta(days=4)
    assert renewal_time(start, start + datetime.timedelta(hours=6)) == start + datetime.timedelta(hours=4)


def test_retry_backoff_grows_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [retry_delay(n, rng, base=60, cap=3600) for n in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(3600, 60 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 3) for d in delays[6:]}) > 1  # jitter: capped retries are not in lockstep
    assert max(delays) <= 3600


def test_tls_alpn_challenge_certificate_rfc8737() -> None:
    key_authz = "token123.thumbprint456"
    cert_pem, _ = alpn_challenge_cert("mx.example.org", key_authz)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(ID_PE_ACME_IDENTIFIER))
    assert ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(key_authz.encode()).digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.org"]
