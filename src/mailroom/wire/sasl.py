"""SASL server mechanisms as sans-I/O step machines: PLAIN, LOGIN and SCRAM-SHA-256.

A mechanism never sees the password database. It returns *requests* that the session fulfils
(asynchronously, e.g. an argon2 check in a thread or a store lookup) and then feeds back:

    mech = new_mechanism("SCRAM-SHA-256")
    result = mech.start(initial_response)          # None = no initial response
    while True:
        match result:
            case Challenge(data):            result = mech.step(await send_challenge(data))
            case CheckPassword(...):         result = mech.password_result(await verify(...))
            case NeedScramCredentials(user): result = mech.scram_credentials(await lookup(user))
            case Success() | Failure():      break

The bytes exchanged are the *decoded* SASL messages; base64 and the "*" cancel line belong to the
protocol profile (RFC 4954, RFC 5034, RFC 9051), not to this module.

Additional data with success (RFC 4422 §3.6): SCRAM's server-final message is returned in
``Success.final_data``. A protocol that can carry it with the outcome sends it there; POP3 and SMTP
cannot, so the session sends it as a challenge and the client answers with an empty response. To
keep such sessions uniform a mechanism that returned ``Success(final_data=X)`` accepts exactly one
more ``step(b"")`` and answers ``Success(..., final_data=None)`` (a non-empty step is a Failure).

Normalisation (RFC 4013 SASLprep, implemented in full with the stdlib's RFC 3454 tables):
mapping (§2.1: non-ASCII spaces -> SPACE, "commonly mapped to nothing" removed), NFKC over
Unicode 3.2 (§2.2), prohibited output (§2.3), bidi rules (§2.4) and, for stored strings only,
unassigned code points (§2.5). It is applied to identities (authcid, authzid, SCRAM username) as
query strings. Passwords travel to the verifier *as typed* in :class:`CheckPassword`; the store
must pass both the password it hashes and the password it verifies through
:func:`normalize_password` (RFC 5802 §2.2 Normalize(), also used by :func:`scram_keys_from_password`),
so that PLAIN, LOGIN, USER/PASS and SCRAM agree on one credential.
"""

from __future__ import annotations

import abc
import binascii
import enum
import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from mailroom.wire.errors import LocalProtocolError

__all__ = [
    "MECHANISMS",
    "SCRAM_NONCE_LENGTH",
    "Challenge",
    "CheckPassword",
    "Failure",
    "LoginMechanism",
    "Mechanism",
    "NeedScramCredentials",
    "PlainMechanism",
    "Result",
    "ScramCredentials",
    "ScramSha256Mechanism",
    "Success",
    "new_mechanism",
    "normalize_password",
    "saslprep",
    "scram_keys_from_password",
]

# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Challenge:
    """Send ``data`` to the client as a server challenge and pass its answer to ``step``."""

    data: bytes


@dataclass(frozen=True)
class CheckPassword:
    """Verify ``password`` for ``username``, then call ``mech.password_result(ok)``.

    ``username`` is SASLprep-ed; ``password`` is exactly what the client sent (see module doc).
    ``authzid`` is "" when the client sent none; when present it equals ``username``.
    """

    authzid: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class NeedScramCredentials:
    """Look up the SCRAM keys of ``username`` and call ``mech.scram_credentials(creds or None)``."""

    username: str


