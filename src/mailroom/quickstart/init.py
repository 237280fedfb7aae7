"""``mailroom init``: from nothing to a configured host in one command.

Writes a commented config (every schema key with its help line; the chosen values set, the rest
shown as commented defaults), creates data_dir (0700), the database, the domain, the admin account
with a generated password, DKIM keys (rsa 2048 and ed25519), the MTA-STS state (mode testing), and
optionally a hardened systemd unit. Refuses to overwrite an existing config, database or unit. On a
failure half-way, whatever it created is removed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import os
import pwd
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailroom import config as configmod
from mailroom.address import parse_address
from mailroom.config import Config, ConfigError
from mailroom.mailauth import dkim
from mailroom.passwords import generate_password
from mailroom.quickstart import mtasts
from mailroom.quickstart.records import Record, plan
from mailroom.quickstart.systemd import unit_text
from mailroom.store import directory
from mailroom.store.database import db_path, open_database, transaction

LETS_ENCRYPT = ("https://acme-v02.api.letsencrypt.org/", "https://acme-staging-v02.api.letsencrypt.org/")


class InitError(Exception):
    """One line for the user; nothing was left behind."""


@dataclass
class InitOptions:
    hostname: str
    domain: str
    admin: str
    public_ips: Sequence[str] = ()
    config_path: Path = configmod.DEFAULT_CONFIG_PATH
    data_dir: Path | None = None
    user: str | None = None  # None: "mailroom" when run as root, else "" (stay as started)
    tls: str = "acme"
    cert: str = ""
    key: str = ""
    nameservers: Sequence[str] = ()
    bind: Sequence[str] = ()
    settings: Sequence[str] = ()  # "section.key=value", value in TOML syntax or a bare string
    systemd: Path | None = None


@dataclass
class InitResult:
    cfg: Config
    config_path: Path
    admin: str
    password: str  # shown once by the caller, never logged
    keys: list[dkim.SigningKey]
    records: list[Record]
    policy: str  # the MTA-STS policy served ("" when MTA-STS is off)
    unit_path: Path | None = None
    notes: list[str] = field(default_factory=list)


# --- the config -----------------------------------------------------------------------------------

_PORTS: dict[str, int] = {
    f.name: getattr(configmod.ListenersConfig(), f.name)[0].port
    for f in dataclasses.fields(configmod.ListenersConfig)
}


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value); the value is read as TOML when it parses
    (``25``, ``true``, ``["a", "b"]``, ``"x"``), else taken as a plain string."""
    dotted, sep, value_text = text.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise InitError(
            f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set delivery.smarthost=relay.example:587"
        )
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return section, key, value


def build_raw(opts: InitOptions, data_dir: Path, user: str) -> dict[str, dict[str, Any]]:
    """The values init chooses, as TOML-ready data (these are the uncommented lines of the file)."""
    raw: dict[str, dict[str, Any]] = {
        "server": {"hostname": opts.hostname, "data_dir": str(data_dir), "user": user},
        "tls": {"mode": opts.tls},
        "public": {"addresses": list(opts.public_ips)},
    }
    if opts.tls == "files":
        raw["tls"].update(cert=opts.cert, key=opts.key)
    if opts.nameservers:
        raw["dns"] = {"nameservers": list(opts.nameservers)}
    if opts.bind:
        raw["listeners"] = {
            name: [_endpoint(address, port) for address in opts.bind] for name, port in _PORTS.items()
        }
    explicit: set[str] = set()
    for text in opts.settings:
        section, key, value = parse_setting(text)
        raw.setdefault(section, {})[key] = value
        explicit.add(f"{section}.{key}")
    domain = opts.domain
    if raw["tls"].get("mode") == "acme":
        raw["tls"].setdefault("acme_email", opts.admin)
        if "tls.acme_names" not in explicit:
            raw["tls"]["acme_names"] = [f"mta-sts.{domain}", f"autoconfig.{domain}"]
        directory_url = str(raw["tls"].get("acme_directory", configmod.TLSConfig.acme_directory))
        if "public.caa_issuers" not in explicit and directory_url.startswith(LETS_ENCRYPT):
            raw["public"]["caa_issuers"] = ["letsencrypt.org"]
    return raw


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, configmod.Endpoint):
        return str(value)
    return value


