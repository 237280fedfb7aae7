"""Example budgets that scale with soak mode, and a count of inputs fuzzed for the README."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.reliability.support import SOAK, count

SOAK_FACTOR = 50


def fuzz_settings(examples: int) -> settings:
    """CI: ``examples``; soak: fifty times as many. No deadline (CI machines are noisy)."""
    return settings(
        max_examples=examples * SOAK_FACTOR if SOAK.enabled else examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def fuzzed(area: str) -> None:
    count(f"inputs fuzzed ({area})")
