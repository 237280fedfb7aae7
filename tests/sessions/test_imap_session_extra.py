"""More IMAP session behaviour through real sockets: SCRAM-SHA-256, a pipelined transcript
sent one octet at a time, and the autologout timer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator

import pytest

from tests.imap.raw_client import RawIMAP
from tests.server_fixture import PASSWORD, RunningServer, new_account, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    extra = '[limits]\nimap_idle_timeout = "2s"\n'
    with running_server(
        tmp_path_factory.mktemp("imap-extra"), services=("smtp", "imaps"), extra=extra
    ) as srv:
        yield srv


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def test_authenticate_scram_sha_256(server: RunningServer) -> None:
    user = new_account(server, "x")
    c = RawIMAP(server.ports["imaps"])
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    c.send(b"s AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(f"n,,{first_bare}".encode()) + b"\r\n")
    line = c.line()
    assert line.startswith(b"+ ")
    server_first = base64.b64decode(line[2:]).decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = _hmac(salted, b"Client Key")
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    c.send(base64.b64encode(f"{final_bare},p={base64.b64encode(proof).decode()}".encode()) + b"\r\n")
    line = c.line()
    assert line.startswith(b"+ ")
    server_final = base64.b64decode(line[2:]).decode()
    expected = _hmac(_hmac(salted, b"Server Key"), auth_message)
    assert server_final == "v=" + base64.b64encode(expected).decode()  # the server knows the password too
    c.send(b"\r\n")
    assert c.line().startswith(b"s OK [CAPABILITY ")
    c.close()


TRANSCRIPT = (
    b"a LOGIN {user} {password}\r\n"
    b"b CREATE Box\r\n"
    b"c APPEND Box (\\Seen) {{14+}}\r\nSubject: x\r\n\r\n\r\n"
    b"d SELECT Box\r\n"
    b"e UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])\r\n"
    b"f STORE 1 +FLAGS (\\Flagged)\r\n"
    b"g SEARCH FLAGGED\r\n"
    b"h bogus command\r\n"
    b"i LOGOUT\r\n"
)


def _run_transcript(server: RunningServer, user: str, one_octet_at_a_time: bool) -> bytes:
    c = RawIMAP(server.ports["imaps"])
    data = TRANSCRIPT.replace(b"{user}", user.encode()).replace(b"{password}", PASSWORD.encode())
    data = data.replace(b"{{", b"{").replace(b"}}", b"}")
    if one_octet_at_a_time:
        for i in range(len(data)):
            c.send(data[i : i + 1])
    else:
        c.send(data)
    out = []
    while True:
        try:
            out.append(c.line())
        except ConnectionError:
            break
    c.close()
    text = b"\n".join(out)
    # UIDVALIDITY differs between accounts; everything else must not
    return re.sub(rb"UIDVALIDITY \d+|APPENDUID \d+|COPYUID \d+", b"V", text)


def test_pipelined_transcript_split_at_every_octet(server: RunningServer) -> None:
    whole = _run_transcript(server, new_account(server, "x"), False)
    split = _run_transcript(server, new_account(server, "x"), True)
    assert split == whole
    assert b"e OK FETCH completed" in whole and b"* SEARCH 1" in whole and b"h BAD" in whole
    assert whole.endswith(b"* BYE Logging out\ni OK LOGOUT completed")


def test_autologout(server: RunningServer) -> None:
    c = RawIMAP(server.ports["imaps"])
    c.login(new_account(server, "x"), PASSWORD)
    start = time.monotonic()
    c.sock.settimeout(10)
    assert c.line() == b"* BYE Autologout; idle for too long"
    assert 1.5 < time.monotonic() - start < 5
    with pytest.raises(ConnectionError):
        c.line()
