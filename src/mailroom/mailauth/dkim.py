"""DKIM signing and verification (RFC 6376, RFC 8463 ed25519, RFC 8301) on dkimpy.

Signing: :func:`sign` / :func:`sign_headers` add one DKIM-Signature per configured key (two
selectors may coexist during a rotation, and an rsa-sha256 key beside an ed25519-sha256 one is
the usual pair), relaxed/relaxed, over :data:`SIGNED_HEADERS` with From signed once more than it
occurs (over-signing: nobody can add a second From without breaking the signature).

Verification: :func:`verify` gives one :class:`DkimResult` per signature. The key records are
fetched first through our :class:`~mailroom.mailauth.resolver.DnsLookup` (so a DNS failure is a
``temperror`` value and dkimpy never queries DNS itself); the hashing and the public-key
arithmetic then run in a worker thread.

Keys on disk: ``<data_dir>/dkim/<domain>/<selector>.key``, PKCS#8 PEM, mode 0600
(:func:`generate_key`, :func:`load_keys`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from mailroom.mailauth.resolver import Answer, DnsLookup

# dkimpy and cryptography (with PyNaCl, about 8 MiB resident together) are imported inside the
# functions that sign or verify, so an idle server does not carry them.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

DkimStatus = Literal["pass", "fail", "neutral", "temperror", "permerror"]
KeyType = Literal["rsa", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("rsa", "ed25519")
ALGORITHMS: Mapping[KeyType, bytes] = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

RSA_BITS = 2048  # RFC 8301 §3.2: signers SHOULD use at least 2048 bits
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: smaller keys MUST NOT be considered valid
MAX_SIGNATURES = 8  # RFC 6376 §6.1: verifiers MAY limit the number of signatures they check

# RFC 6376 §5.4.1's recommended set (what dkimpy calls SHOULD), plus RFC 8058 List-Unsubscribe-Post.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
# RFC 6376 §8.15: signing one more instance than present forbids adding another.
OVERSIGNED_HEADERS: tuple[str, ...] = ("from",)

_quiet = logging.getLogger("mailroom.mailauth.dkimpy")  # dkimpy logs every bad key at ERROR
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


# --- keys -------------------------------------------------------------------------------------------


def _dns_name(text: str, what: str) -> str:
    """Lower-case A-labels without the final dot, or ValueError naming ``what``."""
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise ValueError(f"{what}: not a valid DNS name: {text!r}") from None
    if not name or len(name) > 253 or not all(_NAME.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{what}: not a valid DNS name: {text!r}")
    return name


@dataclass(frozen=True)
class SigningKey:
    """A private key for one (domain, selector)."""

    domain: str
    selector: str
    key_type: KeyType
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> str:
        return ALGORITHMS[self.key_type].decode()

    @property
    def record_name(self) -> str:
        """RFC 6376 §3.6.2.1: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        """The TXT record text (RFC 6376 §3.6.1; RFC 8463 §4.2 for ed25519)."""
        return public_key_record(self.private_key)

    def dkimpy_private(self) -> bytes:
        """The private key as dkimpy's sign() takes it: PKCS#1 PEM, or the base64 ed25519 seed."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return base64.b64encode(self.private_key.private_bytes_raw())
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


def public_key_record(private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        # RFC 8463 §4.2: p= is the base64 of the raw 32-byte public key.
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    # RFC 6376 §3.6.1: k=rsa, p= base64 of the DER SubjectPublicKeyInfo.
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def parse_private_key(data: bytes, domain: str, selector: str) -> SigningKey:
    """A PEM private key (PKCS#1 or PKCS#8, RSA or Ed25519), or a base64 ed25519 seed (dkimpy's
    own format, as in RFC 8463's examples)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    domain = _dns_name(domain, "domain")
    selector = _dns_name(selector, "selector")
    text = data.strip()
    key: Any
    if b"-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a usable private key: {exc}") from None
    else:
        try:
            seed = base64.b64decode(text, validate=True)
        except ValueError:
            raise ValueError("not a PEM private key or a base64 ed25519 seed") from None
        if len(seed) != 32:
            raise ValueError("a base64 ed25519 seed must be 32 bytes")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey(domain, selector, "ed25519", key)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:  # RFC 8301 §3.2
            raise ValueError(f"RSA key of {key.key_size} bits: DKIM needs at least {MIN_RSA_BITS}")
        return SigningKey(domain, selector, "rsa", key)
    raise ValueError(f"unsupported key type {type(key).__name__}: DKIM keys are RSA or Ed25519")


