"""The scenarios: each runs mailroom and its reference peer side by side and returns Metrics."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imap_bench
import profiling
import submission
from benchlib import (
    BENCH_DIR,
    DOMAIN,
    PASSWORD,
    PEER_SINK,
    SINK,
    BenchError,
    DovecotPeer,
    Mailroom,
    MailroomSession,
    OpenDKIM,
    PostfixPeer,
    PrivatePostfix,
    Skip,
    cpu_seconds,
    listening,
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
    show_ratio: bool = True  # False for rows whose mailroom/peer quotient means nothing (growth factors)


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
    uvloop: bool = False  # also run mailroom under uvloop in smtp-s10 and smtp-s1
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
    ctx: Context,
    load: Intake,
    profile: tuple[Path, str, tuple[str, ...]] | None = None,
    checks: bool = False,
    uvloop: bool = False,
) -> dict[str, float]:
    """smtp-source into a fresh mailroom until SELECT count(*) FROM messages reaches -m."""
    nameservers = ("127.0.0.1:5353",) if checks else ()
    with MailroomSession(nameservers=nameservers, uvloop=uvloop) as server:
        if uvloop and not server.uses_uvloop():
            raise BenchError("mailroom started under the uvloop shim but uvloop is not loaded")
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


def intake(
    ctx: Context, name: str, load: Intake, memory_rows: bool = False, uvloop: bool = False
) -> list[Metric]:
    """N runs of mailroom then Postfix (and mailroom under uvloop when asked), alternating."""
    rate = Metric(name, f"SMTP intake {load.describe()}", "msg/s", "higher", target=("ratio>=", 1.0))
    fast = Metric(name, f"SMTP intake {load.describe()}, mailroom under uvloop", "msg/s", "higher")
    fast.target = rate.target
    rss = Metric("memory", f"RSS at end of {name}", "MiB", "lower")
    pss = Metric("memory", f"PSS at end of {name}", "MiB", "lower")
    ctx.note(name, "smtp_source", load.describe())
    for i in range(ctx.runs):
        m = intake_mailroom(ctx, load)
        pause()
        p = intake_postfix(ctx, load)
        pause()
        run: dict[str, Any] = {"mailroom": m, "postfix": p}
        if uvloop:
            u = intake_mailroom(ctx, load, uvloop=True)
            pause()
            run["mailroom_uvloop"] = u
            fast.mailroom.append(u["msg_per_s"])
            fast.peer.append(p["msg_per_s"])
        ctx.note(name, f"run{i + 1}", run)
        rate.mailroom.append(m["msg_per_s"])
        rate.peer.append(p["msg_per_s"])
        rss.mailroom.append(m["rss_mib"])
        rss.peer.append(p["rss_mib"])
        pss.mailroom.append(m["pss_mib"])
        pss.peer.append(p["pss_mib"])
    rows = [rate, fast] if uvloop else [rate]
    return [*rows, rss, pss] if memory_rows else rows


def smtp_s10(ctx: Context) -> list[Metric]:
    load = Intake(10, 2000 if ctx.quick else 10000, 2048)
    metrics = intake(ctx, "smtp-s10", load, memory_rows=True, uvloop=ctx.uvloop)
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
    return intake(ctx, "smtp-s1", Intake(1, 1000 if ctx.quick else 10000, 2048), uvloop=ctx.uvloop)


def smtp_1mb(ctx: Context) -> list[Metric]:
    return intake(ctx, "smtp-1mb", Intake(20, 100 if ctx.quick else 500, 1 << 20))


ProfileSpec = tuple[Path, str, tuple[str, ...]]  # output file, py-spy format, extra py-spy options


def profile_passes(ctx: Context, name: str, run_pass: Callable[[ProfileSpec], None]) -> None:
    """Two extra passes of a scenario's mailroom side under py-spy: a flame graph (CPU) and raw
    stacks for the hot-spot list. Files: results/<stem>-<name>.{svg,raw.txt,hotspots.txt}."""
    svg = ctx.results / f"{ctx.stem}-{name}.svg"
    raw = ctx.results / f"{ctx.stem}-{name}.raw.txt"
    try:
        run_pass((svg, "flamegraph", ("--nolineno",)))
        pause()
        run_pass((raw, "raw", ("--idle", "--threads", "--nolineno")))
    except (RuntimeError, BenchError) as exc:
        ctx.note("profile", name, {"error": str(exc)})
        return
    spots, threads, busy = profiling.summarize(raw)
    text = profiling.report(spots, threads, busy)
    hot = ctx.results / f"{ctx.stem}-{name}.hotspots.txt"
    hot.write_text(text + "\n")
    ctx.note(
        "profile",
        name,
        {
            "files": {"flamegraph": str(svg), "raw": str(raw), "hotspots": str(hot)},
            "threads_pct": threads,
            "hotspots": [
                {"where": s.where, "own_pct": s.own_pct, "incl_pct": s.inclusive_pct} for s in spots
            ],
        },
    )


def profile_intake(ctx: Context, load: Intake) -> None:
    def run_pass(spec: ProfileSpec) -> None:
        intake_mailroom(ctx, load, spec)

    profile_passes(ctx, "smtp-s10", run_pass)


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
    runs = max(ctx.runs, 2 if ctx.quick else 3)  # cheap: always a few
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


# --- submission: STARTTLS + AUTH + DKIM (benchmarks/submission.py) ----------------------------------


def submission_mailroom(
    load: submission.Load, dkim: bool, profile: ProfileSpec | None = None
) -> dict[str, Any]:
    """The client into a fresh mailroom's submission port, sink@ to itself (local delivery), until
    every message is committed; with one RSA 2048 key for the sender's domain when ``dkim``."""

    def keys(server: Mailroom) -> None:
        server.cli("dkim", "generate", DOMAIN, "--selector", "bench", "--algorithm", "rsa")

    with MailroomSession(prepare=keys if dkim else None) as server:
        account = submission.Account(server.ports["submission"], SINK, PASSWORD, SINK, SINK)
        recorder = profiling.Recorder(server.pid, *profile) if profile else None
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        try:
            sent = submission.submit(account, load)
            done = wait_for(
                lambda: server.message_count() >= load.messages,
                max(60.0, load.messages / 20),
                0.01,
                f"{load.messages} submitted messages in mailroom's store",
            )
        finally:
            if recorder:
                recorder.stop()
        signed = server.last_body().count(b"DKIM-Signature:")
        if signed != int(dkim):
            raise BenchError(f"mailroom stored a message with {signed} DKIM signatures, expected {int(dkim)}")
        return {
            "msg_per_s": load.messages / (done - t0),
            "accept_msg_per_s": load.messages / sent.wall_s,
            "login_ms": submission.median_ms(sent.login_s),
            "cpu_s": cpu_seconds(server.pid) - cpu0,
        }


