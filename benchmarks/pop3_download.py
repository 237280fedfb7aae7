"""POP3 download side by side: the same 1,000 realistic ~4 KB messages in a mailroom INBOX and in a
Dovecot Maildir (../shared/peers/start-dovecot.sh), each downloaded in full by a real client,
fetchmail over POP3S (keep + fetchall: LIST/RETR of every message, nothing deleted, all messages
appended to one BSMTP file so no MDA process per message is timed), and then by a plain poplib loop
(RETR each, no client-side work) to separate the server from the client.

    .venv/bin/python benchmarks/pop3_download.py [--quick]     # --quick: 200 messages

Prints the wall times, messages/s and the ratio mailroom/Dovecot; ``run(quick)`` returns the same
figures for benchmarks/run. Needs root (Dovecot's Maildir belongs to vmail; apt for the peers).
"""

from __future__ import annotations

import argparse
import io
import os
import poplib
import pwd
import random
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run as a script

from benchlib import (
    PASSWORD,
    PEERS_STATE,
    SINK,
    BenchError,
    DovecotPeer,
    Mailroom,
    listening,
    run_script,
    wait_for,
)

from mailroom.store import directory, mail
from mailroom.store.database import open_database, transaction

FULL, QUICK = 1000, 200
DOVECOT_POP3S = 1995
DOVECOT_USER = "pop3bench@peer.test"  # a user of its own: nothing else delivers to it
DOVECOT_PASSWORD = "secret"
DOVECOT_CA = PEERS_STATE / "tls" / "ca.pem"

WORDS = [
    "the",
    "quarterly",
    "report",
    "meeting",
    "schedule",
    "attached",
    "please",
    "review",
    "budget",
    "project",
    "update",
    "invoice",
    "shipping",
    "order",
    "confirmation",
    "account",
    "password",
    "reset",
    "team",
    "lunch",
    "friday",
    "deadline",
    "draft",
    "proposal",
    "customer",
    "feedback",
    "release",
    "notes",
    "server",
    "maintenance",
    "window",
    "holiday",
    "travel",
    "itinerary",
    "agenda",
]


# --- the messages -------------------------------------------------------------------------------------


def _paragraph(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    lines, line = [], ""
    for word in text.split():  # wrap at 72 like a mail client
        if len(line) + len(word) + 1 > 72:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n".join(lines)


def make_message(i: int, rng: random.Random) -> bytes:
    """A ~4 KB message as mail arrives today: a trace, DKIM, multipart/alternative text + HTML."""
    sender = f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@sender{i % 17}.test"
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + i * 37))
    boundary = f"=_boundary_{i:06d}_{rng.getrandbits(48):012x}"
    sig = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(344)
    )
    text = _paragraph(rng, rng.randint(150, 190))
    html = "<html><body><p>" + _paragraph(rng, rng.randint(110, 140)) + "</p></body></html>"
    headers = [
        f"Return-Path: <{sender}>",
        f"Received: from mail{i % 5}.sender{i % 17}.test (mail{i % 5}.sender{i % 17}.test [192.0.2.{i % 250 + 1}])",
        f"\tby mx.example.org with ESMTPS id {rng.getrandbits(40):010X}",
        f"\tfor <{SINK}>; {stamp}",
        f"Received: from [10.0.0.{i % 250 + 1}] by mail{i % 5}.sender{i % 17}.test; {stamp}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender{i % 17}.test; s=mail;",
        "\th=from:to:subject:date:message-id:mime-version:content-type;",
        f"\tbh={sig[:44]}=;",
        "\tb=" + "\r\n\t  ".join(sig[k : k + 70] for k in range(44, 344, 70)),
        f"From: {sender.split('@')[0].replace('.', ' ').title()} <{sender}>",
        f"To: Sink <{SINK}>",
        f"Subject: {' '.join(rng.choice(WORDS) for _ in range(5))} #{i}",
        f"Date: {stamp}",
        f"Message-ID: <{rng.getrandbits(64):016x}.{i}@sender{i % 17}.test>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    parts = [
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "",
        text,
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "",
        html,
        f"--{boundary}--",
        "",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(parts)).encode()


def make_messages(count: int) -> list[bytes]:
    rng = random.Random(1939)  # RFC 1939: the same corpus every run
    return [make_message(i, rng) for i in range(count)]


# --- the two servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    cafile: Path
    user: str
    password: str


