"""Byte-for-byte agreement with answers recorded from a live Dovecot 2.3.19.1 (see data/*.json)."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import pytest

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import parse_message
from mailroom.message.sections import parse_section, section_bytes
from tests.message.helpers import FIXTURES, shared_testdata


@cache
def _doc() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "dovecot-2.3.19.1.json").read_text(encoding="utf-8"))
    return data


def _check(raw: bytes, expected: dict[str, str]) -> None:
    tree = parse_message(raw)
    assert body_structure(tree, True) == expected["bodystructure"].encode("latin-1")
    assert body_structure(tree, False) == expected["body"].encode("latin-1")
    assert envelope(tree) == expected["envelope"].encode("latin-1")


@pytest.mark.parametrize("kind", ["crafted", "depth-limit", "fuzz"])
def test_recorded_cases(kind: str) -> None:
    cases = [c for c in _doc()["cases"] if c["kind"] == kind]
    assert cases
    for case in cases:
        _check(base64.b64decode(case["message_b64"]), case)


def test_recorded_corpus() -> None:
    base = shared_testdata("flanker-messages").parent
    entries = _doc()["corpus"]
    assert len(entries) > 150
    for entry in entries:
        _check((base / entry["file"]).read_bytes(), entry)


def test_recorded_sections() -> None:
    for case in _doc()["sections"]:
        raw = base64.b64decode(case["message_b64"])
        tree = parse_message(raw)
        for spec, expected in case["sections_b64"].items():
            got = section_bytes(raw, tree, parse_section(spec))
            # Dovecot sends "" for a missing part; we say None and let the server decide
            assert (got or b"") == base64.b64decode(expected), spec
