"""Shared pieces of the benchmarks: a mailroom server in a subprocess, the Postfix peer, smtp-source,
memory (RSS/PSS from /proc) and small statistics. Linux only; run as root (apt, other users' smaps).

Everything listens on 127.0.0.1 and nothing resolves through the system DNS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PEERS_DIR = Path(os.environ.get("MAILROOM_PEERS_DIR", str(REPO.parent / "shared" / "peers")))
PEERS_STATE = Path(os.environ.get("PEERS_STATE", "/var/lib/mailroom-peers"))
PYTHON = sys.executable  # the venv's interpreter: benchmarks/run execs harness.py with it

DOMAIN = "example.org"
SINK = f"sink@{DOMAIN}"
PASSWORD = "bench-password-1"  # of sink@example.org (POP3/IMAP scenarios log in with it)
SENDER = "bench@sender.test"
PEER_SINK = "sink@peer.test"
SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")


class BenchError(Exception):
    """A benchmark could not run; one line for the table."""


class Skip(BenchError):
    """A scenario that cannot run here yet (not a failure)."""


# --- small helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.01, what: str = "") -> float:
    """Poll ``pred`` until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what or 'a condition'}")
        time.sleep(interval)


def greeting(port: int, timeout: float = 2.0) -> bool:
    """True once something on 127.0.0.1:port answers with an SMTP 220 greeting (then QUIT)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            data = b""
            while b"\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    return False
                data += chunk
            s.sendall(b"QUIT\r\n")
            return data.startswith(b"220")
    except OSError:
        return False


def listening(port: int) -> bool:
    """True when a TCP socket listens on port (read from /proc/net/tcp: no connection is made)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def run_script(script: str, log: Path, *args: str) -> None:
    """Run one of the shared peers scripts (stdio to a log file: Dovecot keeps stderr open)."""
    path = PEERS_DIR / script
    if not path.exists():
        raise BenchError(f"{path} not found (set MAILROOM_PEERS_DIR to the shared peers directory)")
    with open(log, "ab") as out:
        code = subprocess.call(
            ["bash", str(path), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{script} failed ({code}): {' | '.join(tail)}")


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


# --- memory ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


@dataclass(frozen=True)
class Memory:
    rss_mib: float
    pss_mib: float
    processes: int


def memory(pid: int, tree: bool = True) -> Memory:
    """RSS and PSS of a process (and its descendants): PSS sums are meaningful, RSS sums overcount."""
    rss = pss = 0
    count = 0
    for p in process_tree(pid) if tree else [pid]:
        fields: dict[str, int] = {}
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    if name in ("Rss", "Pss"):
                        fields[name] = int(rest.split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
        count += 1
    return Memory(rss / 1024, pss / 1024, count)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- mailroom --------------------------------------------------------------------------------------


@dataclass
class Mailroom:
    """A mailroom server in a subprocess on free loopback ports, with its own data dir."""

    root: Path
    services: tuple[str, ...] = SERVICES
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    nameservers: tuple[str, ...] = ()  # () = DNS off, inbound SPF/DKIM/DMARC skipped
    uvloop: bool = False  # serve under uvloop (installed by the harness), src/ unchanged

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in self.services}
        listeners = "\n".join(
            f'{name} = "127.0.0.1:{self.ports[name]}"' if name in self.ports else f'{name} = ""'
            for name in SERVICES
        )
        self.config = self.root / "mailroom.toml"
        self.config.write_text(
            f'[server]\nhostname = "mx.{DOMAIN}"\ndata_dir = "{self.data_dir}"\n'
            f"[listeners]\n{listeners}\n"
            "[limits]\nmax_connections_per_ip = 500\n"
            # the submission scenario sends thousands of messages from one account
            "submission_messages_per_day = 100000000\nsubmission_new_recipients_per_day = 100000000\n"
            f"[dns]\nnameservers = {list(self.nameservers)!r}\n".replace("'", '"')
            + '[log]\nlevel = "warning"\n'
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cli(self, *args: str, stdin: str = "") -> None:
        done = subprocess.run(
            [PYTHON, "-m", "mailroom", "--config", str(self.config), *args],
            input=stdin.encode(),
            capture_output=True,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise BenchError(f"mailroom {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")

    def populate(self) -> None:
        """The domain and the sink account the scenarios deliver to."""
        self.cli("domain", "add", DOMAIN)
        self.add_user(SINK)

    def add_user(self, address: str, password: str = PASSWORD) -> None:
        self.cli("user", "add", address, "--password-stdin", stdin=password + "\n")

    def command(self) -> list[str]:
        """How `serve` is started: ``python -m mailroom``, or under uvloop through a ``-c`` shim
        that installs uvloop's event loop policy first (asyncio.run then makes a uvloop loop)."""
        args = ["--config", str(self.config), "serve"]
        if not self.uvloop:
            return [PYTHON, "-m", "mailroom", *args]
        shim = (
            "import sys, uvloop; uvloop.install(); from mailroom.cli import main; "
            "sys.argv[0] = 'mailroom'; raise SystemExit(main(sys.argv[1:]))"
        )
        return [PYTHON, "-c", shim, *args]

    def uses_uvloop(self) -> bool:
        """Whether uvloop's extension module is mapped into the server process."""
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                return any("/uvloop/loop." in line for line in f)
        except FileNotFoundError:
            return False

    def start(self, timeout: float = 30, probe: bool = True) -> float:
        """Start serving; return the seconds from exec until the MX port greets (probe=True) or
        listens (probe=False: no connection is made, for idle-memory figures)."""
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        out.close()
        port = self.ports["smtp"]
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"mailroom exited with {proc.returncode}: {self.log_tail()}")
            return greeting(port) if probe else listening(port)

        return wait_for(up, timeout, 0.005, "mailroom to accept connections") - t0

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        lines = (
            self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path.exists() else []
        )
        return " | ".join(line for line in lines[-3:] if "running as root" not in line)

    def message_count(self) -> int:
        """Messages durably stored (committed), read-only; raises if the server died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"mailroom exited with {self.proc.returncode}: {self.log_tail()}")
        db = self.data_dir / "mailroom.sqlite3"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()

    def last_body(self, limit: int = 8192) -> bytes:
        """The first ``limit`` octets of the newest stored message text (read-only)."""
        db = self.data_dir / "mailroom.sqlite3"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT substr(data, 1, ?) FROM bodies ORDER BY id DESC LIMIT 1", (limit,)
            ).fetchone()
            return bytes(row[0]) if row else b""
        finally:
            conn.close()


class MailroomSession:
    """``with MailroomSession() as m:`` a populated, started server in a temp dir, removed after."""

    def __init__(
        self,
        services: tuple[str, ...] = SERVICES,
        populate: bool = True,
        nameservers: tuple[str, ...] = (),
        uvloop: bool = False,
        prepare: Callable[[Mailroom], None] | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
        self.server = Mailroom(self.tmp, services, nameservers=nameservers, uvloop=uvloop)
        self.populate = populate
        self.prepare = prepare  # called after populating, before the server starts
        self.startup_s = 0.0

    def __enter__(self) -> Mailroom:
        try:
            if self.populate:
                self.server.populate()
            if self.prepare is not None:
                self.prepare(self.server)
            self.startup_s = self.server.start()
        except BaseException:
            self.close()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- Postfix -------------------------------------------------------------------------------------


class PostfixPeer:
    """The shared loopback Postfix (start-postfix.sh): SMTP on 2525, *@peer.test into Maildirs."""

    port = 2525

    def __init__(self, log: Path) -> None:
        self.log = log
        self.etc = PEERS_STATE / "postfix" / "etc"
        self.new_dir = PEERS_STATE / "mail" / "peer.test" / "sink" / "new"

    def start(self) -> None:
        run_script("start-postfix.sh", self.log)  # installs postfix (and smtp-source) if missing
        wait_for(lambda: greeting(self.port), 30, 0.05, "Postfix on 2525")

    @property
    def master_pid(self) -> int:
        return int((PEERS_STATE / "postfix" / "spool" / "pid" / "master.pid").read_text().strip())

    def delivered(self) -> set[str]:
        try:
            return {e.name for e in os.scandir(self.new_dir) if e.is_file()}
        except FileNotFoundError:  # new/ appears with the first delivery
            return set()

    def count_new(self) -> int:
        try:
            return sum(1 for _ in os.scandir(self.new_dir))
        except FileNotFoundError:
            return 0

    def remove_new_since(self, before: set[str]) -> None:
        """Delete the messages a run delivered (keeps sink's Maildir small and other files alone)."""
        for name in self.delivered() - before:
            try:
                (self.new_dir / name).unlink()
            except FileNotFoundError:
                pass


class PrivatePostfix:
    """A throwaway Postfix instance (config derived from the shared one, its own queue and port) that
    may be started and stopped at will: start-up time and idle memory without disturbing the shared peer.

    ``services`` picks the shared instance's inet services to copy, each as (its port there, extra
    ``-o`` options) onto a free port of its own (``self.ports``, in the same order); by default the
    first one (SMTP, 2525) on ``self.port``."""

    def __init__(self, services: Sequence[tuple[int | None, Sequence[str]]] = ((None, ()),)) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailroom-bench-postfix-"))
        os.chmod(self.root, 0o755)  # the postfix user walks into spool/ and data/
        self.ports = [free_port() for _ in services]
        self.port = self.ports[0]
        self.etc = self.root / "etc"
        self.spool = self.root / "spool"
        shared = PEERS_STATE / "postfix" / "etc"
        self.etc.mkdir()
        self.spool.mkdir()
        data = self.root / "data"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postfix", "postfix")
        replace = {
            "queue_directory": str(self.spool),
            "data_directory": str(data),
            "maillog_file": str(self.root / "maillog"),
        }
        main = []
        for line in (shared / "main.cf").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            main.append(f"{key} = {replace[key]}" if key in replace and "=" in line else line)
        main.append("maillog_file_prefixes = /var, /tmp")
        (self.etc / "main.cf").write_text("\n".join(main) + "\n")
        # the shared master.cf: inet services ("127.0.0.1:PORT ...", then indented -o lines), the rest
        inet: dict[int, list[str]] = {}
        rest: list[str] = []
        current: list[str] | None = None
        for line in (shared / "master.cf").read_text().splitlines():
            if line.startswith("127.0.0.1:"):
                current = inet.setdefault(int(line.split(None, 1)[0].rsplit(":", 1)[1]), [])
                current.append(line.split(None, 1)[1])
            elif current is not None and line[:1].isspace():
                current.append(line)
            else:
                current = None
                rest.append(line)
        if not inet:
            raise BenchError(f"no inet service in {shared / 'master.cf'}")
        master: list[str] = []
        for port, (source, options) in zip(self.ports, services, strict=True):
            block = inet.get(next(iter(inet)) if source is None else source)
            if block is None:
                raise BenchError(f"the shared Postfix has no service on port {source}")
            master += [f"127.0.0.1:{port} {block[0]}", *block[1:], *(f"  -o {o}" for o in options)]
        (self.etc / "master.cf").write_text("\n".join(master + rest) + "\n")
        for name in ("vmailbox", "transport"):
            if (shared / name).exists():
                shutil.copy(shared / name, self.etc / name)

    def postfix(self, *args: str) -> None:
        done = subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True)
        if done.returncode != 0:
            raise BenchError(f"postfix {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")

    def start(self, probe: bool = True) -> float:
        """`postfix start` until the port greets (probe) or just listens; seconds."""
        t0 = time.monotonic()
        self.postfix("start")
        check = (lambda: greeting(self.port)) if probe else (lambda: listening(self.port))
        return wait_for(check, 30, 0.005, "private Postfix to accept connections") - t0

    @property
    def master_pid(self) -> int:
        return int((self.spool / "pid" / "master.pid").read_text().strip())

    def stop(self) -> None:
        try:
            pid = self.master_pid
        except (FileNotFoundError, ValueError):
            return
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, 20, 0.02, "private Postfix to stop")
        wait_for(lambda: not listening(self.port), 10, 0.02, "private Postfix port to close")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --- smtp-source -----------------------------------------------------------------------------------


def smtp_source(
    port: int,
    sessions: int,
    messages: int,
    size: int,
    rcpt: str,
    timeout: float = 900,
    sender: str | None = None,
) -> float:
    """Run Postfix's smtp-source against 127.0.0.1:port; return its wall time in seconds."""
    if shutil.which("smtp-source") is None:
        raise BenchError("smtp-source not found (it comes with Debian's postfix package)")
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    cmd += ["-M", "client.sender.test", "-f", sender or SENDER, "-t", rcpt, f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise BenchError(f"smtp-source: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return wall


# --- packages, Dovecot, OpenDKIM ---------------------------------------------------------------------


def ensure_packages(log: Path, *packages: str) -> None:
    """apt-get install what is missing, the way the peers scripts do (common.sh's ensure_pkgs)."""
    common = PEERS_DIR / "common.sh"
    if not common.exists():
        raise BenchError(f"{common} not found (set MAILROOM_PEERS_DIR to the shared peers directory)")
    with open(log, "ab") as out:
        code = subprocess.call(
            ["bash", "-c", 'source "$0" && ensure_pkgs "$@"', str(common), *packages],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        raise BenchError(f"could not install {' '.join(packages)} (see {log})")


class DovecotPeer:
    """The shared loopback Dovecot (start-dovecot.sh): IMAPS on 1993, POP3S on 1995, users in a
    passwd-file, Maildirs under $PEERS_STATE/mail/peer.test/<user>/ (INBOX = the Maildir root)."""

    imaps = 1993
    password = "secret"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.dir = PEERS_STATE / "dovecot"
        self.conf = self.dir / "dovecot.conf"
        self.ca = PEERS_STATE / "tls" / "ca.pem"

    def start(self) -> None:
        """Start it if it is not running (a running one is left alone: start-dovecot.sh would
        rewrite its users file and reload it)."""
        if not listening(self.imaps):
            run_script("start-dovecot.sh", self.log)
        wait_for(lambda: listening(self.imaps), 30, 0.05, "Dovecot IMAPS on 1993")

    @property
    def master_pid(self) -> int:
        return int((self.dir / "run" / "master.pid").read_text().strip())

    def ensure_user(self, address: str, password: str = "secret") -> None:
        """Add a user to the passwd-file, hashed like the others (SHA512-CRYPT, as start-dovecot.sh
        does: its login cost is part of what clients see). Dovecot rereads the file when it changes."""
        users = self.dir / "users"
        lines = users.read_text().splitlines()
        if any(line.startswith(f"{address}:{{SHA512-CRYPT}}") for line in lines):
            return
        hashed = subprocess.run(
            ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password], capture_output=True, text=True
        ).stdout.strip()
        if not hashed.startswith("{SHA512-CRYPT}"):
            raise BenchError("doveadm pw did not give a SHA512-CRYPT hash")
        lines = [line for line in lines if not line.startswith(f"{address}:")]
        st = users.stat()
        tmp = users.with_name(f"users.{os.getpid()}")
        tmp.write_text("\n".join([*lines, f"{address}:{hashed}::::::"]) + "\n")
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.replace(tmp, users)

    def home(self, address: str) -> Path:
        local, domain = address.split("@")
        return PEERS_STATE / "mail" / domain / local

    def fresh_maildir(self, address: str) -> tuple[Path, int, int]:
        """An empty Maildir as the user's INBOX (anything there before is deleted); (path, uid, gid)."""
        import pwd

        home = self.home(address)
        shutil.rmtree(home, ignore_errors=True)
        vmail = pwd.getpwnam("vmail")
        for sub in ("", "new", "cur", "tmp"):
            (home / sub).mkdir(mode=0o700, exist_ok=True)
            os.chown(home / sub, vmail.pw_uid, vmail.pw_gid)
        return home, vmail.pw_uid, vmail.pw_gid

    def sessions(self, address: str) -> bool:
        who = subprocess.run(
            ["doveadm", "-c", str(self.conf), "who", address], capture_output=True, text=True
        )
        return who.returncode == 0 and address in who.stdout

    def remove(self, address: str) -> None:
        """Delete the user's mail once Dovecot has ended its sessions (the user stays in the file)."""
        try:
            wait_for(lambda: not self.sessions(address), 20, 0.1, f"Dovecot to end the sessions of {address}")
        finally:
            shutil.rmtree(self.home(address), ignore_errors=True)


class OpenDKIM:
    """A private OpenDKIM signing milter (mode s) for peer.test, RSA 2048: the DKIM signer a Postfix
    submission setup uses. On a unix socket (group postfix), as Debian sets it up: over an inet
    socket each message waited about 90 ms here (small milter packets meeting delayed ACKs)."""

    def __init__(self, log: Path, domain: str = "peer.test", selector: str = "bench") -> None:
        ensure_packages(log, "opendkim", "opendkim-tools")
        # not under /tmp: OpenDKIM refuses a config or key in a directory others may write to
        self.root = Path(tempfile.mkdtemp(prefix="bench-opendkim-", dir=PEERS_STATE))
        os.chmod(self.root, 0o755)
        run = self.root / "run"  # opendkim makes its socket and pid file after dropping privileges
        run.mkdir(mode=0o750)
        shutil.chown(run, "opendkim", "postfix")
        self.socket = run / "opendkim.sock"
        self.pidfile = run / "opendkim.pid"
        key = self.root / f"{selector}.private"
        done = subprocess.run(
            ["opendkim-genkey", "-b", "2048", "-d", domain, "-s", selector, "-D", str(self.root)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not key.exists():
            raise BenchError(f"opendkim-genkey: {done.stderr.strip()[-200:]}")
        shutil.chown(key, "opendkim", "opendkim")
        key.chmod(0o600)
        self.conf = self.root / "opendkim.conf"
        self.conf.write_text(
            f"Syslog no\nMode s\nDomain {domain}\nSelector {selector}\nKeyFile {key}\n"
            f"Socket local:{self.socket}\nPidFile {self.pidfile}\nUserID opendkim:postfix\n"
            "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\n"
            "InternalHosts 127.0.0.1\nBackground yes\nUMask 002\n"
        )
        self.milter = f"unix:{self.socket}"

    def start(self) -> None:
        done = subprocess.run(
            ["opendkim", "-x", str(self.conf)], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise BenchError(f"opendkim: {done.stderr.strip()[-200:]}")
        wait_for(self.socket.is_socket, 15, 0.02, "OpenDKIM to listen")

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def close(self) -> None:
        try:
            pid = self.pid
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, 0.02, "OpenDKIM to stop")
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
