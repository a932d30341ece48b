"""Operator settings: from ``MODULEMESH_*`` environment variables, overridable on the CLI.

The Helm chart sets the environment; ``modulemesh operator`` flags win over it for local runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from modulemesh.operator.settings import RenderSettings, check_quantity

ENV_PREFIX = "MODULEMESH_"


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}


def _peers(env: Mapping[str, str], key: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of NetworkPolicy peers (``podSelector``/``namespaceSelector``/``ipBlock``)."""
    raw = env.get(ENV_PREFIX + key)
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{ENV_PREFIX}{key} is not JSON: {error}") from error
    if not isinstance(value, list):
        raise ValueError(f"{ENV_PREFIX}{key} must be a JSON list of NetworkPolicy peers")
    for index, peer in enumerate(value):
        if not isinstance(peer, dict) or not peer or not set(peer) <= _PEER_KEYS:
            raise ValueError(
                f"{ENV_PREFIX}{key}[{index}] must be a NetworkPolicy peer: an object with "
                f"{', '.join(sorted(_PEER_KEYS))}, got {peer!r}"
            )
    return tuple(value)


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


def _quantity(
    env: Mapping[str, str], key: str, default: str, kind: Literal["cpu", "memory"]
) -> str:
    raw = env.get(ENV_PREFIX + key)
    if raw is None or raw == "":
        return default
    try:
        return check_quantity(raw, kind)
    except ValueError as error:
        raise ValueError(f"{ENV_PREFIX}{key}={error}") from error


def _absolute(env: Mapping[str, str], key: str, default: str) -> str:
    """An absolute path inside the pods' images (a relative one would depend on a workdir)."""
    raw = env.get(ENV_PREFIX + key)
    if raw is None or raw == "":
        return default
    if not raw.startswith("/"):
        raise ValueError(f"{ENV_PREFIX}{key}={raw!r}: expected an absolute path, e.g. {default}")
    return raw


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Where the webhook listens and how the API server reaches it (operator settings)."""

    port: int
    """Listening port (the chart's Service targets it)."""
    addr: str = "0.0.0.0"
    host: str | None = None
    """Host in the webhook URL the API server calls (``127.0.0.1`` for a local operator);
    unused when ``service`` is set."""
    service: tuple[str, str, int] | None = None
    """``(namespace, name, port)`` of the Service in front of the operator (in a cluster)."""
    cert_dir: str | None = None
    """Directory with ``tls.crt``/``tls.key`` (and ``ca.crt`` if a CA signed them)."""
    failure_policy: str = "Ignore"
    """``Ignore``: while the operator is down, objects are admitted and checked on reconcile;
    ``Fail``: nothing is admitted without the check."""
    strict_gates: bool = False
    """A PrivacyGate change that makes a graph naming it non-compliant is refused (True) or
    admitted with a warning per graph and problem (False, the default)."""


def _webhook(env: Mapping[str, str]) -> WebhookSettings | None:
    """The webhook settings, when ``MODULEMESH_WEBHOOK_PORT`` turns it on."""
    raw = {
        key: env.get(ENV_PREFIX + "WEBHOOK_" + key) or ""
        for key in ("PORT", "ADDR", "HOST", "SERVICE", "CERT_DIR", "FAILURE_POLICY", "STRICT_GATES")
    }
    if not raw["PORT"]:
        return None
    service = None
    if raw["SERVICE"]:
        where, _, service_port = raw["SERVICE"].partition(":")
        namespace, _, name = where.partition("/")
        if not namespace or not name:
            raise ValueError(
                f"{ENV_PREFIX}WEBHOOK_SERVICE={raw['SERVICE']!r}: expected namespace/name[:port]"
            )
        service = (namespace, name, _port(service_port, "WEBHOOK_SERVICE") if service_port else 443)
    policy = raw["FAILURE_POLICY"] or "Ignore"
    if policy not in ("Ignore", "Fail"):
        raise ValueError(f"{ENV_PREFIX}WEBHOOK_FAILURE_POLICY={policy!r}: expected Ignore or Fail")
    strict = raw["STRICT_GATES"].lower() or "false"
    if strict not in ("true", "false"):
        raise ValueError(
            f"{ENV_PREFIX}WEBHOOK_STRICT_GATES={raw['STRICT_GATES']!r}: expected true or false"
        )
    return WebhookSettings(
        port=_port(raw["PORT"], "WEBHOOK_PORT"),
        addr=raw["ADDR"] or "0.0.0.0",
        host=raw["HOST"] or None,
        service=service,
        cert_dir=raw["CERT_DIR"] or None,
        failure_policy=policy,
        strict_gates=strict == "true",
    )


def _port(raw: str, key: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{ENV_PREFIX}{key}: {raw!r} is not a port number")
    return int(raw)


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator is configured with; what render needs is in ``render``."""

    render: RenderSettings = field(default_factory=RenderSettings)
    """Images, GPU resource name, cluster domain: one set of defaults, shared with the CLI."""
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace (cluster-wide)."""
    envelope_interval_s: float = 15.0
    """How often each graph's router ``/envelopes`` is read into the status."""
    resync_interval_s: float = 300.0
    """How often every graph is re-applied as a safety net for missed drift events."""
    log_format: str = "json"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    kubeconfig: str | None = None
    webhook: WebhookSettings | None = None
    """The validating admission webhook; off unless ``MODULEMESH_WEBHOOK_PORT`` is set."""

    @property
    def gpu_resource(self) -> str:
        """The GPU extended resource name GPU limits use."""
        return self.render.gpu_resource

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
        base = defaults.render
        render = replace(
            base,
            image_runtime=text("IMAGE_RUNTIME", base.image_runtime),
            image_runtime_gpu=text("IMAGE_RUNTIME_GPU", base.image_runtime_gpu),
            image_sidecar=text("IMAGE_SIDECAR", base.image_sidecar),
            image_router=env.get(ENV_PREFIX + "IMAGE_ROUTER") or base.image_router,
            image_pull_policy=text("IMAGE_PULL_POLICY", base.image_pull_policy),
            gpu_resource=text("GPU_RESOURCE", base.gpu_resource),
            cluster_domain=text("CLUSTER_DOMAIN", base.cluster_domain),
            metrics_from=_peers(env, "METRICS_FROM"),
            sidecar_cpu=_quantity(env, "SIDECAR_CPU", base.sidecar_cpu, "cpu"),
            sidecar_memory=_quantity(env, "SIDECAR_MEMORY", base.sidecar_memory, "memory"),
            sidecar_memory_limit=_quantity(
                env, "SIDECAR_MEMORY_LIMIT", base.sidecar_memory_limit, "memory"
            ),
            audit_key_secret=env.get(ENV_PREFIX + "AUDIT_KEY_SECRET") or base.audit_key_secret,
            model_path_root=_absolute(env, "MODEL_PATH_ROOT", base.model_path_root),
        )
        return cls(
            render=render,
            watch_namespaces=_split(env.get(ENV_PREFIX + "WATCH_NAMESPACES", "")),
            envelope_interval_s=_float(env, "ENVELOPE_INTERVAL", defaults.envelope_interval_s),
            resync_interval_s=_float(env, "RESYNC_INTERVAL", defaults.resync_interval_s),
            log_format=log_format,
            liveness_endpoint=text("LIVENESS_ENDPOINT", defaults.liveness_endpoint),
            kubeconfig=env.get("KUBECONFIG") or None,
            webhook=_webhook(env),
        )
