"""py-spy around a benchmark run, and a hot-spot summary of its raw (collapsed-stack) output."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchlib import PYTHON

# Leaf frames of a thread that is waiting, not working (with --idle py-spy records those too).
IDLE_LEAVES = re.compile(
    r"^(\w+\.)?(select|poll|_worker|wait|get|_wait_for_tstate_lock|acquire|sleep) "
    r"\((selectors|threading|queue|concurrent/futures/thread)\.py"
)
# Frames below which the code that runs is a callback or a work item (ours or not).
DISPATCH = ("BaseEventLoop.run_forever (", "_WorkItem.run (")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy binary next to the venv's interpreter, installed with pip when missing."""
    exe = Path(PYTHON).parent / "py-spy"
    if not exe.exists():
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "py-spy"], capture_output=True)
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Recorder:
    """``py-spy record`` attached to a running pid until stop()."""

    def __init__(self, pid: int, output: Path, fmt: str, extra: tuple[str, ...] = ()) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed and pip could not install it")
        self.log = output.with_suffix(output.suffix + ".log")
        self.output = output
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--rate", "200", "-f", fmt, "-o", str(output), *extra],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(1.0)  # attach before the load starts
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited: {self.log.read_text(errors='replace').strip()[-300:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.unlink(missing_ok=True)


@dataclass
class HotSpot:
    where: str  # file:function
    own_pct: float  # samples whose nearest frame of our code (walking up from the leaf) is this one
    inclusive_pct: float  # samples with this function anywhere on the stack


def _ours(path: str) -> bool:
    return path.startswith("mailroom/") or "/src/mailroom/" in path


def summarize(raw: Path, top: int = 25) -> tuple[list[HotSpot], dict[str, tuple[float, float]], int]:
    """Hot spots of our code from py-spy raw output recorded with --idle --threads --nolineno.

    Samples whose leaf is a wait (epoll, a thread pool waiting for work) are left out, so the
    percentages are of busy samples: Python code, C code it called (SQLite, fsync), GIL waits.
    A busy sample is charged to the nearest frame of our code above its leaf, searched only below
    the dispatcher (the event loop, a pool's work item); "(asyncio ...)" is the loop's own work.
    Returns (hot spots, per thread: (busy % of its samples, share % of all busy), busy samples).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    working: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread (")), "thread (?): ?")
        thread = re.sub(r"_\d+$", "", thread.partition(": ")[2] or thread)
        calls = [f for f in frames if not f.startswith(("process ", "thread ("))]
        seen[thread] += count
        if not calls or IDLE_LEAVES.match(calls[-1]):
            continue
        busy += count
        working[thread] += count
        cut = max((i for i, f in enumerate(calls) if f.startswith(DISPATCH)), default=-1)
        ours: list[str] = []
        for frame in calls[cut + 1 :]:
            m = FRAME.match(frame)
            if m and _ours(m["file"]):
                ours.append(f"{m['file'].removeprefix('mailroom/')}:{m['func']}")
        if ours:
            own[ours[-1]] += count
        elif cut >= 0 and calls[cut].startswith("BaseEventLoop"):
            own["(asyncio event loop itself)"] += count
        else:
            own[f"(not our code: {thread})"] += count
        for name in set(ours):
            inclusive[name] += count
    if busy == 0:
        return [], {}, 0
    spots = [HotSpot(name, 100 * n / busy, 100 * inclusive[name] / busy) for name, n in own.most_common(top)]
    threads = {t: (100 * working[t] / seen[t], 100 * working[t] / busy) for t, _ in working.most_common(6)}
    return spots, threads, busy


def report(spots: list[HotSpot], threads: dict[str, tuple[float, float]], busy: int) -> str:
    lines = [f"busy samples: {busy} (waits left out); per thread: busy % of its samples / share of all busy"]
    lines += [f"  {name}: {util:.0f}% / {share:.0f}%" for name, (util, share) in threads.items()]
    lines.append(f"{'own %':>6} {'incl %':>6}  our code (file:function)")
    lines += [f"{s.own_pct:6.1f} {s.inclusive_pct:6.1f}  {s.where}" for s in spots]
    return "\n".join(lines)
