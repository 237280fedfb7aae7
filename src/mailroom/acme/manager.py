"""Keeps the shared TLS context's certificate current, whatever ``[tls] mode`` says.

- ``self-signed``: made on first start (selfsigned.py); nothing to do while running.
- ``files``: the cert and key are polled (mtime, size, inode) every ``tls.watch_interval`` and re-read
  on SIGHUP; a bad new pair keeps the old one and logs one line (once per change, not per poll).
- ``acme``: first issuance at start (serving the self-signed certificate meanwhile), renewal once a
  third of the lifetime remains, retries with exponential backoff and jitter, the new certificate
  loaded into the shared context (every listener, no restart). A failure is logged and never stops
  the server: it keeps serving what it has.

Certificate work needs cryptography, and ACME the ``acme`` library, josepy and requests: about
20 MiB that Python never returns once imported. So by default (``worker``, a CertWorker) the
self-signed certificate and every ACME order are made in a short-lived child process
(workerclient.py / worker.py) and the server only publishes the challenges the child asks for and
installs what it gets back. Where no child can run (the server dropped privileges to a user who
cannot read the Python installation: app.py then preloads the libraries and passes no worker), or
when the child cannot be started or cannot load its libraries (one log line, then for good), the
work is done in-process as before: the blocking ACME client in a daemon thread, never on the event
loop and never holding up shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mailroom.acme.challenges import CHALLENGE_TYPES, ChallengeResponder
from mailroom.acme.issued import Issued, IssueError, write_private
from mailroom.acme.selfsigned import ensure_self_signed, make_self_signed
from mailroom.acme.workerclient import CertWorker, WorkerUnavailable
from mailroom.config import Config
from mailroom.net.certinfo import read_pem
from mailroom.net.tls import CertInfo, ServerTLS, TLSError, check_pair

log = logging.getLogger("mailroom.tls")

RETRY_BASE = 60.0  # first retry after about a minute...
RETRY_CAP = 6 * 3600.0  # ...doubling up to six hours
RECHECK = 3600.0  # re-evaluate at least hourly (suspend, clock jumps)
T = TypeVar("T")


# --- where things live -------------------------------------------------------------------------


@dataclass(frozen=True)
class ACMEPaths:
    root: Path

    @property
    def account_key(self) -> Path:
        return self.root / "account.key"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def key(self) -> Path:
        return self.root / "key.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def renew_flag(self) -> Path:
        """``mailroom cert renew`` leaves this; the server renews at the next wake-up (SIGHUP)."""
        return self.root / "renew-requested"


def acme_paths(data_dir: Path) -> ACMEPaths:
    return ACMEPaths(data_dir / "tls" / "acme")


def acme_names(cfg: Config) -> list[str]:
    """server.hostname first (the subject), then tls.acme_names, without duplicates."""
    names: list[str] = []
    for name in (cfg.server.hostname, *cfg.tls.acme_names):
        if name not in names:
            names.append(name)
    return names


# --- pure schedule -----------------------------------------------------------------------------


def renewal_time(not_before: datetime.datetime, not_after: datetime.datetime) -> datetime.datetime:
    """Renew once a third of the lifetime remains: day 60 of a 90-day certificate, hour 4 of a
    6-hour one. Short-lived certificates therefore renew just as well."""
    return not_after - (not_after - not_before) / 3


def retry_delay(attempt: int, rng: random.Random, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Exponential backoff with "equal jitter": between half and all of min(cap, base * 2**attempt)."""
    delay = min(cap, base * float(2 ** min(attempt, 32)))
    return float(delay / 2 + rng.random() * delay / 2)


def covers(info: CertInfo, names: list[str]) -> bool:
    return all(name in info.names for name in names)


# --- start-up: which certificate to serve first -----------------------------------------------


@dataclass(frozen=True)
class Initial:
    cert: Path
    key: Path
    cert_key: str
    key_key: str
    note: str  # what to log


