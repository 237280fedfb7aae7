"""The retry schedule: backoff, cap, jitter, delay warning, expiry."""

from __future__ import annotations

import random

import pytest

from mailroom.delivery.schedule import (
    EXPIRED_STATUS,
    GiveUp,
    Retry,
    RetryPolicy,
    after_temporary_failure,
    retry_delay,
)

NO_JITTER = RetryPolicy(jitter=0.0)
H = 3600.0
T0 = 1_700_000_000.0


def test_backoff_doubles_from_five_minutes_and_caps_at_four_hours() -> None:
    rng = random.Random(0)
    delays = [retry_delay(n, NO_JITTER, rng) / 60 for n in range(1, 10)]
    assert delays == [5, 10, 20, 40, 80, 160, 240, 240, 240]
    assert retry_delay(10_000, NO_JITTER, rng) == 4 * H  # no overflow for absurd attempt counts
    assert retry_delay(0, NO_JITTER, rng) == 300


def test_jitter_stays_within_ten_percent_and_varies() -> None:
    rng = random.Random(42)
    policy = RetryPolicy()
    samples = [retry_delay(8, policy, rng) for _ in range(500)]
    assert all(0.9 * 4 * H <= s <= 1.1 * 4 * H for s in samples)
    assert max(samples) - min(samples) > 0.1 * 4 * H
    assert retry_delay(3, policy, random.Random(5)) == retry_delay(3, policy, random.Random(5))


def test_retry_and_delay_warning_once_after_four_hours() -> None:
    rng = random.Random(1)
    early = after_temporary_failure(NO_JITTER, queued_at=T0, now=T0 + 60, attempts=1, warned=False, rng=rng)
    assert early == Retry(T0 + 60 + 300, warn=False)
    late = after_temporary_failure(NO_JITTER, queued_at=T0, now=T0 + 4 * H, attempts=7, warned=False, rng=rng)
    assert late == Retry(T0 + 8 * H, warn=True)
    again = after_temporary_failure(NO_JITTER, queued_at=T0, now=T0 + 8 * H, attempts=8, warned=True, rng=rng)
    assert isinstance(again, Retry) and not again.warn
    never = RetryPolicy(jitter=0.0, delay_warning=None)
    quiet = after_temporary_failure(never, queued_at=T0, now=T0 + 100 * H, attempts=30, warned=False, rng=rng)
    assert isinstance(quiet, Retry) and not quiet.warn


def test_give_up_after_five_days_with_a_last_try_at_the_deadline() -> None:
    rng = random.Random(1)
    deadline = T0 + 5 * 86400
    near = after_temporary_failure(
        NO_JITTER, queued_at=T0, now=deadline - 60, attempts=40, warned=True, rng=rng
    )
    assert near == Retry(deadline, warn=False)
    done = after_temporary_failure(NO_JITTER, queued_at=T0, now=deadline, attempts=41, warned=True, rng=rng)
    assert isinstance(done, GiveUp) and done.status == EXPIRED_STATUS == "5.4.7"
    assert "5 days" in done.reason and "41 attempts" in done.reason
    short = RetryPolicy(give_up=3600)
    assert isinstance(
        after_temporary_failure(short, queued_at=T0, now=T0 + 3601, attempts=2, warned=False, rng=rng), GiveUp
    )


def test_a_whole_life_in_the_queue() -> None:
    rng = random.Random(7)
    policy = RetryPolicy()
    now, attempts, warned, warnings = T0, 0, False, 0
    while True:
        attempts += 1
        decision = after_temporary_failure(
            policy, queued_at=T0, now=now, attempts=attempts, warned=warned, rng=rng
        )
        if isinstance(decision, GiveUp):
            break
        assert now < decision.at <= T0 + policy.give_up
        warnings += decision.warn
        warned = warned or decision.warn
        now = decision.at
    assert warnings == 1 and 30 <= attempts <= 40 and now >= T0 + policy.give_up


@pytest.mark.parametrize(
    "kw",
    [
        {"first_delay": 0},
        {"max_delay": 10},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"give_up": 0},
    ],
)
def test_bad_policies(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kw)
