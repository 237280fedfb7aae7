import base64
import hashlib
import hmac
import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroom.wire.errors import LocalProtocolError
from mailroom.wire.pop3 import (
    COMMANDS,
    NEED_DATA,
    PAUSED,
    AuthCancelled,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    DropEntry,
    Event,
    POP3Config,
    POP3ServerEngine,
    ProtocolViolation,
    Quit,
    Retrieve,
    StartTLS,
    State,
    Update,
    UserPass,
)
from mailroom.wire.sasl import (
    Challenge,
    CheckPassword,
    Failure,
    Mechanism,
    NeedScramCredentials,
    Result,
    Success,
    new_mechanism,
    scram_keys_from_password,
)

ACCOUNTS = {"alice": "secret", "bob": "pass word"}
SALT = b"0123456789abcdef"
SCRAM = {"alice": scram_keys_from_password("secret", SALT, 4096)}

M1 = b"Subject: one\r\n\r\nHello\r\n.hidden dot\r\n..two dots\r\nend\r\n"
M1_STUFFED = b"Subject: one\r\n\r\nHello\r\n..hidden dot\r\n...two dots\r\nend\r\n"
M2 = b"Subject: two\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\nline3\r\nline4\r\n.\r\nline6"  # no final CRLF
M2_HEAD = b"Subject: two\r\nFrom: a@b\r\n\r\n"
M3 = b"Subject: three\r\n\r\nbye\r\n"
MESSAGES = (M1, M2, M3)
DROP = tuple(DropEntry(len(m), f"uid-{i + 1}") for i, m in enumerate(MESSAGES))
TOTAL = sum(len(m) for m in MESSAGES)

PLAINTEXT = POP3Config(tls_active=False, stls_available=True)
TLS = POP3Config(tls_active=True, stls_available=False, sasl_mechanisms=("SCRAM-SHA-256", "PLAIN", "LOGIN"))

GREETING = b"+OK mailroom POP3 server ready\r\n"
BYE = b"+OK mailroom POP3 server signing off\r\n"
CAPA_PLAIN = (
    b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    b"STLS\r\nIMPLEMENTATION mailroom\r\n.\r\n"
)
CAPA_TLS = (
    b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    b"USER\r\nSASL SCRAM-SHA-256 PLAIN LOGIN\r\nIMPLEMENTATION mailroom\r\n.\r\n"
)
LOGGED_IN = b"+OK maildrop has 3 messages (%d octets)\r\n" % TOTAL
TLS_REQUIRED = b"-ERR [AUTH] TLS required\r\n"
NOT_IN_STATE = b"-ERR command not valid in this state\r\n"
UNKNOWN = b"-ERR unknown command\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class FakeSession:
    """What the asyncio session does, synchronously: answers every decision at once."""

    def __init__(
        self,
        config: POP3Config = TLS,
        *,
        messages: tuple[bytes, ...] = MESSAGES,
        chunk: int | None = None,
        in_use: bool = False,
        update_ok: bool = True,
        retrieve_ok: bool = True,
        auto_tls: bool = True,
    ) -> None:
        self.engine = POP3ServerEngine(config)
        self.messages = messages
        self.drop = tuple(DropEntry(len(m), f"uid-{i + 1}") for i, m in enumerate(messages))
        self.chunk = chunk
        self.in_use = in_use
        self.update_ok = update_ok
        self.retrieve_ok = retrieve_ok
        self.auto_tls = auto_tls
        self.out = bytearray()
        self.events: list[Event] = []
        self.mech: Mechanism | None = None
        self.deleted: tuple[int, ...] | None = None
        self.closed = False
        self.data_calls = 0
        self.engine.greeting()
        self.flush()

    def flush(self) -> None:
        self.out += self.engine.data_to_send()

    def feed(self, data: bytes) -> bytes:
        start = len(self.out)
        self.engine.receive_data(data)
        self.pump()
        return bytes(self.out[start:])

    def pump(self) -> None:
        while True:
            ev = self.engine.next_event()
            self.flush()
            if ev is NEED_DATA or ev is PAUSED:
                return
            assert isinstance(ev, Event)
            if isinstance(ev, ConnectionClosed):
                self.closed = True
                return
            self.events.append(ev)
            self.handle(ev)
            self.flush()

    def handle(self, ev: Event) -> None:
        e = self.engine
        if isinstance(ev, UserPass):
            if ACCOUNTS.get(ev.username) != ev.password:
                e.reject("authentication failed", "AUTH")
            elif self.in_use:
                e.reject("maildrop is locked", "IN-USE")
            else:
                e.login_succeeded(self.drop)
        elif isinstance(ev, AuthStart):
            self.mech = new_mechanism(ev.mechanism, random_bytes=lambda n: b"N" * n)
            assert self.mech is not None
            self.drive(self.mech.start(ev.initial))
        elif isinstance(ev, AuthResponse):
            assert self.mech is not None
            self.drive(self.mech.step(ev.data))
        elif isinstance(ev, AuthCancelled):
            self.mech = None
        elif isinstance(ev, StartTLS):
            e.accept()
            if self.auto_tls:
                e.tls_started()
        elif isinstance(ev, Retrieve):
            if not self.retrieve_ok:
                e.reject("message vanished", "SYS/TEMP")
                return
            e.begin_message()
            self.flush()
            data = self.messages[ev.index]
            step = self.chunk or len(data) or 1
            for off in range(0, len(data), step):
                if not e.wants_more_message_data:
                    break
                e.message_data(data[off : off + step])
                self.data_calls += 1
                self.flush()
            e.end_message()
        elif isinstance(ev, Update):
            self.deleted = ev.deleted
            if self.update_ok:
                e.accept()
            else:
                e.reject("some deleted messages not removed", "SYS/TEMP")

    def drive(self, res: Result) -> None:
        e, mech = self.engine, self.mech
        assert mech is not None
        while True:
            if isinstance(res, Challenge):
                e.auth_challenge(res.data)
                return
            if isinstance(res, CheckPassword):
                res = mech.password_result(ACCOUNTS.get(res.username) == res.password)
            elif isinstance(res, NeedScramCredentials):
                res = mech.scram_credentials(SCRAM.get(res.username))
            elif isinstance(res, Success):
                if res.final_data is not None:
                    e.auth_challenge(res.final_data)  # RFC 5034: no additional data with +OK
                    return
                e.login_succeeded(self.drop, username=res.username)
                self.mech = None
                return
            else:
                assert isinstance(res, Failure)
                e.reject("authentication failed", "AUTH")
                self.mech = None
                return