@contextmanager
def mailroom_with(messages: list[bytes]) -> Iterator[Target]:
    root = Path(tempfile.mkdtemp(prefix="mailroom-bench-pop3-"))
    server = Mailroom(root, services=("smtp", "pop3s"))
    try:
        server.populate()
        conn = open_database(server.data_dir)
        try:
            with transaction(conn):
                account = directory.find_account(conn, SINK)
                if account is None:
                    raise BenchError(f"{SINK} was not created")
                box = mail.inbox(conn, account.id)
                now = int(time.time())
                for data in messages:
                    mail.store_message(conn, io.BytesIO(data), len(data), [mail.Placement(box.id)], now)
        finally:
            conn.close()
        server.start()
        yield Target(
            "mailroom", server.ports["pop3s"], server.data_dir / "tls" / "selfsigned.crt", SINK, PASSWORD
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _dovecot_sessions() -> bool:
    conf = PEERS_STATE / "dovecot" / "dovecot.conf"
    who = subprocess.run(["doveadm", "-c", str(conf), "who", DOVECOT_USER], capture_output=True, text=True)
    return who.returncode == 0 and DOVECOT_USER in who.stdout


@contextmanager
def dovecot_with(messages: list[bytes], log: Path) -> Iterator[Target]:
    if not listening(DOVECOT_POP3S):  # benchmarks/run starts it; a running one is not reloaded
        run_script("start-dovecot.sh", log)
    DovecotPeer(log).ensure_user(DOVECOT_USER, DOVECOT_PASSWORD)
    local, domain = DOVECOT_USER.split("@")
    home = PEERS_STATE / "mail" / domain / local
    shutil.rmtree(home, ignore_errors=True)
    vmail = pwd.getpwnam("vmail")
    for sub in ("", "new", "cur", "tmp"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / sub, vmail.pw_uid, vmail.pw_gid)
    base = int(time.time())
    for i, data in enumerate(messages):  # Dovecot numbers new/ in file name order
        path = home / "new" / f"{base + i}.M{i:06d}P{os.getpid()}.bench"
        path.write_bytes(data)
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
    target = Target("dovecot", DOVECOT_POP3S, DOVECOT_CA, DOVECOT_USER, DOVECOT_PASSWORD)
    try:

        def answers() -> bool:
            try:
                poplib_download(target, stat_only=True)
                return True
            except (OSError, poplib.error_proto):
                return False

        wait_for(answers, 30, 0.2, "Dovecot POP3S to log the benchmark user in")
        yield target
    finally:
        try:
            wait_for(lambda: not _dovecot_sessions(), 10, 0.1, "Dovecot to end its sessions")
        finally:
            shutil.rmtree(home, ignore_errors=True)


# --- the clients --------------------------------------------------------------------------------------


def fetchmail_version() -> str:
    done = subprocess.run(["fetchmail", "--version"], capture_output=True, text=True)
    found = re.search(r"release (\S+?)\+", done.stdout)
    return found.group(1) if found else "?"


def fetchmail_download(target: Target, work: Path, expected: int) -> float:
    """Wall time of one fetchmail poll that downloads every message and keeps them."""
    out = work / f"{target.name}.bsmtp"
    out.unlink(missing_ok=True)
    rc = work / f"{target.name}.fetchmailrc"
    rc.write_text(
        "set no syslog\nset invisible\n"
        f"poll 127.0.0.1 service {target.port} protocol POP3\n"
        f'  user "{target.user}" password "{target.password}"\n'
        f"  ssl sslcertck sslcertfile {target.cafile} sslcommonname localhost\n"
        f"  keep fetchall no rewrite\n  bsmtp {out}\n"
    )
    rc.chmod(0o600)
    command = ["fetchmail", "-f", str(rc), "--nodetach", "--pidfile", str(work / "fetchmail.pid")]
    command += ["--idfile", str(work / f"{target.name}.ids")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HOME": str(work)})
    elapsed = time.perf_counter() - started
    said = done.stdout + done.stderr
    got = re.search(r"(\d+) messages? for", said)
    if done.returncode != 0 or got is None or int(got.group(1)) != expected:
        raise BenchError(f"fetchmail from {target.name} (exit {done.returncode}): {said.strip()[-300:]}")
    fetched = out.read_bytes().count(b"\r\nDATA\r\n") if out.exists() else 0
    if fetched != expected:
        raise BenchError(f"fetchmail from {target.name}: {fetched} of {expected} messages in {out}")
    return elapsed


def poplib_download(
    target: Target, stat_only: bool = False, expected: int | None = None
) -> tuple[float, float]:
    """A plain loop: log in, RETR every message, QUIT (nothing deleted). Returns the seconds from
    connect to logged in, and those of the RETR loop alone."""
    ctx = ssl.create_default_context(cafile=str(target.cafile))
    started = time.perf_counter()
    p = poplib.POP3_SSL("localhost", target.port, context=ctx, timeout=60)
    try:
        p.user(target.user)
        p.pass_(target.password)
        logged_in = time.perf_counter()
        count, _ = p.stat()
        if not stat_only:
            if expected is not None and count != expected:
                raise BenchError(f"{target.name} holds {count} messages, not {expected}")
            for i in range(1, count + 1):
                p.retr(i)
        done = time.perf_counter()
    finally:
        p.quit()
    return logged_in - started, done - logged_in


# --- the run ------------------------------------------------------------------------------------------


def run(quick: bool, count: int | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise BenchError("needs root (Dovecot's Maildir belongs to vmail)")
    if shutil.which("fetchmail") is None:
        raise BenchError("fetchmail is not installed (apt-get install fetchmail)")
    n = count or (QUICK if quick else FULL)
    messages = make_messages(n)
    total = sum(map(len, messages))
    say = echo or (lambda _text: None)
    say(f"{n} messages, {total / n / 1024:.1f} KiB on average, {total / 2**20:.1f} MiB in all")
    work = Path(tempfile.mkdtemp(prefix="mailroom-bench-pop3-client-"))
    times: dict[str, dict[str, float]] = {"mailroom": {}, "dovecot": {}}
    try:
        with mailroom_with(messages) as ours, dovecot_with(messages, work / "peers.log") as theirs:
            for target in (ours, theirs):  # first poll: caches cold, Dovecot builds its index
                times[target.name]["first"] = fetchmail_download(target, work, n)
            for target in (theirs, ours):
                times[target.name]["repeat"] = fetchmail_download(target, work, n)
            for target in (ours, theirs):
                login, loop = poplib_download(target, expected=n)
                times[target.name]["login"], times[target.name]["poplib"] = login, loop
    finally:
        shutil.rmtree(work, ignore_errors=True)

    client = f"fetchmail {fetchmail_version()} over POP3S (keep, fetchall, bsmtp to a file)"
    metrics: list[dict[str, Any]] = []
    for key, label in (("first", "fetchmail, first download"), ("repeat", "fetchmail, repeat download")):
        mine, peer = times["mailroom"][key], times["dovecot"][key]
        metrics.append(
            {"name": f"{label} wall", "unit": "s", "better": "lower", "mailroom": mine, "dovecot": peer}
        )
        metrics.append(
            {
                "name": f"{label} rate",
                "unit": "msg/s",
                "better": "higher",
                "mailroom": n / mine,
                "dovecot": n / peer,
            }
        )
    mine, peer = times["mailroom"]["poplib"], times["dovecot"]["poplib"]
    metrics.append(
        {
            "name": "poplib RETR loop rate",
            "unit": "msg/s",
            "better": "higher",
            "mailroom": n / mine,
            "dovecot": n / peer,
        }
    )
    mine, peer = times["mailroom"]["login"], times["dovecot"]["login"]
    metrics.append(
        {
            "name": "connect + login",
            "unit": "ms",
            "better": "lower",
            "mailroom": mine * 1e3,
            "dovecot": peer * 1e3,
        }
    )
    return {
        "client": client,
        "secondary_client": "python poplib loop (RETR 1..n after login, no client-side work)",
        "messages": n,
        "octets": total,
        "metrics": metrics,
        "ratio_mailroom_over_dovecot": {
            k: times["mailroom"][k] / times["dovecot"][k] for k in times["mailroom"]
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} messages instead of {FULL}")
    parser.add_argument("--count", type=int, help="this many messages")
    args = parser.parse_args(argv)
    try:
        result = run(args.quick, args.count, echo=print)
    except BenchError as exc:
        print(f"pop3_download: {exc}", file=sys.stderr)
        return 1
    print(f"client: {result['client']}; then {result['secondary_client']}")
    print(f"{'':40s} {'mailroom':>10s} {'dovecot':>10s} {'mailroom/dovecot':>17s}")
    for m in result["metrics"]:
        label = f"{m['name']} ({m['unit']})"
        ratio = m["mailroom"] / m["dovecot"]
        print(f"{label:40s} {m['mailroom']:10.3f} {m['dovecot']:10.3f} {ratio:16.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
