"""mailroom.net.certinfo reads what `cryptography` reads: the same names, serial, validity and
DNS SANs, on generated corner cases and on every certificate of the system trust store."""

from __future__ import annotations

import datetime
import glob
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.net.certinfo import CertificateFormatError, CertInfo, pem_certificates, read_der, read_pem

KEY = ec.generate_private_key(ec.SECP256R1())
UTC = datetime.UTC


def reference(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        cert.serial_number,
        names,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def build(
    subject: x509.Name,
    *,
    issuer: x509.Name | None = None,
    sans: list[x509.GeneralName] | None = None,
    serial: int = 0x1234_5678_9ABC,
    not_before: datetime.datetime = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    not_after: datetime.datetime = datetime.datetime(2026, 4, 2, 3, 4, 5, tzinfo=UTC),
    critical_san: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=critical_san)
    return builder.sign(KEY, hashes.SHA256())


def attr(oid: ObjectIdentifier, value: str) -> x509.NameAttribute:
    return x509.NameAttribute(oid, value)


CASES = {
    "plain leaf with DNS and IP SANs": build(
        x509.Name([attr(NameOID.COMMON_NAME, "mail.example.org")]),
        issuer=x509.Name(
            [attr(NameOID.COUNTRY_NAME, "US"), attr(NameOID.ORGANIZATION_NAME, "Let's Encrypt")]
        ),
        sans=[
            x509.DNSName("mail.example.org"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("example.org"),
            x509.RFC822Name("postmaster@example.org"),
        ],
    ),
    "RFC 4514 escapes": build(
        x509.Name(
            [
                attr(NameOID.ORGANIZATION_NAME, ' #lead, "quoted" + <angle>; back\\slash trail '),
                attr(NameOID.COMMON_NAME, "ünïcödé ☃"),
            ]
        )
    ),
    "multi-valued RDN and an unnamed OID": x509.CertificateBuilder()
    .subject_name(
        x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Mail"), attr(NameOID.COMMON_NAME, "mx")]
                ),
                x509.RelativeDistinguishedName([attr(NameOID.EMAIL_ADDRESS, "hostmaster@example.org")]),
                x509.RelativeDistinguishedName([attr(NameOID.DOMAIN_COMPONENT, "example")]),
            ]
        )
    )
    .issuer_name(x509.Name([attr(NameOID.COMMON_NAME, "CA")]))
    .public_key(KEY.public_key())
    .serial_number(1)
    .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=UTC))
    .not_valid_after(datetime.datetime(2060, 1, 1, tzinfo=UTC))  # GeneralizedTime after 2049
    .sign(KEY, hashes.SHA256()),
    "no SAN, critical SAN elsewhere, long serial": build(
        x509.Name([attr(NameOID.COMMON_NAME, "a" * 64)]), serial=2**159 - 1
    ),
    "critical SAN": build(x509.Name([]), sans=[x509.DNSName("only.example")], critical_san=True),
    "UTCTime years 1950-2049": build(
        x509.Name([attr(NameOID.COMMON_NAME, "old")]),
        not_before=datetime.datetime(1955, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime "55": 1955
        not_after=datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_fields_as_cryptography(name: str) -> None:
    cert = CASES[name]
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert read_pem(pem) == reference(cert)
    assert read_der(cert.public_bytes(serialization.Encoding.DER)) == reference(cert)


def test_every_system_trust_anchor() -> None:
    paths = sorted(glob.glob("/etc/ssl/certs/*.pem"))
    if not paths:
        pytest.skip("no /etc/ssl/certs (ca-certificates) on this machine")
    compared = 0
    for path in paths:
        with open(path, "rb") as f:
            pem = f.read()
        try:
            cert = x509.load_pem_x509_certificate(pem)
            expected = reference(cert)
        except ValueError:
            continue  # cryptography refuses it: nothing to compare against
        assert read_pem(pem) == expected, path
        compared += 1
    assert compared > 50


def test_chain_order_and_leaf_first() -> None:
    leaf, issuer = CASES["plain leaf with DNS and IP SANs"], CASES["UTCTime years 1950-2049"]
    chain = b"junk before\n" + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, issuer))
    ders = pem_certificates(chain)
    assert [read_der(d).subject for d in ders] == ["CN=mail.example.org", "CN=old"]
    assert read_pem(chain).names == ("mail.example.org", "example.org")


def test_no_certificate() -> None:
    with pytest.raises(CertificateFormatError, match="no PEM certificate"):
        read_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


DER = CASES["plain leaf with DNS and IP SANs"].public_bytes(serialization.Encoding.DER)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(DER) - 1), st.integers(0, 255), st.integers(1, len(DER)))
def test_damaged_der_is_only_ever_a_format_error(pos: int, byte: int, cut: int) -> None:
    damaged = (DER[:pos] + bytes([byte]) + DER[pos + 1 :])[:cut]
    try:
        read_der(damaged)
    except CertificateFormatError:
        pass
