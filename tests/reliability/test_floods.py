"""Floods and slow peers: 1,000 idle connections, connection limits answering with each
protocol's busy reply, a slowloris sender, and every timeout where a peer can stall.

Clients come from many loopback addresses (127.0.x.y; Linux routes all of 127/8 to lo) so the
per-IP cap and the total cap can be shown separately.
"""

from __future__ import annotations

import contextlib
import resource
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.support import (
    count,
    make_server,
    open_fds,
    pss_kib,
    record_max,
    rss_kib,
    scale,
    scalef,
    seed,
    started,
    tls_context,
    wait_until,
)
from tests.server_fixture import PASSWORD, RunningServer

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

BUSY = {
    "smtp": b"421 4.7.0 Too many connections",
    "pop3": b"-ERR [SYS/TEMP] Too many connections",
    "imap": b"* BYE [UNAVAILABLE] Too many connections",
}


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 5000
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"needs {want} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it


def source(n: int) -> str:
    """The n-th client address: 127.0.{1 + n // 200}.{10 + n % 200}."""
    return f"127.0.{1 + n // 200}.{10 + n % 200}"


def connect(port: int, src: str, tls: bool = False, timeout: float = 10) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((src, 0))
    sock.connect(("127.0.0.1", port))
    return tls_context().wrap_socket(sock) if tls else sock


def read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - start


def smtp_transaction(srv: RunningServer, src: str = "127.0.0.1") -> float:
    start = time.monotonic()
    with smtplib.SMTP(
        "127.0.0.1", srv.ports["smtp"], local_hostname="legit.test", timeout=10, source_address=(src, 0)
    ) as s:
        assert s.sendmail("a@legit.test", ["carol@example.net"], b"Subject: hi\r\n\r\nstill served\r\n") == {}
    return time.monotonic() - start


# --- 1,000 idle connections ----------------------------------------------------------------------


