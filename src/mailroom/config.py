"""Configuration: one TOML file -> frozen dataclasses.

One schema serves three purposes (ARCHITECTURE habit 12): validation, defaults, and the commented
sample printed by ``mailroom config example``. Every problem is reported as one line naming the
dotted key (``limits.message_size: expected a size like "50MiB", got 'huge'``); unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("/etc/mailroom/mailroom.toml")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
        self.path: Path | None = None  # the file it was found in, when there is one


# --- value parsers: each takes (dotted key, raw TOML value) and returns the typed value -------------

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "M": 1024**2,
    "MiB": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f'expected a size like "50MiB", got {value!r}')
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(key, f"must be positive, got {value}")
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if size <= 0:
            raise ConfigError(key, f"must be positive, got {value!r}")
        return size
    raise ConfigError(key, f'expected a size like "50MiB", got {value!r}')


def parse_duration(key: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(key, f'expected a duration like "30s" or "5m", got {value!r}')
    if seconds <= 0:
        raise ConfigError(key, f"must be positive, got {value!r}")
    return seconds


def _parse_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _parse_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if value < 0:
        raise ConfigError(key, f"must not be negative, got {value}")
    return value


def _parse_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _parse_str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if v)
    raise ConfigError(key, f"expected a string or a list of strings, got {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        text = _parse_str(key, value)
        if text not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _hostname(key: str, value: Any) -> str:
    text = _parse_str(key, value).strip().rstrip(".").lower()
    try:
        ascii_name = text.encode("idna").decode("ascii") if text else ""
    except UnicodeError:
        raise ConfigError(key, f"not a valid host name: {value!r}") from None
    labels = ascii_name.split(".")
    if (
        not ascii_name
        or len(ascii_name) > 253
        or not all(
            0 < len(label) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label) for label in labels
        )
    ):
        raise ConfigError(key, f"not a valid host name: {value!r}")
    return ascii_name


@dataclass(frozen=True)
class Endpoint:
    """A listening address: host (IPv4/IPv6 literal or name) and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(key: str, text: str) -> Endpoint:
    """``"0.0.0.0:25"``, ``"[::]:25"``, ``"localhost:2525"``."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:]+):(\d{1,5})", text.strip())
    if not m:
        raise ConfigError(key, f'expected "address:port" (IPv6 as "[::1]:port"), got {text!r}')
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port < 65536:  # 0: any free port (tests)
        raise ConfigError(key, f"port out of range in {text!r}")
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"not an IPv6 address: {host!r}") from None
    return Endpoint(host, port)


def _endpoints(key: str, value: Any) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(key, text) for text in _parse_str_list(key, value))


def _nameservers(key: str, value: Any) -> tuple[str, ...]:
    servers = _parse_str_list(key, value)
    for server in servers:
        if server == "system":
            continue
        text = (
            server
            if re.search(r"\]:\d+$|^[^:\[\]]+:\d+$", server)
            else (f"[{server}]:53" if ":" in server else f"{server}:53")
        )
        endpoint = parse_endpoint(key, text)
        try:
            ipaddress.ip_address(endpoint.host)
        except ValueError:
            raise ConfigError(key, f'expected IP addresses or "system", got {server!r}') from None
    return servers


def _ip_version(version: int) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        text = _parse_str(key, value).strip()
        if not text:
            return ""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(key, f"not an IP address: {text!r}") from None
        if address.version != version:
            raise ConfigError(key, f"expected an IPv{version} address, got {text!r}")
        return str(address)

    return parse


def _hostnames(key: str, value: Any) -> tuple[str, ...]:
    return tuple(_hostname(key, name) for name in _parse_str_list(key, value))


def _challenges(key: str, value: Any) -> tuple[str, ...]:
    kinds = _parse_str_list(key, value)
    for kind in kinds:
        if kind not in ("http-01", "tls-alpn-01"):
            raise ConfigError(key, f'expected "http-01" or "tls-alpn-01", got {kind!r}')
    if not kinds:
        raise ConfigError(key, "must name at least one challenge type")
    return kinds


def _relay(key: str, value: Any) -> str:
    text = _parse_str(key, value).strip()
    if text:
        from mailroom.delivery.routing import parse_relay

        try:
            parse_relay(text)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    return text


def _routes(key: str, value: Any) -> tuple[str, ...]:
    routes = _parse_str_list(key, value)
    for route in routes:
        domain, sep, relay = route.partition("=")
        if not sep or not domain.strip():
            raise ConfigError(key, f'expected "domain=host:port", got {route!r}')
        _relay(key, relay)
    return routes


def _optional_path(key: str, value: Any) -> str:
    return _parse_str(key, value)


def _option(default: Any, help: str, parse: Callable[[str, Any], Any], example: Any = None) -> Any:
    """A schema field: its default, one help line, its parser and the value shown in the sample."""
    meta = {"help": help, "parse": parse, "example": default if example is None else example}
    return field(default=default, metadata=meta)


# --- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = _option(
        "localhost",
        "EHLO name, greeting and certificate name (a fully qualified name in production)",
        _hostname,
        "mail.example.org",
    )
    data_dir: str = _option(
        "/var/lib/mailroom", "Directory for the SQLite database, spool, keys and certificates", _optional_path
    )
    user: str = _option(
        "",
        'After binding the ports, run as this user ("" = stay as started; a warning if that is root)',
        _parse_str,
        "mailroom",
    )


@dataclass(frozen=True)
class ListenersConfig:
    smtp: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 25), Endpoint("::", 25)),
        "MX: inbound mail from the internet (no AUTH, local recipients only)",
        _endpoints,
        ["0.0.0.0:25", "[::]:25"],
    )
    submission: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 587),), "Message submission: STARTTLS, then AUTH", _endpoints, "0.0.0.0:587"
    )
    submissions: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 465),),
        "Message submission over implicit TLS (RFC 8314)",
        _endpoints,
        "0.0.0.0:465",
    )
    imap: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 143),), "IMAP with STARTTLS (no login before TLS)", _endpoints, "0.0.0.0:143"
    )
    imaps: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 993),), "IMAP over implicit TLS", _endpoints, "0.0.0.0:993"
    )
    pop3: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 110),), "POP3 with STLS (no login before TLS)", _endpoints, "0.0.0.0:110"
    )
    pop3s: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 995),), "POP3 over implicit TLS", _endpoints, "0.0.0.0:995"
    )
    http: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 80),),
        "HTTP: ACME http-01, client autoconfig, MTA-STS policy",
        _endpoints,
        "0.0.0.0:80",
    )
    https: tuple[Endpoint, ...] = _option(
        (Endpoint("0.0.0.0", 443),),
        "HTTPS: ACME tls-alpn-01, autoconfig, MTA-STS policy",
        _endpoints,
        "0.0.0.0:443",
    )


@dataclass(frozen=True)
class LimitsConfig:
    message_size: int = _option(
        50 * 1024 * 1024,
        "Largest message accepted; SMTP SIZE and IMAP APPENDLIMIT advertise it",
        parse_size,
        "50MiB",
    )
    max_recipients: int = _option(
        100, "Recipients per SMTP transaction (RFC 5321 §4.5.3.1.8 asks for at least 100)", _parse_int
    )
    max_connections: int = _option(1000, "Open connections in total, all listeners together", _parse_int)
    max_connections_per_ip: int = _option(
        20, "Open connections from one client address (IPv6: per /64)", _parse_int
    )
    submission_messages_per_day: int = _option(
        1000,
        "Messages one account may submit per day (a stolen password must not make this host a spam source)",
        _parse_int,
    )
    submission_new_recipients_per_day: int = _option(
        200, "Remote recipients an account writes to for the first time, per day", _parse_int
    )
    smtp_timeout: float = _option(
        300.0,
        "Idle time allowed between SMTP commands (RFC 5321 §4.5.3.2.7: 5 minutes)",
        parse_duration,
        "5m",
    )
    imap_idle_timeout: float = _option(
        1800.0, "IMAP inactivity timeout (RFC 9051 §5.4: at least 30 minutes)", parse_duration, "30m"
    )
    pop3_timeout: float = _option(
        600.0, "POP3 inactivity timeout (RFC 1939 §3: at least 10 minutes)", parse_duration, "10m"
    )
    tls_handshake_timeout: float = _option(30.0, "Time allowed for a TLS handshake", parse_duration, "30s")
    auth_cache_ttl: float = _option(
        3600.0,
        "How long a verified password is remembered (in memory, as a keyed hash) so logins skip argon2;"
        " a password change ends it at once (Dovecot's auth_cache_ttl); 0 = off",
        lambda key, value: (
            0.0 if type(value) in (int, float, str) and value in (0, "0") else parse_duration(key, value)
        ),
        "1h",
    )


@dataclass(frozen=True)
class TLSConfig:
    mode: str = _option(
        "self-signed",
        '"self-signed" (made on first start), "files" (cert and key below) or "acme"',
        _choice("self-signed", "files", "acme"),
    )
    cert: str = _option(
        "", 'Certificate chain (PEM) for mode = "files"', _optional_path, "/etc/mailroom/fullchain.pem"
    )
    key: str = _option(
        "", 'Private key (PEM) for mode = "files"', _optional_path, "/etc/mailroom/privkey.pem"
    )
    acme_directory: str = _option(
        "https://acme-v02.api.letsencrypt.org/directory",
        "ACME directory URL (Let's Encrypt staging or a local Pebble work too)",
        _parse_str,
    )
    acme_email: str = _option(
        "", "Contact address for the ACME account", _parse_str, "postmaster@example.org"
    )
    acme_ca_file: str = _option(
        "", "Extra CA bundle to trust the ACME server (a private one such as Pebble)", _optional_path, ""
    )
    acme_names: tuple[str, ...] = _option(
        (),
        "More names for the ACME certificate besides server.hostname (e.g. autoconfig., mta-sts.)",
        _hostnames,
        [],
    )
    acme_challenges: tuple[str, ...] = _option(
        ("http-01", "tls-alpn-01"),
        'ACME challenge types to try, in order: "http-01" (http listener), "tls-alpn-01" (https listener)',
        _challenges,
        ["http-01", "tls-alpn-01"],
    )
    watch_interval: float = _option(
        30.0,
        'How often mode = "files" checks cert and key for changes (SIGHUP re-reads them at once)',
        parse_duration,
        "30s",
    )


@dataclass(frozen=True)
class DNSConfig:
    nameservers: tuple[str, ...] = _option(
        ("system",),
        '"system" (/etc/resolv.conf) or addresses like "127.0.0.1:5353", "[::1]:5353"; [] turns lookups off',
        _nameservers,
        ["system"],
    )
    timeout: float = _option(3.0, "Time allowed per DNS query", parse_duration, "3s")


@dataclass(frozen=True)
class DeliveryConfig:
    ipv6: bool = _option(
        True, "Deliver over IPv6 too (big providers refuse IPv6 senders without a PTR record)", _parse_bool
    )
    source_ipv4: str = _option(
        "",
        'Source address for outbound IPv4 connections, so SPF sees the address the records name ("" = any)',
        _ip_version(4),
        "",
    )
    source_ipv6: str = _option(
        "", 'Source address for outbound IPv6 connections ("" = any)', _ip_version(6), ""
    )
    smarthost: str = _option(
        "",
        'Send all outbound mail through this relay, "host:port" (home ISPs often block port 25; "" = deliver by MX)',
        _relay,
        "",
    )
    smarthost_tls: str = _option(
        "starttls",
        '"starttls" (required), "implicit" (port 465) or "none" for the smarthost',
        _choice("starttls", "implicit", "none"),
    )
    smarthost_username: str = _option("", 'Username for AUTH at the smarthost ("" = no AUTH)', _parse_str, "")
    smarthost_password_file: str = _option(
        "",
        "File holding the smarthost password (kept out of this file so it can stay world-readable)",
        _parse_str,
        "",
    )
    smarthost_ca_file: str = _option(
        "",
        "Extra CA bundle to verify the smarthost's certificate (a relay's certificate is always verified)",
        _parse_str,
        "",
    )
    routes: tuple[str, ...] = _option(
        (),
        'Per-destination relays, e.g. ["outlook.com=relay.example:587", ".hotmail.com=relay.example:587"]',
        _routes,
        [],
    )
    mx_port: int = _option(25, "Port of the MX hosts (25 on the internet; tests use others)", _parse_int)
    max_parallel: int = _option(10, "Outbound SMTP transactions at the same time", _parse_int)
    give_up_after: float = _option(
        432000.0, "Bounce a message still undelivered after this long", parse_duration, "5d"
    )
    delay_warning_after: float = _option(
        14400.0, "Tell the sender mail is delayed after this long (once)", parse_duration, "4h"
    )


@dataclass(frozen=True)
class LogConfig:
    level: str = _option(
        "info", "debug, info, warning or error", _choice("debug", "info", "warning", "error")
    )


def _ip_addresses(key: str, value: Any) -> tuple[str, ...]:
    out = []
    for text in _parse_str_list(key, value):
        try:
            out.append(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            raise ConfigError(key, f"not an IP address: {text!r}") from None
    return tuple(out)


def _report_address(key: str, value: Any) -> str:
    text = _parse_str(key, value).strip()
    if text and (text.count("@") != 1 or any(c in text for c in " ,;!<>")):
        raise ConfigError(key, f"expected an address like dmarc@example.org, got {text!r}")
    return text


@dataclass(frozen=True)
class PublicConfig:
    addresses: tuple[str, ...] = _option(
        (),
        "This host's public IP addresses: its A/AAAA and SPF records and the PTR checks of `mailroom check`",
        _ip_addresses,
        ["203.0.113.7", "2001:db8::7"],
    )
    report_address: str = _option(
        "", 'Where DMARC aggregate and TLS-RPT reports go ("" = postmaster@ each domain)', _report_address, ""
    )
    caa_issuers: tuple[str, ...] = _option(
        (),
        "CAs allowed to issue this host's certificates, published as CAA records (RFC 8659); [] = none",
        _hostnames,
        ["letsencrypt.org"],
    )
    mta_sts: str = _option(
        "auto",
        'MTA-STS policy (RFC 8461): "auto" (testing until `mailroom check` finds all right, then enforce), "testing", "enforce", "none"',
        _choice("auto", "testing", "enforce", "none"),
    )


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log: LogConfig = field(default_factory=LogConfig)
    public: PublicConfig = field(default_factory=PublicConfig)
    source: str = "defaults"  # where this config came from (a path, or "dev defaults"); not a TOML key
    dev: bool = False

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def dns_enabled(self) -> bool:
        return bool(self.dns.nameservers)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "listeners": ListenersConfig,
    "limits": LimitsConfig,
    "tls": TLSConfig,
    "dns": DNSConfig,
    "delivery": DeliveryConfig,
    "log": LogConfig,
    "public": PublicConfig,
}


def _build_section(section: str, cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(section, f"expected a table [{section}], got {raw!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{section}.{key}"
        if key not in known:
            hint = _closest(key, known)
            raise ConfigError(dotted, "unknown key" + (f" (did you mean {section}.{hint}?)" if hint else ""))
        values[key] = known[key].metadata["parse"](dotted, value)
    return cls(**values)


def _closest(key: str, options: Mapping[str, Any]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return match[0] if match else None


def _validate(cfg: Config) -> None:
    """Rules that involve more than one key."""
    if cfg.tls.mode == "files":
        if not cfg.tls.cert:
            raise ConfigError("tls.cert", 'required when tls.mode = "files"')
        if not cfg.tls.key:
            raise ConfigError("tls.key", 'required when tls.mode = "files"')
    if cfg.delivery.smarthost_username and cfg.delivery.smarthost_tls == "none":
        raise ConfigError(
            "delivery.smarthost_tls", '"none" with smarthost_username would send the password in clear'
        )
    if cfg.delivery.smarthost_username and not cfg.delivery.smarthost_password_file:
        raise ConfigError("delivery.smarthost_password_file", "required with smarthost_username")
    if cfg.tls.mode == "acme" and not cfg.tls.acme_email:
        raise ConfigError("tls.acme_email", 'required when tls.mode = "acme"')
    if not cfg.server.data_dir:
        raise ConfigError("server.data_dir", "must not be empty")
    seen: dict[Endpoint, str] = {}
    for name in (f.name for f in dataclasses.fields(ListenersConfig)):
        for endpoint in getattr(cfg.listeners, name):
            if endpoint in seen:
                raise ConfigError(
                    f"listeners.{name}", f"{endpoint} is also used by listeners.{seen[endpoint]}"
                )
            seen[endpoint] = name


def from_dict(raw: Mapping[str, Any], source: str = "defaults") -> Config:
    sections: dict[str, Any] = {}
    for section, value in raw.items():
        if section not in _SECTIONS:
            hint = _closest(section, _SECTIONS)
            raise ConfigError(section, "unknown section" + (f" (did you mean [{hint}]?)" if hint else ""))
        sections[section] = _build_section(section, _SECTIONS[section], value)
    cfg = Config(**sections, source=source)
    _validate(cfg)
    return cfg


def load_file(path: Path) -> Config:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: TOML syntax error: {exc}") from None
    try:
        return from_dict(raw, source=str(path))
    except ConfigError as exc:
        exc.path = path
        raise


# Dev defaults: loopback high ports that avoid the test peers' ports (2525, 2465, 2587, 1143, 1993,
# 1110, 1995, 5353, 14000, 15000, 5001, 5002), data in ./mailroom-data, DNS off.
DEV_PORTS = {
    "smtp": 10025,
    "submission": 10587,
    "submissions": 10465,
    "imap": 10143,
    "imaps": 10993,
    "pop3": 10110,
    "pop3s": 10995,
    "http": 10080,
    "https": 10443,
}


def dev_defaults(data_dir: str = "./mailroom-data") -> Config:
    listeners = ListenersConfig(**{name: (Endpoint("127.0.0.1", port),) for name, port in DEV_PORTS.items()})
    return Config(
        server=ServerConfig(hostname="localhost", data_dir=str(Path(data_dir).resolve())),
        listeners=listeners,
        dns=DNSConfig(nameservers=()),
        source="dev defaults (no config file)",
        dev=True,
    )


def locate(cli_path: str | None) -> Path | None:
    """--config, else $CONFIG_PATH, else /etc/mailroom/mailroom.toml if present, else None (dev)."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get("CONFIG_PATH")
    if env:
        return Path(env)
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return None


def load(cli_path: str | None = None) -> Config:
    path = locate(cli_path)
    return dev_defaults() if path is None else load_file(path)


# --- the sample config, generated from the schema ----------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def example() -> str:
    lines = [
        "# mailroom configuration (generated by `mailroom config example`).",
        "# Every key is optional; the value shown is an example or the default.",
        "# Check a file with `mailroom config check PATH`.",
    ]
    for section, cls in _SECTIONS.items():
        lines.append("")
        lines.append(f"[{section}]")
        for f in dataclasses.fields(cls):
            lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(f.metadata['example'])}")
    return "\n".join(lines) + "\n"
