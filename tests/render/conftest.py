"""Fixtures for the render tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from render.render_builders import graph, pod_of

from modulemesh.api import PrivacyGate
from modulemesh.operator.render import render
from modulemesh.operator.settings import RenderSettings


@pytest.fixture
def settings() -> RenderSettings:
    return RenderSettings()


@pytest.fixture
def module_pod(settings: RenderSettings) -> Callable[..., dict[str, Any]]:
    """Render a one-module graph and return that module's pod spec."""

    def build(
        module: dict[str, Any], gates: list[PrivacyGate] | None = None, **kw: Any
    ) -> dict[str, Any]:
        module = {"name": "m", "model": {"path": "m.onnx"}, **module}
        g = graph([module], gates=[x.metadata.name for x in gates or []])
        return pod_of(render(g, gates or [], kw.get("settings", settings)), f"g-{module['name']}")

    return build