def logged_in(config: POP3Config = TLS, **kw: object) -> FakeSession:
    s = FakeSession(config, **kw)  # type: ignore[arg-type]
    assert s.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n" + LOGGED_IN
    return s


def violations(s: FakeSession) -> list[ProtocolViolation]:
    return [ev for ev in s.events if isinstance(ev, ProtocolViolation)]


# ---------------------------------------------------------------------------------------------
# Every (state, command) pair


RETR1 = b"+OK %d octets\r\n" % len(M1) + M1_STUFFED + b".\r\n"
SCAN = b"+OK 3 messages (%d octets)\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n" % (TOTAL, len(M1), len(M2), len(M3))
UIDS = b"+OK\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"

STATE_TABLE: dict[bytes, tuple[bytes, bytes, bytes]] = {
    # command:         AUTHORIZATION (plaintext), AUTHORIZATION (TLS), TRANSACTION
    b"USER alice": (TLS_REQUIRED, b"+OK\r\n", NOT_IN_STATE),
    b"PASS secret": (TLS_REQUIRED, b"-ERR no USER given\r\n", NOT_IN_STATE),
    b"AUTH PLAIN": (TLS_REQUIRED, b"+ \r\n", NOT_IN_STATE),
    b"STLS": (
        b"+OK Begin TLS negotiation\r\n",
        b"-ERR command not permitted when TLS active\r\n",
        NOT_IN_STATE,
    ),
    b"CAPA": (CAPA_PLAIN, CAPA_TLS, CAPA_TLS),
    b"QUIT": (BYE, BYE, BYE),
    b"STAT": (NOT_IN_STATE, NOT_IN_STATE, b"+OK 3 %d\r\n" % TOTAL),
    b"LIST": (NOT_IN_STATE, NOT_IN_STATE, SCAN),
    b"RETR 1": (NOT_IN_STATE, NOT_IN_STATE, RETR1),
    b"DELE 1": (NOT_IN_STATE, NOT_IN_STATE, b"+OK message 1 deleted\r\n"),
    b"NOOP": (NOT_IN_STATE, NOT_IN_STATE, b"+OK\r\n"),
    b"RSET": (NOT_IN_STATE, NOT_IN_STATE, LOGGED_IN),
    b"TOP 1 0": (NOT_IN_STATE, NOT_IN_STATE, b"+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n"),
    b"UIDL": (NOT_IN_STATE, NOT_IN_STATE, UIDS),
    b"APOP alice c4c9334bac560ecc979e58001b3e22fb": (UNKNOWN, UNKNOWN, UNKNOWN),
    b"XYZZY": (UNKNOWN, UNKNOWN, UNKNOWN),
}


def session_in(state: str) -> FakeSession:
    if state == "auth-plaintext":
        return FakeSession(PLAINTEXT, auto_tls=False)
    if state == "auth-tls":
        return FakeSession(TLS)
    return logged_in()


@pytest.mark.parametrize("state_index", [0, 1, 2], ids=["auth-plaintext", "auth-tls", "transaction"])
@pytest.mark.parametrize("command", list(STATE_TABLE))
def test_state_command_table(state_index: int, command: bytes) -> None:
    state = ["auth-plaintext", "auth-tls", "transaction"][state_index]
    s = session_in(state)
    assert s.feed(command + b"\r\n") == STATE_TABLE[command][state_index]


def test_state_table_covers_every_command() -> None:
    keywords = {cmd.split(b" ")[0].decode() for cmd in STATE_TABLE}
    assert set().union(*COMMANDS.values()) <= keywords
    assert COMMANDS[State.UPDATE] == frozenset()


@pytest.mark.parametrize("command", list(STATE_TABLE))
def test_update_state_reads_no_command(command: bytes) -> None:
    # RFC 1939 §6: QUIT in TRANSACTION enters UPDATE; anything pipelined after it is never read
    s = logged_in()
    assert s.feed(b"QUIT\r\n" + command + b"\r\n") == BYE
    assert s.closed
    assert s.deleted == ()


