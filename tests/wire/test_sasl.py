import base64
import hashlib
import hmac

import pytest

from mailroom.wire import sasl
from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.sasl import (
    Challenge,
    CheckPassword,
    Failure,
    NeedScramCredentials,
    ScramCredentials,
    Success,
    new_mechanism,
    saslprep,
    scram_keys_from_password,
)

# RFC 7677 §3 example exchange, verbatim.
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


class QueueRandom:
    """Deterministic random_bytes: hands out a fixed byte string, then zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out + b"\0" * (n - len(out))


def rfc_mechanism() -> sasl.Mechanism:
    mech = new_mechanism("SCRAM-SHA-256", random_bytes=QueueRandom(RFC_SERVER_NONCE))
    assert mech is not None
    return mech


def rfc_creds() -> ScramCredentials:
    return scram_keys_from_password("pencil", RFC_SALT, 4096)


# ---------------------------------------------------------------------------------------------
# SCRAM-SHA-256


def test_rfc7677_example_exchange_reproduces_exactly() -> None:
    mech = rfc_mechanism()
    assert mech.start(RFC_CLIENT_FIRST) == NeedScramCredentials("user")
    assert mech.scram_credentials(rfc_creds()) == Challenge(RFC_SERVER_FIRST)
    assert mech.step(RFC_CLIENT_FINAL) == Success("user", "", RFC_SERVER_FINAL)
    # RFC 4422 §3.6: the server-final sent as a challenge is acknowledged by an empty response
    assert mech.step(b"") == Success("user", "", None)
    assert mech.done
    with pytest.raises(LocalProtocolError):
        mech.step(b"")


def test_rfc7677_without_initial_response() -> None:
    mech = rfc_mechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.step(RFC_CLIENT_FIRST) == NeedScramCredentials("user")
    assert mech.scram_credentials(rfc_creds()) == Challenge(RFC_SERVER_FIRST)
    assert mech.step(RFC_CLIENT_FINAL) == Success("user", "", RFC_SERVER_FINAL)


def test_scram_ack_must_be_empty() -> None:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(rfc_creds())
    mech.step(RFC_CLIENT_FINAL)
    assert isinstance(mech.step(b"x"), Failure)


def test_scram_wrong_password_is_invalid_proof() -> None:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(scram_keys_from_password("pencil2", RFC_SALT, 4096))
    assert mech.step(RFC_CLIENT_FINAL) == Failure("invalid-proof")
    assert mech.done


def test_scram_tampered_proof() -> None:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(rfc_creds())
    bad = RFC_CLIENT_FINAL.replace(b"p=dHzb", b"p=dHzc")
    assert mech.step(bad) == Failure("invalid-proof")


def test_scram_short_proof() -> None:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(rfc_creds())
    final = RFC_CLIENT_FINAL.rsplit(b",p=", 1)[0] + b",p=" + base64.b64encode(b"short")
    assert mech.step(final) == Failure("invalid-proof")


def test_scram_unknown_user_fails_only_after_proof() -> None:
    mech = new_mechanism("SCRAM-SHA-256", random_bytes=QueueRandom(RFC_SERVER_NONCE + b"S" * 16))
    assert mech is not None
    mech.start(RFC_CLIENT_FIRST)
    challenge = mech.scram_credentials(None)
    assert isinstance(challenge, Challenge)
    assert challenge.data == RFC_SERVER_FIRST.replace(
        b"W22ZaJ0SNY7soEsUEjb6gQ==", base64.b64encode(b"S" * 16)
    )
    assert mech.step(RFC_CLIENT_FINAL) == Failure("unknown-user")


def client_final(
    client_first_bare: bytes, server_first: bytes, password: str, gs2: bytes = b"n,,"
) -> tuple[bytes, bytes]:
    """An independent SCRAM-SHA-256 client computation (RFC 5802 §3); returns (final, v=...)."""
    attrs = dict(part.split(b"=", 1) for part in server_first.split(b","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs[b"s"]), int(attrs[b"i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    without = b"c=" + base64.b64encode(gs2) + b",r=" + attrs[b"r"]
    auth = client_first_bare + b"," + server_first + b"," + without
    sig = hmac.new(stored, auth, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    verifier = b"v=" + base64.b64encode(hmac.new(server_key, auth, "sha256").digest())
    return without + b",p=" + base64.b64encode(proof), verifier


def scram_run(first: bytes, password: str = "pencil", stored_password: str = "pencil") -> sasl.Result:
    mech = new_mechanism("scram-sha-256", random_bytes=QueueRandom(b"N" * 30))
    assert mech is not None
    res = mech.start(first)
    if not isinstance(res, NeedScramCredentials):
        return res
    res = mech.scram_credentials(scram_keys_from_password(stored_password, b"salt" * 4, 4096))
    assert isinstance(res, Challenge)
    gs2, bare = first[: first.index(b",", first.index(b",") + 1) + 1], first.split(b",", 2)[2]
    final, verifier = client_final(bare, res.data, password, gs2)
    result = mech.step(final)
    if isinstance(result, Success):
        assert result.final_data == verifier
    return result


def test_scram_y_flag_accepted() -> None:
    # RFC 5802 §6: "y" = client supports channel binding, thinks the server does not: fine.
    res = scram_run(b"y,,n=user,r=abc")
    assert isinstance(res, Success)
    assert res.username == "user"


def test_scram_authzid_equal_to_user() -> None:
    res = scram_run(b"n,a=user,n=user,r=abc")
    assert isinstance(res, Success)
    assert (res.username, res.authzid) == ("user", "user")


def test_scram_authzid_other_user_refused() -> None:
    assert scram_run(b"n,a=admin,n=user,r=abc") == Failure("other-error")


def test_scram_saslname_escapes() -> None:
    res = scram_run(b"n,,n=a=2Cb=3Dc,r=abc")
    assert isinstance(res, Success)
    assert res.username == "a,b=c"


def test_scram_password_normalised_both_sides() -> None:
    # RFC 5802 §2.2 Normalize(): U+2168 ROMAN NUMERAL NINE is "IX" after NFKC
    assert isinstance(scram_run(b"n,,n=user,r=abc", password="IX", stored_password="\u2168"), Success)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (b"p=tls-unique,,n=user,r=abc", "channel-binding-not-supported"),
        (b"x,,n=user,r=abc", "invalid-encoding"),
        (b"n,,m=ext,n=user,r=abc", "extensions-not-supported"),
        (b"n,,n=us=2Xer,r=abc", "invalid-username-encoding"),
        (b"n,,n=user=,r=abc", "invalid-username-encoding"),
        (b"n,,n=,r=abc", "invalid-username-encoding"),
        (b"n,,n=\x07,r=abc", "invalid-username-encoding"),  # SASLprep: prohibited control
        (b"n,,r=abc,n=user", "invalid-encoding"),
        (b"n,,n=user", "invalid-encoding"),
        (b"n,,n=user,r=", "invalid-encoding"),
        (b"n,,n=user,r=a\x7fb", "invalid-encoding"),
        (b"n,,n=user,r=abc,", "invalid-encoding"),
        (b"n,x=user,n=user,r=abc", "invalid-encoding"),
        (b"n,a=,n=user,r=abc", "invalid-encoding"),
        (b"n,,", "invalid-encoding"),
        (b"n", "invalid-encoding"),
        (b"", "invalid-encoding"),
        (b"n,,n=\xff,r=abc", "invalid-encoding"),
    ],
)
def test_scram_client_first_errors(first: bytes, reason: str) -> None:
    assert scram_run(first) == Failure(reason)


def test_scram_extensions_after_nonce_ignored() -> None:
    assert isinstance(scram_run(b"n,,n=user,r=abc,x=future"), Success)


def _after_server_first() -> tuple[sasl.Mechanism, bytes]:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(rfc_creds())
    return mech, RFC_CLIENT_FINAL


@pytest.mark.parametrize(
    ("final", "reason"),
    [
        (RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"), "channel-bindings-dont-match"),
        (RFC_CLIENT_FINAL.replace(b"c=biws", b"c=bi!s"), "invalid-encoding"),
        (RFC_CLIENT_FINAL.replace(b"hNlF$k0", b"hNlF$k1"), "other-error"),
        (RFC_CLIENT_FINAL.replace(b",p=", b",q="), "invalid-encoding"),
        (RFC_CLIENT_FINAL.replace(b"c=biws,", b""), "invalid-encoding"),
        (RFC_CLIENT_FINAL + b"A", "invalid-encoding"),  # bad base64 padding in the proof
        (b"garbage", "invalid-encoding"),
        (b"\xff", "invalid-encoding"),
    ],
)
def test_scram_client_final_errors(final: bytes, reason: str) -> None:
    mech, _ = _after_server_first()
    assert mech.step(final) == Failure(reason)


def test_scram_bad_credentials_from_store_is_our_fault() -> None:
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    with pytest.raises(LocalProtocolError):
        mech.scram_credentials(ScramCredentials(b"", 4096, b"k" * 32, b"k" * 32))


def test_server_nonce_uses_only_printable_characters() -> None:
    # bytes that are not printable (after masking to 7 bits) are skipped: uniform, no ","
    mech = new_mechanism("SCRAM-SHA-256", random_bytes=QueueRandom(b",\x00\x7f" + b"\xc1" * 40))
    assert mech is not None
    mech.start(b"n,,n=user,r=abc")
    res = mech.scram_credentials(rfc_creds())
    assert isinstance(res, Challenge)
    assert res.data.startswith(b"r=abc" + b"A" * sasl.SCRAM_NONCE_LENGTH + b",s=")


def test_scram_keys_from_password() -> None:
    creds = scram_keys_from_password("pencil", RFC_SALT, 4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert creds.stored_key == hashlib.sha256(client_key).digest()
    assert creds.server_key == hmac.new(salted, b"Server Key", "sha256").digest()
    assert (creds.salt, creds.iterations) == (RFC_SALT, 4096)
    assert "stored_key" not in repr(creds)
    with pytest.raises(ValueError):
        scram_keys_from_password("pencil", RFC_SALT, 0)
    with pytest.raises(ValueError):
        scram_keys_from_password("pencil", b"", 4096)


def test_normalize_password_falls_back_to_raw() -> None:
    assert sasl.normalize_password("\u2168") == "IX"
    assert sasl.normalize_password("a\x07b") == "a\x07b"  # prohibited: used unchanged


# ---------------------------------------------------------------------------------------------
# SASLprep (RFC 4013 §3 examples)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("I\u00adX", "IX"),  # soft hyphen mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("", ""),
    ],
)
def test_saslprep_examples(given: str, expected: str) -> None:
    assert saslprep(given) == expected


@pytest.mark.parametrize("given", ["\u0007", "\u0627\u0031", "\ue000", "a\u200eb"])
def test_saslprep_prohibited(given: str) -> None:
    with pytest.raises(ValueError):
        saslprep(given)


def test_saslprep_bidi_all_rtl_ok() -> None:
    assert saslprep("\u0627\u0628") == "\u0627\u0628"


def test_saslprep_unassigned_only_for_queries() -> None:
    assert saslprep("\U0001f600") == "\U0001f600"  # unassigned in Unicode 3.2
    with pytest.raises(ValueError):
        saslprep("\U0001f600", allow_unassigned=False)


# ---------------------------------------------------------------------------------------------
# PLAIN (RFC 4616)


def plain(initial: bytes | None) -> sasl.Result:
    mech = new_mechanism("PLAIN")
    assert mech is not None
    return mech.start(initial)


def test_plain_rfc4616_example() -> None:
    mech = new_mechanism("plain")
    assert mech is not None
    res = mech.start(b"\0tim\0tanstaaftanstaaf")  # RFC 4616 §4
    assert res == CheckPassword("", "tim", "tanstaaftanstaaf")
    assert "tanstaaf" not in repr(res)
    assert mech.password_result(True) == Success("tim", "", None)
    assert mech.done


def test_plain_rfc4616_example_other_authzid_refused() -> None:
    assert plain(b"Ursel\0Kurt\0xipj3plmq") == Failure("authorization identity not permitted")


def test_plain_wrong_password() -> None:
    mech = new_mechanism("PLAIN")
    assert mech is not None
    mech.start(b"\0tim\0bad")
    assert mech.password_result(False) == Failure("invalid credentials")


def test_plain_without_initial_response() -> None:
    mech = new_mechanism("PLAIN")
    assert mech is not None
    assert mech.start(None) == Challenge(b"")
    assert mech.step(b"tim\0tim\0pw") == CheckPassword("tim", "tim", "pw")
    assert mech.password_result(True) == Success("tim", "tim", None)


def test_plain_authzid_equal_after_normalisation() -> None:
    assert plain(b"ti\xc2\xadm\0tim\0pw") == CheckPassword("tim", "tim", "pw")  # U+00AD vanishes
    assert plain("\0\u2168\0pw".encode()) == CheckPassword("", "IX", "pw")


def test_plain_password_passed_as_typed() -> None:
    assert plain("\0tim\0 p\u2168 w ".encode()) == CheckPassword("", "tim", " p\u2168 w ")


@pytest.mark.parametrize(
    "message",
    [
        b"",  # RFC 4422 §4: an empty initial response is present (and malformed here)
        b"timpassword",
        b"tim\0password",
        b"\0tim\0pw\0extra",
        b"\0\0pw",  # empty authcid
        b"\0tim\0",  # empty password
        b"\0\0",
        b"\0ti\xffm\0pw",  # not UTF-8
        b"\0ti\x07m\0pw",  # SASLprep-prohibited authcid
        b"\0\xc2\xad\0pw",  # authcid empty after mapping
    ],
)
def test_plain_malformed(message: bytes) -> None:
    assert isinstance(plain(message), Failure)


# ---------------------------------------------------------------------------------------------
# LOGIN (draft-murchison-sasl-login)


def test_login_flow() -> None:
    mech = new_mechanism("LOGIN")
    assert mech is not None
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.step(b"tim") == Challenge(b"Password:")
    assert mech.step(b"pass word") == CheckPassword("", "tim", "pass word")
    assert mech.password_result(True) == Success("tim", "", None)


def test_login_initial_response_is_username() -> None:
    mech = new_mechanism("LOGIN")
    assert mech is not None
    assert mech.start(b"tim") == Challenge(b"Password:")
    assert mech.step(b"pw") == CheckPassword("", "tim", "pw")
    assert mech.password_result(False) == Failure("invalid credentials")


def test_login_empty_initial_response_is_absent() -> None:
    mech = new_mechanism("LOGIN")
    assert mech is not None
    assert mech.start(b"") == Challenge(b"Username:")


@pytest.mark.parametrize(
    ("username", "password"),
    [(b"", b"pw"), (b"\xff", b"pw"), (b"\x07", b"pw"), (b"tim", b""), (b"tim", b"\xff"), (b"tim", b"p\0w")],
)
def test_login_bad_input(username: bytes, password: bytes) -> None:
    mech = new_mechanism("LOGIN")
    assert mech is not None
    mech.start(None)
    res = mech.step(username)
    if isinstance(res, Challenge):
        res = mech.step(password)
    assert isinstance(res, Failure)
    assert mech.done


# ---------------------------------------------------------------------------------------------
# Factory and misuse


def test_factory() -> None:
    assert sasl.MECHANISMS == ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    for name in sasl.MECHANISMS:
        mech = new_mechanism(name.lower())
        assert mech is not None
        assert mech.name == name
    assert new_mechanism("CRAM-MD5") is None
    assert new_mechanism("") is None


def test_out_of_order_calls_are_local_errors() -> None:
    mech = new_mechanism("PLAIN")
    assert mech is not None
    with pytest.raises(LocalProtocolError):
        mech.step(b"x")
    with pytest.raises(LocalProtocolError):
        mech.password_result(True)
    mech.start(b"\0a\0b")
    with pytest.raises(LocalProtocolError):
        mech.start(b"\0a\0b")
    with pytest.raises(LocalProtocolError):
        mech.scram_credentials(None)
    scram = rfc_mechanism()
    scram.start(None)
    with pytest.raises(LocalProtocolError):
        scram.password_result(True)
    with pytest.raises(LocalProtocolError):
        scram.scram_credentials(None)
