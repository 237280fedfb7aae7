"""BODY, BODYSTRUCTURE and ENVELOPE through a running server for Dovecot's own unit-test
messages (../shared/testdata/bodystructure-dovecot-unit), APPENDed and FETCHed over IMAPS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mailroom.store import directory
from mailroom.store.database import transaction
from tests.conftest import TESTDATA, require_path
from tests.imap.raw_client import RawIMAP, fetch_items
from tests.server_fixture import PASSWORD, running_server

UNIT = TESTDATA / "bodystructure-dovecot-unit"


def _cases(name: str) -> list[dict[str, Any]]:
    path = UNIT / name
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["parse_tests"])


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawIMAP]:
    require_path(UNIT, "Dovecot unit-test expectations")
    with running_server(tmp_path_factory.mktemp("imap-structure"), services=("smtp", "imaps")) as srv:
        address = f"s{uuid.uuid4().hex[:8]}@example.org"
        conn = srv.db()
        try:
            with transaction(conn):
                directory.add_account(conn, address, PASSWORD)
        finally:
            conn.close()
        c = RawIMAP(srv.ports["imaps"])
        c.login(address, PASSWORD)
        c.command("SELECT INBOX")
        yield c
        c.close()


def _append_and_fetch(c: RawIMAP, message: bytes, items: str) -> dict[str, bytes]:
    c.send(b"a APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    lines = c.until("a")
    assert lines[-1].startswith(b"a OK [APPENDUID "), lines
    uid = int(lines[-1].split()[4].rstrip(b"]"))
    return fetch_items(c.command(f"UID FETCH {uid} ({items})")[0])


@pytest.mark.parametrize("case", _cases("bodystructure-tests.json"), ids=lambda c: c["message"][:40])
def test_bodystructure_matches_dovecot(session: RawIMAP, case: dict[str, Any]) -> None:
    items = _append_and_fetch(session, case["message_crlf"].encode("latin-1"), "BODYSTRUCTURE BODY")
    assert items["BODYSTRUCTURE"] == b"(" + case["bodystructure"].encode("latin-1") + b")"
    assert items["BODY"] == b"(" + case["body"].encode("latin-1") + b")"


@pytest.mark.parametrize("case", _cases("envelope-tests.json"), ids=lambda c: c["message"][:40])
def test_envelope_matches_dovecot(session: RawIMAP, case: dict[str, Any]) -> None:
    items = _append_and_fetch(session, case["message_crlf"].encode("latin-1"), "ENVELOPE")
    assert items["ENVELOPE"] == b"(" + case["envelope"].encode("latin-1") + b")"


def test_every_unit_case_ran() -> None:
    require_path(UNIT, "Dovecot unit-test expectations")
    assert len(_cases("bodystructure-tests.json")) == 8 and len(_cases("envelope-tests.json")) == 6