def initial_certificate(cfg: Config, data_dir: Path, worker: CertWorker | None = None) -> Initial:
    """The pair to start on. ``files``: the configured pair (errors are the caller's to report).
    ``acme``: the last ACME certificate if it is still usable, else the self-signed one, made by
    ``worker`` (a child process) when given, else in this process. TLSError when none can be made."""
    tls = cfg.tls
    if tls.mode == "files":
        return Initial(Path(tls.cert), Path(tls.key), "tls.cert", "tls.key", f"certificate {tls.cert}")
    if tls.mode == "acme":
        paths = acme_paths(data_dir)
        if paths.cert.exists() and paths.key.exists():
            try:
                info = check_pair(paths.cert.read_bytes(), paths.key.read_bytes(), paths.cert, paths.key)
                if info.not_after > datetime.datetime.now(datetime.UTC):
                    return Initial(
                        paths.cert, paths.key, "tls.mode", "tls.mode", f"ACME certificate {paths.cert}"
                    )
                log.warning(
                    "acme: the stored certificate expired at %s; serving a self-signed one", info.not_after
                )
            except (TLSError, OSError) as exc:
                log.warning("acme: cannot use the stored certificate (%s); serving a self-signed one", exc)
    try:
        cert, key, made = ensure_self_signed(
            data_dir / "tls", cfg.server.hostname, _self_signed_maker(worker) if worker else None
        )
    except (IssueError, OSError) as exc:
        reason = str(exc) if isinstance(exc, IssueError) else f"{exc.filename or data_dir}: {exc.strerror}"
        raise TLSError(f"tls.mode: cannot make a self-signed certificate: {reason}") from None
    note = f"self-signed certificate {cert}" + (" (new)" if made else "")
    return Initial(cert, key, "tls.mode", "tls.mode", note)


def _self_signed_maker(worker: CertWorker) -> Callable[[Path, str], object]:
    def make(directory: Path, hostname: str) -> tuple[Path, Path]:
        try:
            return worker.self_signed(directory, hostname)
        except WorkerUnavailable as exc:
            log.warning("tls: the certificate worker cannot run (%s): making the certificate in-process", exc)
            return make_self_signed(directory, hostname)

    return make


# --- state shown by `mailroom cert status` ------------------------------------------------------


