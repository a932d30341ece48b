"""The Deployment of one module: the runtime on 127.0.0.1 plus the sidecar in front of it.

The sidecar's ports (HTTP and OIP gRPC) are the pod's only containerPorts, so nothing reaches
the model except through the compliance guard. Kubelet probes cannot reach 127.0.0.1 inside the pod, so the
runtime's startup and readiness are read through the sidecar's ``/readyz`` (which reports the
runtime's own readiness). The runtime has no liveness probe: a crashed runtime exits and is
restarted, and a hung one turns the pod unready via the sidecar, which takes it out of the
Service without killing a model that may only be slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import CpuFallback, Module
from modulemesh.api.resolved import sidecar_gates_json
from modulemesh.operator import naming, placement
from modulemesh.operator.pods import (
    RUNTIME_DRAIN_LAG_S,
    audit_key,
    container_security_context,
    http_probe,
    number,
    pod_security_context,
    pre_stop,
    scratch_volume,
    termination_grace_seconds,
)
from modulemesh.operator.settings import RenderSettings

__all__ = ["model_argument", "module_deployment", "runtime_container", "sidecar_container"]

MODEL_VOLUME = "model"
TMP_VOLUME = "tmp"
CACHE_VOLUME = "model-cache"


def model_argument(module: Module, settings: RenderSettings) -> str:
    """What ``--model`` points at inside the pod.

    ``path`` is a path inside the runtime image: an absolute one as is, a relative one under
    ``settings.model_path_root`` (where the runtime images ship the example models), the
    way ``modulemesh run`` resolves it against the graph file's directory; ``uri`` is fetched
    (and sha256-checked) by the runtime; ConfigMap and PVC sources are mounted read-only under
    ``/models/<module>``.
    """
    source = module.model
    mount = f"{settings.model_mount_root}/{module.name}"
    if source.config_map is not None:
        return f"{mount}/model.onnx"
    if source.pvc is not None:
        return f"{mount}/{source.pvc.path.lstrip('/')}"
    if source.uri is not None:
        return source.uri
    path = PurePosixPath(str(source.path))
    return str(path if path.is_absolute() else PurePosixPath(settings.model_path_root) / path)


def _model_volume(module: Module) -> dict[str, Any] | None:
    source = module.model
    if source.config_map is not None:
        return {
            "name": MODEL_VOLUME,
            "configMap": {
                "name": source.config_map.name,
                "items": [{"key": source.config_map.key, "path": "model.onnx"}],
            },
        }
    if source.pvc is not None:
        return {
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True},
        }
    return None


def _env() -> list[dict[str, str]]:
    # HOME on the writable emptyDir: libraries that write under ~ must not hit the read-only root.
    return [{"name": "HOME", "value": "/tmp"}]


def runtime_container(module: Module, settings: RenderSettings) -> dict[str, Any]:
    """The ONNX runtime, listening on 127.0.0.1 only."""
    res = module.resources
    gpu = res.gpu > 0
    args = [
        "runtime",
        f"--model={model_argument(module, settings)}",
        f"--name={module.name}",
        f"--model-version={module.version}",
        "--host=127.0.0.1",
        f"--port={settings.runtime_port}",
        f"--grpc-port={settings.runtime_grpc_port}",
        f"--max-batch-size={module.batching.max_batch_size}",
        f"--max-delay-ms={number(module.batching.max_delay_ms)}",
        "--adaptive-delay" if module.batching.adaptive else "--no-adaptive-delay",
        f"--max-queue={module.batching.max_queue}",
        f"--provider={'auto' if gpu else 'cpu'}",
        f"--cache-dir={settings.model_cache_dir}",
    ]
    if module.model.sha256 is not None:
        args.append(f"--sha256={module.model.sha256}")
    if gpu and module.cpu_fallback is CpuFallback.REFUSE:
        args.append("--cpu-fallback=refuse")
    limits: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    if gpu:
        limits[placement.gpu_resource(module, settings)] = res.gpu
    mounts: list[dict[str, Any]] = [
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
        {"name": CACHE_VOLUME, "mountPath": settings.model_cache_dir},
    ]
    if _model_volume(module) is not None:
        mounts.append(
            {
                "name": MODEL_VOLUME,
                "mountPath": f"{settings.model_mount_root}/{module.name}",
                "readOnly": True,
            }
        )
    return {
        "name": "runtime",
        "image": settings.image_runtime_gpu if gpu else settings.image_runtime,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modulemesh"],
        "args": args,
        "env": _env(),
        "resources": {
            "requests": {"cpu": res.cpu, "memory": res.memory},
            "limits": dict(sorted(limits.items())),
        },
        # Through the sidecar: its /readyz is the runtime's readiness (model loaded, warmed up).
        # Startup allows 10 minutes for a download and warm-up before the runtime is restarted.
        "startupProbe": http_probe("/readyz", settings.sidecar_port, period=5, failures=120),
        "readinessProbe": http_probe("/readyz", settings.sidecar_port, period=5),
        "lifecycle": pre_stop(settings.drain_delay_s + RUNTIME_DRAIN_LAG_S),
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
    }


def _latency_objectives(module: Module) -> list[tuple[str, float]]:
    """The module's latency objectives (``spec.modules[].health.degradedP<n>Ms``) that are set."""
    h = module.health
    pairs = (("p50", h.degraded_p50_ms), ("p95", h.degraded_p95_ms), ("p99", h.degraded_p99_ms))
    return [(p, ms) for p, ms in pairs if ms is not None]