def key_dir(data_dir: Path, domain: str) -> Path:
    return Path(data_dir) / "dkim" / _dns_name(domain, "domain")


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return key_dir(data_dir, domain) / f"{_dns_name(selector, 'selector')}.key"


def generate_key(data_dir: Path, domain: str, selector: str, key_type: KeyType = "rsa") -> SigningKey:
    """Make a key (RSA 2048 or Ed25519) and write it to :func:`key_path`, mode 0600.

    Refuses to overwrite an existing key (FileExistsError). Returns the key; its ``record`` is the
    TXT record to publish at ``record_name``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if key_type not in KEY_TYPES:
        raise ValueError(f"algorithm: expected rsa or ed25519, got {key_type!r}")
    path = key_path(data_dir, domain, selector)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        if key_type == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
    finally:
        os.close(fd)
    return SigningKey(_dns_name(domain, "domain"), path.stem, key_type, private)


def load_keys(data_dir: Path, domain: str) -> list[SigningKey]:
    """Every ``<selector>.key`` of ``domain``, sorted by selector (empty when there are none)."""
    directory = key_dir(data_dir, domain)
    if not directory.is_dir():
        return []
    keys = []
    for path in sorted(directory.glob("*.key")):
        try:
            keys.append(parse_private_key(path.read_bytes(), directory.name, path.stem))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return keys


def key_domains(data_dir: Path) -> list[str]:
    """Domains that have at least one key under ``<data_dir>/dkim``."""
    root = Path(data_dir) / "dkim"
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.key")))


# --- signing ----------------------------------------------------------------------------------------

# RSA keys being signed with, by modulus: dkimpy hands its signing step only its own parse of the
# key, and this finds ours (the OpenSSL one) again.
_OPENSSL_RSA: dict[int, rsa.RSAPrivateKey] = {}


def _rsa_sign_with_openssl(digest: Any, private_key: Mapping[str, int]) -> bytes:
    """dkimpy's RSASSA_PKCS1_v1_5_sign (RFC 8017 §8.2.1) done by OpenSSL instead of Python's
    pow(): ~0.2 ms instead of ~6 ms for RSA 2048, without holding the GIL. PKCS#1 v1.5 is
    deterministic, so the signature is byte for byte the one dkimpy would make."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    key = _OPENSSL_RSA.get(private_key["modulus"])
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}.get(digest.name)
    if key is None or algorithm is None:
        return bytes(_dkimpy_rsa_sign(digest, private_key))
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


_dkimpy_rsa_sign: Any = None


def _dkimpy() -> Any:  # dkimpy has no type hints
    """dkimpy, imported at the first signature or check, its RSA signing step done by OpenSSL."""
    global _dkimpy_rsa_sign
    import dkim

    if dkim.RSASSA_PKCS1_v1_5_sign is not _rsa_sign_with_openssl:
        _dkimpy_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign
        dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign_with_openssl  # DKIM.gen_header looks it up per call
    return dkim


def _header_names(message: bytes) -> list[bytes]:
    names = []
    for line in re.split(rb"\r?\n", message):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, sep, _ = line.partition(b":")
        if sep:
            names.append(name.strip().lower())
    return names


def signed_header_list(
    message: bytes,
    headers: Sequence[str] = SIGNED_HEADERS,
    oversign: Sequence[str] = OVERSIGNED_HEADERS,
) -> list[bytes]:
    """h= for this message: each listed header once per occurrence, the over-signed ones once more."""
    present = _header_names(message)
    wanted = {h.lower().encode() for h in headers}
    names = [n for n in present if n in wanted]
    return names + [h.lower().encode() for h in oversign]


