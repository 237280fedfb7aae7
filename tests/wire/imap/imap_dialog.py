"""Test helpers: drive an IMAPServerEngine with a scripted, always-agreeable session."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.engine import IMAPServerConfig, IMAPServerEngine
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendChunk,
    AppendEnd,
    AuthResponse,
    ConnectionClosed,
    Event,
    IdleDone,
)
from mailroom.wire.imap.responses import Tagged, Untagged
from mailroom.wire.imap.states import State


def config(**overrides: object) -> IMAPServerConfig:
    base: dict[str, object] = {"tls_active": True, "starttls_available": False}
    base.update(overrides)
    return IMAPServerConfig(**base)  # type: ignore[arg-type]


def engine_in(state: State, **overrides: object) -> IMAPServerEngine:
    engine = IMAPServerEngine(config(**overrides))
    if state in (State.AUTHENTICATED, State.SELECTED):
        engine.logged_in()
    if state is State.SELECTED:
        engine.selected()
    if state is State.LOGOUT:
        engine.logout()
    return engine


@dataclass
class Session:
    """Answers every command OK and applies its state change, the way a real session would."""

    engine: IMAPServerEngine
    events: list[Event] = field(default_factory=list)
    tls_handshakes: int = 0

    def respond(self, event: Event) -> None:
        e = self.engine
        match event:
            case c.Login():
                e.logged_in()
                e.send(Tagged(event.tag, "OK", "LOGIN completed"))
            case c.Authenticate():
                e.auth_challenge(b"")
            case AuthResponse():
                if e.state is State.NOT_AUTHENTICATED:
                    e.logged_in()
                e.send(Tagged(event.tag, "OK", "AUTHENTICATE completed"))
            case c.Select() | c.Examine():
                e.selected(read_only=event.read_only)
                e.send(Tagged(event.tag, "OK", "selected"))
            case c.Close() | c.Unselect():
                e.unselected()
                e.send(Tagged(event.tag, "OK", "closed"))
            case c.StartTLS():
                e.send(Tagged(event.tag, "OK", "Begin TLS"))
                self.tls_handshakes += 1
                e.tls_started()
            case c.Idle():
                e.accept_idle()
            case IdleDone(ok=True):
                e.send(Tagged(event.tag, "OK", "IDLE done"))
            case c.Logout():
                e.logout()
                e.send(Untagged("BYE", "bye"))
                e.send(Tagged(event.tag, "OK", "LOGOUT completed"))
            case AppendEnd(last=True):
                e.send(Tagged(event.tag, "OK", "APPEND completed"))
            case c.Command():
                e.send(Tagged(event.tag, "OK", f"{event.name} completed"))
            case _:
                pass

    def drain(self) -> None:
        if self.events and isinstance(self.events[-1], ConnectionClosed):
            return  # the engine repeats ConnectionClosed forever; record it once
        while True:
            event = self.engine.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                return
            self.respond(event)


def merge_chunks(events: Iterable[Event]) -> list[Event]:
    """Chunk boundaries carry no meaning: join consecutive AppendChunks."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, AppendChunk) and out and isinstance(out[-1], AppendChunk):
            out[-1] = AppendChunk(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def run(
    pieces: Iterable[bytes], *, state: State = State.NOT_AUTHENTICATED, **overrides: object
) -> tuple[list[Event], bytes]:
    """Feed ``pieces`` one by one (draining events after each), then EOF; return (events, output)."""
    engine = engine_in(state, **overrides)
    session = Session(engine)
    out = bytearray()
    for piece in pieces:
        engine.receive_data(piece)
        session.drain()
        out += engine.data_to_send()
    engine.receive_data(b"")
    session.drain()
    out += engine.data_to_send()
    return merge_chunks(session.events), bytes(out)


def run_bytes(data: bytes, **kwargs: object) -> tuple[list[Event], bytes]:
    return run([data], **kwargs)  # type: ignore[arg-type]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def commands(events: Iterable[Event]) -> list[c.Command]:
    return [e for e in events if isinstance(e, c.Command)]
