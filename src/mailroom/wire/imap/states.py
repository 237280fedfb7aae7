"""The IMAP connection state table: which command is valid in which state.

RFC 9051 §3 (state diagram) and §6: CAPABILITY, NOOP and LOGOUT are valid in every state but LOGOUT;
STARTTLS, AUTHENTICATE and LOGIN only before authentication; the authenticated-state commands are
also valid in the selected state (§6.4: "In addition to the universal commands ... and the
authenticated state commands"); the selected-state commands only with a mailbox selected.
Extensions are placed where their RFCs put them. This is the only place that says so; the engine
answers BAD for a command outside its states, and tests walk every (state, command) pair.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

__all__ = ["COMMAND_STATES", "State", "allowed"]


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_AUTH_ONLY = frozenset({State.AUTHENTICATED})
_SELECTED = frozenset({State.SELECTED})

COMMAND_STATES = MappingProxyType(
    {
        # RFC 9051 §6.1: any state
        "CAPABILITY": _ANY,
        "NOOP": _ANY,
        "LOGOUT": _ANY,
        "ID": _ANY,  # RFC 2971: "valid in any state"
        # RFC 9051 §6.2: not authenticated state
        "STARTTLS": _NOT_AUTH,
        "AUTHENTICATE": _NOT_AUTH,
        "LOGIN": _NOT_AUTH,
        # RFC 5161 / RFC 9051 §6.3.1: ENABLE only before a mailbox is selected
        "ENABLE": _AUTH_ONLY,
        # RFC 9051 §6.3: authenticated state (and so selected state too)
        "SELECT": _AUTH,
        "EXAMINE": _AUTH,
        "NAMESPACE": _AUTH,
        "CREATE": _AUTH,
        "DELETE": _AUTH,
        "RENAME": _AUTH,
        "SUBSCRIBE": _AUTH,
        "UNSUBSCRIBE": _AUTH,
        "LIST": _AUTH,
        "LSUB": _AUTH,  # RFC 3501 §6.3.9
        "STATUS": _AUTH,
        "APPEND": _AUTH,
        "IDLE": _AUTH,  # RFC 2177 / RFC 9051 §6.3.13
        "GETQUOTAROOT": _AUTH,  # RFC 9208
        "GETQUOTA": _AUTH,
        # RFC 9051 §6.4: selected state
        "CHECK": _SELECTED,  # RFC 3501 §6.4.1 (removed in IMAP4rev2, still accepted)
        "CLOSE": _SELECTED,
        "UNSELECT": _SELECTED,  # RFC 3691
        "EXPUNGE": _SELECTED,
        "SEARCH": _SELECTED,
        "FETCH": _SELECTED,
        "STORE": _SELECTED,
        "COPY": _SELECTED,
        "MOVE": _SELECTED,  # RFC 6851
        "UID SEARCH": _SELECTED,
        "UID FETCH": _SELECTED,
        "UID STORE": _SELECTED,
        "UID COPY": _SELECTED,
        "UID MOVE": _SELECTED,
        "UID EXPUNGE": _SELECTED,  # RFC 4315
    }
)


def allowed(command: str, state: State) -> bool:
    """Is ``command`` (upper case, ``"UID FETCH"`` for UID forms) valid in ``state``?"""
    return state in COMMAND_STATES.get(command, frozenset())
