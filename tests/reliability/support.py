"""Shared helpers for the reliability and fuzz suites: soak scaling, figures, servers, probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.server_fixture import RunningServer, free_port, populate, write_config

# --- soak mode and figures -------------------------------------------------------------------------


class _Soak:
    @property
    def enabled(self) -> bool:
        return os.environ.get("MAILROOM_SOAK", "") not in ("", "0")

    def update_from(self, config: pytest.Config) -> None:
        # --soak sets the variable, so modules that read it at import time (Hypothesis settings) see it
        if config.getoption("--soak", default=False):
            os.environ["MAILROOM_SOAK"] = "1"


SOAK = _Soak()


def add_soak_option(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):  # tests/fuzz and tests/reliability both offer it
        parser.addoption(
            "--soak", action="store_true", default=False, help="mailroom: long reliability/fuzz runs"
        )


def scale(ci: int, soak: int) -> int:
    """The CI-sized figure, or the soak-sized one under MAILROOM_SOAK=1."""
    return soak if SOAK.enabled else ci


def scalef(ci: float, soak: float) -> float:
    return soak if SOAK.enabled else ci


FIGURES: Counter[str] = Counter()
_written = threading.Lock()


def count(key: str, n: int = 1) -> None:
    FIGURES[key] += n


def record_max(key: str, value: int) -> None:
    FIGURES[key] = max(FIGURES[key], value)


_printed = False


def terminal_summary(reporter: pytest.TerminalReporter) -> None:
    """Print the figures once (both tests/reliability and tests/fuzz conftests call this)."""
    global _printed
    if _printed or not FIGURES:
        return
    _printed = True
    reporter.section("mailroom reliability figures" + (" (soak)" if SOAK.enabled else ""))
    for key, value in sorted(FIGURES.items()):
        reporter.write_line(f"{key}: {value}")
    write_figures()


def write_figures() -> None:
    target = os.environ.get("MAILROOM_FIGURES")
    if not target or not FIGURES:
        return
    with _written:
        path = Path(target)
        text = path.read_text() if path.exists() else ""
        old: dict[str, int] = json.loads(text) if text.strip() else {}
        merged = {**old, **dict(FIGURES), "soak": int(SOAK.enabled)}
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


# --- tools and privileges --------------------------------------------------------------------------


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root")


def smtp_source() -> str:
    """Postfix's smtp-source (installed with postfix by ../shared/peers/start-postfix.sh)."""
    found = shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    from tests.interop.conftest import require_tool, start_peer

    start_peer("start-postfix.sh")
    return shutil.which("smtp-source", path="/usr/sbin:/usr/local/sbin") or require_tool("smtp-source")


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A size-limited tmpfs mounted on a fresh directory (root only; skipped when mount is denied)."""
    require_root("mounting a size-limited tmpfs")
    mountpoint = Path(tempfile.mkdtemp(prefix="mailroom-fulldisk-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:  # a container without CAP_SYS_ADMIN: a missing privilege, not a broken install
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


# --- servers -------------------------------------------------------------------------------------


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_server(
    root: Path,
    services: tuple[str, ...] = ("smtp",),
    extra: str = "",
    data_dir: Path | None = None,
    setup: Callable[[Path], None] | None = None,
) -> RunningServer:
    """A configured, populated server that is not started yet (``srv.start()``). ``data_dir``
    puts the data elsewhere (e.g. on a small filesystem): root/data becomes a link to it."""
    root.mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        (root / "data").symlink_to(data_dir, target_is_directory=True)
    ports = {name: free_port() for name in services}
    server = RunningServer(root, write_config(root, ports, extra), ports)
    populate(server.data_dir)
    if setup is not None:
        setup(server.data_dir)
    return server


@contextmanager
def started(server: RunningServer) -> Iterator[RunningServer]:
    """Start; at the end stop cleanly (exit status 0) and insist on a log without tracebacks."""
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            code = server.stop()
            assert code == 0, f"server exit status {code}\n{server.log()[-5000:]}"
        assert "Traceback" not in server.log(), server.log()[-5000:]


def integrity(data_dir: Path) -> str:
    conn = sqlite3.connect(data_dir / "mailroom.sqlite3")
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    text = "; ".join(str(r[0]) for r in rows)
    return text if not fk else f"{text}; foreign keys: {fk[:5]}"


def mailbox_heads(
    data_dir: Path, address: str | None = None, head: int = 600
) -> list[tuple[str, str, bytes]]:
    """(account, mailbox name, first ``head`` bytes) of every stored message."""
    conn = sqlite3.connect(data_dir / "mailroom.sqlite3")
    try:
        rows = conn.execute(
            "SELECT a.local || '@' || d.name, mb.name, substr(b.data, 1, ?) FROM messages m "
            "JOIN mailboxes mb ON mb.id = m.mailbox_id JOIN bodies b ON b.id = m.body_id "
            "JOIN accounts a ON a.id = mb.account_id JOIN domains d ON d.id = a.domain_id",
            (head,),
        ).fetchall()
    finally:
        conn.close()
    out = [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]
    return [row for row in out if address is None or row[0] == address]


# --- memory --------------------------------------------------------------------------------------


def _kib(pid: int, path: str, key: str) -> int:
    with open(f"/proc/{pid}/{path}") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return _kib(pid, "status", "VmRSS")


def pss_kib(pid: int) -> int:
    return _kib(pid, "smaps_rollup", "Pss")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate: Callable[[], object], timeout: float = 10, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# --- an SMTP proxy that sees which messages were acknowledged ------------------------------------

_QUEUED = re.compile(rb"^250[ -].*queued as ([0-9A-Za-z]+)", re.I)
_RCPT = re.compile(rb"^RCPT TO:\s*<([^>]*)>", re.I)


@dataclass
class Acked:
    queue_id: str
    recipients: tuple[str, ...]


@dataclass
class _ProxyConn:
    rcpts: list[str] = field(default_factory=list)
    in_body: bool = False
    client_buf: bytes = b""
    server_buf: bytes = b""


class AckProxy:
    """TCP proxy between a client (smtp-source) and the server. It forwards bytes unchanged and
    records, from the client's side of the wire, every message that got its final 250: the queue
    id in the reply and the recipients of that transaction. Runs its own event loop in a thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.acked: list[Acked] = []
        self.replies: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> AckProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cwriter.close()
            return
        self._writers.update((cwriter, swriter))
        state = _ProxyConn()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    # parse first, forward second: the server's reply to a command can only
                    # arrive after the command was parsed here
                    self._observe(state, data, from_client)
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

        await asyncio.gather(pump(creader, swriter, True), pump(sreader, cwriter, False))
        self._writers.difference_update((cwriter, swriter))

    def _observe(self, state: _ProxyConn, data: bytes, from_client: bool) -> None:
        if from_client:
            state.client_buf += data
            *lines, state.client_buf = state.client_buf.split(b"\r\n")
            for line in lines:
                if state.in_body:
                    if line == b".":
                        state.in_body = False
                    continue
                upper = line[:10].upper()
                if upper.startswith(b"MAIL FROM"):
                    state.rcpts = []
                elif m := _RCPT.match(line):
                    state.rcpts.append(m.group(1).decode())
                elif upper.startswith(b"DATA"):
                    state.in_body = True  # smtp-source waits for 354; a refusal ends it below
            return
        state.server_buf += data
        *lines, state.server_buf = state.server_buf.split(b"\r\n")
        for line in lines:
            if len(line) >= 4 and line[3:4] == b" ":
                self.replies[line[:3].decode(errors="replace")] += 1
            if line[:3] in (b"503", b"554", b"451", b"452", b"421", b"550") and state.in_body:
                state.in_body = False  # DATA itself was refused
            if m := _QUEUED.match(line):
                self.acked.append(Acked(m.group(1).decode(), tuple(state.rcpts)))


