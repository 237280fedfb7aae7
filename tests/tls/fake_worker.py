"""A stand-in certificate worker for test_worker.py: ``python fake_worker.py STATE_DIR PLAN``.

PLAN is a comma-separated list, one behaviour per attempt (the attempt number is kept in STATE_DIR):
ok, hang, die, crash, noimport, garbage, error. Each attempt writes its pid to STATE_DIR/pid-N
and the request it got to STATE_DIR/request-N.json. ``ok`` returns STATE_DIR/issued.crt/.key and
publishes an http-01 token ``tok-N`` and, with STATE_DIR/alpn.crt/.key, a tls-alpn-01 challenge for
the first name; ``hang`` and ``die`` publish ``tok-N`` first. Stdlib only, like a real child's
protocol side.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

state, plan = Path(sys.argv[1]), sys.argv[2].split(",")
counter = state / "attempts"
attempt = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(attempt))
(state / f"pid-{attempt}").write_text(str(os.getpid()))
behaviour = plan[min(attempt, len(plan)) - 1]
next_id = 0


def send(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def request(**message: Any) -> dict[str, Any]:
    global next_id
    next_id += 1
    send(id=next_id, **message)
    while True:
        answer: dict[str, Any] = json.loads(sys.stdin.readline())
        if answer.get("type") == "ack" and answer.get("id") == next_id:
            return answer


req = json.loads(sys.stdin.readline())
(state / f"request-{attempt}.json").write_text(json.dumps(req))
if behaviour == "noimport":
    sys.stderr.write(
        "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'acme'\n"
    )
    sys.exit(3)
send(type="ready", protocol=1)
token = f"tok-{attempt}"
if behaviour in ("hang", "die"):
    request(type="publish", challenge="http-01", token=token, key_authorization=f"{token}.thumb")
    if behaviour == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # never outlives a broken test for long
elif behaviour == "crash":
    sys.stderr.write("Traceback (most recent call last):\n  ...\nMemoryError: out of memory\n")
    sys.exit(1)
elif behaviour == "garbage":
    print("this is not JSON", flush=True)
    time.sleep(30)  # never outlives a broken test for long
elif behaviour == "error":
    send(type="error", message="urn:ietf:params:acme:error:rateLimited :: too many\n certificates")
elif behaviour == "ok":
    send(
        type="log", logger="mailroom.acme", level=20, message=f"acme: answering http-01 for {req['names'][0]}"
    )
    request(type="publish", challenge="http-01", token=token, key_authorization=f"{token}.thumb")
    alpn = state / "alpn.crt"
    name = req["names"][0]
    if alpn.exists():
        answer = request(
            type="publish",
            challenge="tls-alpn-01",
            name=name,
            cert_pem=alpn.read_text(),
            key_pem=(state / "alpn.key").read_text(),
        )
        assert "error" not in answer, answer
    # the test holds the challenges published until it has seen them, then releases us
    while not (state / f"go-{attempt}").exists():
        time.sleep(0.01)
    if alpn.exists():
        request(type="withdraw", challenge="tls-alpn-01", name=name)
    request(type="withdraw", challenge="http-01", token=token)
    send(
        type="issued",
        challenge="http-01",
        fullchain_pem=(state / "issued.crt").read_text(),
        key_pem=(state / "issued.key").read_text(),
    )
