"""Operator settings: from ``MODULEMESH_*`` environment variables, overridable on the CLI.

The Helm chart sets the environment; ``modulemesh operator`` flags win over it for local runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

ENV_PREFIX = "MODULEMESH_"


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(ENV_PREFIX + key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise ValueError(f"{ENV_PREFIX}{key}={raw!r} is not a number") from error
    if value <= 0:
        raise ValueError(f"{ENV_PREFIX}{key}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator is configured with."""

    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace (cluster-wide)."""
    gpu_resource: str = "nvidia.com/gpu"
    image_runtime: str = "ghcr.io/modulemesh/modulemesh-runtime:0.1.0"
    image_runtime_gpu: str = "ghcr.io/modulemesh/modulemesh-runtime-gpu:0.1.0"
    image_sidecar: str = "ghcr.io/modulemesh/modulemesh:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    envelope_interval_s: float = 15.0
    """How often each graph's router ``/envelopes`` is read into the status."""
    resync_interval_s: float = 300.0
    """How often every graph is re-applied as a safety net for missed drift events."""
    log_format: str = "json"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    kubeconfig: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read the settings from ``MODULEMESH_*`` variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        defaults = cls()

        def text(key: str, default: str) -> str:
            return env.get(ENV_PREFIX + key) or default

        log_format = text("LOG_FORMAT", defaults.log_format)
        if log_format not in ("json", "plain"):
            raise ValueError(f"{ENV_PREFIX}LOG_FORMAT={log_format!r}: expected json or plain")
        return cls(
            watch_namespaces=_split(env.get(ENV_PREFIX + "WATCH_NAMESPACES", "")),
            gpu_resource=text("GPU_RESOURCE", defaults.gpu_resource),
            image_runtime=text("IMAGE_RUNTIME", defaults.image_runtime),
            image_runtime_gpu=text("IMAGE_RUNTIME_GPU", defaults.image_runtime_gpu),
            image_sidecar=text("IMAGE_SIDECAR", defaults.image_sidecar),
            image_pull_policy=text("IMAGE_PULL_POLICY", defaults.image_pull_policy),
            cluster_domain=text("CLUSTER_DOMAIN", defaults.cluster_domain),
            envelope_interval_s=_float(env, "ENVELOPE_INTERVAL", defaults.envelope_interval_s),
            resync_interval_s=_float(env, "RESYNC_INTERVAL", defaults.resync_interval_s),
            log_format=log_format,
            liveness_endpoint=text("LIVENESS_ENDPOINT", defaults.liveness_endpoint),
            kubeconfig=env.get("KUBECONFIG") or None,
        )

    def with_overrides(self, **overrides: object) -> OperatorSettings:
        """A copy with the given (non-None) fields replaced, for CLI flags."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
