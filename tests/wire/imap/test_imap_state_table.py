"""Walk every (state, command) pair through the engine: allowed -> the command's event, else BAD."""

from __future__ import annotations

import pytest
from imap_dialog import engine_in

from mailroom.wire.imap import commands as c
from mailroom.wire.imap.engine import IMAPServerEngine
from mailroom.wire.imap.events import (
    NEED_DATA,
    PAUSED,
    AppendBegin,
    ConnectionClosed,
    Event,
    ProtocolViolation,
)
from mailroom.wire.imap.parser import COMMAND_NAMES
from mailroom.wire.imap.states import COMMAND_STATES, State, allowed

# a minimal valid instance of every command
SAMPLES: dict[str, bytes] = {
    "CAPABILITY": b"CAPABILITY",
    "NOOP": b"NOOP",
    "LOGOUT": b"LOGOUT",
    "ID": b"ID NIL",
    "STARTTLS": b"STARTTLS",
    "AUTHENTICATE": b"AUTHENTICATE PLAIN",
    "LOGIN": b"LOGIN u p",
    "ENABLE": b"ENABLE CONDSTORE",
    "SELECT": b"SELECT INBOX",
    "EXAMINE": b"EXAMINE INBOX",
    "NAMESPACE": b"NAMESPACE",
    "CREATE": b"CREATE x",
    "DELETE": b"DELETE x",
    "RENAME": b"RENAME x y",
    "SUBSCRIBE": b"SUBSCRIBE x",
    "UNSUBSCRIBE": b"UNSUBSCRIBE x",
    "LIST": b'LIST "" *',
    "LSUB": b'LSUB "" *',
    "STATUS": b"STATUS INBOX (MESSAGES)",
    "APPEND": b"APPEND INBOX {1+}\r\nx",
    "IDLE": b"IDLE",
    "GETQUOTAROOT": b"GETQUOTAROOT INBOX",
    "GETQUOTA": b'GETQUOTA ""',
    "CHECK": b"CHECK",
    "CLOSE": b"CLOSE",
    "UNSELECT": b"UNSELECT",
    "EXPUNGE": b"EXPUNGE",
    "SEARCH": b"SEARCH ALL",
    "FETCH": b"FETCH 1 FLAGS",
    "STORE": b"STORE 1 FLAGS ()",
    "COPY": b"COPY 1 x",
    "MOVE": b"MOVE 1 x",
    "UID SEARCH": b"UID SEARCH ALL",
    "UID FETCH": b"UID FETCH 1 FLAGS",
    "UID STORE": b"UID STORE 1 FLAGS ()",
    "UID COPY": b"UID COPY 1 x",
    "UID MOVE": b"UID MOVE 1 x",
    "UID EXPUNGE": b"UID EXPUNGE 1",
}

STATES = [State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED, State.LOGOUT]
PAIRS = [(s, n) for s in STATES for n in sorted(SAMPLES)]


def test_samples_and_table_cover_every_command() -> None:
    assert set(SAMPLES) == set(COMMAND_STATES) == set(COMMAND_NAMES)


def test_table_matches_rfc_9051_section_6() -> None:
    any_state = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
    not_auth = {"STARTTLS", "AUTHENTICATE", "LOGIN"}
    selected_only = {n for n in COMMAND_STATES if n.startswith("UID ")}
    selected_only |= {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE"}
    for name in COMMAND_STATES:
        got = {s for s in STATES if allowed(name, s)}
        if name in any_state:
            assert got == {State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED}, name
        elif name in not_auth:
            assert got == {State.NOT_AUTHENTICATED}, name
        elif name in selected_only:
            assert got == {State.SELECTED}, name
        elif name == "ENABLE":
            assert got == {State.AUTHENTICATED}, name
        else:
            assert got == {State.AUTHENTICATED, State.SELECTED}, name
    assert not allowed("XYZZY", State.SELECTED)


def _first_events(engine: IMAPServerEngine) -> list[Event]:
    events: list[Event] = []
    while (ev := engine.next_event()) is not NEED_DATA and ev is not PAUSED:
        events.append(ev)
        if isinstance(ev, ConnectionClosed | c.Command | AppendBegin):
            break
    return events


@pytest.mark.parametrize(("state", "name"), PAIRS, ids=[f"{s.name}-{n}" for s, n in PAIRS])
def test_state_command_pair(state: State, name: str) -> None:
    # cleartext with STARTTLS offered and LOGIN permitted, so that only the state decides
    engine = engine_in(state, tls_active=False, starttls_available=True, login_requires_tls=False)
    engine.receive_data(b"t1 " + SAMPLES[name] + b"\r\n")
    events = _first_events(engine)
    if state is State.LOGOUT:
        assert events == [ConnectionClosed("logout")]
        return
    if allowed(name, state):
        assert len(events) == 1, events
        event = events[0]
        if name == "APPEND":
            assert isinstance(event, AppendBegin) and event.tag == "t1"
        else:
            assert isinstance(event, c.Command) and event.name == name and event.tag == "t1"
        assert engine.data_to_send() == b""
    else:
        assert len(events) == 1 and isinstance(events[0], ProtocolViolation), events
        assert engine.data_to_send() == (
            b"t1 BAD " + name.encode() + b" is not valid in the " + state.value.encode() + b" state\r\n"
        )
        # and the engine is ready for the next command
        engine.receive_data(b"t2 NOOP\r\n")
        assert engine.next_event() == c.Noop("t2")
