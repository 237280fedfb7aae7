"""The scenarios: each runs mailroom and its reference peer side by side and returns Metrics."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import profiling
from benchlib import (
    BENCH_DIR,
    PEER_SINK,
    SINK,
    BenchError,
    Mailroom,
    MailroomSession,
    PostfixPeer,
    PrivatePostfix,
    Skip,
    cpu_seconds,
    memory,
    run_script,
    smtp_source,
    wait_for,
)


@dataclass
class Metric:
    scenario: str
    name: str
    unit: str
    better: str  # "higher" or "lower"
    mailroom: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)
    peer_name: str = "postfix"
    target: tuple[str, float] | None = None  # issue 10's targets: ("ratio>=", 1.0), ("max", 40e6 / 2**20)


@dataclass
class Context:
    quick: bool
    runs: int
    log: Path  # peers scripts' output
    results: Path
    stem: str  # results/<stem>.json, results/<stem>-*.svg
    profile: bool
    selected: list[str]
    postfix: PostfixPeer
    extra: dict[str, Any] = field(default_factory=dict)  # per-scenario details for the JSON file

    def note(self, scenario: str, key: str, value: Any) -> None:
        self.extra.setdefault(scenario, {})[key] = value


def pause() -> None:
    time.sleep(1.0)  # let the previous run's disk writes and process exits settle


# --- SMTP intake -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intake:
    sessions: int
    messages: int
    size: int

    def describe(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size < 1 << 20 else f"{self.size >> 20} MiB"
        return f"-s {self.sessions} -m {self.messages} -l {size}"


# With the inbound checks on, the sender must be one Knot (../shared/peers/start-dns.sh) vouches
# for: peer.test publishes SPF ip4:127.0.0.1 and DMARC p=reject, so every message is fully checked
# (SPF pass, DKIM none, DMARC pass through aligned SPF) and accepted.
CHECKED_SENDER = "bench@peer.test"


def intake_mailroom(
    ctx: Context, load: Intake, profile: tuple[Path, str, tuple[str, ...]] | None = None, checks: bool = False
) -> dict[str, float]:
    """smtp-source into a fresh mailroom until SELECT count(*) FROM messages reaches -m."""
    nameservers = ("127.0.0.1:5353",) if checks else ()
    with MailroomSession(nameservers=nameservers) as server:
        recorder = profiling.Recorder(server.pid, *profile) if profile else None
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        try:
            wall = smtp_source(
                server.ports["smtp"],
                load.sessions,
                load.messages,
                load.size,
                SINK,
                sender=CHECKED_SENDER if checks else None,
            )
            done = wait_for(
                lambda: server.message_count() >= load.messages,
                max(60.0, load.messages / 20),
                0.01,
                f"{load.messages} messages in mailroom's store",
            )
        finally:
            if recorder:
                recorder.stop()
        mem = memory(server.pid)
        return {
            "msg_per_s": load.messages / (done - t0),
            "accept_msg_per_s": load.messages / wall,
            "cpu_s": cpu_seconds(server.pid) - cpu0,
            "rss_mib": mem.rss_mib,
            "pss_mib": mem.pss_mib,
        }


def intake_postfix(ctx: Context, load: Intake) -> dict[str, float]:
    """smtp-source into the shared Postfix until -m new files appeared in sink's Maildir new/."""
    peer = ctx.postfix
    before = peer.delivered()
    target = len(before) + load.messages
    t0 = time.monotonic()
    try:
        wall = smtp_source(peer.port, load.sessions, load.messages, load.size, PEER_SINK)
        done = wait_for(
            lambda: peer.count_new() >= target,
            max(60.0, load.messages / 20),
            0.01,
            f"{load.messages} messages in Postfix's Maildir",
        )
        mem = memory(peer.master_pid)
    finally:
        peer.remove_new_since(before)
    return {
        "msg_per_s": load.messages / (done - t0),
        "accept_msg_per_s": load.messages / wall,
        "rss_mib": mem.rss_mib,
        "pss_mib": mem.pss_mib,
        "processes": mem.processes,
    }


def intake(ctx: Context, name: str, load: Intake, memory_rows: bool = False) -> list[Metric]:
    rate = Metric(name, f"SMTP intake {load.describe()}", "msg/s", "higher", target=("ratio>=", 1.0))
    rss = Metric("memory", f"RSS at end of {name}", "MiB", "lower")
    pss = Metric("memory", f"PSS at end of {name}", "MiB", "lower")
    ctx.note(name, "smtp_source", load.describe())
    for i in range(ctx.runs):
        m = intake_mailroom(ctx, load)
        pause()
        p = intake_postfix(ctx, load)
        pause()
        ctx.note(name, f"run{i + 1}", {"mailroom": m, "postfix": p})
        rate.mailroom.append(m["msg_per_s"])
        rate.peer.append(p["msg_per_s"])
        rss.mailroom.append(m["rss_mib"])
        rss.peer.append(p["rss_mib"])
        pss.mailroom.append(m["pss_mib"])
        pss.peer.append(p["pss_mib"])
    return [rate, rss, pss] if memory_rows else [rate]


