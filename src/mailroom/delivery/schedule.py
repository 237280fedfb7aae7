"""The retry schedule: pure arithmetic on times the caller passes in (seconds since the epoch).

After a temporary failure (a 4xx reply, a refused or lost connection, a temporary routing or DNS
failure) the queue runner asks what to do next::

    policy = RetryPolicy()                      # 5m, 10m, 20m, 40m, 80m, 160m, then 4h; 5 days
    decision = after_temporary_failure(policy, queued_at=q, now=now, attempts=n, warned=w, rng=rng)
    if isinstance(decision, GiveUp):            # bounce: DSN Action "failed", Status decision.status
        ...
    else:                                       # Retry(at, warn): store next_attempt = decision.at;
        ...                                     # when decision.warn, send the "delayed" DSN once

- Backoff: ``first_delay * factor**(attempts-1)`` capped at ``max_delay``, then ±``jitter``
  (a fraction, from the injected RNG) so that a queue full of mail for one host does not retry in
  lock step. RFC 5321 §4.5.4.1: retry intervals of at least 30 minutes are recommended; the short
  early delays are for greylisting, which usually clears within minutes.
- Give-up: RFC 5321 §4.5.4.1 says to give up after at least 4-5 days. The last retry is pulled in
  to the deadline itself, so a message gets one attempt at its expiry time before it bounces.
- The delay warning (RFC 3464 Action "delayed") is due once, at the first temporary failure after
  ``delay_warning`` seconds in the queue; whether it is sent depends on NOTIFY (``dsn.wants_notification``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["EXPIRED_STATUS", "GiveUp", "Retry", "RetryPolicy", "after_temporary_failure", "retry_delay"]

# RFC 3463 §3.5 X.4.7: "Delivery time expired".
EXPIRED_STATUS = "5.4.7"


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 300.0
    factor: float = 2.0
    max_delay: float = 4 * 3600.0
    jitter: float = 0.10
    delay_warning: float | None = 4 * 3600.0  # None: never warn
    give_up: float = 5 * 86400.0

    def __post_init__(self) -> None:
        if self.first_delay <= 0 or self.max_delay < self.first_delay or self.factor < 1:
            raise ValueError("need 0 < first_delay <= max_delay and factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        if self.give_up <= 0:
            raise ValueError("give_up must be positive")

    def expires_at(self, queued_at: float) -> float:
        return queued_at + self.give_up


@dataclass(frozen=True)
class Retry:
    at: float  # the next attempt (never later than the expiry time)
    warn: bool  # the "delayed" DSN is due now (the caller records that it was sent)


@dataclass(frozen=True)
class GiveUp:
    reason: str
    status: str = EXPIRED_STATUS


def retry_delay(attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 = the first one)."""
    step = max(attempts, 1) - 1
    delay = policy.max_delay
    # Avoid float overflow in factor**step: stop multiplying once the cap is reached.
    if step < 64:
        delay = min(policy.first_delay * policy.factor**step, policy.max_delay)
    if policy.jitter:
        delay *= 1.0 + rng.uniform(-policy.jitter, policy.jitter)
    return delay


def after_temporary_failure(
    policy: RetryPolicy,
    *,
    queued_at: float,
    now: float,
    attempts: int,
    warned: bool,
    rng: random.Random,
) -> Retry | GiveUp:
    """What to do after a temporary failure at ``now`` of a message queued at ``queued_at``.

    ``attempts`` counts the attempts made so far, this one included; ``warned`` says whether the
    delay warning was already sent for this recipient.
    """
    expires = policy.expires_at(queued_at)
    if now >= expires:
        days = policy.give_up / 86400
        return GiveUp(f"delivery time expired: no success after {days:g} days and {attempts} attempts")
    at = min(now + retry_delay(attempts, policy, rng), expires)
    warn = policy.delay_warning is not None and not warned and now - queued_at >= policy.delay_warning
    return Retry(at, warn)
