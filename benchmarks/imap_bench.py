"""IMAP side by side: mailroom against the loopback Dovecot (../shared/peers/start-dovecot.sh).
The "imap" and "imap-idle" scenarios of benchmarks/run; also runs on its own:

    .venv/bin/python benchmarks/imap_bench.py [--quick] [--idle]

1. mbsync pulls a 10,000-message INBOX (IMAPS) from each server into an empty Maildir (on tmpfs,
   FSync no: the client's disk is not what is measured); one untimed pull each first.
2. On a 100,000-message INBOX (and a 10,000 one, for the growth): SELECT, ``UID FETCH 1:* (FLAGS)``,
   a header SEARCH and a body SEARCH, each a few timed runs after one warm-up (Dovecot builds its
   index on first open: that first SELECT after start is its own figure).
3. (``idle_memory``) memory of each server with 10 clients logged in, INBOX selected, in IDLE.

The same message bytes go to both, each INBOX belonging to a user of its own: mailroom's are
inserted directly through the store (setup speed), Dovecot's are written as Maildir files, deleted
afterwards. ``--quick`` uses 1,000 / 10,000 messages.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, when run as a script

from benchlib import (
    PASSWORD,
    RESULTS,
    SINK,
    BenchError,
    DovecotPeer,
    Mailroom,
    MailroomSession,
    cpu_seconds,
    memory,
)

from mailroom.store import directory, mail
from mailroom.store.database import open_database, transaction

FULL, QUICK = (10_000, 100_000), (1_000, 10_000)  # (small, big) INBOX sizes
FRUIT = ("apples", "pears", "plums", "cherries", "quinces")
# each INBOX has a user of its own on both servers
MAILROOM_USERS = {"small": "imap-small@example.org", "big": "imap-big@example.org"}
DOVECOT_USERS = {"small": "imapsmall@peer.test", "big": "imapbig@peer.test"}
DOVECOT_IDLE_USER = "imapidle@peer.test"
# (key, label) of the timed operations; the commands depend on the mailbox size
OPS = (
    ("select", "SELECT INBOX"),
    ("uid_fetch_flags", "UID FETCH 1:* (FLAGS)"),
    ("search_header", "UID SEARCH SUBJECT (header)"),
    ("search_body", "UID SEARCH BODY"),
)


def command(op: str, count: int) -> str:
    needle = count * 7 // 10
    return {
        "select": "SELECT INBOX",
        "uid_fetch_flags": "UID FETCH 1:* (FLAGS)",
        "search_header": f'UID SEARCH SUBJECT "number {needle} about"',
        "search_body": f'UID SEARCH BODY "line {needle}.7 with"',
    }[op]


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

    def idle(self) -> None:
        self.sock.sendall(b"i IDLE\r\n")
        while True:
            line = self.file.readline()
            if not line:
                raise BenchError("connection closed after IDLE")
            if line.startswith(b"+"):
                return
            if line.startswith(b"i "):
                raise BenchError(f"IDLE: {line!r}")

    def done(self) -> None:
        self.sock.sendall(b"DONE\r\n")
        while True:
            line = self.file.readline()
            if not line or line.startswith(b"i "):
                return

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (BenchError, OSError):
            pass
        self.sock.close()


@dataclass(frozen=True)
class Target:
    name: str  # "mailroom" or "dovecot"
    port: int
    user: str
    password: str
    ca: Path

    def client(self) -> Client:
        return Client(self.port, self.user, self.password)


# --- filling the two servers -------------------------------------------------------------------


def fill_mailroom(server: Mailroom, boxes: dict[str, int]) -> None:
    """INBOX of each account (address -> message count) through the store, one transaction each."""
    conn = open_database(server.data_dir)
    try:
        for address, count in boxes.items():
            with transaction(conn):
                account = directory.find_account(conn, address)
                if account is None:
                    raise BenchError(f"{address} was not created")
                box = mail.inbox(conn, account.id)
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


def fill_dovecot(dovecot: DovecotPeer, address: str, count: int) -> None:
    """The user's INBOX as a fresh Maildir of ``count`` files in cur/ (every third one unseen)."""
    dovecot.ensure_user(address)
    home, uid, gid = dovecot.fresh_maildir(address)
    cur = home / "cur"
    now = int(time.time())
    pid = os.getpid()
    for i in range(count):
        data = message(i)
        flags = "S" if i % 3 else ""
        fd = os.open(
            cur / f"{now}.M{i:07d}P{pid}.bench,S={len(data)}:2,{flags}", os.O_WRONLY | os.O_CREAT, 0o600
        )
        try:
            os.write(fd, data)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)


