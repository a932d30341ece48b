"""What render needs to know about the cluster that the graph does not say.

Images, the GPU resource name and toleration, ports and the cluster domain are the platform
team's choice (Helm values, operator flags), not the graph author's, so they live here and not
in the ModuleGraph spec. ``modulemesh render`` and the operator both build one of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from modulemesh.api.graph import CPU_PATTERN, MEMORY_PATTERN

__all__ = ["RenderSettings", "check_quantity"]


def check_quantity(value: str, kind: Literal["cpu", "memory"]) -> str:
    """``value`` if it is a Kubernetes CPU or memory quantity; otherwise a ValueError saying
    so, so a typo in a setting fails when it is read, not in every pod the operator creates."""
    pattern, example = (CPU_PATTERN, "500m or 2") if kind == "cpu" else (MEMORY_PATTERN, "256Mi")
    if re.match(pattern, value) is None:
        raise ValueError(f"{value!r} is not a {kind} quantity (e.g. {example})")
    return value


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Cluster-side choices render applies to every graph."""

    image_runtime: str = "ghcr.io/modulemesh/modulemesh-runtime:0.1.0"
    """Runtime image for modules without GPUs (onnxruntime, CPU provider)."""
    image_runtime_gpu: str = "ghcr.io/modulemesh/modulemesh-runtime-gpu:0.1.0"
    """Runtime image for modules with ``gpu > 0`` (onnxruntime-gpu on a CUDA base)."""
    image_sidecar: str = "ghcr.io/modulemesh/modulemesh:0.1.0"
    """The slim image: sidecar (and router, unless ``image_router`` is set)."""
    image_router: str | None = None
    """Router image; the slim ``image_sidecar`` when unset."""
    image_pull_policy: str = "IfNotPresent"

    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource name for GPUs when a module does not name its own."""
    gpu_toleration_key: str = "nvidia.com/gpu"
    """GPU nodes carry this taint (``Exists``/``NoSchedule``); GPU modules tolerate it."""
    gpu_product_label: str = "nvidia.com/gpu.product"
    """Node label a module's ``gpuType`` is matched against (GPU feature discovery's)."""
    region_label: str = "topology.kubernetes.io/region"

    sidecar_port: int = 8080
    """The module pod's only containerPort; the Service targets it."""
    runtime_port: int = 8081
    """Where the runtime listens, on 127.0.0.1 only (never a containerPort)."""
    router_port: int = 8080
    router_grpc_port: int = 8081
    """The router's OIP v2 gRPC port (inference.GRPCInferenceService), the protocol's
    convention (KServe's 8081), on its Service beside HTTP."""
    sidecar_grpc_port: int = 8082
    """The sidecar's guarded gRPC port: the module pod's second containerPort (8081 is taken
    in the pod by the runtime's loopback HTTP port)."""
    runtime_grpc_port: int = 8083
    """The runtime's gRPC port, on 127.0.0.1 only, which the sidecar relays to."""
    metrics_from: tuple[dict[str, Any], ...] = ()
    """NetworkPolicy peers (e.g. the monitoring namespace) also admitted to the module pods'
    sidecar port, so Prometheus can scrape ``/metrics``; by default only the graph's router."""
    cluster_domain: str = "cluster.local"
    default_namespace: str = "default"
    """Namespace used for endpoints and object metadata when the graph names none."""

    run_as_user: int = 65532
    """Non-root UID/GID of every container (the distroless ``nonroot`` user)."""
    sidecar_cpu: str = "100m"
    """CPU request of every sidecar (no CPU limit: a throttled proxy adds latency to every
    call). The sidecar costs ~35-120 us of CPU per request (docs/benchmarks.md), so a module
    serving 5 000 requests per second needs about 0.2-0.6 CPU for it."""
    drain_delay_s: int = 5
    """Seconds a terminating module or router pod keeps serving before its servers get
    SIGTERM (a ``preStop`` sleep), so its Service endpoint is gone from every kube-proxy and
    router before it stops accepting; a rolling update or a deleted pod then loses no request.
    The runtime waits ``RUNTIME_DRAIN_LAG_S`` longer, so the sidecar's last calls find it."""
    sidecar_memory: str = "96Mi"
    """Memory request of every sidecar: about 50 MiB measured at 140 requests per second
    (docs/operations.md, "Memory"), twice that for bursts and larger bodies."""
    sidecar_memory_limit: str = "256Mi"
    tmp_size_limit: str = "64Mi"
    model_cache_dir: str = "/var/cache/modulemesh/models"
    """emptyDir where the runtime caches ``https://`` models (the root filesystem is read-only)."""
    model_cache_size_limit: str = "2Gi"
    model_mount_root: str = "/models"
    model_path_root: str = "/opt/modulemesh/examples"
    """A module's relative ``path`` is resolved against this directory of the runtime image,
    as ``modulemesh run`` resolves it against the graph file's: the runtime images ship the
    example models here (``models/*.onnx``, built by ``modulemesh models build``), so the
    graphs in ``examples/`` run unchanged in a cluster. An absolute ``path`` is used as is."""
    """ConfigMap/PVC model volumes are mounted read-only at ``<root>/<module>``."""
    config_mount_dir: str = "/etc/modulemesh"
    """Where the router finds ``resolved.json`` (the graph's ConfigMap)."""
    audit_key_secret: str | None = None
    """Secret (in each graph's namespace) whose ``key`` entry is the audit MAC key, mounted
    into every router and sidecar (``MODULEMESH_AUDIT_KEY_FILE``); unset: records carry the
    hash chain only."""

    @property
    def router_image(self) -> str:
        """The image the router runs."""
        return self.image_router or self.image_sidecar
