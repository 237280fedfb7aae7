"""Wire the client engine to the finished server engine in memory, with a deciding fake session.

Recipients whose local part starts with ``reject`` get 550 5.1.1, ``later`` 451 4.2.0; a sender
``badsender@...`` gets 553 5.7.1; a body containing ``REJECT-BODY`` gets 554 5.6.0. STARTTLS is
accepted and "completed" on both sides without real TLS; AUTH PLAIN/LOGIN accepts user/secret.
``split`` feeds every write in pieces of that size (1 = byte by byte) in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailroom.wire.smtp import client as C
from mailroom.wire.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    AuthStart,
    BodyAborted,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    Hello,
    MailFrom,
    RcptTo,
    StartTLS,
)
from mailroom.wire.smtp.replies import Reply
from mailroom.wire.smtp.server import ServerConfig, SMTPServerEngine

USER, PASSWORD = "user", "secret"


def server_config(**kw: object) -> ServerConfig:
    base: dict[str, object] = {"hostname": "mx.example", "max_message_size": 100_000}
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


@dataclass
class Harness:
    server_cfg: ServerConfig = field(default_factory=server_config)
    client_cfg: C.ClientConfig = field(default_factory=C.ClientConfig)
    split: int = 0
    writes: list[bytes] = field(default_factory=list)  # each client write, as one bytes object
    server_out: list[bytes] = field(default_factory=list)
    mails: list[MailFrom] = field(default_factory=list)
    rcpts: list[RcptTo] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    tls_pending: bool = False
    closed_seen: bool = False

    def __post_init__(self) -> None:
        self.server = SMTPServerEngine(self.server_cfg)
        self.client = C.SMTPClientEngine(self.client_cfg)
        self._body = bytearray()
        self._login_step = 0
        self.server.greeting()

    def _pieces(self, data: bytes) -> list[bytes]:
        if not self.split:
            return [data]
        return [data[i : i + self.split] for i in range(0, len(data), self.split)]

    def _drive_server(self) -> None:
        s = self.server
        while True:
            ev = s.next_event()
            if ev is NEED_DATA or ev is PAUSED or isinstance(ev, ConnectionClosed):
                return
            if isinstance(ev, Hello):
                s.accept()
            elif isinstance(ev, MailFrom):
                self.mails.append(ev)
                if ev.address.startswith("badsender"):
                    s.reject(Reply(553, "5.7.1", ("Sender rejected",)))
                else:
                    s.accept()
            elif isinstance(ev, RcptTo):
                self.rcpts.append(ev)
                if ev.address.startswith("reject"):
                    s.reject(Reply(550, "5.1.1", (f"<{ev.address}>: no such user",)))
                elif ev.address.startswith("later"):
                    s.reject(Reply(451, "4.2.0", ("Try again later",)))
                else:
                    s.accept()
            elif isinstance(ev, BodyChunk):
                self._body += ev.data
            elif isinstance(ev, BodyAborted):
                self._body.clear()
            elif isinstance(ev, BodyEnd):
                body = bytes(self._body)
                self._body.clear()
                self.bodies.append(body)
                if b"REJECT-BODY" in body:
                    s.reject(Reply(554, "5.6.0", ("Content rejected",)))
                else:
                    s.accept()
            elif isinstance(ev, StartTLS):
                s.accept()
                self.tls_pending = True
            elif isinstance(ev, AuthStart):
                if ev.mechanism == "PLAIN":
                    if ev.initial is None:
                        s.auth_challenge(b"")
                    else:
                        self._plain(ev.initial)
                else:
                    self._login_step = 1
                    s.auth_challenge(b"Username:")
            elif isinstance(ev, AuthResponse):
                if self._login_step == 1:
                    self._login_user = ev.data
                    self._login_step = 2
                    s.auth_challenge(b"Password:")
                elif self._login_step == 2:
                    self._login_step = 0
                    ok = self._login_user == USER.encode() and ev.data == PASSWORD.encode()
                    s.accept() if ok else s.reject(Reply(535, "5.7.8", ("Bad credentials",)))
                else:
                    self._plain(ev.data)

    def _plain(self, data: bytes) -> None:
        if data == f"\0{USER}\0{PASSWORD}".encode():
            self.server.accept()
        else:
            self.server.reject(Reply(535, "5.7.8", ("Bad credentials",)))

    def exchange(self, max_rounds: int = 1000) -> list[C.Event]:
        """Move bytes both ways until nothing moves; return the client's events."""
        events: list[C.Event] = []
        for _ in range(max_rounds):
            moved = False
            out = self.client.data_to_send()
            if out:
                moved = True
                self.writes.append(out)
                for piece in self._pieces(out):
                    self.server.receive_data(piece)
                    self._drive_server()
            self._drive_server()
            back = self.server.data_to_send()
            if back:
                moved = True
                self.server_out.append(back)
                for piece in self._pieces(back):
                    self.client.receive_data(piece)
                    events += self._client_events()
            events += self._client_events()
            if self.tls_pending and self.client.state is C.ClientState.TLS:
                self.tls_pending = False
                self.server.tls_started()
                self.client.tls_started()
                moved = True
            if not moved:
                return events
        raise AssertionError("the engines did not settle")

    def _client_events(self) -> list[C.Event]:
        events: list[C.Event] = []
        while not self.closed_seen:
            ev = self.client.next_event()
            if ev is C.NEED_DATA:
                return events
            assert not isinstance(ev, C.Sentinel)
            events.append(ev)
            if isinstance(ev, C.Closed):
                self.closed_seen = True
        return events

    def hello(self, name: str = "client.example") -> C.Capabilities:
        greeting = self.exchange()
        assert [type(e) for e in greeting] == [C.Greeting]
        self.client.ehlo(name)
        (ev,) = self.exchange()
        assert isinstance(ev, C.HelloReply) and ev.capabilities is not None
        return ev.capabilities

    def deliver(self, envelope: C.Envelope, chunks: list[bytes]) -> tuple[list[C.Event], C.TransactionResult]:
        """One whole transaction; returns every client event and the result."""
        self.client.send_mail(envelope)
        events = self.exchange()
        if events and isinstance(events[-1], C.SendBody):
            for chunk in chunks:
                self.client.send_body(chunk)
                events += self.exchange()
            self.client.end_body()
            events += self.exchange()
        done = [e for e in events if isinstance(e, C.TransactionDone)]
        assert len(done) == 1, events
        return events, done[0].result
