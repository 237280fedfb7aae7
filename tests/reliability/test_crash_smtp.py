"""Crash consistency of SMTP intake: Postfix's smtp-source floods the server with 20 parallel
sessions and the server is killed with SIGKILL at a random moment, again and again on the same
data_dir. After every restart each message that got its final 250 is stored exactly once, no
message is stored twice, SQLite's integrity check passes and the server starts cleanly."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.support import (
    AckProxy,
    count,
    integrity,
    mailbox_heads,
    make_server,
    scale,
    scalef,
    smtp_source,
    started,
)

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

SEED = int(os.environ.get("MAILROOM_SEED", str(random.randrange(1 << 30))))
# The Received header we add: "... with SMTP id 63FA42B432\r\n\tfor <12t3-r@example.net>; ..."
_TRACE = re.compile(rb"with E?SMTPS?A? id ([0-9A-F]+)\r\n\tfor <([^>]+)>")


def stored_ids(data_dir: Path) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for _, _, head in mailbox_heads(data_dir, "carol@example.net"):
        m = _TRACE.search(head)
        assert m is not None, head[:300]
        found[(m.group(1).decode(), m.group(2).decode())] += 1
    return found


def test_smtp_intake_survives_kill_9_during_a_flood(tmp_path: Path) -> None:
    tool = smtp_source()
    rng = random.Random(SEED)
    trials = scale(20, 200)
    extra = "[limits]\nmax_connections_per_ip = 200\n"
    srv = make_server(tmp_path / "mx", ("smtp",), extra)
    acked: dict[tuple[str, str], int] = {}  # (queue id, recipient) -> trial
    stored: Counter[tuple[str, str]] = Counter()
    with started(srv):
        for trial in range(trials):
            size = rng.choice([200, 2_000, 2_000, 40_000, 300_000])  # 300 KB rolls over to a spool file
            with AckProxy(srv.ports["smtp"]) as proxy:
                cmd = [tool, "-s", "20", "-m", "1000000", "-l", str(size), "-N", "-M", "client.test"]
                cmd += ["-f", "flood@client.test", "-t", f"t{trial}-r@example.net"]
                if rng.random() < 0.7:
                    cmd.append("-d")  # many messages per connection; else one connection per message
                flood = subprocess.Popen(
                    [*cmd, f"127.0.0.1:{proxy.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                time.sleep(rng.uniform(0.25, scalef(1.5, 4.0)))
                assert flood.poll() is None, f"smtp-source ended early: {flood.communicate()[1]!r}"
                srv.kill()
                flood.kill()
                flood.communicate()
                for item in proxy.acked:
                    for rcpt in item.recipients:
                        acked[(item.queue_id, rcpt)] = trial
            srv.start()  # a clean restart after every crash
            assert integrity(srv.data_dir) == "ok", f"seed {SEED} trial {trial}"
            stored = stored_ids(srv.data_dir)
            missing = [key for key in acked if stored[key] != 1]
            assert not missing, f"seed {SEED} trial {trial}: acknowledged but not stored once: {missing[:5]}"
            doubled = [key for key, n in stored.items() if n > 1]
            assert not doubled, f"seed {SEED} trial {trial}: stored twice: {doubled[:5]}"
            recipients = Counter(rcpt for _, rcpt in stored)
            assert max(recipients.values(), default=1) == 1, f"seed {SEED}: a message was stored twice"
            assert not list((srv.data_dir / "spool").iterdir()), "spool files left behind"
            count("crash trials (smtp intake)")
    assert len(acked) > trials * 10, f"the flood hardly got through: {len(acked)} acknowledged"
    count("messages acknowledged and checked (smtp intake)", len(acked))
    count("messages stored, checked for duplicates (smtp intake)", sum(stored.values()))
