"""The composition root: the only module that wires config, store, TLS, listeners and sessions."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import pwd
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mailroom import config as configmod
from mailroom import logs
from mailroom.acme.challenges import ChallengeResponder
from mailroom.acme.manager import CertificateManager, initial_certificate, preload_in_process
from mailroom.acme.workerclient import CertWorker
from mailroom.config import Config, ConfigError
from mailroom.net.listeners import KINDS, BindError, ConnectionLimits, Listener, SessionHandler, bind
from mailroom.net.tls import ServerTLS, TLSError
from mailroom.passwords import generate_password
from mailroom.policy.auth import Authenticator
from mailroom.store import directory
from mailroom.store.database import StoreError, open_database, transaction
from mailroom.store.service import Store
from mailroom.store.spool import clean_spool

if TYPE_CHECKING:
    from mailroom.delivery.runner import QueueRunner
    from mailroom.services import SessionContext

log = logging.getLogger("mailroom.server")


class StartupError(Exception):
    """A problem that stops the server from starting; one line for the user."""


@dataclasses.dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int


def resolve_user(cfg: Config) -> RunAs | None:
    """The account to run as, or None to stay as started."""
    if not cfg.server.user:
        return None
    try:
        entry = pwd.getpwnam(cfg.server.user)
    except KeyError:
        raise ConfigError("server.user", f"no such system user: {cfg.server.user!r}") from None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def drop_privileges(run_as: RunAs | None) -> None:
    """As root: become [server] user (groups first, then gid, then uid)."""
    if run_as is None or os.geteuid() != 0:
        return
    os.setgroups([])
    os.setgid(run_as.gid)
    os.setuid(run_as.uid)
    os.environ["HOME"] = pwd.getpwuid(run_as.uid).pw_dir


# Modules the sessions import at first use: stdlib email helpers and codecs, and the heavy
# libraries an idle server does not need (dnspython at the first lookup, dkimpy and pyspf at the
# first check, cryptography when a key or certificate is made). Together they are about 15 MiB.
LAZY = (
    "mailroom.services",
    "mailroom.delivery.runner",
    "mailroom.dnsquery",
    "email.header",
    "email.utils",
    "email._header_value_parser",
    "email.headerregistry",
    "email.parser",
    "email.policy",
    "encodings.idna",
    "encodings.punycode",
    "stringprep",
    "unicodedata",
    "dkim",
    "spf",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.hazmat.primitives.serialization",
    "xml.etree.ElementTree",
    "plistlib",
)
# Run as [server] user on a throw-away interpreter: exit 0 when every Python file under the
# import path is readable (directories also searchable), so imports after the drop will work.
_READABLE_CHECK = """
import os, sys
def unreadable(error):
    sys.exit(1)
for top in sys.argv[1:]:
    for root, dirs, files in os.walk(top, onerror=unreadable):
        if not os.access(root, os.R_OK | os.X_OK):
            sys.exit(1)
        for name in files:
            if name.endswith((".py", ".so")) and not os.access(os.path.join(root, name), os.R_OK):
                sys.exit(1)
    if os.path.isfile(top) and not os.access(top, os.R_OK):
        sys.exit(1)
"""


def readable_after_drop(run_as: RunAs, paths: list[str] | None = None, python: str = sys.executable) -> bool:
    """Can [server] user read the Python files mailroom imports lazily? (No when Python lives under
    /root, say.) Asked of a child interpreter running as that user, so ACLs count too."""
    import subprocess

    try:
        done = subprocess.run(
            [
                python,
                "-I",
                "-S",
                "-c",
                _READABLE_CHECK,
                *(paths or [p for p in sys.path if os.path.isdir(p)]),
            ],
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def preload_modules() -> None:
    import importlib

    for name in LAZY:
        importlib.import_module(name)


def prepare_data_dir(cfg: Config, run_as: RunAs | None) -> Path:
    """Create data_dir (owned by the run-as user) and check it is writable by whoever will use it."""
    path = cfg.data_path
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if run_as is not None and os.geteuid() == 0:
            for sub in (path, path / "spool", path / "tls"):
                sub.mkdir(exist_ok=True, mode=0o700)
                os.chown(sub, run_as.uid, run_as.gid)
    except OSError as exc:
        raise StartupError(f"server.data_dir: cannot create {path}: {exc.strerror}") from None
    return path


def check_writable(path: Path) -> None:
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"server.data_dir: {path} is not writable by uid {os.geteuid()}: {exc.strerror}"
        ) from None


class ServerLock:
    """An flock on data_dir/mailroom.lock: one server per data_dir; `restore` checks it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "mailroom.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        self._file = open(self.path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            return False
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def server_running(data_dir: Path) -> bool:
    lock = ServerLock(data_dir)
    if not lock.path.exists():
        return False
    if lock.acquire():
        lock.release()
        return False
    return True


