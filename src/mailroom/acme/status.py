"""``mailroom cert status`` and ``mailroom cert renew``: what is served, until when, what happens next."""

from __future__ import annotations

import datetime
import os
import signal
from pathlib import Path

from mailroom.acme.manager import acme_names, acme_paths, read_state, renewal_time
from mailroom.config import Config
from mailroom.net.certinfo import pem_certificates, read_der


class CertStatusError(Exception):
    """One line for the user."""


def _when(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _left(value: datetime.datetime, now: datetime.datetime) -> str:
    seconds = (value - now).total_seconds()
    if seconds < 0:
        return "EXPIRED"
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days left"
    if seconds >= 7200:
        return f"{int(seconds // 3600)} hours left"
    return f"{int(seconds // 60)} minutes left"


def served_certificate(cfg: Config) -> tuple[Path, str]:
    """The certificate file a server with this config serves (or will serve at next start)."""
    data_dir = cfg.data_path
    if cfg.tls.mode == "files":
        return Path(cfg.tls.cert), "tls.cert"
    if cfg.tls.mode == "acme":
        paths = acme_paths(data_dir)
        if paths.cert.exists():
            return paths.cert, "acme"
    return data_dir / "tls" / "selfsigned.crt", "self-signed"


def status_lines(cfg: Config, now: datetime.datetime | None = None) -> list[str]:
    now = now or datetime.datetime.now(datetime.UTC)
    path, source = served_certificate(cfg)
    try:
        chain = [read_der(der) for der in pem_certificates(path.read_bytes())]
        if not chain:
            raise ValueError("no certificate")
    except FileNotFoundError:
        if source == "self-signed":
            return [f"mode:         {cfg.tls.mode}", "certificate:  none yet (made at the first start)"]
        raise CertStatusError(f"{source}: {path}: no such file") from None
    except PermissionError:
        raise CertStatusError(f"{path}: not readable by uid {os.geteuid()} (permission denied)") from None
    except ValueError:
        raise CertStatusError(f"{path}: no PEM certificate in the file") from None
    info = chain[0]
    mode = cfg.tls.mode + (f" ({cfg.tls.acme_directory})" if cfg.tls.mode == "acme" else "")
    lines = [
        f"mode:         {mode}",
        f"certificate:  {path}"
        + (
            " (self-signed until the first ACME issuance)"
            if cfg.tls.mode == "acme" and source == "self-signed"
            else ""
        ),
        f"subject:      {info.subject}",
        f"names:        {', '.join(info.names) or '-'}",
        f"issuer:       {info.issuer}" + (" (self-signed)" if info.self_signed else ""),
        f"serial:       {info.serial:x}",
        f"valid from:   {_when(info.not_before)}",
        f"expires:      {_when(info.not_after)} ({_left(info.not_after, now)})",
    ]
    if len(chain) > 1:
        lines.append(f"chain:        {len(chain) - 1} more certificate(s), next issuer {chain[1].issuer}")
    if cfg.tls.mode == "files":
        lines.append(
            f"next renewal: not mailroom's job; new files are picked up within {cfg.tls.watch_interval:g}s or on SIGHUP"
        )
    elif cfg.tls.mode == "self-signed":
        lines.append("next renewal: at a start less than 7 days before expiry")
    else:
        paths = acme_paths(cfg.data_path)
        state = read_state(paths)
        wanted = acme_names(cfg)
        if source == "self-signed" or not all(n in info.names for n in wanted):
            due = "as soon as the server runs (no ACME certificate for " + ", ".join(wanted) + " yet)"
        else:
            due = f"{_when(renewal_time(info.not_before, info.not_after))} (when a third of the lifetime remains)"
        if paths.renew_flag.exists():
            due = "requested (mailroom cert renew): at once while the server runs"
        lines.append(f"next renewal: {due}")
        if state.get("last_attempt"):
            result = state.get("last_result") or "?"
            detail = f": {state['last_error']}" if result == "failed" and state.get("last_error") else ""
            lines.append(f"last attempt: {state['last_attempt']} {result}{detail}")
            if result == "failed" and state.get("next_attempt"):
                lines.append(f"next attempt: {state['next_attempt']} (retrying with backoff)")
    return lines


def request_renewal(cfg: Config, pid: int | None) -> str:
    """Leave the renewal request for the server and wake it (SIGHUP) if it runs."""
    if cfg.tls.mode != "acme":
        raise CertStatusError(
            f'tls.mode is "{cfg.tls.mode}": only mode = "acme" certificates are renewed by mailroom'
        )
    paths = acme_paths(cfg.data_path)
    try:
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.renew_flag.write_text("requested\n")
    except OSError as exc:
        raise CertStatusError(f"cannot write {paths.renew_flag}: {exc.strerror}") from None
    if pid is None:
        return "renewal requested: the server is not running; it renews at its next start"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise CertStatusError(f"cannot signal the server (pid {pid}): {exc.strerror}") from None
    return f"renewal requested from the running server (pid {pid}); watch its log for 'acme: installed'"
