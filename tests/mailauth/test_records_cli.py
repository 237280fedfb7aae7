"""Record generation and the `mailroom dkim ...` / `mailroom dns records` commands."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from mailroom import cli, cli_auth
from mailroom.mailauth import dkim, records


def test_split_txt_255_octets() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600
    parts = records.split_txt(text)
    assert [len(p) for p in parts] == [255, 255, 108] and "".join(parts) == text
    assert records.split_txt("é" * 200) == ["é" * 127, "é" * 73]  # never inside a UTF-8 sequence
    assert records.quote_txt('a"b') == '"a\\"b"'


def test_spf_and_dmarc_records() -> None:
    assert records.spf_record("mail.example.org", ["192.0.2.1", "2001:DB8::1"]) == (
        "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 a:mail.example.org -all"
    )
    assert records.spf_record("localhost") == "v=spf1 -all"
    with pytest.raises(ValueError):
        records.spf_record("mail.example.org", ["not-an-ip"])
    assert (
        records.dmarc_record("dmarc@example.org", "reject")
        == "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"
    )
    with pytest.raises(ValueError):
        records.dmarc_record("a@b; p=none")


def test_domain_records(tmp_path: Path) -> None:
    key = dkim.generate_key(tmp_path, "example.org", "s1", "rsa")
    recs = records.domain_records(
        "example.org",
        hostname="mail.example.org",
        addresses=["192.0.2.1"],
        keys=[key],
        report_address="r@reports.example",
    )
    by_name = {(r.name, r.rtype): r.value for r in recs}
    assert by_name[("example.org", "MX")] == "10 mail.example.org."
    assert by_name[("s1._domainkey.example.org", "TXT")] == key.record
    assert by_name[("_dmarc.example.org", "TXT")] == "v=DMARC1; p=quarantine; rua=mailto:r@reports.example"
    assert by_name[("example.org._report._dmarc.reports.example", "TXT")] == "v=DMARC1"  # RFC 7489 §7.1
    line = next(r for r in recs if r.name.startswith("s1.")).zone_line()
    assert line.startswith('s1._domainkey.example.org. 3600 IN TXT  ( "v=DKIM1; k=rsa; p=')


# --- the commands, through cli.main (wired as the lead will wire them) ----------------------------------


@pytest.fixture
def mailroom(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "mailroom.toml"
    config.write_text(
        f'[server]\nhostname = "mail.example.org"\ndata_dir = "{tmp_path / "data"}"\n'
        '[delivery]\nsource_ipv4 = "192.0.2.7"\n[dns]\nnameservers = []\n'
    )
    (tmp_path / "data").mkdir()
    original = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "dkim" not in sub.choices:  # until cli.py calls cli_auth.register itself
            cli_auth.register(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    monkeypatch.delenv("CONFIG_PATH", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["--config", str(config), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run, tmp_path / "data"


def test_dkim_generate_and_dns_records(mailroom) -> None:  # type: ignore[no-untyped-def]
    run, data = mailroom
    code, out, err = run("dkim", "generate", "Example.org", "--selector", "rot1")
    assert code == 0, err
    path = data / "dkim" / "example.org" / "rot1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert 'rot1._domainkey.example.org. 3600 IN TXT  ( "v=DKIM1; k=rsa; p=' in out
    assert all(len(s) <= 255 for s in out.split('"')[1::2])
    code, out, err = run("dkim", "generate", "example.org", "-a", "ed25519")
    assert code == 0 and "k=ed25519" in out
    selector = next(p.stem for p in (data / "dkim" / "example.org").glob("*e.key"))
    assert len(selector) == 7  # YYYYMMe
    # the same selector again: one line, exit 2
    code, out, err = run("dkim", "generate", "example.org", "--selector", "rot1")
    assert code == 2 and err.strip() == (
        "mailroom: a DKIM key for example.org with selector rot1 exists; choose another --selector"
    )
    code, out, err = run("dkim", "generate", "bad domain")
    assert code == 1 and err.count("\n") == 1 and "not a valid DNS name" in err
    code, out, err = run("dkim", "list")
    assert code == 0 and len(out.splitlines()) == 2

    code, out, err = run("dns", "records", "--report", "dmarc@example.org")
    assert code == 0, err
    assert '"v=spf1 ip4:192.0.2.7 a:mail.example.org -all"' in out
    assert "rot1._domainkey.example.org." in out and f"{selector}._domainkey.example.org." in out
    assert '"v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"' in out
    assert "IN MX   10 mail.example.org." in out
    assert '"v=spf1 ip4:192.0.2.7 a -all"' in out  # the HELO name's own record


def test_dns_records_without_domains(mailroom) -> None:  # type: ignore[no-untyped-def]
    run, _data = mailroom
    code, out, err = run("dns", "records")
    assert code == 2 and err.startswith("mailroom: no domains")
    code, out, err = run("dns", "records", "other.example", "--ip", "2001:db8::25")
    assert code == 0 and "ip6:2001:db8::25" in out and "no DKIM key yet" in out
    code, out, err = run("dns", "records", "other.example", "--ip", "nope")
    assert code == 1 and err.count("\n") == 1
    # the local domains from the database
    assert run("migrate")[0] == 0 and run("domain", "add", "local.example")[0] == 0
    code, out, err = run("dns", "records")
    assert code == 0 and "_dmarc.local.example." in out and "postmaster@local.example" in out
