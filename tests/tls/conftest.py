"""Fixtures shared by the TLS tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record logged under ``mailroom`` during the test, at any level."""
    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    handler = Catch(logging.DEBUG)
    root = logging.getLogger("mailroom")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield caught
    root.removeHandler(handler)
    root.setLevel(old_level)
