"""POP3 through real sockets against a running server: poplib over STLS and POP3S."""

from __future__ import annotations

import poplib
import smtplib
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.server_fixture import PASSWORD, RunningServer, inbox, insecure_tls, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("pop3"), services=("smtp", "pop3", "pop3s")) as srv:
        yield srv


def deliver(server: RunningServer, to: str, body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname="client.example") as s:
        assert s.sendmail("sender@remote.test", [to], body) == {}


def pop3s(server: RunningServer, user: str) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=insecure_tls(), timeout=10)
    p.user(user)
    p.pass_(PASSWORD)
    return p


def test_retr_matches_store_and_dele_on_quit(server: RunningServer) -> None:
    bodies = [f"Subject: {uuid.uuid4().hex}\r\n\r\n.leading dot\r\nline\r\n".encode() for _ in range(3)]
    for body in bodies:
        deliver(server, "carol@example.net", body)
    stored = inbox(server, "carol@example.net")
    p = pop3s(server, "carol@example.net")
    count, octets = p.stat()
    assert count == len(stored) and octets == sum(map(len, stored))
    listing = [line.split() for line in p.list()[1]]
    assert [int(size) for _, size in listing] == [len(m) for m in stored]
    uidls = [line.split()[1] for line in p.uidl()[1]]
    assert len(set(uidls)) == len(uidls) == count
    for i, want in enumerate(stored, 1):
        _, lines, _size = p.retr(i)
        assert b"\r\n".join(lines) + b"\r\n" == want  # poplib undoes the byte-stuffing
    _, top, _ = p.top(1, 0)
    assert b"\r\n".join(top) + b"\r\n" == stored[0].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    p.dele(1)
    assert p.stat()[0] == count - 1
    p.rset()
    p.dele(2)
    p.quit()
    after = inbox(server, "carol@example.net")
    assert after == stored[:1] + stored[2:]
    # UIDLs are stable across sessions
    p = pop3s(server, "carol@example.net")
    assert [line.split()[1] for line in p.uidl()[1]] == uidls[:1] + uidls[2:]
    p.quit()


def test_dropped_connection_deletes_nothing_and_in_use(server: RunningServer) -> None:
    deliver(server, "bob@example.org", b"Subject: keep\r\n\r\nx\r\n")
    before = inbox(server, "bob@example.org")
    p = pop3s(server, "bob@example.org")
    p.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        pop3s(server, "bob@example.org")
    p.file.close()  # drop without QUIT
    p.sock.close()
    p2 = None
    for _ in range(50):  # the lock goes when the server notices the drop
        try:
            p2 = pop3s(server, "bob@example.org")
            break
        except poplib.error_proto:
            import time

            time.sleep(0.05)
    assert p2 is not None
    p2.quit()
    assert inbox(server, "bob@example.org") == before


def test_stls_required_before_credentials(server: RunningServer) -> None:
    p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    with pytest.raises(poplib.error_proto, match=r"-ERR"):
        p.user("alice@example.org")
    p.stls(context=insecure_tls())
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps and caps["SASL"] == ["PLAIN", "SCRAM-SHA-256"]
    p.user("alice@example.org")
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        p.pass_("wrong password")
    p.user("nobody@example.org")
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] authentication failed'"):
        p.pass_("wrong password")
    p.user("alice@example.org")
    p.pass_(PASSWORD)
    p.quit()


def test_sasl_plain(server: RunningServer) -> None:
    import base64

    s = insecure_tls().wrap_socket(socket.create_connection(("127.0.0.1", server.ports["pop3s"]), timeout=10))
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    token = base64.b64encode(b"\0alice@example.org\0" + PASSWORD.encode())
    s.sendall(b"AUTH PLAIN " + token + b"\r\nSTAT\r\nQUIT\r\n")
    assert f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK ")
    assert f.readline().startswith(b"+OK")
    s.close()
