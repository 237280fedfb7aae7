"""A real mailroom server in a subprocess (`python -m mailroom serve`) on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailroom.store import directory
from mailroom.store.database import open_database, transaction

PASSWORD = "correct-horse-battery"
SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")


def wait_until(predicate: Callable[[], object], timeout: float = 30) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def insecure_tls() -> ssl.SSLContext:
    """A client context that accepts the server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    root: Path
    config_path: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"  # where the smtp listener answers (readiness probe)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def db(self) -> sqlite3.Connection:
        return open_database(self.data_dir)

    def start(self, timeout: float = 20) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
        offset = len(self.log())
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailroom", "--config", str(self.config_path), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            env=env,
        )
        deadline = time.monotonic() + timeout
        port = self.ports["smtp"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if "mailroom ready" in self.log()[offset:]:
                try:
                    socket.create_connection((self.host, port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def write_config(root: Path, ports: dict[str, int], extra: str = "") -> Path:
    listeners = "\n".join(
        f'{name} = "127.0.0.1:{ports[name]}"' if name in ports else f'{name} = ""' for name in SERVICES
    )
    path = root / "mailroom.toml"
    dns = "" if "[dns]" in extra else "[dns]\nnameservers = []\n"  # DNS off unless the test brings its own
    path.write_text(
        f'[server]\nhostname = "mx.example.org"\ndata_dir = "{root / "data"}"\n'
        f'[listeners]\n{listeners}\n{dns}[log]\nlevel = "debug"\n{extra}'
    )
    return path


def new_account(server: RunningServer, prefix: str = "u") -> str:
    """A fresh account (default mailboxes only) in the running server's database."""
    address = f"{prefix}{uuid.uuid4().hex[:10]}@example.org"
    conn = server.db()
    try:
        with transaction(conn):
            directory.add_account(conn, address, PASSWORD)
    finally:
        conn.close()
    return address


def populate(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = open_database(data_dir)
    try:
        with transaction(conn):
            directory.add_domain(conn, "example.org")
            directory.add_domain(conn, "example.net")
            directory.add_account(conn, "alice@example.org", PASSWORD)
            directory.add_account(conn, "bob@example.org", PASSWORD)
            directory.add_account(conn, "carol@example.net", PASSWORD)
            directory.add_alias(
                conn, "team@example.org", ["alice@example.org", "bob@example.org", "friend@remote.test"]
            )
            directory.add_alias(conn, "@example.net", ["carol@example.net"])
            directory.add_alias(conn, "loop1@example.org", ["loop2@example.org"])
            directory.add_alias(conn, "loop2@example.org", ["loop1@example.org"])
    finally:
        conn.close()


@contextmanager
def running_server(
    root: Path, services: tuple[str, ...] = ("smtp", "submission", "submissions"), extra: str = ""
) -> Iterator[RunningServer]:
    ports = {name: free_port() for name in services}
    server = RunningServer(root, write_config(root, ports, extra), ports)
    populate(server.data_dir)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            code = server.stop()
            assert code == 0, f"server exit status {code}\n{server.log()}"
        assert "Traceback" not in server.log(), server.log()


def inbox(server: RunningServer, address: str) -> list[bytes]:
    """The stored bytes of every message in an account's INBOX, in UID order."""
    conn = server.db()
    try:
        rows = conn.execute(
            "SELECT b.data FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id JOIN bodies b ON b.id = m.body_id "
            "JOIN accounts a ON a.id = mb.account_id JOIN domains d ON d.id = a.domain_id "
            "WHERE a.local || '@' || d.name = ? AND mb.name = 'INBOX' ORDER BY m.uid",
            (address,),
        ).fetchall()
        return [bytes(r[0]) for r in rows]
    finally:
        conn.close()