def test_update_state_is_entered_before_the_decision() -> None:
    e = POP3ServerEngine(TLS)
    e.receive_data(b"USER alice\r\nPASS secret\r\n")
    assert e.next_event() == UserPass("alice", "secret")
    e.login_succeeded(DROP)
    e.receive_data(b"DELE 2\r\nQUIT\r\nNOOP\r\n")
    assert e.next_event() == Update((1,), ("uid-2",))
    assert e.state is State.UPDATE
    assert e.next_event() is PAUSED
    e.accept()
    assert e.data_to_send() == b"+OK\r\n" + LOGGED_IN + b"+OK message 2 deleted\r\n" + BYE
    assert e.closed
    assert e.next_event() == ConnectionClosed()
    assert e.next_event() == ConnectionClosed()


# ---------------------------------------------------------------------------------------------
# A full session, fed every way


FULL_CLIENT = b"".join(
    line + b"\r\n"
    for line in [
        b"CAPA",
        b"USER alice",
        b"PASS secret",
        b"STAT",
        b"LIST",
        b"LIST 2",
        b"UIDL",
        b"UIDL 3",
        b"RETR 1",
        b"RETR 2",
        b"TOP 2 0",
        b"TOP 2 3",
        b"TOP 2 99",
        b"DELE 1",
        b"STAT",
        b"LIST",
        b"UIDL",
        b"RETR 1",
        b"DELE 1",
        b"RSET",
        b"DELE 2",
        b"QUIT",
    ]
)
FULL_SERVER = b"".join(
    [
        GREETING,
        CAPA_TLS,
        b"+OK\r\n",
        LOGGED_IN,
        b"+OK 3 %d\r\n" % TOTAL,
        SCAN,
        b"+OK 2 %d\r\n" % len(M2),
        UIDS,
        b"+OK 3 uid-3\r\n",
        RETR1,
        b"+OK %d octets\r\n" % len(M2),
        M2_HEAD + b"line1\r\nline2\r\nline3\r\nline4\r\n..\r\nline6\r\n.\r\n",
        b"+OK top of message follows\r\n" + M2_HEAD + b".\r\n",
        b"+OK top of message follows\r\n" + M2_HEAD + b"line1\r\nline2\r\nline3\r\n.\r\n",
        b"+OK top of message follows\r\n"
        + M2_HEAD
        + b"line1\r\nline2\r\nline3\r\nline4\r\n..\r\nline6\r\n.\r\n",
        b"+OK message 1 deleted\r\n",
        b"+OK 2 %d\r\n" % (len(M2) + len(M3)),
        b"+OK 2 messages (%d octets)\r\n2 %d\r\n3 %d\r\n.\r\n" % (len(M2) + len(M3), len(M2), len(M3)),
        b"+OK\r\n2 uid-2\r\n3 uid-3\r\n.\r\n",
        b"-ERR message 1 is deleted\r\n",
        b"-ERR message 1 is deleted\r\n",
        LOGGED_IN,
        b"+OK message 2 deleted\r\n",
        BYE,
    ]
)


def run_chunks(chunks: list[bytes], chunk: int | None = None) -> FakeSession:
    s = FakeSession(TLS, chunk=chunk)
    for c in chunks:
        if c:  # b"" would mean end of file
            s.feed(c)
    return s


def test_full_session() -> None:
    s = run_chunks([FULL_CLIENT])
    assert bytes(s.out) == FULL_SERVER
    assert s.closed
    assert s.deleted == (1,)
    assert s.engine.username == "alice"
    retrieves = [ev for ev in s.events if isinstance(ev, Retrieve)]
    assert retrieves == [
        Retrieve(0, "uid-1", None),
        Retrieve(1, "uid-2", None),
        Retrieve(1, "uid-2", 0),
        Retrieve(1, "uid-2", 3),
        Retrieve(1, "uid-2", 99),
    ]
    assert Update((1,), ("uid-2",)) in s.events


def test_full_session_byte_by_byte() -> None:
    s = run_chunks([bytes([b]) for b in FULL_CLIENT])
    assert bytes(s.out) == FULL_SERVER


def test_full_session_split_at_every_offset() -> None:
    for i in range(len(FULL_CLIENT) + 1):
        s = run_chunks([FULL_CLIENT[:i], FULL_CLIENT[i:]])
        assert bytes(s.out) == FULL_SERVER, i


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13])
def test_full_session_message_streamed_in_chunks(chunk: int) -> None:
    assert bytes(run_chunks([FULL_CLIENT], chunk=chunk).out) == FULL_SERVER


def test_pipelined_commands_answered_in_order() -> None:
    lines = FULL_CLIENT.split(b"\r\n")[:-1]
    s = FakeSession(TLS)
    answers = [s.feed(line + b"\r\n") for line in lines]
    assert GREETING + b"".join(answers) == FULL_SERVER
    assert all(answers)  # lock-step: every command got its own answer before the next was sent
    assert bytes(run_chunks([FULL_CLIENT]).out) == FULL_SERVER  # the same, all in one packet


# ---------------------------------------------------------------------------------------------
# STLS and credentials before TLS


