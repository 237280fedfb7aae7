"""Fuzzing beyond tests/wire and tests/message: Hypothesis properties for the SMTP, IMAP and
POP3 engines, the SASL mechanisms and the MIME/BODYSTRUCTURE code. ``MAILROOM_SOAK=1`` (or
``--soak``) multiplies every example budget for a long run; atheris harnesses live beside them
(``python tests/fuzz/atheris_engines.py``) for coverage-guided runs."""

from __future__ import annotations

import pytest

from tests.reliability.support import SOAK, add_soak_option, terminal_summary


def pytest_addoption(parser: pytest.Parser) -> None:
    add_soak_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    SOAK.update_from(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminal_summary(terminalreporter)