def read_state(paths: ACMEPaths) -> dict[str, Any]:
    try:
        data = json.loads(paths.state.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _iso(when: datetime.datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


class Issuer(Protocol):
    def issue(self, names: list[str], preference: list[str]) -> Issued: ...


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call off the event loop in a daemon thread (shutdown never waits for it)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # delivered to the awaiting task
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, False, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=work, name="mailroom-acme", daemon=True).start()
    return await future


class CertificateManager:
    def __init__(
        self,
        cfg: Config,
        tls: ServerTLS,
        data_dir: Path,
        responder: ChallengeResponder,
        *,
        issuer: Issuer | None = None,
        worker: CertWorker | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        rng: random.Random | None = None,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        self.cfg = cfg
        self.tls = tls
        self.data_dir = data_dir
        self.paths = acme_paths(data_dir)
        self.responder = responder
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.names = acme_names(cfg)
        self.worker = worker  # None: issue in this process (a daemon thread)
        self._issuer = issuer  # the in-process issuer; the real one is made (and imported) at first need
        self._wake = asyncio.Event()
        self._forced_reload = False
        self._task: asyncio.Task[None] | None = None
        self.attempt = 0
        self.next_retry: datetime.datetime | None = None
        self.last_success: datetime.datetime | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        mode = self.cfg.tls.mode
        if mode == "files":
            self._task = asyncio.create_task(self._files_loop(), name="tls-files")
        elif mode == "acme":
            self.paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._task = asyncio.create_task(self._acme_loop(), name="acme")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reload(self) -> None:
        """SIGHUP: files mode re-reads the pair now; acme mode re-checks (and honours `cert renew`)."""
        if self.cfg.tls.mode == "files" and self._task is None:
            self._reload_files("SIGHUP")
            return
        self._forced_reload = True
        self._wake.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if woken early (SIGHUP)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        # a wake-up that lands as the timeout fires counts too (clearing it unseen lost a SIGHUP)
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    # --- files ------------------------------------------------------------------------------

    def _signature(self) -> tuple[Any, ...]:
        sig: list[Any] = []
        for path in (self.cfg.tls.cert, self.cfg.tls.key):
            try:
                st = os.stat(path)
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
            except OSError as exc:
                sig.append(exc.errno)
        return tuple(sig)

    def _reload_files(self, reason: str) -> None:
        try:
            info = self.tls.load(
                Path(self.cfg.tls.cert), Path(self.cfg.tls.key), cert_key="tls.cert", key_key="tls.key"
            )
        except TLSError as exc:
            log.error("tls: %s: keeping the current certificate: %s", reason, exc)
            return
        log.info("tls: %s: loaded certificate %s", reason, info.summary())

    async def _files_loop(self) -> None:
        interval = self.cfg.tls.watch_interval
        seen = self._signature()
        while True:
            woken = await self._sleep(interval)
            if woken and self._forced_reload:
                self._forced_reload = False
                seen = self._signature()
                self._reload_files("SIGHUP")
                continue
            now = self._signature()
            if now == seen:
                continue
            # let a renewal that writes cert and key one after the other finish first
            await asyncio.sleep(min(2.0, interval))
            settled = self._signature()
            if settled != now:
                continue  # still changing: look again at the next poll
            seen = settled
            self._reload_files("files changed")

    # --- acme -------------------------------------------------------------------------------

    def current(self) -> CertInfo | None:
        """The stored ACME certificate, if any and readable."""
        try:
            return read_pem(self.paths.cert.read_bytes())
        except (OSError, ValueError):  # CertificateFormatError is a ValueError
            return None

    def due(self) -> tuple[datetime.datetime, str]:
        """When to (re)issue, and why."""
        now = self.clock()
        if self.paths.renew_flag.exists():
            return now, "renewal requested (mailroom cert renew)"
        info = self.current()
        if info is None:
            return now, "no ACME certificate yet"
        if not covers(info, self.names):
            missing = ", ".join(n for n in self.names if n not in info.names)
            return now, f"the certificate does not cover {missing}"
        return renewal_time(info.not_before, info.not_after), "a third of its lifetime remains"

    def _write_state(self, **fields: Any) -> None:
        state = read_state(self.paths)
        state.update(fields)
        state["names"] = self.names
        try:
            self.paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.paths.state.with_name(".state.json.tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.paths.state)
        except OSError as exc:
            log.warning("acme: cannot write %s: %s", self.paths.state, exc.strerror)

    async def _acme_loop(self) -> None:
        while True:
            when, why = self.due()
            if not self.paths.renew_flag.exists():
                if self.next_retry is not None:
                    when = max(when, self.next_retry)
                if self.last_success is not None:  # never twice in quick succession, whatever the CA sends
                    when = max(when, self.last_success + datetime.timedelta(seconds=self.retry_base))
            wait = (when - self.clock()).total_seconds()
            if wait > 0:
                self._write_state(next_attempt=_iso(when), next_reason=why)
                await self._sleep(min(wait, RECHECK))
                self._forced_reload = False
                continue
            await self._issue_once(why)

    async def _issue_once(self, why: str) -> None:
        names = list(self.names)
        log.info(
            "acme: requesting a certificate for %s from %s (%s)",
            ", ".join(names),
            self.cfg.tls.acme_directory,
            why,
        )
        started = self.clock()
        self._write_state(last_attempt=_iso(started))
        try:
            issued = await self._issue(names, list(self.cfg.tls.acme_challenges))
            info = self._install(issued)
        except Exception as exc:
            message = str(exc) if isinstance(exc, IssueError | TLSError) else f"{type(exc).__name__}: {exc}"
            message = " ".join(message.split())
            delay = retry_delay(self.attempt, self.rng, self.retry_base, self.retry_cap)
            self.attempt += 1
            self.next_retry = self.clock() + datetime.timedelta(seconds=delay)
            serving = self.tls.info.summary() if self.tls.info else str(self.tls.cert)
            log.error(
                "acme: no certificate for %s: %s; still serving %s; next attempt in %ds",
                ", ".join(names),
                message,
                serving,
                delay,
            )
            self._write_state(last_result="failed", last_error=message, next_attempt=_iso(self.next_retry))
            return
        self.attempt = 0
        self.next_retry = None
        self.last_success = self.clock()
        with contextlib.suppress(FileNotFoundError):
            self.paths.renew_flag.unlink()
        log.info(
            "acme: installed new certificate %s (challenge %s); new connections use it now",
            info.summary(),
            issued.challenge,
        )
        self._write_state(
            last_result="ok",
            last_error=None,
            last_success=_iso(self.last_success),
            serial=f"{info.serial:x}",
            next_attempt=_iso(renewal_time(info.not_before, info.not_after)),
        )

    @property
    def issuer(self) -> Issuer:
        """The in-process issuer (tests inject theirs; the ACME client is imported only here)."""
        if self._issuer is None:
            self._issuer = (
                _acme_issuer(self.cfg, self.paths.account_key, self.responder)
                if self.cfg.tls.mode == "acme"
                else _NoIssuer()
            )
        return self._issuer

    async def _issue(self, names: list[str], preference: list[str]) -> Issued:
        """One issuance in the worker process, or in a daemon thread when there is none."""
        if self.worker is not None:
            try:
                return await self.worker.issue(self.responder, **self._worker_request(names, preference))
            except WorkerUnavailable as exc:
                log.warning(
                    "acme: the certificate worker cannot run (%s): issuing in the server process from now on",
                    exc,
                )
                self.worker = None
        return await in_daemon_thread(self.issuer.issue, names, preference)

    def _worker_request(self, names: list[str], preference: list[str]) -> dict[str, Any]:
        tls, listeners = self.cfg.tls, self.cfg.listeners
        return {
            "names": names,
            "preference": preference,
            "directory_url": tls.acme_directory,
            "email": tls.acme_email,
            "account_key": str(self.paths.account_key),
            "ca_file": tls.acme_ca_file,
            "available": [
                typ for typ in CHALLENGE_TYPES if (listeners.http if typ == "http-01" else listeners.https)
            ],
        }

    def _install(self, issued: Issued) -> CertInfo:
        """Check the new pair, store it (key 0600), then load it into the shared context."""
        staged_cert = self.paths.root / ".new-cert.pem"
        staged_key = self.paths.root / ".new-key.pem"
        write_private(staged_key, issued.key_pem)
        staged_cert.write_bytes(issued.fullchain_pem)
        try:
            self.tls.load(staged_cert, staged_key, cert_key="tls.mode", key_key="tls.mode")  # raises if bad
        except TLSError:
            staged_cert.unlink(missing_ok=True)
            staged_key.unlink(missing_ok=True)
            raise
        os.replace(staged_key, self.paths.key)
        os.replace(staged_cert, self.paths.cert)
        self.tls.cert, self.tls.key = self.paths.cert, self.paths.key
        assert self.tls.info is not None
        return self.tls.info


class _NoIssuer:
    """Stands in when tls.mode is not "acme", so the ACME client library is never imported."""

    def issue(self, names: list[str], preference: list[str]) -> Issued:
        raise IssueError('tls.mode is not "acme"')


def _acme_issuer(cfg: Config, account_key: Path, responder: ChallengeResponder) -> Issuer:
    from mailroom.acme.client import ACMEIssuer  # heavy (requests, josepy): only when used

    return ACMEIssuer(
        cfg.tls.acme_directory,
        cfg.tls.acme_email,
        account_key,
        responder,
        ca_file=cfg.tls.acme_ca_file,
        available=lambda typ: bool(cfg.listeners.http if typ == "http-01" else cfg.listeners.https),
    )


def preload_in_process(cfg: Config) -> None:
    """Import what in-process certificate work needs, for a server about to drop privileges to a user
    who cannot read the Python installation (app.py's LAZY already has cryptography)."""
    if cfg.tls.mode == "acme":
        import mailroom.acme.client  # noqa: F401 - acme, josepy, requests
