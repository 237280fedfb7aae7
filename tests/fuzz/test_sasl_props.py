"""SASL mechanisms under random steps: whatever the client sends and whatever the store answers,
a mechanism only returns results (Challenge, CheckPassword, NeedScramCredentials, Success,
Failure), never succeeds without a verified password or proof, and misuse by the session is a
LocalProtocolError. Genuine clients always get in, with the identity they sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

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
from tests.fuzz.fuzzing import fuzz_settings, fuzzed
from tests.reliability.support import scale

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

RESULTS = (Challenge, CheckPassword, NeedScramCredentials, Success, Failure)
CREDS = scram_keys_from_password("pencil", b"salt-salt-salt", 4096)

# client messages that look like the real thing, broken in small ways, or noise
pieces = st.sampled_from(
    [
        b"n,,n=user,r=abc",
        b"y,,n=user,r=",
        b"p=tls-unique,,n=u,r=x",
        b"n,a=user,n=user,r=x",
        b"c=biws,r=",
        b",p=",
        b"c=",
        b"r=",
        b"=2C",
        b"=3D",
        b"=",
        b",",
        b"\0",
        b"user\0user\0pw",
        b"\0user\0pw",
        b"\xff",
        b"m=ext",
        b"\xc2\xad",
        "\u2168".encode(),
        b"v=",
        b"e=other-error",
        base64.b64encode(b"n,,"),
    ]
)
responses = st.one_of(st.binary(max_size=80), st.lists(pieces, max_size=8).map(b"".join))


@fuzz_settings(600)
@given(
    name=st.sampled_from(sasl.MECHANISMS),
    initial=st.one_of(st.none(), responses),
    steps=st.lists(responses, max_size=6),
    verdicts=st.lists(st.booleans(), min_size=1, max_size=4),
    store=st.sampled_from(["none", "creds"]),
)
def test_random_steps_only_yield_results(
    name: str, initial: bytes | None, steps: list[bytes], verdicts: list[bool], store: str
) -> None:
    fuzzed("sasl")
    mech = new_mechanism(name)
    assert mech is not None
    result = mech.start(initial)
    answers = iter(steps)
    verdict = iter(verdicts * 4)
    password_ok = False
    for _ in range(20):
        assert isinstance(result, RESULTS), result
        match result:
            case Challenge():
                result = mech.step(next(answers, b""))
            case CheckPassword(username=username, password=password):
                assert username and password and "\0" not in password
                assert username == saslprep(username)  # identities arrive prepared
                password_ok = next(verdict)
                result = mech.password_result(password_ok)
            case NeedScramCredentials(username=username):
                assert username
                result = mech.scram_credentials(CREDS if store == "creds" else None)
            case Success(final_data=final):
                # random client data can never produce a valid SCRAM proof
                assert name != "SCRAM-SHA-256" or final is None
                assert name == "SCRAM-SHA-256" or password_ok
                if final is not None:
                    result = mech.step(next(answers, b""))
                    continue
                break
            case Failure():
                break
    assert mech.done
    with pytest.raises(LocalProtocolError):
        mech.step(b"")


@fuzz_settings(300)
@given(
    name=st.sampled_from(sasl.MECHANISMS),
    calls=st.lists(st.sampled_from(["start", "step", "password", "creds"]), min_size=1, max_size=6),
)
def test_calls_out_of_order_are_local_errors(name: str, calls: list[str]) -> None:
    """A session calling the wrong method gets LocalProtocolError (its bug), nothing else."""
    fuzzed("sasl")
    mech = new_mechanism(name)
    assert mech is not None
    for call in calls:
        try:
            if call == "start":
                mech.start(b"\0user\0pw" if name == "PLAIN" else None)
            elif call == "step":
                mech.step(b"n,,n=user,r=abc" if name == "SCRAM-SHA-256" else b"user")
            elif call == "password":
                mech.password_result(True)
            else:
                mech.scram_credentials(CREDS)
        except LocalProtocolError:
            pass


identity = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=20)
password_text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=30)


def prepared(name: str) -> str | None:
    try:
        out = saslprep(name)
    except ValueError:
        return None
    return out or None


@fuzz_settings(400)
@given(user=identity, password=password_text, with_authzid=st.booleans())
def test_plain_round_trip(user: str, password: str, with_authzid: bool) -> None:
    fuzzed("sasl")
    mech = new_mechanism("PLAIN")
    assert mech is not None
    authzid = user if with_authzid else ""
    result = mech.start(f"{authzid}\0{user}\0{password}".encode())
    name = prepared(user)
    if name is None:
        assert isinstance(result, Failure)
        return
    assert result == CheckPassword(name if with_authzid else "", name, password)
    assert isinstance(mech.password_result(True), Success)


@fuzz_settings(300)
@given(user=identity, password=password_text)
def test_login_round_trip(user: str, password: str) -> None:
    fuzzed("sasl")
    mech = new_mechanism("LOGIN")
    assert mech is not None
    assert mech.start(None) == Challenge(b"Username:")
    result = mech.step(user.encode())
    if prepared(user) is None:
        assert isinstance(result, Failure)
        return
    assert result == Challenge(b"Password:")
    assert mech.step(password.encode()) == CheckPassword("", prepared(user) or "", password)


def scram_client(
    mech: sasl.Mechanism, user: str, password: str, creds: ScramCredentials | None, tamper: int | None
) -> sasl.Result:
    """A real RFC 5802 client; ``tamper`` flips one byte of the client-final message."""
    escaped = user.replace("=", "=3D").replace(",", "=2C")
    nonce = base64.b64encode(os.urandom(12)).decode()
    bare = f"n={escaped},r={nonce}"
    result = mech.start(f"n,,{bare}".encode())
    if not isinstance(result, NeedScramCredentials):
        return result
    result = mech.scram_credentials(creds)
    assert isinstance(result, Challenge)
    server_first = result.data.decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
    salted = hashlib.pbkdf2_hmac("sha256", sasl.normalize_password(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = bytearray(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    if tamper is not None:
        final[tamper % (len(final) - 3)] ^= 0x01  # not the last base64 characters (padding bits)
    return mech.step(bytes(final))


@fuzz_settings(60)
@given(
    user=identity,
    password=password_text,
    wrong=st.one_of(st.none(), password_text),
    tamper=st.one_of(st.none(), st.integers(0, 200)),
    known=st.booleans(),
)
def test_scram_exchange(user: str, password: str, wrong: str | None, tamper: int | None, known: bool) -> None:
    name = prepared(user)
    assume(name is not None)
    fuzzed("sasl")
    creds = scram_keys_from_password(password, os.urandom(16), 4096) if known else None
    mech = new_mechanism("SCRAM-SHA-256")
    assert mech is not None
    typed = password if wrong is None else wrong
    result = scram_client(mech, user, typed, creds, tamper)
    genuine = known and tamper is None and sasl.normalize_password(typed) == sasl.normalize_password(password)
    if genuine:
        assert isinstance(result, Success) and result.username == name and result.final_data
        assert mech.step(b"") == Success(result.username, "", None)
    else:
        assert isinstance(result, Failure | Challenge), result
        assert not isinstance(result, Success)


@fuzz_settings(500)
@given(st.text(max_size=30))
def test_saslprep_is_stable(text: str) -> None:
    """Preparing twice gives the same identity (a stored name matches the name typed again)."""
    fuzzed("sasl")
    once = prepared(text)
    if once is not None:
        assert saslprep(once) == once
