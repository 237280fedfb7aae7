from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailroom import config
from mailroom.config import ConfigError, Endpoint


def error_of(raw: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    return info.value


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"server": {"hostnme": "x"}}, "server.hostnme", "did you mean server.hostname"),
        ({"srever": {}}, "srever", "unknown section"),
        ({"server": "x"}, "server", "expected a table"),
        ({"server": {"hostname": 5}}, "server.hostname", "expected a string"),
        ({"server": {"hostname": "bad host!"}}, "server.hostname", "not a valid host name"),
        ({"limits": {"message_size": "huge"}}, "limits.message_size", "expected a size"),
        ({"limits": {"message_size": -1}}, "limits.message_size", "must be positive"),
        ({"limits": {"max_recipients": "10"}}, "limits.max_recipients", "expected an integer"),
        ({"limits": {"smtp_timeout": "soon"}}, "limits.smtp_timeout", "expected a duration"),
        ({"listeners": {"smtp": "1.2.3.4"}}, "listeners.smtp", 'expected "address:port"'),
        ({"listeners": {"smtp": "1.2.3.4:99999"}}, "listeners.smtp", "port out of range"),
        (
            {"listeners": {"imap": ["[::1]:25"], "smtp": "[::1]:25"}},
            "listeners.imap",
            "also used by listeners.smtp",
        ),
        ({"listeners": {"smtp": 25}}, "listeners.smtp", "expected a string or a list"),
        ({"tls": {"mode": "letsencrypt"}}, "tls.mode", "expected one of self-signed, files, acme"),
        ({"tls": {"mode": "files", "key": "/k"}}, "tls.cert", "required"),
        ({"tls": {"mode": "acme"}}, "tls.acme_email", "required"),
        ({"dns": {"nameservers": ["resolver.example"]}}, "dns.nameservers", "expected IP addresses"),
        ({"delivery": {"ipv6": "no"}}, "delivery.ipv6", "expected true or false"),
        ({"delivery": {"source_ipv4": "::1"}}, "delivery.source_ipv4", "expected an IPv4 address"),
        ({"log": {"level": "verbose"}}, "log.level", "expected one of"),
    ],
)
def test_errors_name_the_key(raw: dict[str, object], key: str, fragment: str) -> None:
    err = error_of(raw)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")
    assert fragment in str(err)
    assert "\n" not in str(err)


def test_values_parse() -> None:
    cfg = config.from_dict(
        {
            "server": {"hostname": "Mail.Example.ORG.", "data_dir": "/srv/mail"},
            "listeners": {"smtp": ["0.0.0.0:25", "[::]:25"], "imap": "", "pop3": []},
            "limits": {"message_size": "10MiB", "smtp_timeout": "2m"},
            "dns": {"nameservers": ["127.0.0.1:5353", "[::1]:5353", "system"]},
        }
    )
    assert cfg.server.hostname == "mail.example.org"
    assert cfg.listeners.smtp == (Endpoint("0.0.0.0", 25), Endpoint("::", 25))
    assert cfg.listeners.imap == () and cfg.listeners.pop3 == ()
    assert cfg.limits.message_size == 10 * 1024 * 1024
    assert cfg.limits.smtp_timeout == 120.0
    assert cfg.dns.nameservers == ("127.0.0.1:5353", "[::1]:5353", "system")
    assert str(Endpoint("::", 25)) == "[::]:25"


def test_example_is_complete_and_valid() -> None:
    text = config.example()
    raw = tomllib.loads(text)
    cfg = config.from_dict(raw)
    assert cfg.server.hostname == "mail.example.org"
    # every schema field appears, each with a help line above it
    for section, cls in config._SECTIONS.items():
        for field in cls.__dataclass_fields__:
            assert field in raw[section], f"{section}.{field} missing from the example"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line


def test_dev_defaults_avoid_peer_ports() -> None:
    cfg = config.dev_defaults("/tmp/x")
    ports = {ep.port for name in config.DEV_PORTS for ep in getattr(cfg.listeners, name)}
    peer_ports = {2525, 2465, 2587, 1143, 1993, 1110, 1995, 5353, 14000, 15000, 5001, 5002, 2526}
    assert ports.isdisjoint(peer_ports)
    assert all(ep.host == "127.0.0.1" for name in config.DEV_PORTS for ep in getattr(cfg.listeners, name))
    assert not cfg.dns_enabled and cfg.dev and cfg.server.hostname == "localhost"


def test_locate_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc.toml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", etc)
    monkeypatch.delenv("CONFIG_PATH", raising=False)
    assert config.locate(None) is None
    etc.write_text("")
    assert config.locate(None) == etc
    monkeypatch.setenv("CONFIG_PATH", str(tmp_path / "env.toml"))
    assert config.locate(None) == tmp_path / "env.toml"
    assert config.locate("/x.toml") == Path("/x.toml")


def test_load_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nhostname = 1")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        config.load_file(bad)
    with pytest.raises(ConfigError, match="no such file"):
        config.load_file(tmp_path / "missing.toml")
    bad.write_text('[limits]\nmessage_size = "big"\n')
    with pytest.raises(ConfigError) as info:
        config.load_file(bad)
    assert info.value.path == bad and info.value.key == "limits.message_size"
