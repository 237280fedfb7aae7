"""`mailroom init` in an empty directory: files, modes, database contents, the printed records."""

from __future__ import annotations

import os
import pwd
import re
import stat
import tomllib
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from mailroom import config as configmod
from mailroom.mailauth import dkim
from mailroom.passwords import verify_password
from mailroom.quickstart import init as initmod
from mailroom.quickstart import mtasts
from mailroom.store import directory
from mailroom.store.database import open_database
from tests.quickstart.support import blocks, password, rrsets, run_cli, snippet

HOST, DOMAIN, ADMIN = "mail.example.org", "example.org", "admin@example.org"


def init(tmp: Path, *extra: str) -> tuple[int, str, str]:
    result = run_cli(
        "init", HOST, "--domain", DOMAIN, "--admin", ADMIN,
        "--public-ip", "203.0.113.7", "--public-ip", "2001:db8::7",
        "--config", str(tmp / "etc" / "mailroom.toml"), "--data-dir", str(tmp / "data"), "--user", "",
        *extra,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_in_an_empty_directory(tmp_path: Path) -> None:
    code, out, err = init(tmp_path, "--systemd-unit", str(tmp_path / "mailroom.service"))
    assert code == 0, err
    config_path, data = tmp_path / "etc" / "mailroom.toml", tmp_path / "data"
    # files and modes
    assert mode(data) == 0o700
    assert mode(config_path) == 0o644  # no secrets in it; root-owned 0640 when a run-as user is set
    keys = sorted((data / "dkim" / DOMAIN).glob("*.key"))
    assert len(keys) == 2 and all(mode(k) == 0o600 for k in keys)
    assert mode(data / "dkim") == 0o700 and mode(data / "dkim" / DOMAIN) == 0o700
    assert mode(mtasts.state_path(data)) == 0o600
    assert mtasts.read_state(data) == {DOMAIN: "testing"}
    # the config: valid, the chosen values set, every other key shown commented with its help line
    cfg = configmod.load_file(config_path)
    assert cfg.server.hostname == HOST and cfg.data_path == data
    assert cfg.tls.mode == "acme" and cfg.tls.acme_email == ADMIN
    assert cfg.tls.acme_names == (f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}")
    assert cfg.public.addresses == ("203.0.113.7", "2001:db8::7") and cfg.public.caa_issuers == (
        "letsencrypt.org",
    )
    text = config_path.read_text()
    for section, cls in configmod._SECTIONS.items():
        assert f"\n[{section}]\n" in text
        for name in cls.__dataclass_fields__:
            assert f"\n{name} = " in text or f"\n# {name} = " in text, name
    settings = [
        line.removeprefix("# ") for line in text.splitlines() if re.match(r"(# )?[a-z0-9_]+ = ", line)
    ]
    commented = tomllib.loads("\n".join(settings))
    assert commented["message_size"] == "50MiB" and commented["smtp"] == ["0.0.0.0:25", "[::]:25"]
    # the database: the domain and the admin account, whose password is the one printed once
    secret = password(out)
    conn = open_database(data)
    try:
        assert [d.name for d in directory.list_domains(conn)] == [DOMAIN]
        (account,) = directory.list_accounts(conn)
        assert account.address == ADMIN and verify_password(account.password_hash, secret)
    finally:
        conn.close()
    assert out.count(secret) == 1 and secret not in err
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    # the systemd unit
    unit = (tmp_path / "mailroom.service").read_text()
    for line in (
        "ProtectSystem=strict",
        f"ReadWritePaths={data}",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "UMask=0077",
    ):
        assert line in unit.splitlines(), line
    assert f"--config {config_path} serve" in unit


def test_printed_records_parse_as_zone_files(tmp_path: Path) -> None:
    code, out, err = init(tmp_path)
    assert code == 0, err
    text = snippet(out)
    parts = blocks(text)
    assert set(parts) == {DOMAIN, "reverse"}
    zone = dns.zone.from_text(
        f"@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ 3600 IN NS ns.\n{parts[DOMAIN]}",
        origin=DOMAIN,
        relativize=False,
        check_origin=False,
    )
    types = {
        (str(name).rstrip("."), dns.rdatatype.to_text(rds.rdtype)) for name, rds in zone.iterate_rdatasets()
    }
    expected = {
        (DOMAIN, "MX"), (DOMAIN, "TXT"), (DOMAIN, "CAA"), (f"_dmarc.{DOMAIN}", "TXT"),
        (f"_mta-sts.{DOMAIN}", "TXT"), (f"mta-sts.{DOMAIN}", "CNAME"), (f"_smtp._tls.{DOMAIN}", "TXT"),
        (f"autoconfig.{DOMAIN}", "CNAME"), (f"_autodiscover._tcp.{DOMAIN}", "SRV"),
        (HOST, "A"), (HOST, "AAAA"), (HOST, "TXT"),
    }  # fmt: skip
    expected |= {
        (f"_{s}._tcp.{DOMAIN}", "SRV")
        for s in ("submissions", "submission", "imaps", "imap", "pop3s", "pop3")
    }
    assert expected <= types
    srv = {
        str(n).rstrip("."): rds[0].to_text()
        for n, rds in zone.iterate_rdatasets()
        if rds.rdtype == dns.rdatatype.SRV
    }
    assert srv[f"_imaps._tcp.{DOMAIN}"] == f"0 1 993 {HOST}."
    assert srv[f"_imap._tcp.{DOMAIN}"] == "0 0 0 ."  # RFC 8314 §5.1: use imaps
    assert srv[f"_submission._tcp.{DOMAIN}"] == "0 0 0 ." and srv[f"_pop3._tcp.{DOMAIN}"] == "0 0 0 ."
    # DKIM: strings of at most 255 bytes that join to the key on disk
    data = tmp_path / "data"
    for key in dkim.load_keys(data, DOMAIN):
        (rdata,) = zone.find_rdataset(key.record_name + ".", "TXT")
        assert all(len(s) <= 255 for s in rdata.strings)
        assert b"".join(rdata.strings).decode() == key.record
    rsa = next(k for k in dkim.load_keys(data, DOMAIN) if k.key_type == "rsa")
    assert rsa.private_key.key_size == 2048  # type: ignore[union-attr]
    (dmarc,) = zone.find_rdataset(f"_dmarc.{DOMAIN}.", "TXT")
    assert b"".join(dmarc.strings) == f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}".encode()
    (caa,) = zone.find_rdataset(DOMAIN + ".", "CAA")
    assert caa.to_text() == '0 issue "letsencrypt.org"'
    # the PTRs to ask the provider for, and the whole snippet with absolute names
    ptrs = {r.name.to_text(): r[0].to_text() for r in rrsets(parts["reverse"])}
    assert ptrs == {
        "7.113.0.203.in-addr.arpa.": f"{HOST}.",
        "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.": f"{HOST}.",
    }
    assert len(rrsets(text)) == len(types - {(DOMAIN, "SOA"), (DOMAIN, "NS")}) + 2
    # the table: names relative to the zone, the policy and the PTR request
    assert "  _dmarc              TXT    v=DMARC1; p=quarantine" in out
    assert "  203.0.113.7  PTR    mail.example.org." in out
    assert "mode: testing" in out and f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt" in out


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    assert init(tmp_path)[0] == 0
    config_path = tmp_path / "etc" / "mailroom.toml"
    before = config_path.read_bytes()
    code, _, err = init(tmp_path)
    assert code == 2 and "exists: not overwriting it" in err
    assert config_path.read_bytes() == before
    config_path.rename(tmp_path / "moved.toml")
    code, _, err = init(tmp_path)
    assert code == 2 and "mailroom.sqlite3 exists: not overwriting a database" in err
    assert not config_path.exists()
    (tmp_path / "unit").write_text("mine")
    code, _, err = init(tmp_path / "other", "--systemd-unit", str(tmp_path / "unit"))
    assert code == 2 and "unit exists" in err and not (tmp_path / "other").exists()
    assert (tmp_path / "unit").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--admin", "root@elsewhere.net"), "is not in the domain example.org"),
        (("--public-ip", "300.1.1.1"), "not an IP address"),
        (("--set", "delivery.smarthost=not a relay"), "delivery.smarthost:"),
        (("--set", "nosuch.key=1"), "unknown section"),
        (("--set", "justtext"), "expected SECTION.KEY=VALUE"),
        (("--tls", "files"), "--tls files needs --cert and --key"),
    ],
)
def test_bad_input_leaves_nothing(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = init(tmp_path, *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "etc").exists()


def test_hostname_must_be_qualified(tmp_path: Path) -> None:
    result = run_cli(
        "init", "mail", "--domain", DOMAIN, "--admin", ADMIN, "--config", str(tmp_path / "c.toml")
    )
    assert result.returncode == 2 and "not a fully qualified name" in result.stderr


def test_a_failure_half_way_removes_what_was_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(initmod, "unit_text", broken)
    opts = initmod.InitOptions(
        HOST,
        DOMAIN,
        ADMIN,
        config_path=tmp_path / "mailroom.toml",
        data_dir=tmp_path / "data",
        user="",
        systemd=tmp_path / "unit",
    )
    with pytest.raises(OSError, match="disk full"):
        initmod.run_init(opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bind_set_and_listeners_shape_the_records(tmp_path: Path) -> None:
    code, out, err = init(
        tmp_path,
        "--bind", "192.0.2.1", "--bind", "2001:db8::1",
        "--set", 'listeners.imaps=""', "--set", "listeners.pop3s=[]", "--set", 'listeners.pop3=""',
        "--set", "delivery.smarthost=relay.example.net:587", "--set", "log.level=debug",
        "--tls", "self-signed", "--nameserver", "127.0.0.1:5353",
    )  # fmt: skip
    assert code == 0, err
    cfg = configmod.load_file(tmp_path / "etc" / "mailroom.toml")
    assert [str(e) for e in cfg.listeners.smtp] == ["192.0.2.1:25", "[2001:db8::1]:25"]
    assert cfg.listeners.imaps == () and cfg.delivery.smarthost == "relay.example.net:587"
    assert cfg.log.level == "debug" and cfg.dns.nameservers == ("127.0.0.1:5353",)
    assert cfg.public.caa_issuers == ()  # no CAA: the certificate does not come from Let's Encrypt
    srv = {r.name.to_text(): r[0].to_text() for r in rrsets(snippet(out)) if r.rdtype == dns.rdatatype.SRV}
    assert srv[f"_imaps._tcp.{DOMAIN}."] == "0 0 0 ."
    assert srv[f"_imap._tcp.{DOMAIN}."] == f"0 1 143 {HOST}."  # STARTTLS is all there is
    assert srv[f"_pop3._tcp.{DOMAIN}."] == "0 0 0 ." and srv[f"_pop3s._tcp.{DOMAIN}."] == "0 0 0 ."
    assert " CAA " not in snippet(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to the run-as user")
def test_as_root_files_belong_to_the_run_as_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    code, _, err = init(tmp_path, "--user", "nobody")
    assert code == 0, err
    data, config_path = tmp_path / "data", tmp_path / "etc" / "mailroom.toml"
    for path in [data, *data.rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), path
    assert config_path.stat().st_uid == 0 and config_path.stat().st_gid == nobody.pw_gid
    assert mode(config_path) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: the default run-as user")
def test_as_root_a_missing_user_is_named_with_the_command_to_create_it(tmp_path: Path) -> None:
    code, _, err = init(tmp_path, "--user", "mailroom-nosuch")
    assert code == 2 and "useradd --system" in err and "mailroom-nosuch" in err
    assert not (tmp_path / "data").exists()


def test_setting_values(tmp_path: Path) -> None:
    assert initmod.parse_setting("delivery.mx_port=2525") == ("delivery", "mx_port", 2525)
    assert initmod.parse_setting('listeners.http=["a:1", "b:2"]') == ("listeners", "http", ["a:1", "b:2"])
    assert initmod.parse_setting("delivery.smarthost=relay.example:587") == (
        "delivery",
        "smarthost",
        "relay.example:587",
    )
    assert initmod.parse_setting('tls.mode="files"') == ("tls", "mode", "files")
    with pytest.raises(initmod.InitError):
        initmod.parse_setting("mode=files")
