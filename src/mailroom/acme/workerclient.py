"""The server's side of the certificate worker (worker.py documents the protocol).

``CertWorker.issue`` runs one ACME order in a child process: it starts the child with
asyncio.create_subprocess_exec, sends the request, publishes and withdraws the challenges the child
asks for (answering each with an ack), and returns what the child issued. ``CertWorker.self_signed``
has a child make the self-signed pair at start-up. Neither imports cryptography, acme, josepy or
requests into the server.

Failures are one line each:
- ``WorkerUnavailable``: the child could not be started, or exited before it was ready (it could not
  import its libraries). The caller then does the work in-process, once, with one log line.
- ``IssueError``: anything after ready: the CA's refusal, a child that died, hung past its time limit
  (it is killed), or broke the protocol. Whatever it published is withdrawn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailroom.acme.challenges import ChallengeResponder
from mailroom.acme.issued import Issued, IssueError
from mailroom.acme.worker import PROTOCOL, one_line

log = logging.getLogger("mailroom.tls")

ISSUE_TIMEOUT = 600.0  # a whole ACME order, both challenge types, CA polling included
SELF_SIGNED_TIMEOUT = 60.0
MAX_LINE = 1 << 20  # a full chain is a few KiB
STDERR_LINES = 5


class WorkerUnavailable(Exception):
    """The worker could not start or load its libraries; ``str()`` is one line saying why."""


def worker_argv() -> list[str]:
    """The same interpreter, environment and working directory as the server: the child imports the
    same mailroom."""
    return [sys.executable, "-m", "mailroom.acme.worker"]


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _tail(lines: Sequence[str]) -> str:
    """The child's last stderr line worth showing (a traceback's last line names the error)."""
    for line in reversed(lines):
        text = one_line(line)
        if text:
            return text[:300]
    return ""


def _message(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise IssueError("the certificate worker broke the protocol (not a JSON object)")
    return message


class CertWorker:
    """Runs certificate work in a short-lived child process."""

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        *,
        timeout: float = ISSUE_TIMEOUT,
        self_signed_timeout: float = SELF_SIGNED_TIMEOUT,
    ) -> None:
        self.argv = list(argv) if argv is not None else worker_argv()
        self.timeout = timeout
        self.self_signed_timeout = self_signed_timeout

    def _request(self, op: str, **fields: Any) -> bytes:
        level = logging.getLogger("mailroom.acme").getEffectiveLevel()
        request = {"op": op, "protocol": PROTOCOL, "parent": os.getpid(), "log_level": level, **fields}
        return (json.dumps(request) + "\n").encode()

    # --- ACME -----------------------------------------------------------------------------------

    async def issue(self, responder: ChallengeResponder, **request: Any) -> Issued:
        """One ACME order in a child (``request``: the fields worker.py's "issue" takes)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                limit=MAX_LINE,
            )
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        session = _Session(proc, responder)
        try:
            return await asyncio.wait_for(session.run(self._request("issue", **request)), self.timeout)
        except TimeoutError:
            raise IssueError(
                f"the certificate worker did not finish in {self.timeout:g}s; stopped it"
            ) from None
        finally:
            session.withdraw_all()
            await session.reap()

    # --- self-signed ----------------------------------------------------------------------------

    def self_signed(self, directory: Path, hostname: str) -> tuple[Path, Path]:
        """Have a child write ``directory``/selfsigned.{crt,key}. Blocking: start-up only."""
        request = self._request("self-signed", directory=str(directory), hostname=hostname)
        try:
            done = subprocess.run(
                self.argv,
                input=request,
                capture_output=True,
                timeout=self.self_signed_timeout,
            )
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise WorkerUnavailable(f"it did not finish in {self.self_signed_timeout:g}s") from None
        ready = False
        for line in done.stdout.splitlines():
            try:
                message = _message(line)
            except IssueError:
                break
            typ = message.get("type")
            if typ == "ready":
                ready = message.get("protocol") == PROTOCOL
            elif typ == "log":
                _relog(message)
            elif typ == "made" and ready:
                return Path(message["cert"]), Path(message["key"])
            elif typ == "error" and ready:
                raise IssueError(one_line(message.get("message", "")) or "failed")
        tail = _tail(done.stderr.decode(errors="replace").splitlines())
        state = "before it was ready" if not ready else "without a certificate"
        raise WorkerUnavailable(
            f"it exited ({_exit_reason(done.returncode)}) {state}" + (f": {tail}" if tail else "")
        )