def sign_headers(message: bytes, keys: Sequence[SigningKey], *, linesep: bytes = b"\r\n") -> bytes:
    """The DKIM-Signature header fields (one per key, each ending in ``linesep``) to prepend.

    Raises ValueError when the message cannot be signed (no From, RFC 6376 §5.4).
    """
    dkimpy = _dkimpy()

    if not keys:
        return b""
    include = signed_header_list(message)
    if b"from" not in _header_names(message):
        raise ValueError("cannot DKIM-sign a message without a From header (RFC 6376 §5.4)")
    out = []
    for key in keys:
        if key.key_type == "rsa":
            private = cast("rsa.RSAPrivateKey", key.private_key)
            _OPENSSL_RSA[private.private_numbers().public_numbers.n] = private
        signer = dkimpy.DKIM(message, logger=_quiet, linesep=linesep)
        try:
            out.append(
                signer.sign(
                    key.selector.encode(),
                    key.domain.encode(),
                    key.dkimpy_private(),
                    signature_algorithm=ALGORITHMS[key.key_type],
                    canonicalize=(b"relaxed", b"relaxed"),  # RFC 6376 §3.4.2 / §3.4.4
                    include_headers=include,
                )
            )
        except dkimpy.DKIMException as exc:
            raise ValueError(f"DKIM signing with {key.record_name} failed: {exc}") from None
    return b"".join(out)


async def sign(message: bytes, keys: Sequence[SigningKey]) -> bytes:
    """:func:`sign_headers` in a worker thread (RSA signing and body hashing are CPU work)."""
    return await asyncio.to_thread(sign_headers, message, keys)


# --- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The outcome for one DKIM-Signature (RFC 8601 §2.7.1 result names)."""

    result: DkimStatus
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    signature: str = ""  # b= with whitespace removed (RFC 6008 header.b uses a prefix)
    reason: str = ""

    @property
    def header_b(self) -> str:
        """RFC 6008 §4: enough of b= to tell signatures apart (at least 8 characters)."""
        return self.signature[:12]


@dataclass
class _Sig:
    index: int
    tags: dict[bytes, bytes] | None
    result: DkimResult
    key_name: str = ""
    key_record: str = ""


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _result(tags: Mapping[bytes, bytes], status: DkimStatus, reason: str) -> DkimResult:
    return DkimResult(
        status,
        domain=_text(tags.get(b"d")).lower(),
        selector=_text(tags.get(b"s")),
        algorithm=_text(tags.get(b"a")).lower(),
        identity=_text(tags.get(b"i")),
        signature=re.sub(r"\s+", "", _text(tags.get(b"b"))),
        reason=reason,
    )


def _parse_signatures(message: bytes, limit: int) -> list[_Sig]:
    dkimpy = _dkimpy()
    from dkim.util import parse_tag_value

    signer = dkimpy.DKIM(message, logger=_quiet)
    count = sum(1 for name, _ in signer.headers if name.lower() == b"dkim-signature")
    sigs = []
    for index in range(min(count, limit)):
        raw: dict[bytes, bytes] = {}
        try:
            value = [v for n, v in signer.headers if n.lower() == b"dkim-signature"][index]
            raw = parse_tag_value(re.sub(rb"\r?\n[ \t]", b" ", value))
        except Exception:
            raw = {}
        try:
            prep = signer.verify_headerprep(index)  # RFC 6376 §6.1.1: tags, syntax, t=/x=
            tags: dict[bytes, bytes] = prep[0] if prep else raw
        except Exception as exc:  # dkimpy raises several unrelated types for bad syntax
            sigs.append(_Sig(index, None, _result(raw, "neutral", f"unusable signature: {exc}")))
            continue
        signed = [h.strip().lower() for h in tags.get(b"h", b"").split(b":")]
        if b"from" not in signed:
            # RFC 6376 §6.1.1: PERMFAIL (From field not signed).
            sigs.append(_Sig(index, None, _result(tags, "permerror", "From field not signed")))
            continue
        algorithm = tags.get(b"a", b"").lower()
        if algorithm == b"rsa-sha1":
            # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
            sigs.append(_Sig(index, None, _result(tags, "fail", "rsa-sha1 is not acceptable (RFC 8301)")))
            continue
        if algorithm not in ALGORITHMS.values():
            sigs.append(_Sig(index, None, _result(tags, "neutral", f"unknown algorithm {_text(algorithm)}")))
            continue
        try:
            name = _dns_name(f"{_text(tags[b's'])}._domainkey.{_text(tags[b'd'])}", "key record")
        except ValueError as exc:
            sigs.append(_Sig(index, None, _result(tags, "permerror", str(exc))))
            continue
        sigs.append(_Sig(index, tags, _result(tags, "neutral", ""), key_name=name))
    return sigs


