"""The OpenSPF RFC 7208 test suite (and pyspf's extra cases), every case through check_host()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from tests.conftest import TESTDATA, require_path
from tests.mailauth.spfzone import ZoneLookup

from mailroom.mailauth.spf import check_host

SUITE_DIR = TESTDATA / "spf-openspf"


def _cases(filename: str) -> list[Any]:
    path = SUITE_DIR / filename
    if not path.exists():  # collected without the data: one case that skips (or fails in CI)
        return [pytest.param(None, None, None, id=f"{filename}-missing")]
    params = []
    with path.open("rb") as fh:
        for scenario in yaml.safe_load_all(fh):
            for name, case in scenario["tests"].items():
                params.append(pytest.param(scenario["zonedata"], name, case, id=name))
    return params


def _run(zonedata: dict[str, Any], case: dict[str, Any]) -> tuple[str, str]:
    lookup = ZoneLookup(zonedata)
    result = asyncio.run(
        check_host(
            lookup,
            case["host"],
            case.get("mailfrom") or "",
            case.get("helo") or "",
            default_explanation="DEFAULT",
        )
    )
    return result.result, result.explanation


def _check(filename: str, zonedata: Any, name: str | None, case: Any) -> None:
    require_path(SUITE_DIR / filename, "OpenSPF test suite")
    assert name is not None and case is not None
    got, explanation = _run(zonedata, case)
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert got in expected, f"{name} (spec {case.get('spec')}): got {got} ({explanation}), want {expected}"
    if "explanation" in case:
        assert explanation == case["explanation"], f"{name}: explanation {explanation!r}"


@pytest.mark.parametrize(("zonedata", "name", "case"), _cases("rfc7208-tests.yml"))
def test_rfc7208_suite(zonedata: Any, name: str | None, case: Any) -> None:
    _check("rfc7208-tests.yml", zonedata, name, case)


@pytest.mark.parametrize(("zonedata", "name", "case"), _cases("pyspf-tests.yml"))
def test_pyspf_extra_cases(zonedata: Any, name: str | None, case: Any) -> None:
    if case and case.get("strict", 1) != 1:
        pytest.skip("pyspf lax (strict: 0) / harsh (strict: 2) mode: we run RFC 7208's strict processing")
    _check("pyspf-tests.yml", zonedata, name, case)


def test_suite_is_complete() -> None:
    require_path(SUITE_DIR / "rfc7208-tests.yml", "OpenSPF test suite")
    assert len(_cases("rfc7208-tests.yml")) == 203  # testdata/README.md: 203 cases
