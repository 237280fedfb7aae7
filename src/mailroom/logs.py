"""One log line per event: ``time level component [conn-id] message key=value ...``.

Fixed line formats that tools rely on:
- failed logins: ``auth failed service=imap ip=192.0.2.1 user=alice@example.org`` (fail2ban filter in
  contrib/fail2ban/);
- deliveries, Postfix style: ``id=... from=<...> to=<...> relay=... delay=... status=sent (...)``.
Passwords and SASL data never reach the log: nothing here is given them.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import MutableMapping
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Formatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        stamp = f"{self._second_text}.{int(record.msecs):03d}Z"
        conn = getattr(record, "conn", None)
        prefix = f"{stamp} {record.levelname.lower():7s} {record.name.removeprefix('mailroom.')}"
        if conn:
            prefix += f" [{conn}]"
        text = f"{prefix} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(level: str = "info") -> None:
    # The logging HOWTO's "Optimization": our lines use none of the caller's file and line,
    # thread or process names, and collecting them costs more than formatting the line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger("mailroom")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("mailroom").setLevel(LEVELS.get(level, logging.INFO))


def new_conn_id() -> str:
    return secrets.token_hex(4)


class ConnLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that tags every line with the connection id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs.setdefault("extra", {})["conn"] = (self.extra or {}).get("conn")
        return msg, kwargs


def conn_logger(component: str, conn_id: str) -> ConnLogger:
    return ConnLogger(logging.getLogger(f"mailroom.{component}"), {"conn": conn_id})


def auth_failed(log: logging.Logger | ConnLogger, service: str, ip: str, user: str) -> None:
    # the fail2ban filter matches exactly this shape; keep it stable
    safe_user = "".join(c if c.isprintable() and not c.isspace() else "?" for c in user)[:128] or "-"
    log.warning("auth failed service=%s ip=%s user=%s", service, ip, safe_user)
