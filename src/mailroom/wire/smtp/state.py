"""The SMTP server state table: which command is allowed in which state, and the answer if not.

RFC 5321 §4.1.4 (order of commands) and §3.3 (mail transactions), RFC 3030 §2 (BDAT),
RFC 3207 §4 (STARTTLS), RFC 4954 §4 (AUTH). Tests walk every (state, verb) pair.

Checks that depend on configuration rather than sequence (STARTTLS not offered, AUTH not offered
or needing TLS, MAIL needing AUTH) live in the engine; this table only says what order is legal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from mailroom.wire.smtp import replies as R
from mailroom.wire.smtp.replies import Reply


class State(enum.Enum):
    INITIAL = "initial"  # connected, no accepted EHLO/HELO
    READY = "ready"  # greeted, no mail transaction
    MAIL = "mail"  # MAIL accepted, no RCPT accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    CHUNKING = "chunking"  # between BDAT chunks of one transaction
    DATA = "data"  # reading a DATA body (not commands)
    BDAT = "bdat"  # reading the octets of one BDAT chunk (not commands)
    AUTH = "auth"  # a 334 challenge was sent; the next line is the client's response
    TLS = "tls"  # STARTTLS accepted; waiting for tls_started()
    CLOSED = "closed"


# States in which a line is parsed as a command.
COMMAND_STATES: tuple[State, ...] = (State.INITIAL, State.READY, State.MAIL, State.RCPT, State.CHUNKING)
TRANSACTION_STATES = frozenset({State.MAIL, State.RCPT, State.CHUNKING})

VERBS: tuple[str, ...] = (
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "HELP",
    "VRFY",
    "EXPN",
    "QUIT",
    "STARTTLS",
    "AUTH",
)

# Allowed in every command state. RFC 5321 §4.1.4: EHLO/HELO may be issued later in a session
# (and reset it); RSET, NOOP, HELP, VRFY, EXPN and QUIT may be issued at any time.
_ANYWHERE = ("EHLO", "HELO", "RSET", "NOOP", "HELP", "VRFY", "EXPN", "QUIT")

_I, _RD, _M, _RC, _C = State.INITIAL, State.READY, State.MAIL, State.RCPT, State.CHUNKING

_RULES: dict[tuple[State, str], Reply | None] = {
    # RFC 5321 §4.1.4: a session must be opened with EHLO/HELO before a mail transaction.
    (_I, "MAIL"): R.NEED_HELLO,
    (_I, "RCPT"): R.NEED_HELLO,
    (_I, "DATA"): R.NEED_HELLO,
    (_I, "BDAT"): R.NEED_HELLO,
    (_I, "STARTTLS"): R.NEED_HELLO,  # RFC 3207 §4: STARTTLS is an ESMTP extension (offered by EHLO)
    (_I, "AUTH"): R.NEED_HELLO,  # RFC 4954 §4: likewise
    (_RD, "MAIL"): None,
    # RFC 5321 §3.3: RCPT and DATA need an open transaction.
    (_RD, "RCPT"): R.NEED_MAIL,
    (_RD, "DATA"): R.NEED_MAIL,
    (_RD, "BDAT"): R.NEED_MAIL,
    (_RD, "STARTTLS"): None,
    (_RD, "AUTH"): None,
    # RFC 5321 §4.1.4: "MAIL ... must not be sent while a mail transaction is in progress".
    (_M, "MAIL"): R.NESTED_MAIL,
    (_M, "RCPT"): None,
    # RFC 5321 §3.3: DATA with no accepted recipient: 554 (or 503); RFC 2920 §3.1 relies on it.
    (_M, "DATA"): R.NO_VALID_RECIPIENTS,
    (_M, "BDAT"): R.NEED_RCPT,
    (_M, "STARTTLS"): R.IN_TRANSACTION,
    (_M, "AUTH"): R.IN_TRANSACTION,  # RFC 4954 §4: "not permitted during a mail transaction"
    (_RC, "MAIL"): R.NESTED_MAIL,
    (_RC, "RCPT"): None,
    (_RC, "DATA"): None,
    (_RC, "BDAT"): None,
    (_RC, "STARTTLS"): R.IN_TRANSACTION,
    (_RC, "AUTH"): R.IN_TRANSACTION,
    (_C, "MAIL"): R.NESTED_MAIL,
    (_C, "RCPT"): R.NOT_AFTER_BDAT,  # the envelope is closed once the body has started
    (_C, "DATA"): R.NOT_AFTER_BDAT,  # RFC 3030 §2: DATA and BDAT may not be mixed: 503
    (_C, "BDAT"): None,
    (_C, "STARTTLS"): R.IN_TRANSACTION,
    (_C, "AUTH"): R.IN_TRANSACTION,
}
for _state in COMMAND_STATES:
    for _verb in _ANYWHERE:
        _RULES[(_state, _verb)] = None

SEQUENCE: Mapping[tuple[State, str], Reply | None] = MappingProxyType(_RULES)
"""(state, verb) -> None when the command is in sequence, else the 5xx reply to send."""

assert set(SEQUENCE) == {(s, v) for s in COMMAND_STATES for v in VERBS}, "state table incomplete"
