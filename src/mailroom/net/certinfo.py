"""What the server needs to know about a certificate, read from its DER with no crypto library.

The serving path only needs a certificate's names, validity and issuer (for logs, renewal timing
and "does it cover the hostname"); OpenSSL, through the ssl module, does everything else. Reading
those few fields here keeps the `cryptography` package (about 7 MiB resident) out of an idle
server: it is imported only when a key or certificate is made (self-signed, ACME) or by the CLI.

The layout is RFC 5280 §4.1 (X.509 v3) in DER (ITU-T X.690 §8 and §10); the names are rendered as
RFC 4514 strings, the same text as `cryptography`'s ``Name.rfc4514_string()``, which the tests use
as the reference.
"""

from __future__ import annotations

import datetime
import re
import ssl
from dataclasses import dataclass

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.S)

# X.690 tags (universal class unless noted)
_BOOLEAN, _INTEGER, _OCTET_STRING, _OID, _SEQUENCE, _SET = 0x01, 0x02, 0x04, 0x06, 0x30, 0x31
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_VERSION, _EXTENSIONS, _SAN_DNS = 0xA0, 0xA3, 0x82  # [0] EXPLICIT, [3] EXPLICIT, [2] IMPLICIT
_SAN = "2.5.29.17"  # RFC 5280 §4.2.1.6 subjectAltName

# RFC 4514 §3 short names, and the other names `cryptography` renders by name
_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString (T.61; latin-1 is what everyone does)
    0x1A: "ascii",  # VisibleString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


class CertificateFormatError(ValueError):
    """The bytes are not a DER X.509 certificate this reader understands."""


