"""Which session serves which protocol: filled in as each protocol lands."""

from __future__ import annotations

import asyncio

from mailroom.config import Config
from mailroom.net.listeners import SessionHandler
from mailroom.net.pop3 import POP3Context, pop3_handler
from mailroom.net.smtp import SMTPContext, smtp_handler
from mailroom.net.tls import ServerTLS
from mailroom.policy.auth import Authenticator
from mailroom.store.service import Store


def build_handlers(
    cfg: Config, store: Store, tls: ServerTLS, stopping: asyncio.Event
) -> dict[str, SessionHandler]:
    auth = Authenticator(store)
    return {
        "smtp": smtp_handler(SMTPContext(cfg, store, tls, auth, stopping)),
        "pop3": pop3_handler(POP3Context(cfg, store, tls, auth)),
    }
