from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """../shared beside the checkout (where CI puts it); MAILROOM_SHARED overrides."""
    if os.environ.get("MAILROOM_SHARED"):
        return Path(os.environ["MAILROOM_SHARED"])
    beside = (REPO / ".." / "shared").resolve()
    return beside if beside.exists() or not Path("/work/shared").exists() else Path("/work/shared")


SHARED = _shared()
TESTDATA = SHARED / "testdata"
PEERS = SHARED / "peers"
IN_CI = os.environ.get("CI") == "true"


def require_path(path: Path, what: str) -> Path:
    """Skip when external material is absent, but fail in CI (a missing data set there is a broken install)."""
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{what} missing at {path} (CI=true: this is a broken install step)")
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture
def mailroom_cmd() -> list[str]:
    return [sys.executable, "-m", "mailroom"]
