"""Test helpers: an auto-deciding fake session and a chasquid-style transcript runner.

A transcript is a list of lines::

    S: 220 mx.example ESMTP mailroom
    C: EHLO client.example
    S: 250-mx.example
    ...

Consecutive ``C:`` lines are sent as one pipelined write; the ``S:`` lines that follow must be
exactly what the engine answers to that write. ``C: <EOF>`` closes the client side and
``TLS`` completes a handshake after an accepted STARTTLS.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BodyAborted,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    Event,
    Hello,
    MailFrom,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
)
from mailroom.wire.smtp.replies import Reply, reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine, State

HOST = "mx.example"

EHLO_LINES = [
    "250-mx.example",
    "250-PIPELINING",
    "250-SIZE 10000",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-ENHANCEDSTATUSCODES",
    "250-CHUNKING",
    "250-BINARYMIME",
    "250 DSN",
]


def config(**kw: object) -> ServerConfig:
    base: dict[str, object] = {"hostname": HOST, "max_message_size": 10000}
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class FakeSession:
    """Accepts everything except:

    - EHLO/HELO names starting with "bad" (550 5.7.1)
    - senders whose address starts with "bad" (550 5.7.1)
    - recipients whose address starts with "reject" (550 5.1.1)
    - bodies containing b"REJECT-ME" (554 5.7.1)
    - AUTH with credentials other than user/secret (535 5.7.8); PLAIN and LOGIN are run with
      challenges when there is no initial response
    - STARTTLS when ``tls_fails`` (454 4.7.0)
    """

    engine: SMTPServerEngine
    tls_fails: bool = False
    events: list[Event] = field(default_factory=list)
    _body: bytearray = field(default_factory=bytearray)
    _sasl: list[bytes] = field(default_factory=list)
    _mech: str = ""

    def pump(self) -> list[Event]:
        """Drain events until the engine needs data (or is closed), deciding as we go."""
        new: list[Event] = []
        while True:
            ev = self.engine.next_event()
            if ev is NEED_DATA:
                break
            if ev is PAUSED:
                # Only an accepted STARTTLS leaves the engine paused here (waiting for TLS).
                assert self.engine.state is State.TLS, "PAUSED without an undecided event"
                break
            assert not isinstance(ev, Sentinel)
            new.append(ev)
            if isinstance(ev, ConnectionClosed):
                break
            self._decide(ev)
        self.events.extend(new)
        return new

    def _decide(self, ev: Event) -> None:
        e = self.engine
        if isinstance(ev, Hello):
            if ev.name.startswith("bad"):
                e.reject(reply(550, "5.7.1", "Go away"))
            else:
                e.accept()
        elif isinstance(ev, MailFrom):
            if ev.address.startswith("bad"):
                e.reject(reply(550, "5.7.1", "Sender rejected"))
            else:
                e.accept()
        elif isinstance(ev, RcptTo):
            if ev.address.startswith("reject"):
                e.reject(reply(550, "5.1.1", "No such user"))
            else:
                e.accept()
        elif isinstance(ev, BodyChunk):
            self._body += ev.data
        elif isinstance(ev, BodyEnd):
            body = bytes(self._body)
            self._body.clear()
            if b"REJECT-ME" in body:
                e.reject(reply(554, "5.7.1", "Content rejected"))
            else:
                e.accept()
        elif isinstance(ev, StartTLS):
            if self.tls_fails:
                e.reject(reply(454, "4.7.0", "TLS not available"))
            else:
                e.accept()
        elif isinstance(ev, AuthStart):
            self._mech = ev.mechanism
            self._sasl = []
            if ev.initial is not None:
                self._sasl.append(ev.initial)
            self._auth_step()
        elif isinstance(ev, AuthResponse):
            self._sasl.append(ev.data)
            self._auth_step()
        elif isinstance(ev, (Reset, BodyAborted)):
            self._body.clear()

    def _auth_step(self) -> None:
        e = self.engine
        if self._mech == "PLAIN":
            if not self._sasl:
                e.auth_challenge(b"")
                return
            ok = self._sasl[0] == b"\0user\0secret"
        else:  # LOGIN
            if len(self._sasl) < 2:
                e.auth_challenge(b"Username:" if not self._sasl else b"Password:")
                return
            ok = self._sasl == [b"user", b"secret"]
        if ok:
            e.accept()
        else:
            e.reject(reply(535, "5.7.8", "Authentication credentials invalid"))


def new_session(cfg: ServerConfig | None = None, **kw: object) -> FakeSession:
    engine = SMTPServerEngine(cfg or config())
    return FakeSession(engine, **kw)  # type: ignore[arg-type]


def run_transcript(transcript: str, cfg: ServerConfig | None = None, **kw: object) -> FakeSession:
    """Play a transcript and assert every server answer byte for byte."""
    sess = new_session(cfg, **kw)
    engine = sess.engine
    engine.greeting()
    steps = _parse(transcript)
    for kind, payload in steps:
        if kind == "C":
            engine.receive_data(payload)
            sess.pump()
        elif kind == "EOF":
            engine.receive_data(b"")
            sess.pump()
        elif kind == "TLS":
            engine.tls_started()
            sess.pump()
        else:
            got = engine.data_to_send()
            assert got.decode("utf-8", "replace") == payload.decode("utf-8", "replace")
    assert engine.data_to_send() == b"", "unexpected trailing server output"
    return sess


def _parse(transcript: str) -> list[tuple[str, bytes]]:
    steps: list[tuple[str, bytes]] = []
    for raw in transcript.strip("\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "TLS":
            steps.append(("TLS", b""))
            continue
        kind, _, text = line.partition(": ")
        if kind not in ("C", "S") and not line.startswith(("C:", "S:")):
            raise ValueError(f"bad transcript line {raw!r}")
        if line in ("C:", "S:"):
            kind, text = line[0], ""
        if kind == "C" and text == "<EOF>":
            steps.append(("EOF", b""))
            continue
        if text.endswith("$"):  # "$" marks the end of a line with trailing spaces
            text = text[:-1]
        data = (text + "\r\n").encode("utf-8")
        if steps and steps[-1][0] == kind:
            steps[-1] = (kind, steps[-1][1] + data)
        else:
            steps.append((kind, data))
    return steps


def client_bytes(transcript: str) -> bytes:
    return b"".join(p for k, p in _parse(transcript) if k == "C")


def normalize(events: Iterable[Event]) -> list[Event]:
    """Merge consecutive BodyChunks (their boundaries depend on how the input was split) and
    drop the repeated ConnectionClosed events a closed engine returns each time it is asked."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, ConnectionClosed) and out and isinstance(out[-1], ConnectionClosed):
            continue
        if isinstance(ev, BodyChunk) and out and isinstance(out[-1], BodyChunk):
            out[-1] = BodyChunk(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def feed_pieces(pieces: Sequence[bytes], cfg: ServerConfig | None = None) -> tuple[list[Event], bytes]:
    """Feed the pieces one by one (pumping after each), then EOF; return events and all output."""
    sess = new_session(cfg)
    out = bytearray()
    for piece in pieces:
        if not piece:
            continue  # b"" would mean EOF
        sess.engine.receive_data(piece)
        sess.pump()
        out += sess.engine.data_to_send()
    sess.engine.receive_data(b"")
    sess.pump()
    out += sess.engine.data_to_send()
    return normalize(sess.events), bytes(out)


def replies_of(events: Iterable[Event]) -> list[Reply]:
    return [ev.reply for ev in events if hasattr(ev, "reply") and isinstance(ev.reply, Reply)]
