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


def scratch_volume(name: str, size_limit: str) -> dict[str, Any]:
    """A size-limited emptyDir, the only writable storage a pod has."""
    return {"name": name, "emptyDir": {"sizeLimit": size_limit}}


def number(value: float) -> str:
    """A flag value: ``2`` for 2.0, ``2.5`` for 2.5 (stable, no float noise)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
