"""benchmarks/run: mailroom side by side with Postfix (and Dovecot) on loopback, as ratios.

Starts the peers it needs with ../shared/peers/*.sh, runs each scenario against mailroom and the
peer (alternating, N runs each), prints one table (median [min-max], ratio mailroom/peer) and writes
benchmarks/results/<UTC timestamp>-<git sha>.json (plus py-spy profiles of smtp-s10 and imap).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from benchlib import PYTHON, REPO, RESULTS, BenchError, PostfixPeer, Skip, median_spread
from scenarios import SCENARIOS, Context, Metric


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    med, low, high = median_spread(values)
    return fmt(med) if len(values) == 1 else f"{fmt(med)} [{fmt(low)}-{fmt(high)}]"


def ratio(metric: Metric) -> float | None:
    if not metric.mailroom or not metric.peer or not metric.show_ratio:
        return None
    peer = median_spread(metric.peer)[0]
    return median_spread(metric.mailroom)[0] / peer if peer else None


def verdict(metric: Metric) -> str:
    if metric.target is None or not metric.mailroom:
        return ""
    kind, bound = metric.target
    if kind == "max":
        ok = median_spread(metric.mailroom)[0] <= bound
        limit = f"{bound * 2**20 / 1e6:.0f} MB" if metric.unit == "MiB" else f"{fmt(bound)} {metric.unit}"
        return f"<={limit} {'ok' if ok else 'MISSED'}"
    r = ratio(metric)
    if r is None:
        return ""
    ok = r >= bound if kind == "ratio>=" else r <= bound
    return f"{kind[5:]}{bound:.1f}x {'ok' if ok else 'MISSED'}"


def table(metrics: list[Metric], errors: dict[str, str], skipped: dict[str, str]) -> str:
    head = ("scenario", "figure", "unit", "mailroom", "peer", "mailroom/peer", "better", "target")
    rows: list[tuple[str, ...]] = [head]
    for m in metrics:
        r = ratio(m)
        peer = f"{cell(m.peer)} {m.peer_name}" if m.peer else "-"
        ratio_text = f"{r:.2f}x" if r else "-"
        rows.append((m.scenario, m.name, m.unit, cell(m.mailroom), peer, ratio_text, m.better, verdict(m)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{name}: ERROR {text}" for name, text in errors.items()]
    lines += [f"{name}: skipped: {text}" for name, text in skipped.items()]
    return "\n".join(lines)


def postfix_version() -> str:
    done = subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True, text=True)
    return done.stdout.strip()


def dovecot_version() -> str:
    done = subprocess.run(["dovecot", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def uvloop_version() -> str:
    done = subprocess.run(
        [PYTHON, "-c", "import uvloop; print(uvloop.__version__)"], capture_output=True, text=True
    )
    return done.stdout.strip()


def ensure_uvloop() -> None:
    """pip install uvloop into the venv mailroom runs from, unless it is there (a trial: mailroom
    itself does not depend on it; the benchmark starts it through a shim, src/ unchanged)."""
    if uvloop_version():
        return
    print("installing uvloop into the venv (pip) ...", flush=True)
    done = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "uvloop"], capture_output=True, text=True)
    if done.returncode != 0 or not uvloop_version():
        raise BenchError(f"pip install uvloop failed: {done.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, fewer messages, no profile: < 2 min")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only these scenarios ({', '.join(SCENARIOS)})"
    )
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3, --quick 1)")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        help="py-spy profiles of smtp-s10 and imap (default: on, off with --quick)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="also run mailroom under uvloop in smtp-s10 and smtp-s1 (pip-installs uvloop into the venv)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (text, _) in SCENARIOS.items():
            print(f"{name:12s} {text}")
        return 0
    selected = [n.strip() for part in (args.only or list(SCENARIOS)) for n in part.split(",") if n.strip()]
    unknown = [n for n in selected if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if os.geteuid() != 0:
        print("benchmarks/run needs root: it installs and starts Postfix and reads its processes' memory")
        return 2

    if args.uvloop:
        try:
            ensure_uvloop()
        except BenchError as exc:
            print(f"--uvloop: {exc}", file=sys.stderr)
            return 1

    RESULTS.mkdir(parents=True, exist_ok=True)
    sha = git("rev-parse", "--short", "HEAD") or "nogit"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{stamp}-{sha}"
    log = RESULTS / f"{stem}-peers.log"
    ctx = Context(
        quick=args.quick,
        runs=args.runs or (1 if args.quick else 3),
        log=log,
        results=RESULTS,
        stem=stem,
        profile=args.profile if args.profile is not None else not args.quick,
        selected=[n for n in SCENARIOS if n in selected],
        postfix=PostfixPeer(log),
        uvloop=args.uvloop,
    )
    started = time.monotonic()
    load_before = os.getloadavg()
    print(f"mailroom benchmarks {stem}: {', '.join(ctx.selected)}; {ctx.runs} run(s) each", flush=True)
    metrics: list[Metric] = []
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    durations: dict[str, float] = {}
    try:
        ctx.postfix.start()
    except BenchError as exc:
        print(f"Postfix peer: {exc}", file=sys.stderr)
        return 1
    for name in ctx.selected:
        t0 = time.monotonic()
        print(f"  {name} ...", end="", flush=True)
        try:
            metrics += SCENARIOS[name][1](ctx)
        except Skip as exc:
            skipped[name] = str(exc)
        except BenchError as exc:
            errors[name] = str(exc)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            ctx.note(name, "traceback", traceback.format_exc())
        durations[name] = time.monotonic() - t0
        status = " (failed)" if name in errors else " (skipped)" if name in skipped else ""
        print(f" {durations[name]:.0f}s{status}", flush=True)
    # rows grouped by scenario in run order; memory rows of smtp-s10 join the memory group
    order = {name: i for i, name in enumerate(SCENARIOS)}
    metrics.sort(key=lambda m: order.get(m.scenario, len(order)))

    print()
    print(table(metrics, errors, skipped))
    elapsed = time.monotonic() - started
    print(
        f"\n{ctx.runs} run(s) per figure, median [min-max]; load average before {load_before[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f}; {elapsed:.0f}s in all"
    )
    for name, prof in ctx.extra.get("profile", {}).items():
        if "files" in prof:
            files = {k: os.path.relpath(v, REPO) for k, v in prof["files"].items()}
            print(f"profile of {name}: {files['flamegraph']}, hot spots in {files['hotspots']}")
        else:
            print(f"profile of {name}: {prof.get('error', 'not made')}")

    out: dict[str, Any] = {
        "timestamp": stamp,
        "git": {
            "sha": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        },
        "args": {
            "quick": ctx.quick,
            "runs": ctx.runs,
            "only": ctx.selected,
            "profile": ctx.profile,
            "uvloop": ctx.uvloop,
        },
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postfix": postfix_version(),
            "dovecot": dovecot_version(),
            "uvloop": uvloop_version() if ctx.uvloop else None,
        },
        "metrics": [
            {
                **asdict(m),
                "mailroom_median": median_spread(m.mailroom)[0] if m.mailroom else None,
                "peer_median": median_spread(m.peer)[0] if m.peer else None,
                "ratio": ratio(m),
            }
            for m in metrics
        ],
        "errors": errors,
        "skipped": skipped,
        "durations_s": durations,
        "details": ctx.extra,
    }
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    if log.exists() and not errors:
        log.unlink()
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