@dataclass(frozen=True)
class ScramCredentials:
    """What the store keeps for SCRAM-SHA-256 (RFC 5802 §3): never the password itself."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


@dataclass(frozen=True)
class Success:
    username: str
    authzid: str
    final_data: bytes | None


@dataclass(frozen=True)
class Failure:
    """Authentication failed. For SCRAM, ``reason`` is the RFC 5802 §7 server-error-value."""

    reason: str


Result = Challenge | CheckPassword | NeedScramCredentials | Success | Failure

# ---------------------------------------------------------------------------------------------
# SASLprep (RFC 4013) on the stdlib's RFC 3454 tables


def saslprep(text: str, *, allow_unassigned: bool = True) -> str:
    """RFC 4013 SASLprep. ``allow_unassigned`` True = query string, False = stored string.

    Raises ValueError when the output contains a prohibited character or breaks the bidi rules.
    """
    mapped: list[str] = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")  # RFC 4013 §2.1: non-ASCII space characters map to SPACE
        elif not stringprep.in_table_b1(ch):  # RFC 4013 §2.1: B.1 maps to nothing
            mapped.append(ch)
    # RFC 4013 §2.2: Unicode normalization form KC, on the Unicode version of RFC 3454 (3.2)
    out = unicodedata.ucd_3_2_0.normalize("NFKC", "".join(mapped))
    for ch in out:
        # RFC 4013 §2.3: prohibited output (C.1.2, C.2.1, C.2.2, C.3 - C.9)
        if (
            stringprep.in_table_c12(ch)
            or stringprep.in_table_c21_c22(ch)
            or stringprep.in_table_c3(ch)
            or stringprep.in_table_c4(ch)
            or stringprep.in_table_c5(ch)
            or stringprep.in_table_c6(ch)
            or stringprep.in_table_c7(ch)
            or stringprep.in_table_c8(ch)
            or stringprep.in_table_c9(ch)
        ):
            raise ValueError(f"prohibited character U+{ord(ch):04X}")
        # RFC 4013 §2.5 / RFC 3454 §7: stored strings must not contain unassigned code points
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise ValueError(f"unassigned code point U+{ord(ch):04X}")
    # RFC 4013 §2.4 / RFC 3454 §6: bidirectional characters
    if any(stringprep.in_table_d1(ch) for ch in out):
        if any(stringprep.in_table_d2(ch) for ch in out):
            raise ValueError("RandALCat and LCat characters mixed")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("RandALCat string must start and end with RandALCat")
    return out


def normalize_password(password: str) -> str:
    """RFC 5802 §2.2 Normalize(): SASLprep as a query string, or the password unchanged when
    SASLprep rejects it (PostgreSQL's choice, so a password with e.g. a control character still
    works between our own client and server instead of locking the user out)."""
    try:
        return saslprep(password, allow_unassigned=True)
    except ValueError:
        return password


def _prep_identity(name: str) -> str | None:
    try:
        return saslprep(name, allow_unassigned=True)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Mechanism base


class _Expect(enum.Enum):
    START = "start"
    RESPONSE = "response"
    PASSWORD = "password"
    CREDENTIALS = "credentials"
    SUCCESS_ACK = "success-ack"
    DONE = "done"


class Mechanism(abc.ABC):
    """One authentication exchange. Calls out of order raise LocalProtocolError (our bug)."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._expect = _Expect.START
        self._success: Success | None = None

    @property
    def done(self) -> bool:
        return self._expect is _Expect.DONE

    def start(self, initial: bytes | None) -> Result:
        """Begin; ``initial`` is the client's initial response (None when absent, b"" when empty)."""
        self._require(_Expect.START, "start")
        return self._finish(self._start(initial))

    def step(self, response: bytes) -> Result:
        """Feed the client's (decoded) answer to the last Challenge."""
        if self._expect is _Expect.SUCCESS_ACK:
            assert self._success is not None
            if response:  # RFC 4422 §3.6: the client's answer to additional data must be empty
                return self._finish(Failure("unexpected data after server-final message"))
            return self._finish(Success(self._success.username, self._success.authzid, None))
        self._require(_Expect.RESPONSE, "step")
        return self._finish(self._step(response))

    def password_result(self, ok: bool) -> Result:
        self._require(_Expect.PASSWORD, "password_result")
        return self._finish(self._password_result(ok))

    def scram_credentials(self, creds: ScramCredentials | None) -> Result:
        self._require(_Expect.CREDENTIALS, "scram_credentials")
        return self._finish(self._scram_credentials(creds))

    # -- subclass hooks

    @abc.abstractmethod
    def _start(self, initial: bytes | None) -> Result: ...

    @abc.abstractmethod
    def _step(self, response: bytes) -> Result: ...

    def _password_result(self, ok: bool) -> Result:  # pragma: no cover - guarded by _require
        raise LocalProtocolError(f"{self.name} does not check passwords")

    def _scram_credentials(self, creds: ScramCredentials | None) -> Result:  # pragma: no cover
        raise LocalProtocolError(f"{self.name} does not use SCRAM credentials")

    # -- bookkeeping

    def _require(self, expected: _Expect, what: str) -> None:
        if self._expect is not expected:
            raise LocalProtocolError(f"{self.name}: {what}() called while expecting {self._expect.value}")

    def _finish(self, result: Result) -> Result:
        if isinstance(result, Challenge):
            self._expect = _Expect.RESPONSE
        elif isinstance(result, CheckPassword):
            self._expect = _Expect.PASSWORD
        elif isinstance(result, NeedScramCredentials):
            self._expect = _Expect.CREDENTIALS
        elif isinstance(result, Success) and result.final_data is not None:
            self._success = result
            self._expect = _Expect.SUCCESS_ACK
        else:
            self._expect = _Expect.DONE
        return result