# --- the measurements --------------------------------------------------------------------------


def mbsync_pull(target: Target, work: Path, expected: int) -> float:
    """Wall time of one mbsync run that pulls the whole INBOX into an empty Maildir."""
    exe = shutil.which("mbsync")
    if exe is None:
        raise BenchError("mbsync is not installed (apt-get install isync)")
    local = work / f"{target.name}-mail"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    rc = work / f"{target.name}.mbsyncrc"
    rc.write_text(
        "FSync no\n\n"  # a global option, first; the client's disk flushes are not what this measures
        f"IMAPAccount a\nHost localhost\nPort {target.port}\nUser {target.user}\nPass {target.password}\n"
        f"SSLType IMAPS\nCertificateFile {target.ca}\nPipelineDepth 50\n\n"
        "IMAPStore r\nAccount a\n\n"
        f"MaildirStore l\nPath {local}/\nInbox {local}/INBOX\n\n"
        "Channel c\nFar :r:INBOX\nNear :l:INBOX\nCreate Near\nSyncState *\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([exe, "-c", str(rc), "c"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"mbsync from {target.name}: {done.stderr.strip()[-300:]}")
    pulled = sum(1 for sub in ("new", "cur") for _ in (local / "INBOX" / sub).iterdir())
    if pulled != expected:
        raise BenchError(f"mbsync pulled {pulled} of {expected} messages from {target.name}")
    shutil.rmtree(local, ignore_errors=True)
    return elapsed


def op_samples(c: Client, op: str, count: int, samples: int) -> list[float]:
    """One warm-up, then ``samples`` timed runs of the operation (the INBOX is selected before)."""
    text = command(op, count)
    c.command(text)
    times = [c.timed(text) for _ in range(samples)]
    if op.startswith("search"):
        hits = c.command(text)[0].split()[2:]
        if len(hits) != 1:
            raise BenchError(f"{text} found {len(hits)} messages, not 1")
    return times


def mailbox_ops(target: Target, count: int, samples: int) -> dict[str, list[float]]:
    c = target.client()
    try:
        c.command("SELECT INBOX")
        return {
            op: op_samples(c, op, count, samples if op != "search_body" else max(2, samples - 2))
            for op, _ in OPS
        }
    finally:
        c.close()


# --- the servers ---------------------------------------------------------------------------------


@dataclass
class Servers:
    mailroom: dict[str, Target]  # "small"/"big" -> target
    dovecot: dict[str, Target]
    server: Mailroom
    setup_s: dict[str, float]


@contextmanager
def servers(sizes: tuple[int, int], log: Path) -> Iterator[Servers]:
    """mailroom (a fresh data dir) and Dovecot, each with a small and a big INBOX; removed after."""
    counts = dict(zip(("small", "big"), sizes, strict=True))
    dovecot = DovecotPeer(log)
    dovecot.start()
    root = Path(tempfile.mkdtemp(prefix="mailroom-bench-imap-"))
    server = Mailroom(root, ("smtp", "imaps"))
    try:
        server.populate()
        for address in MAILROOM_USERS.values():
            server.add_user(address)
        t0 = time.perf_counter()
        fill_mailroom(server, {MAILROOM_USERS[k]: counts[k] for k in counts})
        setup = {"mailroom": time.perf_counter() - t0}
        t0 = time.perf_counter()
        for key, count in counts.items():
            fill_dovecot(dovecot, DOVECOT_USERS[key], count)
        setup["dovecot"] = time.perf_counter() - t0
        server.start()
        ours_ca = server.data_dir / "tls" / "selfsigned.crt"
        yield Servers(
            {
                k: Target("mailroom", server.ports["imaps"], MAILROOM_USERS[k], PASSWORD, ours_ca)
                for k in counts
            },
            {
                k: Target("dovecot", dovecot.imaps, DOVECOT_USERS[k], dovecot.password, dovecot.ca)
                for k in counts
            },
            server,
            setup,
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        for address in DOVECOT_USERS.values():
            dovecot.remove(address)


def run(
    quick: bool = False,
    pulls: int | None = None,
    samples: int | None = None,
    profile: Callable[[int, Callable[[], None]], None] | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Every IMAP figure of both servers, as lists of timed samples in seconds.

    ``profile(pid, workload)``, when given, is called at the end with mailroom's pid and a function
    that repeats the mailroom side once (an mbsync pull and the operations on the big INBOX)."""
    small, big = QUICK if quick else FULL
    pulls = pulls or (1 if quick else 3)
    samples = samples or (3 if quick else 5)
    # mbsync's Maildir on tmpfs: on ext4, creating 10,000 files right after deleting as many
    # spends mbsync's time in the kernel's inode allocator (perf: find_inode_bit,
    # recently_deleted), which measured the disk, not the servers
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="mailroom-bench-imap-client-", dir=shm if shm.is_dir() else None))
    out: dict[str, Any] = {"messages": {"small": small, "big": big}, "pulls": pulls, "samples": samples}
    try:
        with servers((small, big), log or RESULTS / "peers.log") as s:
            out["setup_s"] = s.setup_s
            # cold: the first SELECT of the big INBOX after start (Dovecot indexes a new Maildir;
            # mailroom's first SELECT of a mailbox in a process reads its UID list from SQLite)
            out["first_select_big"] = {}
            for who, targets in (("mailroom", s.mailroom), ("dovecot", s.dovecot)):
                c = targets["big"].client()
                out["first_select_big"][who] = [c.timed("SELECT INBOX")]
                c.close()
                c = targets["small"].client()
                c.command("SELECT INBOX")
                c.close()
            # one untimed pull each first (Dovecot fills its cache file on the first full fetch),
            # then alternate; mbsync is CPU-bound itself, so its CPU time is kept beside the wall time
            out["mbsync_pull"] = {"mailroom": [], "dovecot": []}
            out["mbsync_client_cpu"] = {"mailroom": [], "dovecot": []}
            out["mbsync_mailroom_cpu"] = []
            for targets in (s.mailroom, s.dovecot):
                mbsync_pull(targets["small"], work, small)
            for _ in range(pulls):
                for who, targets in (("mailroom", s.mailroom), ("dovecot", s.dovecot)):
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu0 = cpu_seconds(s.server.pid)
                    out["mbsync_pull"][who].append(mbsync_pull(targets["small"], work, small))
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    out["mbsync_client_cpu"][who].append(
                        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                    )
                    if who == "mailroom":
                        out["mbsync_mailroom_cpu"].append(cpu_seconds(s.server.pid) - cpu0)
            for size, count in (("small", small), ("big", big)):
                out[f"ops_{size}"] = {
                    "mailroom": mailbox_ops(s.mailroom[size], count, samples),
                    "dovecot": mailbox_ops(s.dovecot[size], count, samples),
                }
            # memory of both right after the work (a client of each still logged in)
            held = [s.mailroom["big"].client(), s.dovecot["big"].client()]
            for c in held:
                c.command("SELECT INBOX")
            out["memory_end"] = {
                "mailroom": asdict(memory(s.server.pid)),
                "dovecot": asdict(memory(DovecotPeer(work / "log").master_pid)),
            }
            for c in held:
                c.close()
            if profile is not None:

                def workload() -> None:  # the pull twice (the figure furthest from Dovecot's), the ops once
                    mbsync_pull(s.mailroom["small"], work, small)
                    mbsync_pull(s.mailroom["small"], work, small)
                    mailbox_ops(s.mailroom["big"], big, 1)

                profile(s.server.pid, workload)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def growth(results: dict[str, Any], op: str, who: str) -> float:
    """How the median time of an operation grows from the small to the big INBOX."""
    big: float = statistics.median(results["ops_big"][who][op])
    small: float = statistics.median(results["ops_small"][who][op])
    return big / small


# --- memory with IDLE clients --------------------------------------------------------------------


def _open_idle(target: Target, clients: int) -> list[Client]:
    opened = []
    try:
        for _ in range(clients):
            c = target.client()
            opened.append(c)
            c.command("SELECT INBOX")
            c.idle()
    except BaseException:
        for c in opened:
            c.sock.close()
        raise
    return opened


def _close_idle(opened: list[Client]) -> None:
    for c in opened:
        try:
            c.done()
        except OSError:
            pass
        c.close()


def idle_memory(log: Path, clients: int = 10, messages: int = 1000, settle: float = 2.0) -> dict[str, Any]:
    """RSS/PSS of each server before and with ``clients`` IMAPS clients logged in, INBOX (of
    ``messages``) selected, in IDLE. mailroom: its one process; Dovecot: all its processes summed.
    Both first serve one login + SELECT, so the "before" figures are of a warm server."""
    out: dict[str, Any] = {"clients": clients, "messages": messages}

    def fill(server: Mailroom) -> None:
        fill_mailroom(server, {SINK: messages})

    with MailroomSession(prepare=fill) as server:
        target = Target(
            "mailroom", server.ports["imaps"], SINK, PASSWORD, server.data_dir / "tls" / "selfsigned.crt"
        )
        _close_idle(_open_idle(target, 1))
        time.sleep(settle)
        before = memory(server.pid)
        opened = _open_idle(target, clients)
        time.sleep(settle)
        during = memory(server.pid)
        _close_idle(opened)
        out["mailroom"] = {"before": asdict(before), "idle": asdict(during)}

    dovecot = DovecotPeer(log)
    dovecot.start()
    fill_dovecot(dovecot, DOVECOT_IDLE_USER, messages)
    try:
        target = Target("dovecot", dovecot.imaps, DOVECOT_IDLE_USER, dovecot.password, dovecot.ca)
        _close_idle(_open_idle(target, 1))
        time.sleep(settle)
        before = memory(dovecot.master_pid)
        opened = _open_idle(target, clients)
        time.sleep(settle)
        during = memory(dovecot.master_pid)
        _close_idle(opened)
        out["dovecot"] = {"before": asdict(before), "idle": asdict(during)}
    finally:
        dovecot.remove(DOVECOT_IDLE_USER)
    return out


# --- standalone ----------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    n = results["messages"]
    med = statistics.median
    pull = results["mbsync_pull"]
    first = results["first_select_big"]
    lines = [
        f"mbsync pull of {n['small']:,} messages: mailroom {med(pull['mailroom']):.2f} s, "
        f"dovecot {med(pull['dovecot']):.2f} s, ratio {med(pull['mailroom']) / med(pull['dovecot']):.2f}",
        f"first SELECT of the {n['big']:,}-message INBOX after start: mailroom "
        f"{first['mailroom'][0] * 1000:.1f} ms, dovecot {first['dovecot'][0] * 1000:.1f} ms (indexing a new Maildir)",
        f"{'operation':<18}{'size':>9}{'mailroom ms':>14}{'dovecot ms':>13}{'ratio':>8}{'growth mr':>11}{'growth dc':>11}",
    ]
    for op, _ in OPS:
        for size in ("small", "big"):
            m = med(results[f"ops_{size}"]["mailroom"][op]) * 1000
            d = med(results[f"ops_{size}"]["dovecot"][op]) * 1000
            extra = (
                f"{growth(results, op, 'mailroom'):>11.1f}{growth(results, op, 'dovecot'):>11.1f}"
                if size == "big"
                else ""
            )
            lines.append(f"{op:<18}{n[size]:>9,}{m:>14.1f}{d:>13.1f}{m / d:>8.2f}{extra}")
    mem = results["memory_end"]
    lines.append(
        f"memory at the end: mailroom RSS {mem['mailroom']['rss_mib']:.1f} / PSS {mem['mailroom']['pss_mib']:.1f} MiB, "
        f"dovecot ({mem['dovecot']['processes']} processes) RSS {mem['dovecot']['rss_mib']:.1f} / "
        f"PSS {mem['dovecot']['pss_mib']:.1f} MiB"
    )
    setup = results["setup_s"]
    lines.append(
        f"setup: mailroom {setup['mailroom']:.1f} s (store), dovecot {setup['dovecot']:.1f} s (files)"
    )
    return "\n".join(lines)


def idle_report(results: dict[str, Any]) -> str:
    lines = [f"{results['clients']} IMAPS clients in IDLE, INBOX of {results['messages']} messages selected:"]
    for who in ("mailroom", "dovecot"):
        b, i = results[who]["before"], results[who]["idle"]
        lines.append(
            f"  {who}: PSS {b['pss_mib']:.1f} -> {i['pss_mib']:.1f} MiB, RSS {b['rss_mib']:.1f} -> "
            f"{i['rss_mib']:.1f} MiB ({b['processes']} -> {i['processes']} processes)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 / 10,000 messages instead of 10,000 / 100,000"
    )
    parser.add_argument("--idle", action="store_true", help="also the memory with 10 IDLE clients")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("imap_bench: needs root (Dovecot's Maildirs belong to vmail)", file=sys.stderr)
        return 2
    log = Path(tempfile.mkstemp(prefix="mailroom-imap-bench-", suffix=".log")[1])
    try:
        print(report(run(args.quick, log=log)))
        if args.idle:
            print(idle_report(idle_memory(log)))
    except BenchError as exc:
        print(f"imap_bench: {exc} (peers log: {log})", file=sys.stderr)
        return 1
    log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
