"""Dovecot's own unit-test expectations (lib-imap test-imap-bodystructure.c / test-imap-envelope.c)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import parse_message
from tests.message.helpers import shared_testdata


def _load(name: str) -> dict[str, Any]:
    path = shared_testdata("bodystructure-dovecot-unit") / name
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _msg(test: dict[str, Any]) -> bytes:
    return str(test["message_crlf"]).encode("latin-1")


def test_bodystructure_parse_tests() -> None:
    tests = _load("bodystructure-tests.json")["parse_tests"]
    assert len(tests) == 8
    for test in tests:
        tree = parse_message(_msg(test))
        assert body_structure(tree, True) == b"(" + test["bodystructure"].encode("latin-1") + b")"
        assert body_structure(tree, False) == b"(" + test["body"].encode("latin-1") + b")"


def test_bodystructure_truncation_tests() -> None:
    tests = _load("bodystructure-tests.json")["truncation_tests"]
    assert len(tests) == 3
    for test in tests:
        kwargs = {}
        if "max_depth" in test:
            kwargs["max_depth"] = test["max_depth"]
        if "max_total" in test:
            kwargs["max_parts"] = test["max_total"]
        tree = parse_message(_msg(test), **kwargs)
        assert body_structure(tree, True) == b"(" + test["bodystructure"].encode("latin-1") + b")"


def test_envelope_parse_tests() -> None:
    tests = _load("envelope-tests.json")["parse_tests"]
    assert len(tests) == 6
    for test in tests:
        assert envelope(parse_message(_msg(test))) == b"(" + test["envelope"].encode("latin-1") + b")"


@pytest.mark.parametrize("lf", [False, True])
def test_bare_lf_gives_same_sizes(lf: bool) -> None:
    # Dovecot counts sizes as if every line ended in CRLF; so do we for bare-LF input
    test = _load("bodystructure-tests.json")["parse_tests"][6]
    raw = (test["message"] if lf else test["message_crlf"]).encode("latin-1")
    assert body_structure(parse_message(raw), True) == b"(" + test["bodystructure"].encode("latin-1") + b")"
