"""IMAP side by side: mailroom against the loopback Dovecot (../shared/peers/start-dovecot.sh).

1. mbsync pulls a 10,000-message mailbox (IMAPS) from each server into an empty Maildir.
2. On a 100,000-message mailbox (and a 10,000 one, for the growth): SELECT,
   ``UID FETCH 1:* (FLAGS)``, a header SEARCH and a body SEARCH, each the median of a few runs
   after one warm-up (Dovecot builds its index on first open; mailroom fills nothing).

The same message bytes go to both: mailroom's are inserted directly through the store (setup
speed), Dovecot's are written as Maildir files into a dedicated folder of alice@peer.test,
deleted afterwards. ``run(quick=True)`` uses 1,000 / 10,000 messages.

    .venv/bin/python benchmarks/imap_bench.py [--quick]
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import PASSWORD, PEERS_DIR, PEERS_STATE, SINK, BenchError, Mailroom

from mailroom.store import mail, mailboxes
from mailroom.store.database import open_database, transaction

DOVECOT_IMAPS = 1993
DOVECOT_USER = "alice@peer.test"
DOVECOT_PASSWORD = "secret"
FRUIT = ("apples", "pears", "plums", "cherries", "quinces")
RUNS = 5


def message(i: int) -> bytes:
    body = "".join(f"body line {i}.{n} with some ordinary words in it\r\n" for n in range(20))
    return (
        f"From: Sender {i % 97} <sender{i % 97}@example.net>\r\n"
        f"To: {SINK}\r\n"
        f"Subject: message number {i} about {FRUIT[i % len(FRUIT)]}\r\n"
        f"Date: Mon, 1 Jan 2024 {i % 24:02d}:{i % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{i}.bench@example.net>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


# --- a minimal IMAP client (the same for both servers) -----------------------------------------


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=600))
        self.file = self.sock.makefile("rb", buffering=1 << 20)
        self.file.readline()
        self.command(f'LOGIN "{user}" "{password}"')

    def command(self, text: str) -> list[bytes]:
        self.sock.sendall(b"b " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise BenchError(f"connection closed during {text}")
            if line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1 : -3].rstrip(b"+"))
                line += self.file.read(size) + self.file.readline()
            lines.append(line)
            if line.startswith(b"b "):
                if not line.startswith(b"b OK"):
                    raise BenchError(f"{text}: {line!r}")
                return lines

    def timed(self, text: str) -> float:
        t0 = time.perf_counter()
        self.command(text)
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (BenchError, OSError):
            pass
        self.sock.close()


def median_of(fn: Callable[[], float], runs: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(runs))


# --- the two servers ---------------------------------------------------------------------------


def fill_mailroom(server: Mailroom, sizes: dict[str, int]) -> None:
    conn = open_database(server.data_dir)
    try:
        account = conn.execute(
            "SELECT a.id FROM accounts a JOIN domains d ON d.id = a.domain_id WHERE a.local || '@' || d.name = ?",
            (SINK,),
        ).fetchone()[0]
        for name, count in sizes.items():
            with transaction(conn):
                box = mailboxes.create_mailbox(conn, account, name)
            with transaction(conn):
                for i in range(count):
                    data = message(i)
                    mail.store_message(
                        conn,
                        io.BytesIO(data),
                        len(data),
                        [mail.Placement(box.id, flags=i % 3 and 1)],
                        1_704_067_200 + i,
                    )
    finally:
        conn.close()


class DovecotFolders:
    """Folders of alice@peer.test filled by writing Maildir files directly."""

    def __init__(self) -> None:
        try:
            socket.create_connection(("127.0.0.1", DOVECOT_IMAPS), timeout=2).close()
        except OSError:
            subprocess.run(["bash", str(PEERS_DIR / "start-dovecot.sh")], check=True, capture_output=True)
        self.root = PEERS_STATE / "mail" / "peer.test" / "alice"
        self.names: list[str] = []

    def make(self, name: str, count: int) -> None:
        c = Client(DOVECOT_IMAPS, DOVECOT_USER, DOVECOT_PASSWORD)
        c.command(f"CREATE {name}")
        c.close()
        self.names.append(name)
        cur = self.root / f".{name}" / "cur"
        stat = cur.stat()
        now = int(time.time())
        for i in range(count):
            data = message(i)
            flags = "S" if i % 3 else ""
            path = cur / f"{now}.M{i}P{os.getpid()}.bench,S={len(data)}:2,{flags}"
            path.write_bytes(data)
            os.chown(path, stat.st_uid, stat.st_gid)

    def cleanup(self) -> None:
        c = Client(DOVECOT_IMAPS, DOVECOT_USER, DOVECOT_PASSWORD)
        for name in self.names:
            c.command(f"DELETE {name}")
        c.close()


# --- the measurements --------------------------------------------------------------------------


def mbsync_pull(host_port: int, user: str, password: str, ca: Path, folder: str, work: Path) -> float:
    exe = shutil.which("mbsync")
    if exe is None:
        raise BenchError("mbsync is not installed (apt-get install isync)")
    local = work / "mail"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    rc = work / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount a\nHost localhost\nPort {host_port}\nUser {user}\nPass {password}\n"
        f"SSLType IMAPS\nCertificateFile {ca}\nPipelineDepth 50\n\n"
        "IMAPStore r\nAccount a\n\n"
        f"MaildirStore l\nPath {local}/\nInbox {local}/INBOX\n\n"
        f"Channel c\nFar :r:{folder}\nNear :l:{folder}\nCreate Near\nSyncState *\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([exe, "-c", str(rc), "c"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"mbsync: {done.stderr.strip()[-300:]}")
    pulled = sum(1 for sub in ("new", "cur") for _ in (local / folder / sub).iterdir())
    return elapsed if pulled else float("nan")


def mailbox_ops(c: Client, folder: str, count: int) -> dict[str, float]:
    needle = count * 7 // 10
    out = {
        "select": median_of(lambda: c.timed(f"SELECT {folder}"), RUNS),
        "uid_fetch_flags": median_of(lambda: c.timed("UID FETCH 1:* (FLAGS)"), RUNS),
        "search_header": median_of(lambda: c.timed(f'UID SEARCH SUBJECT "number {needle} about"'), RUNS),
        "search_body": median_of(lambda: c.timed(f'UID SEARCH BODY "line {needle}.7 with"'), 3),
    }
    lines = c.command(f'UID SEARCH BODY "line {needle}.7 with"')
    if not lines[0].strip().endswith(b" %d" % (needle + 1)):
        raise BenchError(f"body search found the wrong message: {lines[0][:80]!r}")
    return out


def run(quick: bool = False) -> dict[str, Any]:
    small, big = (1_000, 10_000) if quick else (10_000, 100_000)
    tag = uuid.uuid4().hex[:6]
    names = {"small": f"bench{small}-{tag}", "big": f"bench{big}-{tag}"}
    work = Path(tempfile.mkdtemp(prefix="mailroom-imap-bench-"))
    (work / "mailroom").mkdir()
    server = Mailroom(work / "mailroom", ("smtp", "imaps"))
    dovecot = DovecotFolders()
    results: dict[str, Any] = {"messages": {"small": small, "big": big}}
    try:
        server.populate()
        t0 = time.perf_counter()
        fill_mailroom(server, {names["small"]: small, names["big"]: big})
        results["setup_mailroom_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dovecot.make(names["small"], small)
        dovecot.make(names["big"], big)
        results["setup_dovecot_s"] = time.perf_counter() - t0
        server.start()
        ours_ca = server.data_dir / "tls" / "selfsigned.crt"
        peer_ca = PEERS_STATE / "tls" / "ca.pem"

        # warm both: Dovecot indexes a new Maildir at first open, mailroom's first SELECT of a
        # mailbox in a process reads its UID list from SQLite (later ones reuse it until it changes)
        results["first_select_big"] = {}
        for who, port, user, pw in (
            ("mailroom", server.ports["imaps"], SINK, PASSWORD),
            ("dovecot", DOVECOT_IMAPS, DOVECOT_USER, DOVECOT_PASSWORD),
        ):
            c = Client(port, user, pw)
            results["first_select_big"][who] = c.timed(f"SELECT {names['big']}")
            c.command(f"SELECT {names['small']}")
            c.close()

        pulls = 1 if quick else 3  # mbsync fsyncs every message it writes: noisy, take a median
        results["mbsync_pull"] = {
            "mailroom": statistics.median(
                mbsync_pull(server.ports["imaps"], SINK, PASSWORD, ours_ca, names["small"], work / "m1")
                for _ in range(pulls)
            ),
            "dovecot": statistics.median(
                mbsync_pull(
                    DOVECOT_IMAPS, DOVECOT_USER, DOVECOT_PASSWORD, peer_ca, names["small"], work / "m2"
                )
                for _ in range(pulls)
            ),
        }
        for size in ("small", "big"):
            ours = Client(server.ports["imaps"], SINK, PASSWORD)
            peer = Client(DOVECOT_IMAPS, DOVECOT_USER, DOVECOT_PASSWORD)
            count = small if size == "small" else big
            results[f"ops_{size}"] = {
                "mailroom": mailbox_ops(ours, names[size], count),
                "dovecot": mailbox_ops(peer, names[size], count),
            }
            ours.close()
            peer.close()
    finally:
        server.stop()
        try:
            dovecot.cleanup()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _summarise(results)


def _summarise(results: dict[str, Any]) -> dict[str, Any]:
    pull = results["mbsync_pull"]
    pull["ratio"] = pull["mailroom"] / pull["dovecot"]
    growth: dict[str, dict[str, float]] = {}
    for op in results["ops_small"]["mailroom"]:
        for who in ("mailroom", "dovecot"):
            growth.setdefault(op, {})[who] = results["ops_big"][who][op] / results["ops_small"][who][op]
    results["growth_small_to_big"] = growth
    results["ratios_big"] = {
        op: results["ops_big"]["mailroom"][op] / results["ops_big"]["dovecot"][op]
        for op in results["ops_big"]["mailroom"]
    }
    return results


def report(results: dict[str, Any]) -> str:
    n = results["messages"]
    pull = results["mbsync_pull"]
    lines = [
        f"mbsync pull of {n['small']:,} messages: mailroom {pull['mailroom']:.2f} s, "
        f"dovecot {pull['dovecot']:.2f} s, ratio {pull['ratio']:.2f}",
        f"{'operation':<18}{'size':>9}{'mailroom ms':>14}{'dovecot ms':>13}{'ratio':>8}{'growth mr':>11}{'growth dc':>11}",
    ]
    first = results["first_select_big"]
    lines.insert(
        1,
        f"first SELECT of the {n['big']:,}-message mailbox after start: mailroom {first['mailroom'] * 1000:.1f} ms, "
        f"dovecot {first['dovecot'] * 1000:.1f} ms (indexing a new Maildir)",
    )
    for op in results["ops_big"]["mailroom"]:
        for size in ("small", "big"):
            m = results[f"ops_{size}"]["mailroom"][op] * 1000
            d = results[f"ops_{size}"]["dovecot"][op] * 1000
            g = results["growth_small_to_big"][op]
            extra = f"{g['mailroom']:>11.1f}{g['dovecot']:>11.1f}" if size == "big" else ""
            lines.append(f"{op:<18}{n[size]:>9,}{m:>14.1f}{d:>13.1f}{m / d:>8.2f}{extra}")
    lines.append(
        f"setup: mailroom {results['setup_mailroom_s']:.1f} s (store), dovecot {results['setup_dovecot_s']:.1f} s (files)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run(quick="--quick" in sys.argv)))