def _pick_key(tags: Mapping[bytes, bytes], answer: Answer) -> tuple[str, DkimResult | None]:
    """RFC 6376 §6.1.2: the key record for a signature, or the result that ends its check."""
    dkimpy = _dkimpy()
    from dkim.util import parse_tag_value

    if answer.temporary:
        return "", _result(tags, "temperror", f"key lookup failed: {answer.error}")
    if not answer.ok:
        return "", _result(tags, "permerror", "no key for signature")  # RFC 6376 §6.1.2 step 3
    problem = "no usable key record"
    for record in answer.records:
        try:
            key_tags = parse_tag_value(record.encode("utf-8", "replace"))
        except Exception:
            problem = "key record syntax error"
            continue
        if key_tags.get(b"v", b"DKIM1") != b"DKIM1":  # RFC 6376 §3.6.1: v= must be DKIM1
            problem = "key record has a bad v= tag"
            continue
        if not key_tags.get(b"p"):  # RFC 6376 §3.6.1: an empty p= is a revoked key
            problem = "key revoked"
            continue
        key_type = key_tags.get(b"k", b"rsa").lower()
        if key_type not in (b"rsa", b"ed25519"):
            problem = f"unknown key type k={_text(key_type)}"
            continue
        if not tags.get(b"a", b"").startswith(key_type + b"-"):
            problem = "key type does not match the signature algorithm"  # RFC 6376 §6.1.2 step 7
            continue
        services = key_tags.get(b"s", b"*").split(b":")
        if not any(s.strip() in (b"*", b"email") for s in services):  # RFC 6376 §3.6.1 s=
            problem = "key not for email"
            continue
        try:
            _pk, keysize, _ktag, _tlsrpt = dkimpy.evaluate_pk(b"", record)
        except Exception as exc:
            problem = f"bad key record: {exc}"
            continue
        if key_type == b"rsa" and keysize is not None and keysize < MIN_RSA_BITS:
            # RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be considered valid.
            return "", _result(tags, "fail", f"RSA key of {keysize} bits is too small (RFC 8301)")
        return record, None
    return "", _result(tags, "permerror", problem)


def _verify_crypto(message: bytes, sigs: list[_Sig]) -> list[DkimResult]:
    dkimpy = _dkimpy()

    results = []
    verifier = dkimpy.DKIM(message, logger=_quiet, minkey=MIN_RSA_BITS)  # one parse for all signatures
    for sig in sigs:
        if sig.tags is None or not sig.key_record:
            results.append(sig.result)
            continue
        record = sig.key_record.encode("utf-8", "replace")

        def dnsfunc(name: Any, timeout: int = 5, _record: bytes = record) -> bytes:
            return _record  # the record fetched through our resolver: dkimpy asks no DNS

        try:
            ok = verifier.verify(idx=sig.index, dnsfunc=dnsfunc)
        except dkimpy.KeyFormatError as exc:
            results.append(_result(sig.tags, "fail" if "too small" in str(exc) else "permerror", str(exc)))
            continue
        except dkimpy.DKIMException as exc:
            # RFC 6376 §6.1.3: a body hash mismatch is a failure of the signature.
            results.append(_result(sig.tags, "fail", str(exc)))
            continue
        except Exception as exc:
            results.append(_result(sig.tags, "neutral", f"cannot verify: {type(exc).__name__}: {exc}"))
            continue
        results.append(_result(sig.tags, "pass" if ok else "fail", "" if ok else "signature did not verify"))
    return results


async def verify(
    lookup: DnsLookup, message: bytes, *, max_signatures: int = MAX_SIGNATURES
) -> list[DkimResult]:
    """One result per DKIM-Signature (the first ``max_signatures``), in header order.

    An empty list means the message is unsigned (A-R ``dkim=none``). Never raises.
    """
    try:
        sigs = await asyncio.to_thread(_parse_signatures, message, max_signatures)
    except Exception as exc:
        return [DkimResult("permerror", reason=f"unparsable message: {type(exc).__name__}: {exc}")]
    pending = [s for s in sigs if s.tags is not None]
    answers = await asyncio.gather(*(lookup(s.key_name, "TXT") for s in pending))
    for sig, answer in zip(pending, answers, strict=True):
        assert sig.tags is not None
        record, final = _pick_key(sig.tags, answer)
        if final is not None:
            sig.result, sig.tags = final, None
        else:
            sig.key_record = record
    return await asyncio.to_thread(_verify_crypto, message, sigs)


def passing_domains(results: Sequence[DkimResult]) -> set[str]:
    return {r.domain for r in results if r.result == "pass"}
