"""Mail authentication end to end over real DNS on loopback (Knot, ../shared/peers/start-dns.sh).

Instance A hosts peer.test (Knot publishes its SPF ip4:127.0.0.1, DKIM selector sel1 and DMARC
p=reject with strict alignment) and signs with sel1; instance B is the MX of proj.test
(mail.proj.test = 127.0.0.2) and verifies.
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailroom.store import directory
from mailroom.store.database import transaction
from tests.interop.conftest import ensure_knot, require_tool, start_peer
from tests.server_fixture import (
    PASSWORD,
    RunningServer,
    free_port,
    inbox,
    insecure_tls,
    populate,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.interop
PEERS_STATE = Path("/var/lib/mailroom-peers")
KNOT = '[dns]\nnameservers = ["127.0.0.1:5353"]\n'


def _server(
    root: Path, ports: dict[str, int], extra: str, domain: str, account: str, host: str = "127.0.0.1"
) -> RunningServer:
    cfg = write_config(root, ports, extra)
    if host != "127.0.0.1":
        cfg.write_text(
            # also on 127.0.0.1:2526, where ../shared/peers' Postfix relays mail for proj.test
            cfg.read_text().replace(
                f'smtp = "127.0.0.1:{ports["smtp"]}"', f'smtp = ["{host}:{ports["smtp"]}", "127.0.0.1:2526"]'
            )
        )
    srv = RunningServer(root, cfg, ports, host=host)
    populate(srv.data_dir)
    conn = srv.db()
    with transaction(conn):
        directory.add_domain(conn, domain)
        directory.add_account(conn, account, PASSWORD)
    conn.close()
    return srv


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    ensure_knot()
    b_port = free_port()
    b = _server(
        tmp_path_factory.mktemp("mx-b"),
        {"smtp": b_port, "imaps": free_port()},
        KNOT,
        "proj.test",
        "user@proj.test",
        host="127.0.0.2",
    )
    a_extra = KNOT + f'[delivery]\nmx_port = {b_port}\nipv6 = false\nsource_ipv4 = "127.0.0.1"\n'
    a = _server(
        tmp_path_factory.mktemp("sender-a"),
        {"smtp": free_port(), "submissions": free_port()},
        a_extra,
        "peer.test",
        "alice@peer.test",
    )
    key_dir = a.data_dir / "dkim" / "peer.test"
    key_dir.mkdir(parents=True, mode=0o700)
    shutil.copy(PEERS_STATE / "dkim" / "peer.test" / "sel1.private", key_dir / "sel1.key")
    (key_dir / "sel1.key").chmod(0o600)
    b.start()
    a.start()
    yield a, b
    for srv in (a, b):
        assert srv.stop() == 0
        assert "Traceback" not in srv.log(), srv.log()


def test_signed_mail_passes_spf_dkim_dmarc(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    tag = uuid.uuid4().hex
    ctx = insecure_tls()
    with smtplib.SMTP_SSL(
        "127.0.0.1", a.ports["submissions"], local_hostname="laptop", context=ctx, timeout=10
    ) as s:
        s.login("alice@peer.test", PASSWORD)
        s.sendmail(
            "alice@peer.test",
            ["user@proj.test"],
            f"From: Alice <alice@peer.test>\r\nTo: user@proj.test\r\nSubject: {tag}\r\n\r\nsigned\r\n",
        )

    def got() -> list[bytes]:
        return [m for m in inbox(b, "user@proj.test") if tag.encode() in m]

    assert wait_until(got), a.log()[-2000:] + "\n---\n" + b.log()[-2000:]
    (msg,) = got()
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ")
    ar = next(
        line for line in unfolded.split("\r\n") if line.startswith("Authentication-Results: mx.example.org;")
    )
    assert "spf=pass" in ar and "smtp.mailfrom=peer.test" in ar.replace("alice@", "")
    assert "dkim=pass" in ar and "header.d=peer.test" in ar
    assert "dmarc=pass" in ar
    # and the recipient reads it over IMAP
    imap = imaplib.IMAP4_SSL("127.0.0.1", b.ports["imaps"], ssl_context=insecure_tls())
    imap.login("user@proj.test", PASSWORD)
    imap.select("INBOX")
    _, found = imap.uid("SEARCH", "SUBJECT", tag)
    (uid,) = found[0].split()
    _, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    imap.logout()
    assert data[0][1] == msg  # type: ignore[index]
    assert (
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=peer.test;" in unfolded.replace("\r\n", " ")
        or "d=peer.test" in head
    )


def test_forged_from_of_p_reject_domain_is_refused(pair: tuple[RunningServer, RunningServer]) -> None:
    _, b = pair
    with (
        smtplib.SMTP(
            "127.0.0.2", b.ports["smtp"], local_hostname="forger.example", source_address=("127.0.0.1", 0)
        ) as s,
        pytest.raises(smtplib.SMTPDataError) as info,
    ):
        s.sendmail(
            "bounce@proj.test",
            ["user@proj.test"],
            "From: ceo@peer.test\r\nSubject: pay this\r\n\r\nforged\r\n",
        )
    assert info.value.smtp_code == 550 and info.value.smtp_error.startswith(b"5.7.1")


def test_dmarc_quarantine_goes_to_junk(pair: tuple[RunningServer, RunningServer]) -> None:
    # proj.test: SPF allows 127.0.0.2 only (-all), DMARC p=quarantine; unsigned from 127.0.0.1 fails both
    _, b = pair
    tag = uuid.uuid4().hex
    with smtplib.SMTP(
        "127.0.0.2", b.ports["smtp"], local_hostname="x.example", source_address=("127.0.0.1", 0)
    ) as s:
        assert (
            s.sendmail(
                "someone@proj.test",
                ["user@proj.test"],
                f"From: someone@proj.test\r\nSubject: {tag}\r\n\r\nx\r\n",
            )
            == {}
        )
    assert not [m for m in inbox(b, "user@proj.test") if tag.encode() in m]
    conn = b.db()
    try:
        rows = conn.execute(
            "SELECT b.data FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id JOIN bodies b ON b.id = m.body_id "
            "WHERE mb.name = 'Junk'"
        ).fetchall()
    finally:
        conn.close()
    junk = [bytes(r[0]) for r in rows if tag.encode() in bytes(r[0])]
    assert len(junk) == 1 and b"spf=fail" in junk[0] and b"dmarc=fail" in junk[0]


def test_postfix_relayed_unsigned_mail_claiming_p_reject_domain_is_refused(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    """Postfix (a real MTA on 127.0.0.1) relays proj.test to B; the From claims peer.test (p=reject)
    but nothing aligns: the envelope is proj.test (SPF fails from 127.0.0.1) and nothing is signed."""
    _, b = pair
    start_peer("start-postfix.sh")
    tag = uuid.uuid4().hex
    r = subprocess.run(
        [
            require_tool("swaks"),
            "--server",
            "127.0.0.1:2525",
            "--helo",
            "client.example",
            "--from",
            "someone@proj.test",
            "--to",
            "user@proj.test",
            "--header",
            "From: ceo@peer.test",
            "--header",
            f"Subject: {tag}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout  # Postfix queued it; its relay to B is what must fail
    maillog = Path("/var/lib/mailroom-peers/postfix/maillog")
    assert wait_until(lambda: "refused from=<someone@proj.test>" in b.log(), timeout=30), b.log()[-2000:]
    assert wait_until(lambda: "said: 550 5.7.1" in maillog.read_text(errors="replace"), timeout=30)
    assert not [m for m in inbox(b, "user@proj.test") if tag.encode() in m]