def smtp_s10(ctx: Context) -> list[Metric]:
    load = Intake(10, 2000 if ctx.quick else 10000, 2048)
    metrics = intake(ctx, "smtp-s10", load, memory_rows=True)
    if ctx.profile:
        profile_intake(ctx, load)
    return metrics


def listening_udp_dns() -> bool:
    """Whether Knot already answers for peer.test on 127.0.0.1:5353."""
    import dns.message
    import dns.query

    try:
        reply = dns.query.udp(dns.message.make_query("peer.test", "SOA"), "127.0.0.1", port=5353, timeout=1.0)
    except Exception:
        return False
    return bool(reply.answer)


def smtp_checks(ctx: Context) -> list[Metric]:
    """-s 10 with SPF, DKIM and DMARC evaluated for every message (DNS from Knot), against the
    same load with the checks off; Postfix (no checks) as the peer for both."""
    if not listening_udp_dns():
        run_script("start-dns.sh", ctx.results / "peers.log")  # (re-running it would reload Knot's zones)
    load = Intake(10, 1000 if ctx.quick else 5000, 2048)
    on = Metric(
        "smtp-checks",
        f"SMTP intake {load.describe()}, SPF/DKIM/DMARC on",
        "msg/s",
        "higher",
        target=("ratio>=", 1.0),
    )
    off = Metric(
        "smtp-checks",
        f"SMTP intake {load.describe()}, checks off",
        "msg/s",
        "higher",
        target=("ratio>=", 1.0),
    )
    for i in range(ctx.runs):
        m_on = intake_mailroom(ctx, load, checks=True)
        pause()
        m_off = intake_mailroom(ctx, load)
        pause()
        p = intake_postfix(ctx, load)
        pause()
        ctx.note(
            "smtp-checks",
            f"run{i + 1}",
            {"mailroom_checks_on": m_on, "mailroom_checks_off": m_off, "postfix": p},
        )
        on.mailroom.append(m_on["msg_per_s"])
        off.mailroom.append(m_off["msg_per_s"])
        on.peer.append(p["msg_per_s"])
        off.peer.append(p["msg_per_s"])
    return [on, off]


def smtp_s1(ctx: Context) -> list[Metric]:
    return intake(ctx, "smtp-s1", Intake(1, 1000 if ctx.quick else 10000, 2048))


def smtp_1mb(ctx: Context) -> list[Metric]:
    return intake(ctx, "smtp-1mb", Intake(20, 100 if ctx.quick else 500, 1 << 20))


def profile_intake(ctx: Context, load: Intake) -> None:
    """Two extra mailroom runs under py-spy: a flame graph (CPU) and raw stacks for the hot-spot list."""
    svg = ctx.results / f"{ctx.stem}-smtp-s10.svg"
    raw = ctx.results / f"{ctx.stem}-smtp-s10.raw.txt"
    try:
        intake_mailroom(ctx, load, (svg, "flamegraph", ("--nolineno",)))
        pause()
        intake_mailroom(ctx, load, (raw, "raw", ("--idle", "--threads", "--nolineno")))
    except (RuntimeError, BenchError) as exc:
        ctx.note("profile", "error", str(exc))
        return
    spots, threads, busy = profiling.summarize(raw)
    text = profiling.report(spots, threads, busy)
    hot = ctx.results / f"{ctx.stem}-smtp-s10.hotspots.txt"
    hot.write_text(text + "\n")
    ctx.note(
        "profile",
        "files",
        {"flamegraph": str(svg), "raw": str(raw), "hotspots": str(hot)},
    )
    ctx.note("profile", "threads_pct", threads)
    ctx.note(
        "profile",
        "hotspots",
        [{"where": s.where, "own_pct": s.own_pct, "incl_pct": s.inclusive_pct} for s in spots],
    )


# --- memory and start-up ---------------------------------------------------------------------------


def idle_memory(ctx: Context) -> list[Metric]:
    rss = Metric("memory", "idle RSS after start", "MiB", "lower", target=("max", 40e6 / 2**20))
    pss = Metric("memory", "idle PSS after start", "MiB", "lower")
    for _ in range(ctx.runs):
        session = MailroomSession()
        try:
            session.server.populate()
            session.server.start(probe=False)  # no connection: idle means idle
            time.sleep(2.0)
            m = memory(session.server.pid)
        finally:
            session.close()
        pf = PrivatePostfix()
        try:
            pf.start(probe=False)
            time.sleep(2.0)
            p = memory(pf.master_pid)
        finally:
            pf.close()
        rss.mailroom.append(m.rss_mib)
        pss.mailroom.append(m.pss_mib)
        rss.peer.append(p.rss_mib)
        pss.peer.append(p.pss_mib)
        ctx.note("memory", "postfix_idle_processes", p.processes)
    return [rss, pss]