def test_stls_discards_pipelined_plaintext() -> None:
    s = FakeSession(PLAINTEXT, auto_tls=False)
    out = s.feed(b"STLS\r\nUSER alice\r\nPASS secret\r\nCAPA\r\n")
    assert out == b"+OK Begin TLS negotiation\r\n"
    assert s.engine.next_event() is PAUSED
    s.engine.tls_started()
    s.pump()
    assert bytes(s.out) == GREETING + b"+OK Begin TLS negotiation\r\n"  # nothing injected ran
    assert s.events == [StartTLS()]
    assert s.engine.next_event() is NEED_DATA


def test_stls_then_login() -> None:
    s = FakeSession(PLAINTEXT, auto_tls=False)
    s.feed(b"USER alice\r\nSTLS\r\n")
    s.engine.tls_started()
    s.pump()
    assert s.engine.tls_active
    # RFC 2595 §4: what was learnt before TLS is forgotten; USER must come again
    assert s.feed(b"PASS secret\r\n") == b"-ERR no USER given\r\n"
    caps = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    assert s.feed(b"CAPA\r\n") == caps + b"USER\r\nSASL PLAIN\r\nIMPLEMENTATION mailroom\r\n.\r\n"
    assert s.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n" + LOGGED_IN
    assert s.feed(b"STLS\r\n") == NOT_IN_STATE


def test_stls_rejected_keeps_plaintext_going() -> None:
    e = POP3ServerEngine(PLAINTEXT)
    e.receive_data(b"STLS\r\nCAPA\r\n")
    assert e.next_event() == StartTLS()
    e.reject("TLS not available now", "SYS/TEMP")
    assert e.next_event() is NEED_DATA
    assert e.data_to_send() == b"-ERR [SYS/TEMP] TLS not available now\r\n" + CAPA_PLAIN
    assert not e.tls_active


def test_credentials_refused_before_tls() -> None:
    s = FakeSession(PLAINTEXT)
    out = s.feed(b"USER alice\r\nPASS secret\r\nAUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\nAUTH\r\n")
    assert out == TLS_REQUIRED * 4
    assert not any(isinstance(ev, UserPass | AuthStart) for ev in s.events)
    assert s.engine._user is None  # the user name was not even stored


def test_no_tls_at_all() -> None:
    s = FakeSession(POP3Config(tls_active=False, stls_available=False))
    caps = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    assert s.feed(b"CAPA\r\n") == caps + b"IMPLEMENTATION mailroom\r\n.\r\n"
    assert s.feed(b"STLS\r\n") == b"-ERR STLS not available\r\n"


def test_capa_variants() -> None:
    cfg = POP3Config(tls_active=True, stls_available=True, sasl_mechanisms=(), implementation="")
    s = FakeSession(cfg)
    assert bytes(s.out) == b"+OK POP3 server ready\r\n"
    caps = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    assert s.feed(b"CAPA\r\n") == caps + b"USER\r\n.\r\n"
    assert s.feed(b"capa extra\r\n") == b"-ERR syntax error\r\n"
    assert s.feed(b"QUIT\r\n") == b"+OK signing off\r\n"


# ---------------------------------------------------------------------------------------------
# USER / PASS


def test_user_pass_failure_and_in_use() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"USER alice\r\nPASS wrong\r\n") == b"+OK\r\n" + AUTH_FAILED
    assert s.feed(b"PASS secret\r\n") == b"-ERR no USER given\r\n"  # RFC 1939 §7: USER again
    assert s.engine.state is State.AUTHORIZATION
    s.in_use = True
    assert s.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n-ERR [IN-USE] maildrop is locked\r\n"
    assert s.engine.username is None


def test_pass_keeps_spaces_and_user_is_case_insensitive_keyword() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"user bob\r\npass pass word\r\n") == b"+OK\r\n" + LOGGED_IN
    assert UserPass("bob", "pass word") in s.events
    assert "pass word" not in repr(UserPass("bob", "pass word"))


def test_user_pass_bare_lf_and_leading_space_in_password() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"USER alice\nPASS  secret\n") == b"+OK\r\n" + AUTH_FAILED
    assert UserPass("alice", " secret") in s.events


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (b"USER\r\n", b"-ERR missing user name\r\n"),
        (b"USER \r\n", b"-ERR missing user name\r\n"),
        (b"USER a\x01b\r\n", b"-ERR invalid characters in user name\r\n"),
        (b"USER a\rb\r\n", b"-ERR invalid characters in user name\r\n"),
        (b"USER \xff\r\n", b"-ERR user name is not UTF-8\r\n"),
        (b"USER alice\r\nPASS\r\n", b"+OK\r\n-ERR missing password\r\n"),
        (b"USER alice\r\nPASS a\0b\r\n", b"+OK\r\n-ERR invalid characters in password\r\n"),
        (b"USER alice\r\nPASS \xff\r\n", b"+OK\r\n-ERR password is not UTF-8\r\n"),
    ],
)
def test_user_pass_syntax(lines: bytes, reply: bytes) -> None:
    s = FakeSession(TLS)
    assert s.feed(lines) == reply
    assert not any(isinstance(ev, UserPass) for ev in s.events)


def test_user_pass_utf8() -> None:
    s = FakeSession(TLS)
    s.feed("USER jörg\r\nPASS pässword\r\n".encode())
    assert UserPass("jörg", "pässword") in s.events


