"""Image tests: print how long each target took to build in the terminal summary."""

from __future__ import annotations

import pytest

from images.buildah import BUILD_TIMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BUILD_TIMES:
        times = ", ".join(f"{target} {seconds:.0f} s" for target, seconds in BUILD_TIMES.items())
        terminalreporter.write_sep("-", f"images built: {times}")
