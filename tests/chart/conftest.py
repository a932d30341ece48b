"""Fixtures for the chart tests: the real helm binary, run offline over charts/modulemesh."""

from __future__ import annotations

import pytest

from chart.helm import Helm, helm_path


@pytest.fixture(scope="session")
def helm() -> Helm:
    """helm (lint/template) over the chart."""
    return Helm(helm_path())
