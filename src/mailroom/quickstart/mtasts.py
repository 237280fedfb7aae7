"""The MTA-STS policy each local domain serves (RFC 8461), and where its mode is decided.

A policy starts in ``mode: testing``: senders report failures (TLS-RPT) but deliver anyway. An
enforced policy with a bad certificate or wrong MX makes senders refuse to deliver (RFC 8461 §5),
so ``mailroom check`` switches a domain to ``enforce`` only after it has seen the certificate and
every record right. That decision is stored in ``<data_dir>/mta-sts.json``::

    {"version": 1, "domains": {"example.org": {"mode": "enforce", "changed": "2025-01-31T12:00:00Z"}}}

The domains listed there are the ones whose policy the web server answers for. ``[public] mta_sts``
overrides the stored mode ("testing", "enforce") or turns MTA-STS off ("none").

The policy id (RFC 8461 §3.1: 1-32 letters and digits, changed whenever the policy changes) is
derived from the policy text, so it changes exactly when the policy does.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from mailroom.config import Config

Mode = Literal["testing", "enforce"]
STATE_FILE = "mta-sts.json"
# RFC 8461 §3.2: max_age in seconds, at most 31557600. A day while testing (a mistake is undone
# quickly); a week once enforced (RFC 8461 §10.3 suggests weeks or more).
MAX_AGE: dict[str, int] = {"testing": 86400, "enforce": 604800}


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def read_state(data_dir: Path) -> dict[str, Mode]:
    """Domain -> stored mode ({} when there is no state file or it is unreadable)."""
    try:
        raw: Any = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Mode] = {}
    domains = raw.get("domains", {}) if isinstance(raw, dict) else {}
    for domain, entry in domains.items() if isinstance(domains, dict) else ():
        mode = entry.get("mode") if isinstance(entry, dict) else None
        if mode in ("testing", "enforce"):
            out[str(domain)] = mode
    return out


def write_state(data_dir: Path, modes: dict[str, Mode], now: datetime.datetime | None = None) -> None:
    """Store the modes atomically (write a temporary file, then rename), mode 0600."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old: dict[str, Any] = {}
    try:
        loaded = json.loads(state_path(data_dir).read_text())
        if isinstance(loaded, dict) and isinstance(loaded.get("domains"), dict):
            old = loaded["domains"]
    except (OSError, ValueError):
        pass
    domains = {}
    for domain in sorted(modes):
        previous = old.get(domain) if isinstance(old.get(domain), dict) else None
        unchanged = previous is not None and previous.get("mode") == modes[domain]
        changed = str(previous.get("changed", stamp)) if unchanged and previous else stamp
        domains[domain] = {"mode": modes[domain], "changed": changed}
    path = state_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "domains": domains}, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def effective_mode(cfg: Config, stored: Mode | None) -> Mode | None:
    """The mode served: ``[public] mta_sts`` unless "auto"; None when there is no policy."""
    setting = cfg.public.mta_sts
    if setting == "none" or stored is None:
        return None
    if setting in ("testing", "enforce"):
        return setting  # type: ignore[return-value]
    return stored


def domain_mode(cfg: Config, domain: str) -> Mode | None:
    return effective_mode(cfg, read_state(cfg.data_path).get(domain))


def policy_text(mode: Mode, mx_hosts: Sequence[str]) -> str:
    """RFC 8461 §3.2: ``key: value`` lines separated by CRLF, version first."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host}" for host in mx_hosts]
    lines.append(f"max_age: {MAX_AGE[mode]}")
    return "\r\n".join(lines) + "\r\n"


def policy_id(text: str) -> str:
    """RFC 8461 §3.1 ``sts-id``: 1*32(ALPHA / DIGIT); here the first 20 hex digits of SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def txt_record(text: str) -> str:
    """The ``_mta-sts`` TXT record announcing the policy (RFC 8461 §3.1)."""
    return f"v=STSv1; id={policy_id(text)}"


def parse_txt(text: str) -> dict[str, str] | None:
    """``v=STSv1; id=...`` -> {"v": ..., "id": ...}; None when it is not an STSv1 record."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    if fields.get("v") != "STSv1" or not text.strip().startswith("v=STSv1"):
        return None
    return fields
