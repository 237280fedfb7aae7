"""Reliability suite: crash consistency, full disks, floods and slow peers, abuse.

The CI size runs in a few minutes on two cores. ``MAILROOM_SOAK=1`` (or ``--soak`` when this
directory or tests/fuzz is named on the command line) scales trials, message counts, durations
and fuzzing examples up for a long run. Figures (trials, messages checked, connections held,
inputs fuzzed) are printed at the end of the run and, with ``MAILROOM_FIGURES=path``, written
there as JSON for the README. ``MAILROOM_SEED`` replays the random choices of a crash test.
"""

from __future__ import annotations

import pytest

from tests.reliability.support import SOAK, add_soak_option, terminal_summary


def pytest_addoption(parser: pytest.Parser) -> None:
    add_soak_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    SOAK.update_from(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminal_summary(terminalreporter)