def submission_postfix(ctx: Context, port: int, load: submission.Load, dkim: bool) -> dict[str, Any]:
    """The same client into a private Postfix's submission service, sink@peer.test to itself,
    until every message is in sink's Maildir new/."""
    peer = ctx.postfix
    before = peer.delivered()
    target = len(before) + load.messages
    account = submission.Account(port, PEER_SINK, DovecotPeer.password, PEER_SINK, PEER_SINK)
    try:
        t0 = time.monotonic()
        sent = submission.submit(account, load)
        done = wait_for(
            lambda: peer.count_new() >= target,
            max(60.0, load.messages / 20),
            0.01,
            f"{load.messages} submitted messages in Postfix's Maildir",
        )
        one = next(iter(peer.delivered() - before))
        signed = (peer.new_dir / one).read_bytes().count(b"DKIM-Signature:")
        if signed != int(dkim):
            raise BenchError(
                f"Postfix delivered a message with {signed} DKIM signatures, expected {int(dkim)}"
            )
    finally:
        peer.remove_new_since(before)
    return {
        "msg_per_s": load.messages / (done - t0),
        "accept_msg_per_s": load.messages / sent.wall_s,
        "login_ms": submission.median_ms(sent.login_s),
    }


def submission_scenario(ctx: Context) -> list[Metric]:
    """mailroom's submission (DKIM-signing with one RSA key) against a private Postfix with the
    shared peer's submission service (STARTTLS required, SASL via Dovecot) and an OpenDKIM milter;
    both again without DKIM."""
    load = submission.Load(10, 20 if ctx.quick else 100, 2048)
    ctx.note("submission", "load", load.describe())
    DovecotPeer(ctx.log).start()  # Postfix's SASL goes to Dovecot's auth socket
    signed = Metric(
        "submission",
        f"STARTTLS+AUTH+DKIM, {load.describe()}",
        "msg/s",
        "higher",
        peer_name="postfix+opendkim",
        target=("ratio>=", 1.0),
    )
    plain = Metric(
        "submission", f"STARTTLS+AUTH, no DKIM, {load.describe()}", "msg/s", "higher", target=("ratio>=", 1.0)
    )
    login = Metric("submission", "connect+STARTTLS+AUTH, per session (median)", "ms", "lower")
    opendkim = OpenDKIM(ctx.log)
    pf = PrivatePostfix(
        services=((2587, (f"smtpd_milters={opendkim.milter}", "milter_default_action=tempfail")), (2587, ()))
    )
    try:
        opendkim.start()
        pf.start(probe=False)
        wait_for(lambda: all(listening(p) for p in pf.ports), 30, 0.02, "private Postfix submission ports")
        for i in range(ctx.runs):
            m_dkim = submission_mailroom(load, dkim=True)
            pause()
            p_dkim = submission_postfix(ctx, pf.ports[0], load, dkim=True)
            pause()
            m_plain = submission_mailroom(load, dkim=False)
            pause()
            p_plain = submission_postfix(ctx, pf.ports[1], load, dkim=False)
            pause()
            ctx.note(
                "submission",
                f"run{i + 1}",
                {
                    "mailroom_dkim": m_dkim,
                    "postfix_opendkim": p_dkim,
                    "mailroom": m_plain,
                    "postfix": p_plain,
                },
            )
            signed.mailroom.append(m_dkim["msg_per_s"])
            signed.peer.append(p_dkim["msg_per_s"])
            plain.mailroom.append(m_plain["msg_per_s"])
            plain.peer.append(p_plain["msg_per_s"])
            login.mailroom += [m_dkim["login_ms"], m_plain["login_ms"]]
            login.peer += [p_dkim["login_ms"], p_plain["login_ms"]]
    finally:
        pf.close()
        opendkim.close()
    if ctx.profile:

        def run_pass(spec: ProfileSpec) -> None:
            submission_mailroom(submission.Load(10, 50, 2048), True, spec)

        profile_passes(ctx, "submission", run_pass)
    return [signed, plain, login]


