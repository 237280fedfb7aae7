from __future__ import annotations

import asyncio
import base64

from mailroom import passwords


def test_argon2id_roundtrip() -> None:
    h = passwords.hash_password("s3cret pass")
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, "s3cret pass")
    assert not passwords.verify_password(h, "s3cret pasS")
    assert not passwords.verify_password(None, "anything")
    assert not passwords.verify_password("garbage", "x")
    assert asyncio.run(passwords.verify_password_async(h, "s3cret pass"))
    # SASLprep (RFC 4013): a non-ASCII space maps to a space, as SCRAM normalises it
    assert passwords.verify_password(h, "s3cret\u00a0pass")


def test_scram_keys_rfc7677_vector() -> None:
    # RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    # The RFC's ServerSignature v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4= for its AuthMessage:
    import hashlib
    import hmac

    keys = passwords.scram_sha256_keys("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    sig = hmac.new(keys.server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(sig) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert passwords.decode_scram(passwords.encode_scram(keys)) == keys
