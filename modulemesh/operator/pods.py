"""Pod-level building blocks every rendered workload shares.

Every pod meets the ``restricted`` Pod Security Standard: non-root UID 65532, no privilege
escalation, no capabilities, the runtime's default seccomp profile and a read-only root
filesystem (writable scratch comes from size-limited emptyDirs).
"""

from __future__ import annotations

from typing import Any

from modulemesh.operator.settings import RenderSettings

__all__ = [
    "AUDIT_KEY_DIR",
    "audit_key",
    "container_security_context",
    "http_probe",
    "number",
    "pod_security_context",
    "scratch_volume",
]


def pod_security_context(settings: RenderSettings) -> dict[str, Any]:
    """The pod's securityContext (``fsGroup`` so mounted volumes are readable by the user)."""
    uid = settings.run_as_user
    return {
        "fsGroup": uid,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(settings: RenderSettings) -> dict[str, Any]:
    """Each container's securityContext: restricted, with a read-only root filesystem."""
    uid = settings.run_as_user
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(
    path: str,
    port: int | str,
    *,
    period: int = 10,
    failures: int = 3,
    timeout: int = 2,
    initial_delay: int = 0,
) -> dict[str, Any]:
    """An HTTP GET probe."""
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


AUDIT_KEY_DIR = "/var/run/secrets/modulemesh-audit"
"""Where routers and sidecars find the audit MAC key (file ``key``)."""
_AUDIT_KEY_VOLUME = "audit-key"


def audit_key(
    settings: RenderSettings,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]] | None:
    """Volume, mount and env variable that give a container the audit MAC key from
    ``settings.audit_key_secret`` (readable by the pod's group only), or ``None``."""
    if not settings.audit_key_secret:
        return None
    volume = {
        "name": _AUDIT_KEY_VOLUME,
        "secret": {
            "secretName": settings.audit_key_secret,
            "items": [{"key": "key", "path": "key"}],
            "defaultMode": 0o440,
        },
    }
    mount = {"name": _AUDIT_KEY_VOLUME, "mountPath": AUDIT_KEY_DIR, "readOnly": True}
    env = {"name": "MODULEMESH_AUDIT_KEY_FILE", "value": f"{AUDIT_KEY_DIR}/key"}
    return volume, mount, env


RUNTIME_DRAIN_LAG_S = 3
"""The runtime's preStop sleep exceeds its sidecar's by this: the sidecar stops taking
requests first and finishes its in-flight calls while the runtime still accepts."""
SERVER_DRAIN_TIMEOUT_S = 30
"""How long router, sidecar and runtime let in-flight requests finish after SIGTERM
(``httpserver.ServerConfig.drain_timeout``)."""


def pre_stop(seconds: int) -> dict[str, Any]:
    """A container ``lifecycle`` that keeps it serving ``seconds`` after its pod is deleted
    (the kubelet's own sleep action: no ``sleep`` binary needed in the image)."""
    return {"preStop": {"sleep": {"seconds": seconds}}}


def termination_grace_seconds(settings: RenderSettings) -> int:
    """The pod's grace period: the longest preStop, then the servers' drain, with a margin."""
    return settings.drain_delay_s + RUNTIME_DRAIN_LAG_S + SERVER_DRAIN_TIMEOUT_S + 2


def scratch_volume(name: str, size_limit: str) -> dict[str, Any]:
    """A size-limited emptyDir, the only writable storage a pod has."""
    return {"name": name, "emptyDir": {"sizeLimit": size_limit}}


def number(value: float) -> str:
    """A flag value: ``2`` for 2.0, ``2.5`` for 2.5 (stable, no float noise)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