def _relog(message: dict[str, Any]) -> None:
    """A log record from the child, logged here as the server's own line."""
    name = str(message.get("logger", ""))
    if name != "mailroom" and not name.startswith("mailroom."):
        name = "mailroom.acme"
    try:
        level = int(message.get("level", logging.INFO))
    except (TypeError, ValueError):
        level = logging.INFO
    logging.getLogger(name).log(level, "%s", one_line(message.get("message", "")))


class _Session:
    """One running child: reads its lines, applies its publish/withdraw requests, keeps its stderr tail."""

    def __init__(self, proc: asyncio.subprocess.Process, responder: ChallengeResponder) -> None:
        self.proc = proc
        self.responder = responder
        self.ready = False
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.published: dict[tuple[str, str], None] = {}  # (challenge, token or name), in order
        self._stderr_task: asyncio.Task[None] | None = None

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while True:
            try:
                line = await self.proc.stderr.readline()
            except ValueError:  # a line over the limit: keep reading
                continue
            if not line:
                return
            self.stderr.append(line.decode(errors="replace")[:1000])

    async def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone: reading its stdout tells how

    async def run(self, request: bytes) -> Issued:
        assert self.proc.stdout is not None
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        await self._send(request)
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:
                raise IssueError(f"the certificate worker sent a line over {MAX_LINE} bytes") from None
            if not line:
                break
            message = _message(line)
            typ = message.get("type")
            if typ == "ready":
                if message.get("protocol") != PROTOCOL:
                    raise IssueError(
                        f"the certificate worker speaks protocol {message.get('protocol')!r}, this server "
                        f"{PROTOCOL}: restart mailroom after an upgrade"
                    )
                self.ready = True
            elif not self.ready:
                raise IssueError(f"the certificate worker sent {typ!r} before it was ready")
            elif typ == "log":
                _relog(message)
            elif typ in ("publish", "withdraw"):
                error = self._apply(message)
                ack: dict[str, Any] = {"type": "ack", "id": message.get("id")}
                if error:
                    ack["error"] = error
                await self._send((json.dumps(ack) + "\n").encode())
            elif typ == "issued":
                try:
                    issued = Issued(
                        str(message["fullchain_pem"]).encode("ascii"),
                        str(message["key_pem"]).encode("ascii"),
                        str(message.get("challenge", "?")),
                    )
                except (KeyError, UnicodeEncodeError):
                    raise IssueError("the certificate worker sent an unusable certificate") from None
                with contextlib.suppress(TimeoutError):  # it exits now: let it, rather than kill it
                    await asyncio.wait_for(self.proc.wait(), 2.0)
                return issued
            elif typ == "error":
                raise IssueError(one_line(message.get("message", "")) or "the certificate worker failed")
            else:
                raise IssueError(f"the certificate worker broke the protocol (message {typ!r})")
        # end of output: the child is gone
        code = await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2.0)
        tail = _tail(self.stderr)
        detail = f": {tail}" if tail else ""
        if not self.ready:
            raise WorkerUnavailable(f"it exited ({_exit_reason(code)}) before it was ready{detail}")
        raise IssueError(f"the certificate worker died ({_exit_reason(code)}){detail}")

    def _apply(self, message: dict[str, Any]) -> str:
        """Publish or withdraw one challenge on the shared responder; an error text, or ""."""
        challenge = message.get("challenge")
        try:
            if challenge == "http-01":  # RFC 8555 §8.3
                token = str(message["token"])
                if message["type"] == "publish":
                    self.responder.add_http01(token, str(message["key_authorization"]))
                    self.published[("http-01", token)] = None
                else:
                    self.responder.remove_http01(token)
                    self.published.pop(("http-01", token), None)
            elif challenge == "tls-alpn-01":  # RFC 8737 §3
                name = str(message["name"])
                if message["type"] == "publish":
                    self.responder.add_tls_alpn01_pem(
                        name,
                        str(message["cert_pem"]).encode("ascii"),
                        str(message["key_pem"]).encode("ascii"),
                    )
                    self.published[("tls-alpn-01", name)] = None
                else:
                    self.responder.remove_tls_alpn01(name)
                    self.published.pop(("tls-alpn-01", name), None)
            else:
                return f"unknown challenge type {challenge!r}"
        except (KeyError, UnicodeEncodeError):
            return f"incomplete {message['type']} request"
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return one_line(exc) or type(exc).__name__
        return ""

    def withdraw_all(self) -> None:
        """Whatever a dead, stopped or failed child left published."""
        for challenge, key in self.published:
            if challenge == "http-01":
                self.responder.remove_http01(key)
            else:
                self.responder.remove_tls_alpn01(key)
        self.published.clear()

    async def reap(self) -> None:
        """Kill the child if it still runs, and wait for it (no zombies, no stray order)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5.0)
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