@dataclass(frozen=True)
class CertInfo:
    """What logs and ``mailroom cert status`` say about a certificate."""

    subject: str
    issuer: str
    serial: int
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def summary(self) -> str:
        return (
            f"serial={self.serial:x} names={','.join(self.names) or '-'} issuer={self.issuer!r} "
            f"expires={self.not_after:%Y-%m-%dT%H:%M:%SZ}"
        )


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER of each PEM certificate block, in file order."""
    try:
        return [ssl.PEM_cert_to_DER_cert(m.group().decode("ascii")) for m in _PEM_CERT.finditer(pem)]
    except (ValueError, UnicodeDecodeError) as exc:  # bad base64 inside a block
        raise CertificateFormatError(f"bad PEM certificate: {exc}") from None


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos`` (X.690 §8.1)."""
    if pos + 2 > len(data):
        raise CertificateFormatError("truncated DER")
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:  # long form: the low bits say how many length octets follow (§8.1.3.5)
        count = size & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertificateFormatError("bad DER length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise CertificateFormatError("truncated DER")
    return tag, pos, pos + size


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        element = _tlv(data, start)
        out.append(element)
        start = element[2]
    return out


def _expect(element: tuple[int, int, int], tag: int, what: str) -> tuple[int, int, int]:
    if element[0] != tag:
        raise CertificateFormatError(f"{what}: expected tag {tag:#x}, found {element[0]:#x}")
    return element


def _oid(raw: bytes) -> str:
    """X.690 §8.19: the first octet packs two arcs, then base-128 numbers."""
    if not raw:
        raise CertificateFormatError("empty OID")
    arcs, value = [], 0
    for octet in raw:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _escape(value: str) -> str:
    """RFC 4514 §2.4."""
    out = re.sub(r'([\\"+,;<>])', r"\\\1", value).replace("\0", "\\00")
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\ "
    return out


def _name(data: bytes, element: tuple[int, int, int]) -> str:
    """An RFC 5280 Name as an RFC 4514 string: RDNs last-first, multi-valued ones joined by '+'."""
    rdns = []
    for rdn in _children(data, element[1], element[2]):
        _expect(rdn, _SET, "RelativeDistinguishedName")
        parts = []
        for atv in _children(data, rdn[1], rdn[2]):
            oid_el, value_el = _children(data, atv[1], atv[2])[:2]
            oid = _oid(data[oid_el[1] : oid_el[2]])
            codec = _STRING_CODECS.get(value_el[0])
            if codec is not None:  # §2.3: a type with no short name is shown as its OID
                text = data[value_el[1] : value_el[2]].decode(codec, "replace")
                parts.append(f"{_ATTRIBUTE_NAMES.get(oid, oid)}={_escape(text)}")
            else:  # §2.4: a value that is not a string is #<hex of its BER encoding>
                parts.append(f"{oid}=#{data[oid_el[2] : value_el[2]].hex()}")  # the value follows the OID
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


def _time(data: bytes, element: tuple[int, int, int]) -> datetime.datetime:
    """RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime
    YYYYMMDDHHMMSSZ, both in UTC with seconds and no fraction (§4.1.2.5.1, §4.1.2.5.2)."""
    text = data[element[1] : element[2]].decode("ascii", "replace")
    digits = text[:-1]
    if not text.endswith("Z") or not digits.isdigit():
        raise CertificateFormatError(f"validity: bad time {text!r}")
    if element[0] == _UTC_TIME and len(digits) == 12:
        year = int(digits[:2])
        year += 1900 if year >= 50 else 2000
        rest = digits[2:]
    elif element[0] == _GENERALIZED_TIME and len(digits) == 14:
        year, rest = int(digits[:4]), digits[4:]
    else:
        raise CertificateFormatError(f"validity: bad time {text!r}")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    try:  # not strptime: it imports _strptime lazily, which may be unreadable after the drop
        return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    except ValueError:
        raise CertificateFormatError(f"validity: bad time {text!r}") from None


def _dns_names(data: bytes, extensions: tuple[int, int, int]) -> tuple[str, ...]:
    for ext in _children(data, extensions[1], extensions[2]):
        fields = _children(data, ext[1], ext[2])
        if _oid(data[fields[0][1] : fields[0][2]]) != _SAN:
            continue
        value = _expect(fields[-1], _OCTET_STRING, "extnValue")  # [critical BOOLEAN] is optional
        names = _expect(_tlv(data, value[1]), _SEQUENCE, "GeneralNames")
        return tuple(
            data[g[1] : g[2]].decode("ascii", "replace")
            for g in _children(data, names[1], names[2])
            if g[0] == _SAN_DNS
        )
    return ()


def read_der(der: bytes) -> CertInfo:
    """RFC 5280 §4.1 fields of one DER certificate; CertificateFormatError for anything else."""
    try:
        return _read_der(der)
    except CertificateFormatError:
        raise
    except (IndexError, ValueError) as exc:  # a short SEQUENCE, undecodable text
        raise CertificateFormatError(f"bad certificate: {exc}") from None


def _read_der(der: bytes) -> CertInfo:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }."""
    cert = _expect(_tlv(der, 0), _SEQUENCE, "Certificate")
    tbs = _expect(_tlv(der, cert[1]), _SEQUENCE, "TBSCertificate")
    fields = _children(der, tbs[1], tbs[2])
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    if len(fields) < 6:
        raise CertificateFormatError("TBSCertificate: too few fields")
    serial_el, _signature, issuer_el, validity_el, subject_el = fields[:5]
    _expect(serial_el, _INTEGER, "serialNumber")
    not_before_el, not_after_el = _children(der, validity_el[1], validity_el[2])[:2]
    names: tuple[str, ...] = ()
    for extra in fields[6:]:
        if extra[0] == _EXTENSIONS:
            names = _dns_names(der, _expect(_tlv(der, extra[1]), _SEQUENCE, "Extensions"))
    return CertInfo(
        subject=_name(der, _expect(subject_el, _SEQUENCE, "subject")),
        issuer=_name(der, _expect(issuer_el, _SEQUENCE, "issuer")),
        serial=int.from_bytes(der[serial_el[1] : serial_el[2]], "big", signed=True),
        names=names,
        not_before=_time(der, not_before_el),
        not_after=_time(der, not_after_el),
    )


def read_pem(pem: bytes) -> CertInfo:
    """The first certificate of a PEM file (the leaf of a chain)."""
    certs = pem_certificates(pem)
    if not certs:
        raise CertificateFormatError("no PEM certificate")
    return read_der(certs[0])
