from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = (REPO / ".." / "shared" / "testdata").resolve()
PEERS = (REPO / ".." / "shared" / "peers").resolve()
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