def _decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------------------------
# PLAIN (RFC 4616)


class PlainMechanism(Mechanism):
    """RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd."""

    name = "PLAIN"

    def __init__(self) -> None:
        super().__init__()
        self._authzid = ""
        self._username = ""

    def _start(self, initial: bytes | None) -> Result:
        if initial is None:
            # RFC 4422 §5: a client-first mechanism without initial response gets an empty challenge
            return Challenge(b"")
        # RFC 4422 §4: an empty initial response is a response (malformed here), not an absent one
        return self._step(initial)

    def _step(self, response: bytes) -> Result:
        text = _decode_utf8(response)
        if text is None:
            return Failure("PLAIN message is not UTF-8")  # RFC 4616 §2: UTF8-encoded
        parts = text.split("\0")
        if len(parts) != 3:  # RFC 4616 §2: exactly two NUL separators
            return Failure("malformed PLAIN message")
        authzid, authcid, passwd = parts
        if not authcid or not passwd:  # RFC 4616 §2: authcid = 1*SAFE, passwd = 1*SAFE
            return Failure("empty authentication identity or password")
        username = _prep_identity(authcid)  # RFC 4616 §2: prepared with SASLprep
        if not username:
            return Failure("invalid authentication identity")
        if authzid:
            # RFC 4616 §2: the server verifies the client may act as authzid; we only allow itself
            prepared = _prep_identity(authzid)
            if prepared != username:
                return Failure("authorization identity not permitted")
            authzid = prepared
        self._authzid, self._username = authzid, username
        return CheckPassword(authzid, username, passwd)

    def _password_result(self, ok: bool) -> Result:
        if ok:
            return Success(self._username, self._authzid, None)
        return Failure("invalid credentials")


# ---------------------------------------------------------------------------------------------
# LOGIN (draft-murchison-sasl-login-00)