# ---------------------------------------------------------------------------------------------
# AUTH (RFC 5034)


def test_auth_plain_initial_response() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n") == LOGGED_IN
    assert s.engine.state is State.TRANSACTION
    assert s.engine.username == "alice"
    assert AuthStart("PLAIN", b"\0alice\0secret") in s.events


def test_auth_plain_challenge() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"auth plain\r\n") == b"+ \r\n"  # RFC 5034 §4: empty challenge is "+ "
    assert s.feed(b64(b"\0alice\0secret") + b"\r\n") == LOGGED_IN


def test_auth_plain_empty_initial_response_and_wrong_password() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"AUTH PLAIN =\r\n") == AUTH_FAILED
    assert AuthStart("PLAIN", b"") in s.events
    assert s.feed(b"AUTH PLAIN " + b64(b"\0alice\0nope") + b"\r\n") == AUTH_FAILED
    assert s.engine.state is State.AUTHORIZATION


def test_auth_login() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"AUTH LOGIN\r\n") == b"+ " + b64(b"Username:") + b"\r\n"
    assert s.feed(b64(b"alice") + b"\r\n") == b"+ " + b64(b"Password:") + b"\r\n"
    assert s.feed(b64(b"secret") + b"\r\n") == LOGGED_IN


def test_auth_cancel() -> None:
    s = FakeSession(TLS)
    s.feed(b"AUTH LOGIN\r\n")
    assert s.feed(b"*\r\n") == b"-ERR authentication cancelled\r\n"  # RFC 5034 §4
    assert AuthCancelled() in s.events
    assert not violations(s)
    assert s.feed(b"USER alice\r\nPASS secret\r\n") == b"+OK\r\n" + LOGGED_IN


def test_auth_response_bad_base64() -> None:
    s = FakeSession(TLS)
    s.feed(b"AUTH PLAIN\r\n")
    assert s.feed(b"!!!!\r\n") == b"-ERR invalid base64 in SASL response\r\n"
    assert s.feed(b"CAPA\r\n") == CAPA_TLS  # back to commands


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"AUTH CRAM-MD5", b"-ERR unsupported authentication mechanism\r\n"),
        (b"AUTH PLAIN !!!!", b"-ERR invalid base64 in initial response\r\n"),
        (b"AUTH PLAIN AGE", b"-ERR invalid base64 in initial response\r\n"),
        (b"AUTH PLAIN a b", b"-ERR syntax error\r\n"),
        (b"AUTH", b"+OK\r\nSCRAM-SHA-256\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
    ],
)
def test_auth_command_errors(line: bytes, reply: bytes) -> None:
    s = FakeSession(TLS)
    assert s.feed(line + b"\r\n") == reply
    assert not any(isinstance(ev, AuthStart) for ev in s.events)


