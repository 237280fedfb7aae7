"""Which session serves which protocol: filled in as each protocol lands."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from mailroom.acme.challenges import ChallengeResponder
from mailroom.config import Config
from mailroom.delivery.srs import SRS
from mailroom.dns import Resolver
from mailroom.mailauth.resolver import from_dns
from mailroom.net.imap import IMAPContext, imap_handler
from mailroom.net.listeners import SessionHandler
from mailroom.net.pop3 import POP3Context, pop3_handler
from mailroom.net.smtp import SMTPContext, smtp_handler
from mailroom.net.tls import ServerTLS
from mailroom.policy.auth import Authenticator
from mailroom.store.service import Store
from mailroom.web.server import WebContext, build_router, http_handler


def srs_key(data_dir: Path) -> bytes:
    """The SRS secret: 32 random bytes made on first start, mode 0600."""
    path = data_dir / "srs.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def build_handlers(
    cfg: Config,
    store: Store,
    tls: ServerTLS,
    stopping: asyncio.Event,
    challenges: ChallengeResponder | None = None,
    queued: Callable[[], None] = lambda: None,
    resolver: Resolver | None = None,
    contexts: list[SessionContext] | None = None,
) -> dict[str, SessionHandler]:
    """The session handler per protocol. ``contexts`` (when given) receives each handler's context,
    so a reload can hand new sessions the new config."""
    auth = Authenticator(store, cache_ttl=cfg.limits.auth_cache_ttl)
    lookup = from_dns(resolver) if resolver is not None and cfg.dns_enabled else None
    srs = SRS([srs_key(store.data_dir)])
    challenges = challenges or ChallengeResponder()
    smtp = SMTPContext(cfg, store, tls, auth, queued=queued, lookup=lookup, srs=srs)
    pop3 = POP3Context(cfg, store, tls, auth)
    imap = IMAPContext(cfg, store, tls, auth, stopping)
    web = WebContext(cfg, tls, build_router(challenges), challenges)
    if contexts is not None:
        contexts.extend((smtp, pop3, imap, web))
    return {
        "smtp": smtp_handler(smtp),
        "pop3": pop3_handler(pop3),
        "imap": imap_handler(imap),
        "http": http_handler(web),
    }


SessionContext = SMTPContext | POP3Context | IMAPContext | WebContext