def test_thousand_idle_connections_limits_and_memory(tmp_path: Path) -> None:
    held_target = scale(1000, 4000)
    per_ip = 20
    limits = f"[limits]\nmax_connections = {held_target + 5}\nmax_connections_per_ip = {per_ip}\n"
    limits += 'smtp_timeout = "10m"\npop3_timeout = "10m"\nimap_idle_timeout = "30m"\n'
    srv = make_server(tmp_path / "idle", ("smtp", "pop3", "imap", "imaps"), limits)
    with started(srv):
        assert srv.proc is not None
        pid = srv.proc.pid
        idle_rss, idle_pss = rss_kib(pid), pss_kib(pid)
        held: list[socket.socket] = []
        kinds = ["smtp", "pop3", "imap", "imaps"]
        try:
            started_at = time.monotonic()
            for n in range(held_target):
                kind = kinds[n % 4]
                sock = connect(srv.ports[kind], source(n // per_ip), tls=kind == "imaps")
                greeting = read_line(sock)
                assert greeting[:1] in (b"2", b"+", b"*") and b"Too many" not in greeting, (n, greeting)
                held.append(sock)
            opened_in = time.monotonic() - started_at
            full_rss, full_pss = rss_kib(pid), pss_kib(pid)
            # new legitimate sessions are still served (one slot each, within the limits)
            assert smtp_transaction(srv) < 2
            # the per-IP cap: a 21st connection from an address holding 20 gets the busy reply
            for kind in ("smtp", "pop3", "imap"):
                with connect(srv.ports[kind], source(0)) as extra:
                    assert read_line(extra).startswith(BUSY[kind]), kind
            with connect(srv.ports["imaps"], source(0)) as extra:  # implicit TLS: closed before any handshake
                assert read_until_closed(extra, 5)[0] == b""
            # the total cap: fill the last slots from fresh addresses, then one more is refused
            fresh = held_target // per_ip + 5
            for i in range(5):
                sock = connect(srv.ports["smtp"], source(fresh + i))
                assert read_line(sock).startswith(b"220 "), i
                held.append(sock)
            for kind in ("smtp", "pop3", "imap"):
                with connect(srv.ports[kind], source(fresh + 10)) as extra:
                    assert read_line(extra).startswith(BUSY[kind]), kind
            assert open_fds(pid) < held_target + 60
        finally:
            for sock in held:
                sock.close()
        # slots come back: a legitimate session works again from a refused address
        assert wait_until(lambda: open_fds(pid) < 60, timeout=20)
        assert smtp_transaction(srv, source(0)) < 2
        per_connection = (full_rss - idle_rss) / held_target
        # asyncio keeps ~256 KiB of buffers per TLS connection (a quarter of these are TLS)
        assert per_connection < 160, f"{per_connection:.0f} KiB per idle connection"
    assert "Traceback" not in srv.log()
    count("idle connections held at once", held_target)
    record_max("server RSS KiB idle", idle_rss)
    record_max("server PSS KiB idle", idle_pss)
    record_max(f"server RSS KiB holding {held_target} idle connections", full_rss)
    record_max(f"server PSS KiB holding {held_target} idle connections", full_pss)
    record_max("seconds to open the idle connections", int(opened_in) + 1)


def test_tls_handshakes_count_against_the_limits(tmp_path: Path) -> None:
    """Connections that never finish a TLS handshake on 993/995/465 are admitted (and counted)
    before the handshake, so they cannot pile up beyond max_connections (each costs ~300 KiB)."""
    limits = '[limits]\nmax_connections = 50\nmax_connections_per_ip = 10\ntls_handshake_timeout = "1m"\n'
    srv = make_server(tmp_path / "hs", ("smtp", "imaps", "pop3s", "submissions"), limits)
    attempts = scale(600, 3000)
    with started(srv):
        assert srv.proc is not None
        pid = srv.proc.pid
        before = rss_kib(pid)
        held = []
        try:
            for n in range(attempts):
                port = srv.ports[("imaps", "pop3s", "submissions")[n % 3]]
                sock = connect(port, source(n // 10))
                sock.send(b"\x16\x03\x01")  # the start of a ClientHello, then silence
                held.append(sock)
            assert wait_until(lambda: open_fds(pid) < 50 + 40, timeout=10), open_fds(pid)
            after = rss_kib(pid)
            assert after < before + 60 * 1024, (before, after)
            # a legitimate client is refused while the limit is full, then served once it frees up
            for sock in held:
                sock.close()
            held.clear()
            assert wait_until(lambda: open_fds(pid) < 40, timeout=10)
            with connect(srv.ports["imaps"], "127.0.0.1", tls=True) as client:
                assert read_line(client).startswith(b"* OK")
        finally:
            for sock in held:
                sock.close()
    count("half-open TLS handshakes refused", attempts - 50)


# --- slowloris -----------------------------------------------------------------------------------


def test_slowloris_does_not_stop_legitimate_sessions(tmp_path: Path) -> None:
    limits = '[limits]\nmax_connections = 100\nmax_connections_per_ip = 20\nsmtp_timeout = "3s"\n'
    srv = make_server(tmp_path / "slow", ("smtp",), limits)
    duration = scalef(6, 120)
    stop = threading.Event()
    alive = []

    def trickle(sock: socket.socket) -> None:
        try:
            for line in (
                b"EHLO slow.test\r\n",
                b"MAIL FROM:<s@slow.test>\r\n",
                b"RCPT TO:<carol@example.net>\r\n",
                b"DATA\r\n",
            ):
                sock.sendall(line)
                read_reply(sock)
            while not stop.is_set():
                sock.sendall(b"x")  # one byte per second, forever
                stop.wait(1)
            alive.append(sock)
        except OSError:
            pass

    with started(srv):
        assert srv.proc is not None
        pid = srv.proc.pid
        loris = [connect(srv.ports["smtp"], "127.0.0.99") for _ in range(20)]
        for sock in loris:
            assert read_line(sock).startswith(b"220 ")
        threads = [threading.Thread(target=trickle, args=(s,)) for s in loris]
        for t in threads:
            t.start()
        with connect(srv.ports["smtp"], "127.0.0.99") as extra:  # the address is at its cap
            assert read_line(extra).startswith(BUSY["smtp"])
        latencies = []
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            latencies.append(smtp_transaction(srv))
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
        # trickling at one byte per second kept every one of them open (the timeout is per read)
        assert len(alive) == 20
        # once they go silent, each gets 421 4.4.2 after smtp_timeout
        for sock in loris:
            data, waited = read_until_closed(sock, 10)
            assert b"421 4.4.2" in data and waited < 6, (data[-100:], waited)
            sock.close()
        assert max(latencies) < 2.0, latencies  # each a full SMTP transaction with an fsync
        assert rss_kib(pid) < 150 * 1024
    count("slowloris connections held off", 20)
    count("legitimate sessions served during slowloris", len(latencies))


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        line = read_line(sock)
        data += line
        if len(line) < 4 or line[3:4] != b"-":
            return data


# --- timeouts ------------------------------------------------------------------------------------


SHORT = (
    '[limits]\nsmtp_timeout = "2s"\npop3_timeout = "2s"\nimap_idle_timeout = "2s"\n'
    'tls_handshake_timeout = "2s"\n'
)


@pytest.fixture(scope="module")
def short_timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    services = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")
    srv = make_server(tmp_path_factory.mktemp("timeouts"), services, SHORT)
    seed(srv.data_dir, "bob@example.org", "INBOX", ["big"], filler=8 * 1024 * 1024)
    with started(srv):
        yield srv


def expect_closed(sock: socket.socket, needle: bytes) -> None:
    data, waited = read_until_closed(sock, 10)
    assert needle in data, data[-200:]
    assert 1.5 < waited < 6, waited
    count("timeouts checked")


def test_smtp_idle_after_greeting_times_out(short_timeouts: RunningServer) -> None:
    with connect(short_timeouts.ports["smtp"], "127.0.0.1") as sock:
        read_line(sock)
        expect_closed(sock, b"421 4.4.2")


def test_smtp_stall_in_the_middle_of_data_times_out(short_timeouts: RunningServer) -> None:
    with connect(short_timeouts.ports["smtp"], "127.0.0.1") as sock:
        read_line(sock)
        for line in (
            b"EHLO c\r\n",
            b"MAIL FROM:<a@c.test>\r\n",
            b"RCPT TO:<carol@example.net>\r\n",
            b"DATA\r\n",
        ):
            sock.sendall(line)
            read_reply(sock)
        sock.sendall(b"Subject: half\r\n\r\nhalf a mess")
        expect_closed(sock, b"421 4.4.2")


def test_pop3_idle_times_out(short_timeouts: RunningServer) -> None:
    with connect(short_timeouts.ports["pop3"], "127.0.0.1") as sock:
        read_line(sock)
        expect_closed(sock, b"-ERR [SYS/TEMP] autologout")


def test_imap_idle_times_out(short_timeouts: RunningServer) -> None:
    with connect(short_timeouts.ports["imap"], "127.0.0.1") as sock:
        read_line(sock)
        expect_closed(sock, b"* BYE")
    with connect(short_timeouts.ports["imaps"], "127.0.0.1", tls=True) as sock:
        read_line(sock)
        sock.sendall(f"a LOGIN alice@example.org {PASSWORD}\r\n".encode())
        assert b"a OK" in read_line(sock)
        expect_closed(sock, b"* BYE")


@pytest.mark.parametrize("service", ["submissions", "pop3s", "imaps"])
def test_tls_handshake_stall_times_out(short_timeouts: RunningServer, service: str) -> None:
    with connect(short_timeouts.ports[service], "127.0.0.1") as sock:
        sock.sendall(b"\x16\x03\x01")  # a ClientHello that never finishes
        expect_closed(sock, b"")


@pytest.mark.parametrize(
    ("service", "command", "go_ahead"),
    [
        ("submission", b"EHLO c\r\nSTARTTLS\r\n", b"220 2.0.0"),
        ("pop3", b"STLS\r\n", b"+OK"),
        ("imap", b"a STARTTLS\r\n", b"a OK"),
    ],
)
def test_starttls_stall_times_out(
    short_timeouts: RunningServer, service: str, command: bytes, go_ahead: bytes
) -> None:
    with connect(short_timeouts.ports[service], "127.0.0.1") as sock:
        read_reply(sock)
        sock.sendall(command)
        seen = b""
        while go_ahead not in seen:
            line = read_line(sock)
            assert line, seen
            seen += line
        expect_closed(sock, b"")


def test_pop3_client_that_stops_reading_is_dropped(short_timeouts: RunningServer) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", short_timeouts.ports["pop3s"]))
    with tls_context().wrap_socket(sock) as tls:
        read_line(tls)
        tls.sendall(f"USER bob@example.org\r\nPASS {PASSWORD}\r\n".encode())
        read_line(tls)
        read_line(tls)
        tls.sendall(b"RETR 1\r\n")  # 8 MiB, and we read none of it
        time.sleep(5)
        data, _ = read_until_closed(tls, 10)
    assert len(data) < 8 * 1024 * 1024  # cut off: the server gave up on us
    assert wait_until(lambda: "client read nothing for 2.0s; closing" in short_timeouts.log(), timeout=5)
    count("timeouts checked")


def test_no_timeout_left_a_traceback(short_timeouts: RunningServer) -> None:
    assert "Traceback" not in short_timeouts.log()
    _ = ssl  # (TLS clients above come from tls_context)