# --- IMAP (benchmarks/imap_bench.py) ----------------------------------------------------------------


def imap_scenario(ctx: Context) -> list[Metric]:
    """mbsync pull of the small INBOX; SELECT / UID FETCH FLAGS / header and body SEARCH on the
    small and the big one (10k / 100k; --quick 1k / 10k), with the growth; memory at the end."""

    def profile(pid: int, workload: Callable[[], None]) -> None:
        def run_pass(spec: ProfileSpec) -> None:
            recorder = profiling.Recorder(pid, *spec)
            try:
                workload()
            finally:
                recorder.stop()

        profile_passes(ctx, "imap", run_pass)

    r = imap_bench.run(
        ctx.quick,
        pulls=ctx.runs,
        samples=3 if ctx.quick else 5,
        profile=profile if ctx.profile else None,
        log=ctx.log,
    )
    ctx.note("imap", "results", r)
    small, big = r["messages"]["small"], r["messages"]["big"]

    def row(name: str, unit: str, values: dict[str, list[float]], scale: float = 1.0, **kw: Any) -> Metric:
        return Metric(
            "imap",
            name,
            unit,
            "lower",
            [v * scale for v in values["mailroom"]],
            [v * scale for v in values["dovecot"]],
            "dovecot",
            **kw,
        )

    rows = [
        row(f"mbsync pull of {small:,} messages", "s", r["mbsync_pull"], target=("ratio<=", 1.5)),
        row("mbsync's own CPU time during that pull", "s", r["mbsync_client_cpu"]),
        Metric("imap", "mailroom's CPU time during that pull", "s", "lower", r["mbsync_mailroom_cpu"]),
        row(f"first SELECT of the {big:,} INBOX after start", "ms", r["first_select_big"], 1000),
    ]
    for op, label in imap_bench.OPS:
        for size, count in (("small", small), ("big", big)):
            target = ("max", 50.0) if op == "select" and size == "big" else ("ratio<=", 1.5)
            samples = {who: r[f"ops_{size}"][who][op] for who in ("mailroom", "dovecot")}
            rows.append(row(f"{label}, {count:,} msgs", "ms", samples, 1000, target=target))
        rows.append(
            Metric(
                "imap",
                f"{label}: growth {small // 1000}k -> {big // 1000}k",
                "x",
                "lower",
                [imap_bench.growth(r, op, "mailroom")],
                [imap_bench.growth(r, op, "dovecot")],
                "dovecot",
                target=("max", 1.2 * big / small),  # linear or better, with 20% for noise
                show_ratio=False,
            )
        )
    mem = r["memory_end"]
    for kind in ("rss", "pss"):
        rows.append(
            Metric(
                "memory",
                f"{kind.upper()} at end of imap (Dovecot: {mem['dovecot']['processes']} processes)",
                "MiB",
                "lower",
                [mem["mailroom"][f"{kind}_mib"]],
                [mem["dovecot"][f"{kind}_mib"]],
                "dovecot",
            )
        )
    return rows