def scram_client_final(bare: bytes, server_first: bytes, password: str) -> tuple[bytes, bytes]:
    attrs = dict(part.split(b"=", 1) for part in server_first.split(b","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs[b"s"]), int(attrs[b"i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without = b"c=biws,r=" + attrs[b"r"]
    auth = bare + b"," + server_first + b"," + without
    sig = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return without + b",p=" + b64(proof), b"v=" + b64(hmac.new(server_key, auth, "sha256").digest())


def test_auth_scram_sha_256_with_final_data_as_challenge() -> None:
    s = FakeSession(TLS)
    bare = b"n=alice,r=clientnonce"
    server_first = b"r=clientnonce" + b"N" * 30 + b",s=" + b64(SALT) + b",i=4096"
    assert (
        s.feed(b"AUTH SCRAM-SHA-256 " + b64(b"n,," + bare) + b"\r\n") == b"+ " + b64(server_first) + b"\r\n"
    )
    final, verifier = scram_client_final(bare, server_first, "secret")
    # RFC 5034 / RFC 4422 §3.6: the server-final goes out as a challenge, answered by an empty line
    assert s.feed(b64(final) + b"\r\n") == b"+ " + b64(verifier) + b"\r\n"
    assert s.feed(b"\r\n") == LOGGED_IN
    assert s.engine.username == "alice"


def test_auth_scram_wrong_password_and_bad_ack() -> None:
    s = FakeSession(TLS)
    bare = b"n=alice,r=cn"
    server_first = b"r=cn" + b"N" * 30 + b",s=" + b64(SALT) + b",i=4096"
    s.feed(b"AUTH SCRAM-SHA-256 " + b64(b"n,," + bare) + b"\r\n")
    final, _ = scram_client_final(bare, server_first, "wrong")
    assert s.feed(b64(final) + b"\r\n") == AUTH_FAILED
    s.feed(b"AUTH SCRAM-SHA-256 " + b64(b"n,," + bare) + b"\r\n")
    final, _ = scram_client_final(bare, server_first, "secret")
    s.feed(b64(final) + b"\r\n")
    assert s.feed(b64(b"junk") + b"\r\n") == AUTH_FAILED


def test_auth_long_sasl_response_allowed_but_capped() -> None:
    s = FakeSession(TLS)
    s.feed(b"AUTH PLAIN\r\n")
    long_response = b64(b"\0alice\0" + b"x" * 2000)
    assert len(long_response) > TLS.max_line
    assert s.feed(long_response + b"\r\n") == AUTH_FAILED
    assert s.engine._buffer.max_line == TLS.max_line
    s.feed(b"AUTH PLAIN\r\n")
    assert s.feed(b"A" * (TLS.max_auth_line + 10) + b"\r\n") == b"-ERR line too long\r\n"
    assert s.feed(b"CAPA\r\n") == CAPA_TLS
    assert s.feed(b"X" * 600 + b"\r\n") == b"-ERR line too long\r\n"  # command lines: max_line again


def test_sasl_eof_during_exchange() -> None:
    s = FakeSession(TLS)
    s.feed(b"AUTH PLAIN\r\n")
    s.feed(b"")
    assert s.closed


# ---------------------------------------------------------------------------------------------
# TRANSACTION details


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RETR +1", b"-ERR invalid number\r\n"),
        (b"RETR -1", b"-ERR invalid number\r\n"),
        (b"RETR 1a", b"-ERR invalid number\r\n"),
        (b"RETR 1_0", b"-ERR invalid number\r\n"),
        (b"RETR \xd9\xa1", b"-ERR invalid number\r\n"),  # ARABIC-INDIC DIGIT ONE
        (b"RETR 00000000001", b"-ERR invalid number\r\n"),  # 11 digits
        (b"LIST 99999999999999999999", b"-ERR invalid number\r\n"),
        (b"RETR 0", b"-ERR no such message\r\n"),
        (b"RETR 4", b"-ERR no such message\r\n"),
        (b"LIST 9999999999", b"-ERR no such message\r\n"),
        (b"RETR", b"-ERR syntax error\r\n"),
        (b"RETR 1 2", b"-ERR syntax error\r\n"),
        (b"TOP 1", b"-ERR syntax error\r\n"),
        (b"TOP 1 -1", b"-ERR invalid number\r\n"),
        (b"TOP 9 1", b"-ERR no such message\r\n"),
        (b"DELE", b"-ERR syntax error\r\n"),
        (b"STAT 1", b"-ERR syntax error\r\n"),
        (b"NOOP x", b"-ERR syntax error\r\n"),
        (b"RSET x", b"-ERR syntax error\r\n"),
        (b"QUIT now", b"-ERR syntax error\r\n"),
        (b"UIDL 1 2", b"-ERR syntax error\r\n"),
        (b"LIST 0000000002", b"+OK 2 %d\r\n" % len(M2)),
        (b"LIST  2 ", b"+OK 2 %d\r\n" % len(M2)),
        (b"list 3", b"+OK 3 %d\r\n" % len(M3)),
        (b"", UNKNOWN),
        (b"NOOP\x00", UNKNOWN),
        (b"\xffNOOP", UNKNOWN),
    ],
)
def test_transaction_argument_parsing(line: bytes, reply: bytes) -> None:
    s = logged_in()
    assert s.feed(line + b"\r\n") == reply


def test_deleted_messages_are_hidden() -> None:
    s = logged_in()
    assert s.feed(b"DELE 2\r\n") == b"+OK message 2 deleted\r\n"
    rest = len(M1) + len(M3)
    assert s.feed(b"STAT\r\n") == b"+OK 2 %d\r\n" % rest
    assert s.feed(b"LIST\r\n") == b"+OK 2 messages (%d octets)\r\n1 %d\r\n3 %d\r\n.\r\n" % (
        rest,
        len(M1),
        len(M3),
    )
    assert s.feed(b"UIDL\r\n") == b"+OK\r\n1 uid-1\r\n3 uid-3\r\n.\r\n"
    for cmd in (b"LIST 2", b"UIDL 2", b"RETR 2", b"TOP 2 0", b"DELE 2"):
        assert s.feed(cmd + b"\r\n") == b"-ERR message 2 is deleted\r\n", cmd
    assert s.feed(b"DELE 1\r\nDELE 3\r\nSTAT\r\nLIST\r\n") == (
        b"+OK message 1 deleted\r\n+OK message 3 deleted\r\n+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n"
    )
    assert s.feed(b"QUIT\r\n") == BYE
    assert s.deleted == (0, 1, 2)


def test_retrieve_rejected() -> None:
    s = logged_in(retrieve_ok=False)
    assert s.feed(b"RETR 1\r\nNOOP\r\n") == b"-ERR [SYS/TEMP] message vanished\r\n+OK\r\n"


def test_update_rejected_still_closes() -> None:
    s = logged_in(update_ok=False)
    s.feed(b"DELE 1\r\n")
    assert s.feed(b"QUIT\r\n") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert s.closed


def test_single_message_wording() -> None:
    s = FakeSession(TLS, messages=(b"x\r\n",))
    assert s.feed(b"USER alice\r\nPASS secret\r\nLIST\r\n") == (
        b"+OK\r\n+OK maildrop has 1 message (3 octets)\r\n+OK 1 message (3 octets)\r\n1 3\r\n.\r\n"
    )


# ---------------------------------------------------------------------------------------------
# RETR / TOP streaming


def retr(message: bytes, chunks: list[bytes], top: int | None = None) -> bytes:
    e = POP3ServerEngine(TLS)
    e.receive_data(
        b"USER alice\r\nPASS secret\r\n" + (b"RETR 1\r\n" if top is None else b"TOP 1 %d\r\n" % top)
    )
    e.next_event()
    e.login_succeeded([DropEntry(len(message), "u")])
    assert isinstance(e.next_event(), Retrieve)
    e.data_to_send()
    e.begin_message()
    for c in chunks:
        e.message_data(c)
    e.end_message()
    assert not e.wants_more_message_data
    return e.data_to_send()


def every_split(message: bytes) -> list[list[bytes]]:
    out = [[message], [bytes([b]) for b in message]]
    out += [[message[:i], message[i:]] for i in range(len(message) + 1)]
    return out


@pytest.mark.parametrize(
    ("message", "body"),
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),
        (b"no final crlf", b"no final crlf\r\n.\r\n"),
        (b"ends with cr\r", b"ends with cr\r\n.\r\n"),
        (b"a\n.b", b"a\n..b\r\n.\r\n"),  # bare LF is a line start too
        (b"", b".\r\n"),
        (b"a.b\r\nc .\r\n", b"a.b\r\nc .\r\n.\r\n"),
    ],
)
def test_retr_byte_stuffing_across_chunks(message: bytes, body: bytes) -> None:
    head = b"+OK %d octets\r\n" % len(message)
    for chunks in every_split(message):
        assert retr(message, chunks) == head + body, chunks


