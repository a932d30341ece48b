"""Operator settings from MODULEMESH_* environment variables: defaults shared with render,
overrides, and clear errors for bad values."""

from __future__ import annotations

import pytest

from modulemesh.operator.config import OperatorSettings
from modulemesh.operator.settings import RenderSettings


def test_defaults_are_render_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.render == RenderSettings()
    assert settings.watch_namespaces == ()
    assert settings.gpu_resource == "nvidia.com/gpu"


def test_environment_overrides_render_and_operator_settings() -> None:
    settings = OperatorSettings.from_env(
        {
            "MODULEMESH_WATCH_NAMESPACES": "team-a, team-b,,",
            "MODULEMESH_GPU_RESOURCE": "amd.com/gpu",
            "MODULEMESH_IMAGE_RUNTIME": "registry.local/rt:1",
            "MODULEMESH_IMAGE_ROUTER": "registry.local/router:1",
            "MODULEMESH_ENVELOPE_INTERVAL": "2.5",
            "MODULEMESH_LOG_FORMAT": "plain",
            "MODULEMESH_METRICS_FROM": '[{"namespaceSelector": {}}]',
            "MODULEMESH_SIDECAR_CPU": "0.5",
            "MODULEMESH_SIDECAR_MEMORY": "192Mi",
            "MODULEMESH_SIDECAR_MEMORY_LIMIT": "1G",
            "MODULEMESH_MODEL_PATH_ROOT": "/srv/models",
            "KUBECONFIG": "/tmp/kc",
        }
    )
    assert settings.render.metrics_from == ({"namespaceSelector": {}},)
    assert settings.watch_namespaces == ("team-a", "team-b")
    assert settings.render.gpu_resource == "amd.com/gpu"
    assert settings.render.image_runtime == "registry.local/rt:1"
    assert settings.render.router_image == "registry.local/router:1"
    assert settings.envelope_interval_s == 2.5
    assert settings.log_format == "plain"
    assert settings.kubeconfig == "/tmp/kc"
    assert settings.render.model_path_root == "/srv/models"
    render = settings.render
    assert (render.sidecar_cpu, render.sidecar_memory, render.sidecar_memory_limit) == (
        "0.5",
        "192Mi",
        "1G",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"MODULEMESH_ENVELOPE_INTERVAL": "soon"},
            "MODULEMESH_ENVELOPE_INTERVAL='soon' is not a number",
        ),
        ({"MODULEMESH_RESYNC_INTERVAL": "-1"}, "MODULEMESH_RESYNC_INTERVAL='-1' must be positive"),
        ({"MODULEMESH_LOG_FORMAT": "xml"}, "MODULEMESH_LOG_FORMAT='xml': expected json or plain"),
        ({"MODULEMESH_METRICS_FROM": "monitoring"}, "MODULEMESH_METRICS_FROM is not JSON"),
        (
            {"MODULEMESH_SIDECAR_CPU": "1 core"},
            "MODULEMESH_SIDECAR_CPU='1 core' is not a cpu quantity (e.g. 500m or 2)",
        ),
        (
            {"MODULEMESH_SIDECAR_MEMORY_LIMIT": "256MB"},
            "MODULEMESH_SIDECAR_MEMORY_LIMIT='256MB' is not a memory quantity",
        ),
        ({"MODULEMESH_METRICS_FROM": "{}"}, "MODULEMESH_METRICS_FROM must be a JSON list"),
        (
            {"MODULEMESH_MODEL_PATH_ROOT": "models"},
            "MODULEMESH_MODEL_PATH_ROOT='models': expected an absolute path",
        ),
        (
            {"MODULEMESH_METRICS_FROM": '[{"namespace": "monitoring"}]'},
            "MODULEMESH_METRICS_FROM[0] must be a NetworkPolicy peer",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError) as error:
        OperatorSettings.from_env(env)
    assert named in str(error.value)