def ensure_demo_account(data_dir: Path, hostname: str, out: Callable[[str], None]) -> None:
    """Dev mode: on a database with no accounts, create demo@<hostname> and print its password once."""
    conn = open_database(data_dir)
    try:
        if directory.list_accounts(conn):
            return
        password = generate_password()
        with transaction(conn):
            if directory.get_domain(conn, hostname) is None:
                directory.add_domain(conn, hostname)
            account = directory.add_account(conn, f"demo@{hostname}", password)
        out(f"  demo account: {account.address}  password: {password}")
        out("  (shown once; change it with `mailroom user passwd demo@localhost`)")
    finally:
        conn.close()


class Server:
    def __init__(self, cfg: Config, config_path: Path | None, out: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.out = out
        self.listeners: list[Listener] = []
        self.store: Store | None = None
        self.tls: ServerTLS | None = None
        self.stopping = asyncio.Event()
        self.lock: ServerLock | None = None
        self.handlers: dict[str, SessionHandler] = {}
        self.contexts: list[SessionContext] = []  # what each protocol's sessions read the config from
        self.limits: ConnectionLimits | None = None
        self.challenges = ChallengeResponder(cfg.data_path / "tls" / "tmp")
        self.certs: CertificateManager | None = None
        self.cert_worker = True  # certificates are made in a child process unless it could not run
        self.runner: QueueRunner | None = None

    # --- start-up -------------------------------------------------------------------------------

    def prepare(self) -> list[tuple[str, socket.socket]]:
        """Everything that may need root, then drop privileges. Returns the bound sockets."""
        cfg = self.cfg
        run_as = resolve_user(cfg)
        data_dir = prepare_data_dir(cfg, run_as)
        sockets: list[tuple[str, socket.socket]] = []
        try:
            for service in KINDS:
                for endpoint in getattr(cfg.listeners, service):
                    sockets.append((service, bind(service, endpoint)))
        except Exception:
            for _, sock in sockets:
                sock.close()
            raise
        if run_as is not None and os.geteuid() == 0 and not readable_after_drop(run_as):
            log.info("%s cannot read the Python libraries: loading them all before the drop", run_as.name)
            preload_modules()
            self.cert_worker = False  # a child python could not import them either: work in-process
            preload_in_process(cfg)
        drop_privileges(run_as)
        if os.geteuid() == 0 and run_as is None and not cfg.dev:
            log.warning("running as root: set [server] user so mailroom drops privileges after binding")
        check_writable(data_dir)
        self.lock = ServerLock(data_dir)
        if not self.lock.acquire():
            raise StartupError(f"server.data_dir: another mailroom server is already using {data_dir}")
        for sub in ("spool", "tls"):
            (data_dir / sub).mkdir(exist_ok=True, mode=0o700)
        leftovers = clean_spool(data_dir / "spool")
        if leftovers:
            log.info("removed %d unacknowledged spool file(s) from an earlier run", leftovers)
        self.tls = self._load_tls(data_dir)
        self.store = Store(data_dir)
        return sockets

    def _load_tls(self, data_dir: Path) -> ServerTLS:
        # "acme" starts on its last certificate, else a self-signed one until the first issuance
        try:
            first = initial_certificate(self.cfg, data_dir, CertWorker() if self.cert_worker else None)
            tls = ServerTLS(
                first.cert,
                first.key,
                cert_key=first.cert_key,
                key_key=first.key_key,
                scratch_dir=data_dir / "tls" / "tmp",
            )
        except TLSError as exc:
            raise StartupError(str(exc)) from None
        assert tls.info is not None
        log.info("tls: serving %s: %s", first.note, tls.info.summary())
        return tls

    async def start(self, sockets: list[tuple[str, socket.socket]]) -> None:
        assert self.tls is not None
        limits = self.limits = ConnectionLimits(
            self.cfg.limits.max_connections, self.cfg.limits.max_connections_per_ip
        )
        for service, sock in sockets:
            kind = KINDS[service]
            handler = self.handlers.get(kind.protocol)
            if handler is None:
                log.warning(
                    "%s: not implemented in this version; %s is not served", service, sock.getsockname()
                )
                sock.close()
                continue
            # https does its own TLS: it reads the ClientHello first (ACME tls-alpn-01)
            context = None if kind.protocol == "http" else self.tls.context
            listener = Listener(kind, sock, handler, limits, context, self.cfg.limits.tls_handshake_timeout)
            await listener.start()
            self.listeners.append(listener)
            log.info("listening: %s on %s", service, listener.address)

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        sockets = self.prepare()
        try:
            from mailroom.services import build_handlers

            assert self.store is not None and self.tls is not None
            from mailroom import dns
            from mailroom.delivery.runner import QueueRunner

            resolver = dns.from_config(self.cfg.dns)
            self.runner = QueueRunner(self.cfg, self.store, resolver)
            self.handlers = build_handlers(
                self.cfg,
                self.store,
                self.tls,
                self.stopping,
                self.challenges,
                queued=self.runner.wake,
                resolver=resolver,
                contexts=self.contexts,
            )
            if self.cfg.dev:
                ensure_demo_account(self.cfg.data_path, self.cfg.server.hostname, self.out)
            if not self.cfg.dns_enabled:
                log.info("dns: lookups are off (no [dns] nameservers): remote delivery is deferred")
                log.info("dns: SPF, DKIM and DMARC checks will report 'none'")
            await self.start(sockets)
            self.certs = CertificateManager(
                self.cfg,
                self.tls,
                self.cfg.data_path,
                self.challenges,
                worker=CertWorker() if self.cert_worker else None,
            )
            self.certs.start()
            self.runner.start()
            self.out(
                "  listening: " + ", ".join(f"{lst.kind.service} {lst.address}" for lst in self.listeners)
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            log.info("mailroom ready (config: %s)", self.cfg.source)
            await self.stopping.wait()
            log.info("shutting down")
        finally:
            await self.shutdown()

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply it only if the whole file validates."""
        if self.config_path is None:
            log.info("reload: running on dev defaults, nothing to reload")
            return
        try:
            new = configmod.load_file(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        restart = [
            name
            for name in ("server", "listeners", "tls", "dns")
            if getattr(new, name) != getattr(self.cfg, name)
        ]
        if restart:
            log.warning("reload: changes to [%s] take effect after a restart", "], [".join(restart))
        keep = {name: getattr(self.cfg, name) for name in restart}
        self.cfg = dataclasses.replace(new, **keep)
        # sessions that start from now on see the new [limits], [delivery], [log]...
        for context in self.contexts:
            context.cfg = self.cfg
            auth = getattr(context, "auth", None)
            if isinstance(auth, Authenticator):
                auth.cache.ttl = self.cfg.limits.auth_cache_ttl
        if self.runner is not None:
            self.runner.cfg = self.cfg
        if self.limits is not None:
            self.limits.total = self.cfg.limits.max_connections
            self.limits.per_ip = self.cfg.limits.max_connections_per_ip
        logs.set_level(self.cfg.log.level)
        if self.certs is not None:
            self.certs.reload()  # files: re-read cert and key now; acme: re-check (and `cert renew`)
        log.info("reload: configuration applied from %s", self.config_path)

    async def shutdown(self) -> None:
        if self.certs is not None:
            await self.certs.stop()
        if self.runner is not None:
            await self.runner.stop()
        for listener in self.listeners:
            listener.stop_accepting()
        await asyncio.gather(*(listener.finish(grace=5.0) for listener in self.listeners))
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.lock is not None:
            self.lock.release()


def serve(cfg: Config, config_path: Path | None) -> int:
    logs.setup(cfg.log.level)
    server = Server(cfg, config_path)
    if cfg.dev:
        print(f"mailroom dev server: {cfg.source}; data in {cfg.data_path}")
    try:
        asyncio.run(server.run())
    except (StartupError, StoreError, BindError) as exc:
        print(f"mailroom: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
