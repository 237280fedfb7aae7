"""Which session serves which protocol: filled in as each protocol lands."""

from __future__ import annotations

from mailroom.config import Config
from mailroom.net.listeners import SessionHandler
from mailroom.net.tls import ServerTLS
from mailroom.store.service import Store


def build_handlers(cfg: Config, store: Store, tls: ServerTLS) -> dict[str, SessionHandler]:
    handlers: dict[str, SessionHandler] = {}
    return handlers
