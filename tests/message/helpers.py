"""Shared helpers for the message-structure tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata"
FIXTURES = Path(__file__).resolve().parent / "data"


def shared_testdata(name: str) -> Path:
    """A directory of the shared test data; skipped when absent, a failure under CI=true."""
    path = TESTDATA / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared test data missing under CI: {path}")
        pytest.skip(f"shared test data not present: {path}")
    return path