def _default_text(section: str, f: dataclasses.Field[Any]) -> str:
    """The default as the sample shows it ("50MiB", "5m") when that is the same value."""
    example = f.metadata["example"]
    try:
        if f.metadata["parse"](f"{section}.{f.name}", example) == f.default:
            return configmod._toml_value(example)
    except ConfigError:
        pass
    return configmod._toml_value(_plain(f.default))


def config_text(raw: dict[str, dict[str, Any]], header: Sequence[str] = ()) -> str:
    """Every section and key of the schema with its help line: chosen values set, others as
    commented-out defaults (uncomment to change)."""
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [
        "# Lines starting with '# key =' show the default; uncomment one to change it.",
        "# Check the file with `mailroom config check`; reload a running server with SIGHUP.",
    ]
    for section, cls in configmod._SECTIONS.items():
        chosen = raw.get(section, {})
        lines += ["", f"[{section}]"]
        for f in dataclasses.fields(cls):
            lines.append(f"# {f.metadata['help']}")
            if f.name in chosen:
                lines.append(f"{f.name} = {configmod._toml_value(chosen[f.name])}")
            else:
                lines.append(f"# {f.name} = {_default_text(section, f)}")
    unknown = set(raw) - set(configmod._SECTIONS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown section")
    return "\n".join(lines) + "\n"


# --- checks before anything is written ------------------------------------------------------------


def _run_user(opts: InitOptions) -> tuple[str, pwd.struct_passwd | None]:
    as_root = os.geteuid() == 0
    name = opts.user if opts.user is not None else ("mailroom" if as_root else "")
    if not name:
        return "", None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not as_root:
            return name, None  # written to the config; the server checks it when started as root
        raise InitError(
            f"no system user {name!r} to run the server as; create it first:\n"
            f"  useradd --system --home-dir {opts.data_dir or '/var/lib/mailroom'} --shell /usr/sbin/nologin {name}\n"
            f"(or choose another with --user NAME)"
        ) from None
    return name, entry if as_root else None


def _validate_names(opts: InitOptions) -> tuple[str, str, str]:
    try:
        host = configmod._hostname("HOSTNAME", opts.hostname)
        domain = configmod._hostname("--domain", opts.domain)
    except ConfigError as exc:
        raise InitError(str(exc)) from None
    if "." not in host:
        raise InitError(f"HOSTNAME: {host!r} is not a fully qualified name (like mail.{domain})")
    if "." not in domain:
        raise InitError(f"--domain: {domain!r} is not a fully qualified domain name")
    try:
        admin = parse_address(opts.admin)
    except ValueError as exc:
        raise InitError(f"--admin: {exc}") from None
    if admin.domain.lower() != domain:
        raise InitError(f"--admin: {admin} is not in the domain {domain} (the admin account lives here)")
    for ip in opts.public_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InitError(f"--public-ip: not an IP address: {ip!r}") from None
    return host, domain, str(admin)


# --- the work ---------------------------------------------------------------------------------------


class _Undo:
    """What init created, removed again if a later step fails."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, path: Path) -> None:
        self.paths.append(path)

    def rollback(self) -> None:
        for path in reversed(self.paths):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` (never overwrite) with ``mode`` whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(base, name), uid, gid, follow_symlinks=False)


def run_init(opts: InitOptions, now: datetime.datetime | None = None) -> InitResult:
    now = now or datetime.datetime.now(datetime.UTC)
    host, domain, admin = _validate_names(opts)
    opts = dataclasses.replace(opts, hostname=host, domain=domain, admin=admin)
    if opts.tls not in ("acme", "self-signed", "files"):
        raise InitError(f"--tls: expected acme, self-signed or files, got {opts.tls!r}")
    if opts.tls == "files" and not (opts.cert and opts.key):
        raise InitError("--tls files needs --cert and --key")
    user, run_as = _run_user(opts)
    data_dir = (opts.data_dir or Path(configmod.ServerConfig.data_dir)).absolute()
    config_path = opts.config_path.absolute()
    raw = build_raw(opts, data_dir, user)
    header = [
        f"mailroom configuration for {host}, written by `mailroom init` on {now:%Y-%m-%d}.",
        "",
    ]
    text = config_text(raw, header)
    cfg = configmod.from_dict(tomllib.loads(text), source=str(config_path))  # ConfigError: one line

    # Refuse before creating anything.
    if config_path.exists():
        raise InitError(f"{config_path} exists: not overwriting it (choose another with --config)")
    if db_path(data_dir).exists():
        raise InitError(f"{db_path(data_dir)} exists: not overwriting a database (choose another --data-dir)")
    unit_path = opts.systemd
    if unit_path is not None and unit_path.exists():
        raise InitError(f"{unit_path} exists: not overwriting it")
    if (
        not config_path.parent.is_dir()
        and os.geteuid() != 0
        and not os.access(config_path.parent.parent, os.W_OK)
    ):
        raise InitError(f"cannot create {config_path.parent}: choose another place with --config PATH")

    undo = _Undo()
    password = generate_password()
    try:
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
            undo.add(data_dir)
        os.chmod(data_dir, 0o700)  # keys, the database and the SRS secret live here
        conn = open_database(data_dir)
        for suffix in ("", "-wal", "-shm"):
            undo.add(db_path(data_dir).with_name(db_path(data_dir).name + suffix))
        try:
            with transaction(conn):
                directory.add_domain(conn, domain)
                directory.add_account(conn, admin, password)
        finally:
            conn.close()
        keys = []
        dkim_dir = dkim.key_dir(data_dir, domain)
        if not dkim_dir.exists():
            undo.add(dkim_dir)
        for key_type, letter in (("rsa", "r"), ("ed25519", "e")):
            selector = f"{now:%Y%m}{letter}"
            path = dkim.key_path(data_dir, domain, selector)
            if path.exists():
                raise InitError(f"{path} exists: not overwriting a DKIM key")
            keys.append(dkim.generate_key(data_dir, domain, selector, key_type))  # type: ignore[arg-type]
            undo.add(path)
        mode: mtasts.Mode | None = None
        if cfg.public.mta_sts != "none":
            state = mtasts.read_state(data_dir)
            state.setdefault(domain, "testing")
            mtasts.write_state(data_dir, state, now)
            undo.add(mtasts.state_path(data_dir))
            mode = mtasts.effective_mode(cfg, state[domain])
        if run_as is not None:
            _chown_tree(data_dir, run_as.pw_uid, run_as.pw_gid)
        if not config_path.parent.exists():
            config_path.parent.mkdir(parents=True, mode=0o755)
            undo.add(config_path.parent)
        _write_new(config_path, text, 0o640 if run_as is not None else 0o644)
        undo.add(config_path)
        if run_as is not None:
            os.chown(config_path, 0, run_as.pw_gid)  # root-owned: the server cannot rewrite its config
        if configmod.load_file(config_path) != dataclasses.replace(cfg, source=str(config_path)):
            raise InitError(f"{config_path}: does not read back as written (a bug: please report it)")
        if unit_path is not None:
            _write_new(unit_path, unit_text(cfg, config_path, user or None), 0o644)
            undo.add(unit_path)
    except BaseException:
        undo.rollback()
        raise
    modes = {domain: mode}
    records = plan(cfg, [domain], {domain: keys}, modes)
    policy = mtasts.policy_text(mode, [host]) if mode else ""
    notes = []
    if not opts.public_ips:
        notes.append(
            "no --public-ip given: A/AAAA and PTR records are left out and SPF names the host only; "
            "set [public] addresses and run `mailroom check --records` for the full list"
        )
    for ip in opts.public_ips:
        if not ipaddress.ip_address(ip).is_global:
            notes.append(f"{ip} is not a public address: mail from the internet cannot reach it without NAT")
    return InitResult(cfg, config_path, admin, password, keys, records, policy, unit_path, notes)