TOP_CASES = [
    (M2, 0, M2_HEAD + b".\r\n"),
    (M2, 1, M2_HEAD + b"line1\r\n.\r\n"),
    (M2, 5, M2_HEAD + b"line1\r\nline2\r\nline3\r\nline4\r\n..\r\n.\r\n"),
    (M2, 6, M2_HEAD + b"line1\r\nline2\r\nline3\r\nline4\r\n..\r\nline6\r\n.\r\n"),
    (b"A: b\n\nl1\nl2\n", 1, b"A: b\n\nl1\n.\r\n"),
    (b"A: b\r\n", 0, b"A: b\r\n.\r\n"),  # no body at all
    (b"A: b", 0, b"A: b\r\n.\r\n"),
    (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n.\r\n"),  # no header at all
    (b"A: \r\n\rx\r\n\r\n.b\r\n.c\r\n", 1, b"A: \r\n\rx\r\n\r\n..b\r\n.\r\n"),  # "\rx" is no empty line
]


@pytest.mark.parametrize(("message", "top", "body"), TOP_CASES)
def test_top_cut_across_chunks(message: bytes, top: int, body: bytes) -> None:
    for chunks in every_split(message):
        assert retr(message, chunks, top) == b"+OK top of message follows\r\n" + body, chunks


def test_top_stops_asking_for_data() -> None:
    s = logged_in(chunk=1)
    s.feed(b"TOP 2 1\r\n")
    assert s.data_calls == len(M2_HEAD) + len(b"line1\r\n")


def test_retr_streams_without_buffering_everything() -> None:
    e = POP3ServerEngine(TLS)
    e.receive_data(b"USER alice\r\nPASS secret\r\nRETR 1\r\n")
    e.next_event()
    e.login_succeeded([DropEntry(10**9, "big")])
    e.next_event()
    e.begin_message()
    assert e.data_to_send().endswith(b"+OK 1000000000 octets\r\n")
    for _ in range(3):
        e.message_data(b".x\r\n")
        assert e.data_to_send() == b"..x\r\n"
    assert e.next_event() is PAUSED  # no command is read while a message is on the wire


# ---------------------------------------------------------------------------------------------
# Errors, limits and end of file


def test_too_many_errors_closes() -> None:
    s = FakeSession(POP3Config(tls_active=True, stls_available=False, max_errors=3))
    out = s.feed(b"A\r\nB\r\nC\r\nCAPA\r\n")
    assert out == UNKNOWN * 2 + b"-ERR too many errors, closing connection\r\n"
    assert s.closed
    assert [v.fatal for v in violations(s)] == [False, False, True]
    assert s.feed(b"CAPA\r\n") == b""  # closed: input ignored


def test_line_too_long_then_recovers() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"USER " + b"a" * 600) == b"-ERR line too long\r\n"
    assert s.feed(b"b" * 100) == b""
    assert s.feed(b"\r\nCAPA\r\n") == CAPA_TLS
    assert violations(s)[0].reply_line == b"-ERR line too long\r\n"


def test_eof_in_transaction_does_not_update() -> None:
    s = logged_in()
    s.feed(b"DELE 1\r\nNOO")
    s.feed(b"")
    assert s.closed
    assert s.deleted is None  # RFC 1939 §6: no QUIT, no UPDATE
    e = POP3ServerEngine(TLS)
    e.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        e.receive_data(b"x")


def test_pipelined_quit_before_eof_is_honoured() -> None:
    s = logged_in()
    s.engine.receive_data(b"DELE 3\r\nQUIT\r\n")
    s.engine.receive_data(b"")
    s.pump()
    assert s.deleted == (2,)
    assert s.closed


def test_quit_in_authorization() -> None:
    s = FakeSession(TLS)
    assert s.feed(b"QUIT\r\nCAPA\r\n") == BYE
    assert s.events == [Quit()]
    assert s.closed