class LoginMechanism(Mechanism):
    """draft-murchison-sasl-login §2: server prompts "Username:" then "Password:"."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._username: str | None = None

    def _start(self, initial: bytes | None) -> Result:
        # draft-murchison-sasl-login §2: server-first; like Dovecot and Cyrus we take a non-empty
        # initial response as the user name and treat an empty one as absent.
        if not initial:
            return Challenge(b"Username:")
        return self._step(initial)

    def _step(self, response: bytes) -> Result:
        text = _decode_utf8(response)
        if text is None:
            return Failure("LOGIN response is not UTF-8")
        if self._username is None:
            if not text:
                return Failure("empty user name")
            username = _prep_identity(text)
            if not username:
                return Failure("invalid user name")
            self._username = username
            return Challenge(b"Password:")
        if not text or "\0" in text:
            return Failure("empty password or NUL in password")
        return CheckPassword("", self._username, text)

    def _password_result(self, ok: bool) -> Result:
        if ok:
            assert self._username is not None
            return Success(self._username, "", None)
        return Failure("invalid credentials")


# ---------------------------------------------------------------------------------------------
# SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding

SCRAM_NONCE_LENGTH: Final = 30  # server nonce characters; as long as the RFC 7677 §3 example's
# RFC 5802 §7: printable = %x21-2B / %x2D-7E ; printable ASCII except ","
_PRINTABLE: Final = frozenset(range(0x21, 0x7F)) - {ord(",")}
_CLIENT_KEY: Final = b"Client Key"
_SERVER_KEY: Final = b"Server Key"
_MIN_ITERATIONS: Final = 4096  # RFC 7677 §4: at least 4096


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def scram_keys_from_password(
    password: str, salt: bytes, iterations: int = _MIN_ITERATIONS
) -> ScramCredentials:
    """RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i); keep StoredKey and ServerKey."""
    if iterations < 1 or not salt:
        raise ValueError("SCRAM needs a salt and at least one iteration")
    # RFC 5802 §2.2: Hi() is PBKDF2 with HMAC as the PRF and dkLen = output length of H
    salted = hashlib.pbkdf2_hmac("sha256", normalize_password(password).encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, _CLIENT_KEY)  # RFC 5802 §3: ClientKey := HMAC(SaltedPassword, "Client Key")
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),  # RFC 5802 §3: StoredKey := H(ClientKey)
        server_key=_hmac(salted, _SERVER_KEY),  # RFC 5802 §3: ServerKey := HMAC(SaltedPassword, "Server Key")
    )


class _ScramError(Exception):
    """Carries an RFC 5802 §7 server-error-value."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def _b64decode(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _ScramError("invalid-encoding") from exc


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _decode_saslname(value: str) -> str:
    """RFC 5802 §5.1: "=2C" -> ",", "=3D" -> "="; any other "=" fails the exchange."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            escape = value[i : i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                raise _ScramError("invalid-username-encoding")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split_attributes(text: str) -> list[tuple[str, str]]:
    """RFC 5802 §7: attr-val = ALPHA "=" value, separated by ","."""
    pairs: list[tuple[str, str]] = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not ("a" <= part[0].lower() <= "z"):
            raise _ScramError("invalid-encoding")
        pairs.append((part[0], part[2:]))
    return pairs


class ScramSha256Mechanism(Mechanism):
    """SCRAM-SHA-256 server (RFC 5802 §5, RFC 7677), no channel binding (no -PLUS variant)."""

    name = "SCRAM-SHA-256"

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self._random_bytes = random_bytes
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._username = ""
        self._authzid = ""
        self._creds: ScramCredentials | None = None
        self._unknown_user = False

    def _server_nonce(self) -> str:
        # Uniform over the 93 "printable" characters by rejection sampling (RFC 5802 §7 nonce).
        chars: list[str] = []
        while len(chars) < SCRAM_NONCE_LENGTH:
            for byte in self._random_bytes(SCRAM_NONCE_LENGTH - len(chars)):
                if (byte & 0x7F) in _PRINTABLE:
                    chars.append(chr(byte & 0x7F))
        return "".join(chars[:SCRAM_NONCE_LENGTH])

    def _start(self, initial: bytes | None) -> Result:
        if initial is None:
            return Challenge(b"")  # RFC 5802 §5: client-first; ask for client-first-message
        return self._step(initial)

    def _step(self, response: bytes) -> Result:
        text = _decode_utf8(response)
        try:
            if text is None:
                raise _ScramError("invalid-encoding")  # RFC 5802 §5.1: messages are UTF-8
            if not self._server_first:
                return self._client_first(text)
            return self._client_final(text)
        except _ScramError as exc:
            return Failure(exc.value)

    def _client_first(self, text: str) -> Result:
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        #              gs2-header = gs2-cbind-flag "," [ authzid ] ","
        flag, sep1, rest = text.partition(",")
        authz, sep2, bare = rest.partition(",")
        if not sep1 or not sep2:
            raise _ScramError("invalid-encoding")
        if flag.startswith("p="):
            # RFC 5802 §6: the client requires channel binding, which we do not offer
            raise _ScramError("channel-binding-not-supported")
        if flag not in ("n", "y"):
            # RFC 5802 §6: "y" = client supports channel binding but thinks we do not; correct
            raise _ScramError("invalid-encoding")
        authzid = ""
        if authz:
            if not authz.startswith("a="):
                raise _ScramError("invalid-encoding")
            authzid = _decode_saslname(authz[2:])
            if not authzid:  # RFC 5802 §7: saslname = 1*(value-safe-char / "=2C" / "=3D")
                raise _ScramError("invalid-encoding")
        attrs = _split_attributes(bare)
        if attrs and attrs[0][0] == "m":
            # RFC 5802 §5.1: a mandatory extension we do not understand fails the exchange
            raise _ScramError("extensions-not-supported")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise _ScramError("invalid-encoding")  # RFC 5802 §7: username "," nonce ["," extensions]
        raw_name = _decode_saslname(attrs[0][1])
        client_nonce = attrs[1][1]
        if not client_nonce or any(ord(c) not in _PRINTABLE for c in client_nonce):
            raise _ScramError("invalid-encoding")
        username = _prep_identity(raw_name)  # RFC 5802 §5.1: prepare the user name with SASLprep
        if not username:
            raise _ScramError("invalid-username-encoding")
        if authzid and _prep_identity(authzid) != username:
            raise _ScramError("other-error")  # we do not allow acting as another identity
        self._gs2_header = text[: len(text) - len(bare)]
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce()
        self._username = username
        self._authzid = username if authzid else ""
        return NeedScramCredentials(username)

    def _scram_credentials(self, creds: ScramCredentials | None) -> Result:
        if creds is None:
            # Unknown user: carry on with made-up keys so the answer comes only after the proof
            # (RFC 5802 §5.1 lets the server fail at once with e=unknown-user, as Dovecot does;
            # waiting reveals less). Fails as unknown-user.
            self._unknown_user = True
            creds = ScramCredentials(self._random_bytes(16), _MIN_ITERATIONS, b"\0" * 32, b"\0" * 32)
        elif creds.iterations < 1 or not creds.salt or len(creds.stored_key) != 32:
            raise LocalProtocolError("unusable SCRAM-SHA-256 credentials from the store")
        self._creds = creds
        # RFC 5802 §7: server-first-message = nonce "," salt "," iteration-count
        self._server_first = f"r={self._nonce},s={_b64encode(creds.salt)},i={creds.iterations}"
        return Challenge(self._server_first.encode("utf-8"))

    def _client_final(self, text: str) -> Result:
        # RFC 5802 §7: client-final-message = client-final-message-without-proof "," proof
        without_proof, sep, proof_attr = text.rpartition(",")
        if not sep or not proof_attr.startswith("p="):
            raise _ScramError("invalid-encoding")
        attrs = _split_attributes(without_proof)
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise _ScramError("invalid-encoding")  # channel-binding "," nonce ["," extensions]
        # RFC 5802 §7: c= is base64(gs2-header [cbind-data]); no cbind-data without channel binding
        if _b64decode(attrs[0][1]) != self._gs2_header.encode("utf-8"):
            raise _ScramError("channel-bindings-dont-match")
        # RFC 5802 §5.1: the nonce must be the combined client + server nonce
        if not hmac.compare_digest(attrs[1][1].encode("utf-8"), self._nonce.encode("utf-8")):
            raise _ScramError("other-error")
        proof = _b64decode(proof_attr[2:])
        creds = self._creds
        assert creds is not None
        # RFC 5802 §3: AuthMessage := client-first-message-bare + "," +
        #                             server-first-message + "," + client-final-message-without-proof
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        # RFC 5802 §3: ClientSignature := HMAC(StoredKey, AuthMessage)
        client_signature = _hmac(creds.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise _ScramError("invalid-proof")
        # RFC 5802 §3: ClientKey := ClientProof XOR ClientSignature; verify H(ClientKey) == StoredKey
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        proof_ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key)
        if self._unknown_user:
            return Failure("unknown-user")
        if not proof_ok:
            return Failure("invalid-proof")
        # RFC 5802 §3: ServerSignature := HMAC(ServerKey, AuthMessage)
        server_signature = _hmac(creds.server_key, auth_message)
        # RFC 5802 §7: server-final-message = verifier = "v=" base64
        return Success(self._username, self._authzid, f"v={_b64encode(server_signature)}".encode("ascii"))


# ---------------------------------------------------------------------------------------------
# Factory

MECHANISMS: Final[tuple[str, ...]] = ("SCRAM-SHA-256", "PLAIN", "LOGIN")


def new_mechanism(name: str, *, random_bytes: Callable[[int], bytes] = os.urandom) -> Mechanism | None:
    """A fresh mechanism for ``name`` (case-insensitive, RFC 4422 §3.1), or None if unknown."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainMechanism()
    if upper == "LOGIN":
        return LoginMechanism()
    if upper == "SCRAM-SHA-256":
        return ScramSha256Mechanism(random_bytes)
    return None