def startup(ctx: Context) -> list[Metric]:
    """Exec (mailroom) / `postfix start` until the SMTP port answers 220."""
    warm = Metric("startup", "start-up to 220 greeting", "s", "lower")
    first = Metric("startup", "first start (new data dir / queue) to 220", "s", "lower")
    runs = max(ctx.runs, 3)  # cheap: always a few
    session = MailroomSession()
    pf = PrivatePostfix()
    try:
        session.server.populate()
        pf.start()  # the first start of an instance creates its queue directories: not a warm start
        pf.stop()
        for _ in range(runs):
            warm.mailroom.append(session.server.start())
            session.server.stop()
            warm.peer.append(pf.start())
            pf.stop()
    finally:
        session.close()
        pf.close()
    for _ in range(runs):
        fresh = MailroomSession(populate=False)
        try:
            first.mailroom.append(fresh.server.start())
        finally:
            fresh.close()
        new_pf = PrivatePostfix()
        try:
            first.peer.append(new_pf.start())
        finally:
            new_pf.close()
    return [warm, first]


# --- POP3 (benchmarks/pop3_download.py, written separately) -----------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _guess_unit(key: str) -> tuple[str, str]:
    low = key.lower()
    if "per_s" in low or "/s" in low or "rate" in low:
        return "/s", "higher"
    if "mib" in low or "rss" in low or "pss" in low:
        return "MiB", "lower"
    if low.endswith("_ms"):
        return "ms", "lower"
    return "s", "lower"


def pop3_metrics(result: dict[str, Any]) -> list[Metric]:
    """Read pop3_download.run()'s dict. Understood shapes, in order:
    {"metrics": [{"name", "unit", "better", "mailroom", "peer"|"dovecot"}, ...]};
    {"name", "unit", "mailroom": x, "dovecot"|"peer": y}; or flat keys such as
    {"mailroom_seconds": x, "dovecot_seconds": y} (pairs found by swapping "mailroom" for "dovecot"/"peer").
    """
    items: list[dict[str, Any]] = []
    if isinstance(result.get("metrics"), list):
        items = [m for m in result["metrics"] if isinstance(m, dict)]
    elif "mailroom" in result:
        items = [result]
    else:
        for key, value in result.items():
            if "mailroom" not in key or _number(value) is None:
                continue
            for other in ("dovecot", "peer"):
                twin = key.replace("mailroom", other)
                if twin in result:
                    unit, better = _guess_unit(key)
                    name = key.replace("mailroom", "").strip("_") or "download"
                    items.append(
                        {"name": name, "unit": unit, "better": better, "mailroom": value, other: result[twin]}
                    )
    metrics = []
    for item in items:
        mine = item.get("mailroom")
        theirs = item.get("dovecot", item.get("peer"))
        values = [mine] if not isinstance(mine, list) else mine
        peers = [theirs] if not isinstance(theirs, list) else theirs
        unit, better = _guess_unit(str(item.get("name", "")) + "_" + str(item.get("unit", "s")))
        m = Metric(
            "pop3",
            f"POP3 {item.get('name', 'download')}",
            str(item.get("unit", unit)),
            str(item.get("better", better)),
            [v for v in (_number(x) for x in values) if v is not None],
            [v for v in (_number(x) for x in peers) if v is not None],
            "dovecot",
        )
        m.target = ("ratio<=", 1.5) if m.better == "lower" else ("ratio>=", 1 / 1.5)  # issue 10
        if m.mailroom:
            metrics.append(m)
    return metrics


def pop3(ctx: Context) -> list[Metric]:
    if not (BENCH_DIR / "pop3_download.py").exists():
        raise Skip("benchmarks/pop3_download.py is not there yet")
    run_script("start-dovecot.sh", ctx.log)
    module = importlib.import_module("pop3_download")
    run: Callable[[bool], dict[str, Any]] = module.run
    merged: dict[tuple[str, str], Metric] = {}
    for i in range(ctx.runs):
        result = run(ctx.quick)
        ctx.note("pop3", f"run{i + 1}", result)
        for m in pop3_metrics(result):
            key = (m.name, m.unit)
            if key in merged:
                merged[key].mailroom += m.mailroom
                merged[key].peer += m.peer
            else:
                merged[key] = m
        pause()
    if not merged:
        raise BenchError("pop3_download.run() returned no figure this harness understands (see the JSON)")
    return list(merged.values())


# Run order: the quiet measurements first, before the load has warmed anything.
SCENARIOS: dict[str, tuple[str, Callable[[Context], list[Metric]]]] = {
    "memory": ("idle RSS/PSS after start (rows 'at end of smtp-s10' come with smtp-s10)", idle_memory),
    "startup": ("start-up time to the first 220 greeting; Postfix: `postfix start`", startup),
    "smtp-s10": ("smtp-source -s 10, 2 KiB, until durably stored (+ memory at the end, profile)", smtp_s10),
    "smtp-s1": ("smtp-source -s 1 (one session at a time), 2 KiB", smtp_s1),
    "smtp-checks": (
        "smtp-source -s 10 with mailroom's SPF/DKIM/DMARC checks on (DNS from Knot) and off",
        smtp_checks,
    ),
    "smtp-1mb": ("smtp-source -s 20, 1 MiB messages", smtp_1mb),
    "pop3": ("POP3 download by a real client (benchmarks/pop3_download.py)", pop3),
}

__all__ = ["SCENARIOS", "Context", "Mailroom", "Metric"]