def sidecar_container(
    module: Module, gates: Sequence[PrivacyGate], settings: RenderSettings
) -> dict[str, Any]:
    """The sidecar: the pod's only port, compliance guard and health envelope."""
    health = module.health
    args = [
        "sidecar",
        f"--module={module.name}",
        f"--upstream=http://127.0.0.1:{settings.runtime_port}",
        "--host=0.0.0.0",
        f"--port={settings.sidecar_port}",
        f"--grpc-port={settings.sidecar_grpc_port}",
        f"--grpc-upstream=127.0.0.1:{settings.runtime_grpc_port}",
        f"--clearance={','.join(sorted(set(module.clearance)))}",
        f"--mode={placement.sidecar_mode(module, gates)}",
        f"--model-version={module.version}",
        f"--degraded-error-rate={number(health.degraded_error_rate)}",
        f"--unhealthy-error-rate={number(health.unhealthy_error_rate)}",
    ]
    for percentile, objective in _latency_objectives(module):
        args.append(f"--degraded-{percentile}-ms={number(objective)}")
    if module.confidence_output is not None:
        args.append(f"--confidence-output={module.confidence_output}")
    if module.timeout_ms is not None:
        args.append(f"--upstream-timeout={number(module.timeout_ms / 1000)}")
    if (classifying := sidecar_gates_json(gates)) is not None:
        args.append(f"--gates={classifying}")  # tags derived as the router derives them
    env = _env()
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if (key := audit_key(settings)) is not None:
        env.append(key[2])
        mounts.append(key[1])
    return {
        "name": "sidecar",
        "image": settings.image_sidecar,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modulemesh"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": settings.sidecar_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": settings.sidecar_grpc_port, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {
                "cpu": module.resources.sidecar_cpu or settings.sidecar_cpu,
                "memory": settings.sidecar_memory,
            },
            "limits": {"memory": settings.sidecar_memory_limit},
        },
        "startupProbe": http_probe("/livez", "http", period=1, failures=30),
        "livenessProbe": http_probe("/livez", "http"),
        "readinessProbe": http_probe("/readyz", "http", period=5),
        "lifecycle": pre_stop(settings.drain_delay_s),
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
    }


def module_deployment(
    graph: str,
    namespace: str,
    module: Module,
    gates: Sequence[PrivacyGate],
    settings: RenderSettings,
) -> dict[str, Any]:
    """The module's Deployment (no ownerReferences: the operator adds them)."""
    labels = naming.labels(graph, "module", module.name)
    volumes = [
        scratch_volume(TMP_VOLUME, settings.tmp_size_limit),
        scratch_volume(CACHE_VOLUME, settings.model_cache_size_limit),
    ]
    if (model_volume := _model_volume(module)) is not None:
        volumes.append(model_volume)
    if (key := audit_key(settings)) is not None:
        volumes.append(key[0])
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(settings),
        "terminationGracePeriodSeconds": termination_grace_seconds(settings),
        "containers": [
            runtime_container(module, settings),
            sidecar_container(module, gates, settings),
        ],
        "volumes": volumes,
    }
    if (selector := placement.node_selector(module, settings)) is not None:
        pod["nodeSelector"] = selector
    if (tolerations := placement.tolerations(module, settings)) is not None:
        pod["tolerations"] = tolerations
    if (affinity := placement.pod_affinity(module, gates, settings)) is not None:
        pod["affinity"] = affinity
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.module_name(graph, module.name),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": {
            "replicas": module.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": naming.selector(graph, "module", module.name)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {"modulemesh.io/model-version": module.version},
                },
                "spec": pod,
            },
        },
    }
