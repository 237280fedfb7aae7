"""The certificate worker: ``python -m mailroom.acme.worker``, a short-lived child of the server.

Making keys and certificates needs cryptography, and ACME needs the ``acme`` library, josepy and
requests: about 20 MiB that an idle server should not carry, and that Python never gives back once
imported. So the server starts this child for each self-signed certificate and each ACME order;
the child does the work and exits, and its memory goes with it. The server side is workerclient.py.

Protocol: JSON objects, one per line (UTF-8), on the child's stdin and stdout. The child's stderr
is for Python itself (a failed import); the server keeps its last lines for the one log line.

parent -> child, first line, the request::

    {"op": "self-signed", "protocol": 1, "log_level": 20, "directory": "...", "hostname": "..."}
    {"op": "issue", "protocol": 1, "log_level": 20, "names": [...], "preference": [...],
     "directory_url": "...", "email": "...", "account_key": "...", "ca_file": "...",
     "timeout": 90.0, "available": ["http-01", "tls-alpn-01"]}

child -> parent::

    {"type": "ready", "protocol": 1}          libraries imported: from here on a death is a failure,
                                              before it the server falls back to working in-process
    {"type": "log", "logger": "mailroom.acme", "level": 20, "message": "..."}
    {"type": "publish", "id": 1, "challenge": "http-01", "token": "...", "key_authorization": "..."}
    {"type": "publish", "id": 2, "challenge": "tls-alpn-01", "name": "...", "cert_pem": "...", "key_pem": "..."}
    {"type": "withdraw", "id": 3, "challenge": "http-01", "token": "..."}
    {"type": "withdraw", "id": 4, "challenge": "tls-alpn-01", "name": "..."}
    {"type": "issued", "challenge": "http-01", "fullchain_pem": "...", "key_pem": "..."}
    {"type": "made", "cert": "...", "key": "..."}          (self-signed: files written, key 0600)
    {"type": "error", "message": "one line"}

parent -> child, after each publish and withdraw::

    {"type": "ack", "id": 1}  or  {"type": "ack", "id": 1, "error": "one line"}

The child waits for the ack of a publish before it tells the CA to validate (RFC 8555 §7.5.1: the
client responds to a challenge only once it is ready to be validated), so the CA never probes a
challenge the server does not answer yet. The issued key travels over the pipe, never through a
file another user could read; the server writes it 0600 as it always has.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

PROTOCOL = 1
ACK_TIMEOUT = 60.0  # the server answers at once; this only bounds a wedged parent
EXIT_IMPORT = 3  # could not load the libraries: the server falls back to in-process


def one_line(value: object) -> str:
    return " ".join(str(value).split())


class Channel:
    """The child's end of the pipe: one JSON object per line."""

    def __init__(self, reader: IO[str], writer: IO[str]) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0

    def send(self, **message: Any) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.writer.flush()

    def receive(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise EOFError("the server closed the pipe")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        return message

    def request(self, **message: Any) -> None:
        """Send a publish or withdraw and wait for the server's ack (raising if it refused)."""
        self._next_id += 1
        ident = self._next_id
        self.send(id=ident, **message)
        signal.alarm(int(ACK_TIMEOUT))
        try:
            while True:
                answer = self.receive()
                if answer.get("type") == "ack" and answer.get("id") == ident:
                    break
        finally:
            signal.alarm(0)
        if answer.get("error"):
            from mailroom.acme.issued import IssueError

            raise IssueError(f"the server could not publish the challenge: {one_line(answer['error'])}")


class RemoteResponder:
    """The ACME client's Publisher in the child: every publish and withdraw is done by the server."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def add_http01(self, token: str, key_authorization: str) -> None:
        self.channel.request(
            type="publish", challenge="http-01", token=token, key_authorization=key_authorization
        )

    def remove_http01(self, token: str) -> None:
        self.channel.request(type="withdraw", challenge="http-01", token=token)

    def add_tls_alpn01(self, name: str, key_authorization: str) -> None:
        from mailroom.acme.challenges import alpn_challenge_cert

        cert_pem, key_pem = alpn_challenge_cert(name, key_authorization)  # RFC 8737 §3
        self.channel.request(
            type="publish",
            challenge="tls-alpn-01",
            name=name,
            cert_pem=cert_pem.decode("ascii"),
            key_pem=key_pem.decode("ascii"),
        )

    def remove_tls_alpn01(self, name: str) -> None:
        self.channel.request(type="withdraw", challenge="tls-alpn-01", name=name)


class _Forward(logging.Handler):
    """mailroom's log records go to the server, which logs them as its own lines."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.send(
                type="log", logger=record.name, level=record.levelno, message=record.getMessage()
            )
        except Exception:
            self.handleError(record)


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL if the server goes away, so an order never outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):  # not Linux: the server's timeout still applies
        pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _load(op: str) -> None:
    """Import what ``op`` needs, before saying ready."""
    if op == "issue":
        import mailroom.acme.client  # noqa: F401 - acme, josepy, requests, cryptography
    else:
        import cryptography.x509  # noqa: F401


def _issue(request: dict[str, Any], channel: Channel) -> None:
    from mailroom.acme.client import ACMEIssuer

    available = set(request.get("available", []))
    issuer = ACMEIssuer(
        str(request["directory_url"]),
        str(request.get("email", "")),
        Path(request["account_key"]),
        RemoteResponder(channel),
        ca_file=str(request.get("ca_file", "")),
        timeout=float(request.get("timeout", 90.0)),
        available=lambda typ: typ in available,
    )
    issued = issuer.issue(list(request["names"]), list(request["preference"]))
    channel.send(
        type="issued",
        challenge=issued.challenge,
        fullchain_pem=issued.fullchain_pem.decode("ascii"),
        key_pem=issued.key_pem.decode("ascii"),
    )


def _self_signed(request: dict[str, Any], channel: Channel) -> None:
    from mailroom.acme.selfsigned import make_self_signed

    cert, key = make_self_signed(Path(request["directory"]), str(request["hostname"]))
    channel.send(type="made", cert=str(cert), key=str(key))


def main() -> int:
    # the protocol gets its own copy of stdout; fd 1 becomes stderr, so nothing a library prints
    # can corrupt it
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    channel = Channel(sys.stdin, out)
    try:
        request = channel.receive()
    except (EOFError, ValueError) as exc:
        print(f"mailroom certificate worker: no request: {one_line(exc)}", file=sys.stderr)
        return 2
    _die_with_parent(int(request.get("parent", os.getppid())))
    op = str(request.get("op"))
    if request.get("protocol") != PROTOCOL or op not in ("issue", "self-signed"):
        channel.send(type="ready", protocol=PROTOCOL)  # the server reports the mismatch
        channel.send(type="error", message=f"cannot do {op!r} in protocol {request.get('protocol')!r}")
        return 2
    try:
        _load(op)
    except Exception as exc:  # unreadable or broken installation: the server works in-process
        print(f"mailroom certificate worker: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return EXIT_IMPORT
    channel.send(type="ready", protocol=PROTOCOL)
    root = logging.getLogger("mailroom")
    root.handlers[:] = [_Forward(channel)]
    root.setLevel(int(request.get("log_level", logging.INFO)))
    root.propagate = False
    try:
        if op == "issue":
            _issue(request, channel)
        else:
            _self_signed(request, channel)
    except Exception as exc:
        from mailroom.acme.issued import IssueError

        message = str(exc) if isinstance(exc, IssueError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        try:
            channel.send(type="error", message=one_line(message) or type(exc).__name__)
        except OSError:
            return 1
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the server went away
        os._exit(1)