def test_greeting_once_and_misuse_is_local_error() -> None:
    e = POP3ServerEngine(TLS)
    e.greeting()
    with pytest.raises(LocalProtocolError):
        e.greeting()
    calls: list[Callable[[], None]] = [
        e.accept,
        lambda: e.reject("x"),
        lambda: e.login_succeeded(DROP),
        lambda: e.auth_challenge(b""),
        e.tls_started,
        e.begin_message,
        lambda: e.message_data(b"x"),
        e.end_message,
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()


def pending_userpass() -> POP3ServerEngine:
    e = POP3ServerEngine(TLS)
    e.receive_data(b"USER alice\r\nPASS secret\r\n")
    assert isinstance(e.next_event(), UserPass)
    return e


@pytest.mark.parametrize(
    "drop",
    [
        [DropEntry(-1, "a")],
        [DropEntry(1, "")],
        [DropEntry(1, "a b")],
        [DropEntry(1, "x" * 71)],
        [DropEntry(1, "ü")],
        [DropEntry(1, "a"), DropEntry(2, "a")],
    ],
)
def test_login_succeeded_validates_drop(drop: list[DropEntry]) -> None:
    with pytest.raises(LocalProtocolError):
        pending_userpass().login_succeeded(drop)


def test_wrong_answers_for_pending_event() -> None:
    e = pending_userpass()
    calls: list[Callable[[], None]] = [
        e.accept,
        lambda: e.auth_challenge(b""),
        e.begin_message,
        e.tls_started,
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()
    with pytest.raises(LocalProtocolError):
        e.reject("bad\r\ntext", "AUTH")
    with pytest.raises(LocalProtocolError):
        e.reject("x", "not a code")
    e.reject("no", "AUTH")
    assert e.data_to_send() == b"+OK\r\n-ERR [AUTH] no\r\n"


def test_reject_after_begin_message_is_local_error() -> None:
    e = pending_userpass()
    e.login_succeeded(DROP)
    e.receive_data(b"RETR 1\r\n")
    assert isinstance(e.next_event(), Retrieve)
    e.begin_message()
    with pytest.raises(LocalProtocolError):
        e.reject("x")
    e.end_message()
    assert e.next_event() is NEED_DATA


def test_accept_custom_text() -> None:
    s = logged_in()
    s.update_ok = False
    e = s.engine
    e.receive_data(b"QUIT\r\n")
    assert isinstance(e.next_event(), Update)
    e.accept("bye (2 messages left)")
    assert e.data_to_send() == b"+OK bye (2 messages left)\r\n"


# ---------------------------------------------------------------------------------------------
# Properties


VOCAB = [
    b"USER alice",
    b"USER bob",
    b"PASS secret",
    b"PASS pass word",
    b"PASS x",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"AUTH SCRAM-SHA-256",
    b"AUTH PLAIN " + b64(b"\0alice\0secret"),
    b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=alice,r=abc"),
    b"AUTH",
    b64(b"alice"),
    b64(b"secret"),
    b64(b"c=biws,r=x,p=AAAA"),
    b"*",
    b"",
    b"=",
    b"STLS",
    b"CAPA",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"LIST 4",
    b"UIDL",
    b"UIDL 2",
    b"RETR 1",
    b"RETR 2",
    b"RETR 3",
    b"TOP 2 2",
    b"TOP 1 0",
    b"DELE 1",
    b"DELE 2",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"APOP a b",
    b"X" * 700,
    b"\x00\xff\r",
]

# An accepted STLS makes output depend on where the input was split, by design: plaintext that
# arrived with STLS is discarded, later bytes came over TLS. So split invariance excludes it.
SPLIT_VOCAB = [c for c in VOCAB if c != b"STLS"]
commands = st.lists(st.sampled_from(SPLIT_VOCAB), max_size=30).map(
    lambda ls: b"".join(c + b"\r\n" for c in ls)
)
configs = st.sampled_from(
    [TLS, PLAINTEXT, POP3Config(tls_active=True, stls_available=False, max_errors=1000)]
)


def feed_all(config: POP3Config, chunks: list[bytes], *, eof: bool = True) -> FakeSession:
    s = FakeSession(config)
    for c in chunks:
        if s.closed:
            break
        if c:  # b"" would mean end of file
            s.feed(c)
    if eof and not s.closed:
        s.feed(b"")
    return s


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, data=st.binary(max_size=400), points=st.lists(st.integers(0, 400), max_size=8))
def test_random_bytes_only_yield_events_and_replies(
    config: POP3Config, data: bytes, points: list[int]
) -> None:
    s = feed_all(config, cut(data, points))  # FakeSession.pump asserts every result is an Event
    assert s.closed
    assert bytes(s.out).startswith(GREETING)
    assert bytes(s.out).endswith(b"\r\n")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, data=commands, points=st.lists(st.integers(0, 5000), max_size=10))
def test_command_streams_are_split_invariant(config: POP3Config, data: bytes, points: list[int]) -> None:
    whole = feed_all(config, [data])
    split = feed_all(config, cut(data, points))
    assert bytes(split.out) == bytes(whole.out)
    assert split.events == whole.events
    assert whole.closed


@settings(max_examples=100, deadline=None)
@given(data=commands)
def test_command_streams_byte_by_byte(data: bytes) -> None:
    whole = feed_all(TLS, [data])
    single = feed_all(TLS, [bytes([b]) for b in data])
    assert bytes(single.out) == bytes(whole.out)