def imap_idle(ctx: Context) -> list[Metric]:
    """Memory with 10 IMAPS clients logged in, INBOX selected, in IDLE; Dovecot: all its processes."""
    clients = 10
    rss = Metric("memory", f"RSS with {clients} IMAP IDLE clients", "MiB", "lower", peer_name="dovecot")
    pss = Metric("memory", f"PSS with {clients} IMAP IDLE clients", "MiB", "lower", peer_name="dovecot")
    per = Metric("memory", "PSS added per IMAP IDLE client", "MiB", "lower", peer_name="dovecot")
    for i in range(ctx.runs):
        r = imap_bench.idle_memory(ctx.log, clients, 200 if ctx.quick else 1000, 1.0 if ctx.quick else 2.0)
        ctx.note("imap-idle", f"run{i + 1}", r)
        for who, metric_list in (("mailroom", "mailroom"), ("dovecot", "peer")):
            before, idle = r[who]["before"], r[who]["idle"]
            getattr(rss, metric_list).append(idle["rss_mib"])
            getattr(pss, metric_list).append(idle["pss_mib"])
            getattr(per, metric_list).append((idle["pss_mib"] - before["pss_mib"]) / clients)
        pause()
    return [rss, pss, per]


# Run order: the quiet measurements first, before the load has warmed anything.
SCENARIOS: dict[str, tuple[str, Callable[[Context], list[Metric]]]] = {
    "memory": ("idle RSS/PSS after start (rows 'at end of smtp-s10' come with smtp-s10)", idle_memory),
    "startup": ("start-up time to the first 220 greeting; Postfix: `postfix start`", startup),
    "imap-idle": ("memory with 10 IMAP IDLE clients, against Dovecot's processes summed", imap_idle),
    "smtp-s10": ("smtp-source -s 10, 2 KiB, until durably stored (+ memory at the end, profile)", smtp_s10),
    "smtp-s1": ("smtp-source -s 1 (one session at a time), 2 KiB", smtp_s1),
    "smtp-checks": (
        "smtp-source -s 10 with mailroom's SPF/DKIM/DMARC checks on (DNS from Knot) and off",
        smtp_checks,
    ),
    "smtp-1mb": ("smtp-source -s 20, 1 MiB messages", smtp_1mb),
    "pop3": ("POP3 download by a real client (benchmarks/pop3_download.py)", pop3),
    "submission": (
        "submission: 10 sessions, STARTTLS + AUTH + DKIM; Postfix submission + OpenDKIM (+ profile)",
        submission_scenario,
    ),
    "imap": (
        "mbsync pull of 10k; SELECT, UID FETCH FLAGS, SEARCH on 10k and 100k INBOX (+ profile)",
        imap_scenario,
    ),
}

__all__ = ["SCENARIOS", "Context", "Mailroom", "Metric"]
