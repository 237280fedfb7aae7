"""CertificateManager in-process: ACME issuance/renewal with a fake CA, and files-mode hot reload."""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
from pathlib import Path

from mailroom.acme.challenges import ChallengeResponder
from mailroom.acme.client import Issued, IssueError
from mailroom.acme.manager import CertificateManager, acme_paths
from mailroom.acme.selfsigned import ensure_self_signed
from mailroom.config import Config, from_dict
from mailroom.net.tls import ServerTLS
from tests.tls.certs import make_pair


def lines(records: list[logging.LogRecord], level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= level]


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


class FakeCA:
    """Issues 90-day certificates; fails the calls whose numbers are in ``fail``."""

    def __init__(self, directory: Path, fail: set[int]) -> None:
        self.directory = directory
        self.fail = fail
        self.calls: list[list[str]] = []
        self.serials: list[int] = []

    def issue(self, names: list[str], preference: list[str]) -> Issued:
        self.calls.append(names)
        if len(self.calls) in self.fail:
            raise IssueError("urn:ietf:params:acme:error:connection: Connection refused")
        cert, key, serial = make_pair(self.directory, f"issued{len(self.calls)}", tuple(names), days=90)
        self.serials.append(serial)
        return Issued(cert.read_bytes(), key.read_bytes(), "http-01")


def acme_config(data_dir: Path) -> Config:
    return from_dict(
        {
            "server": {"hostname": "mx.example.org", "data_dir": str(data_dir)},
            "tls": {
                "mode": "acme",
                "acme_email": "postmaster@example.org",
                "acme_names": ["mta-sts.example.org"],
            },
        }
    )


def test_acme_first_issuance_failure_retry_swap_and_renewal(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir = tmp_path / "data"
    cfg = acme_config(data_dir)
    cert, key, _ = ensure_self_signed(data_dir / "tls", "mx.example.org")
    tls = ServerTLS(cert, key, scratch_dir=data_dir / "tls" / "tmp")
    context = tls.context
    self_signed = tls.info
    ca = FakeCA(tmp_path / "ca", fail={1})
    shift = [datetime.timedelta(0)]  # the test moves the manager's clock forward

    def clock() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + shift[0]

    manager = CertificateManager(
        cfg, tls, data_dir, ChallengeResponder(), issuer=ca, clock=clock, retry_base=0.05, retry_cap=0.2
    )
    paths = acme_paths(data_dir)

    async def go() -> None:
        manager.start()
        try:
            # the first attempt fails: logged in one line, server keeps its self-signed certificate
            await until(lambda: bool(lines(records)))
            errors = lines(records)
            assert len(errors) == 1
            assert tls.info is self_signed
            assert errors[0].startswith("acme: no certificate for mx.example.org, mta-sts.example.org: ")
            assert "Connection refused" in errors[0] and "still serving" in errors[0]
            # the retry (after backoff) succeeds and lands in the shared context
            await until(lambda: tls.info is not None and ca.serials and tls.info.serial == ca.serials[0])
            assert ca.calls[0] == ["mx.example.org", "mta-sts.example.org"]
            assert tls.context is context
            assert paths.key.stat().st_mode & 0o777 == 0o600
            assert tls.cert == paths.cert
            first = tls.info
            assert first is not None
            # before two thirds of the lifetime: a wake-up does not renew
            real = datetime.datetime.now(datetime.UTC)
            two_thirds = first.not_before + (first.not_after - first.not_before) * 2 / 3  # a third remains
            shift[0] = two_thirds - datetime.timedelta(minutes=1) - real
            manager.reload()
            await asyncio.sleep(0.3)
            assert len(ca.calls) == 2
            # once a third remains: renewed, hot-swapped
            shift[0] = two_thirds + datetime.timedelta(seconds=1) - real
            manager.reload()
            await until(
                lambda: len(ca.serials) == 2 and tls.info is not None and tls.info.serial == ca.serials[1]
            )
            # `mailroom cert renew`: the flag plus SIGHUP renews at once, and the flag goes away
            paths.renew_flag.write_text("requested\n")
            manager.reload()
            await until(
                lambda: len(ca.serials) == 3 and tls.info is not None and tls.info.serial == ca.serials[2]
            )
            await until(lambda: not paths.renew_flag.exists())
        finally:
            await manager.stop()

    asyncio.run(go())
    assert len(lines(records)) == 1
    assert any("installed new certificate" in m for m in lines(records, logging.INFO))


def test_acme_bad_certificate_from_the_ca_is_not_installed(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    data_dir = tmp_path / "data"
    cfg = acme_config(data_dir)
    cert, key, _ = ensure_self_signed(data_dir / "tls", "mx.example.org")
    tls = ServerTLS(cert, key, scratch_dir=data_dir / "tls" / "tmp")
    before = tls.info
    assert before is not None

    class WrongKeyCA:
        def issue(self, names: list[str], preference: list[str]) -> Issued:
            c, _, _ = make_pair(tmp_path / "ca", "c", tuple(names))
            _, k, _ = make_pair(tmp_path / "ca", "k", tuple(names))
            return Issued(c.read_bytes(), k.read_bytes(), "http-01")

    manager = CertificateManager(cfg, tls, data_dir, ChallengeResponder(), issuer=WrongKeyCA(), retry_base=10)

    async def go() -> None:
        manager.start()
        try:
            await until(lambda: bool(lines(records)))
        finally:
            await manager.stop()

    asyncio.run(go())
    assert "wrong key" in lines(records)[0]
    assert tls.info is not None and tls.info.serial == before.serial
    assert not acme_paths(data_dir).cert.exists()


def test_files_mode_reload_on_change_and_sighup(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    live = tmp_path / "live"
    cert, key, serial1 = make_pair(live, "server")
    cfg = from_dict(
        {
            "server": {"hostname": "mx.example.org", "data_dir": str(tmp_path / "data")},
            "tls": {"mode": "files", "cert": str(cert), "key": str(key), "watch_interval": "0.1s"},
        }
    )
    tls = ServerTLS(cert, key, scratch_dir=tmp_path / "scratch")
    manager = CertificateManager(cfg, tls, tmp_path / "data", ChallengeResponder())

    def replace_with(stem: str, key_from: str | None = None) -> int:
        c, k, serial = make_pair(tmp_path / "new", stem)
        shutil.copy(c, cert)
        if key_from is None:
            shutil.copy(k, key)
        else:
            shutil.copy(tmp_path / "new" / f"{key_from}.key", key)
        return serial

    async def go() -> None:
        manager.start()
        try:
            await asyncio.sleep(0.15)
            serial2 = replace_with("two")
            await until(lambda: tls.info is not None and tls.info.serial == serial2)
            # a bad new pair (certificate for another key): old one kept, one clear line, not one per poll
            replace_with("three", key_from="two")
            await until(lambda: bool(lines(records)))
            await asyncio.sleep(0.6)
            errors = lines(records)
            assert len(errors) == 1, errors
            assert errors[0].startswith("tls: files changed: keeping the current certificate: tls.key: ")
            assert "wrong key" in errors[0]
            assert tls.info is not None and tls.info.serial == serial2
            # SIGHUP re-reads at once (still bad: one more line), then a good pair via SIGHUP
            manager.reload()
            await until(lambda: len(lines(records)) == 2)
            assert lines(records)[1].startswith("tls: SIGHUP: keeping the current certificate")
            shutil.copy(tmp_path / "new" / "three.key", key)
            manager.reload()
            await until(lambda: tls.info is not None and tls.info.serial not in (serial1, serial2))
        finally:
            await manager.stop()

    asyncio.run(go())