# --- seeding messages while the server is down ---------------------------------------------------

_MARK = re.compile(rb"X-Mark: (\S+)")


def seed(data_dir: Path, address: str, mailbox: str, markers: list[str], filler: int = 200) -> None:
    """Store one small message per marker straight into a mailbox (created when missing)."""
    import io

    from mailroom.store import directory, mail, mailboxes
    from mailroom.store.database import now, open_database, transaction

    conn = open_database(data_dir)
    try:
        with transaction(conn):
            account = directory.find_account(conn, address)
            assert account is not None
            box = mail.get_mailbox(conn, account.id, mailbox)
            if box is None:
                box = mailboxes.create_mailbox(conn, account.id, mailbox)
            for marker in markers:
                data = (
                    f"From: seed@example.org\r\nTo: {address}\r\nSubject: {marker}\r\nX-Mark: {marker}\r\n\r\n"
                    + "x" * filler
                    + "\r\n"
                ).encode()
                mail.store_message(conn, io.BytesIO(data), len(data), [mail.Placement(box.id)], now())
    finally:
        conn.close()


def markers_by_mailbox(data_dir: Path, address: str) -> dict[str, Counter[str]]:
    """mailbox name -> Counter of X-Mark values stored there."""
    out: dict[str, Counter[str]] = {}
    for _, box, head in mailbox_heads(data_dir, address, head=400):
        m = _MARK.search(head)
        if m is not None:
            out.setdefault(box, Counter())[m.group(1).decode()] += 1
    return out


def marker_of(head: bytes) -> str | None:
    m = _MARK.search(head)
    return m.group(1).decode() if m else None
