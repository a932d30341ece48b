"""Render: a validated ModuleGraph (+ its PrivacyGates) -> the Kubernetes objects it becomes.

Pure on purpose: no cluster access and no kopf, so ``modulemesh render`` prints exactly what
the operator would apply, and tests check the output without a cluster. Objects carry no
ownerReferences (the operator adds its own) and come out in a stable order: the ConfigMap,
Services, NetworkPolicy and PodDisruptionBudgets (and, for a graph with differentially private
outputs, the router's ServiceAccount, Role and RoleBinding on its budget ledger:
:mod:`modulemesh.operator.dp_ledger`) before the Deployments that use them.

Every router or module Deployment with more than one replica gets a PodDisruptionBudget with
``maxUnavailable: 1``: a node drain or cluster-autoscaler scale-down evicts its pods one at a
time, so a replicated step keeps serving while its nodes are replaced. (``maxUnavailable``
rather than ``minAvailable: replicas - 1``: the same protection, and it stays right while the
Deployment scales.) ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets pods that are not ready
anyway be evicted, so a crash-looping replica never blocks a drain. With one replica there is
nothing to keep serving during an eviction, so no budget: it would only block the drain.

Render assumes a validated graph but never crashes on one that is not: a missing gate is
left out, and a region set that cannot be satisfied yields pods that stay Pending.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

from modulemesh.api.gate import PrivacyGate
from modulemesh.api.graph import Module, ModuleGraph
from modulemesh.api.resolved import resolve
from modulemesh.operator import naming
from modulemesh.operator.dp_ledger import ledger_objects, needs_ledger, router_ledger_arg
from modulemesh.operator.module_pod import module_deployment
from modulemesh.operator.placement import gates_of
from modulemesh.operator.pods import (
    audit_key,
    container_security_context,
    http_probe,
    pod_security_context,
    pre_stop,
    scratch_volume,
    termination_grace_seconds,
)
from modulemesh.operator.settings import RenderSettings

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "RESOLVED_KEY",
    "canary_deployment",
    "canary_endpoint",
    "disruption_budget",
    "graph_endpoint",
    "module_endpoint",
    "namespace_of",
    "render",
    "resolved_json",
]

RESOLVED_KEY = "resolved.json"
CAPTURE_MOUNT = "/var/lib/modulemesh/capture"
"""Where a graph's ``capture.claimName`` volume is mounted in its router pods."""
CONFIG_HASH_ANNOTATION = "modulemesh.io/config-hash"
"""On the router's pod template: a changed graph changes the hash, which rolls the router."""


def namespace_of(graph: ModuleGraph, settings: RenderSettings) -> str:
    """The graph's namespace, or the settings' default."""
    return graph.metadata.namespace or settings.default_namespace


def _service_url(name: str, namespace: str, port: int, settings: RenderSettings) -> str:
    return f"http://{name}.{namespace}.svc.{settings.cluster_domain}:{port}"


def module_endpoint(graph: ModuleGraph, module: str, settings: RenderSettings) -> str:
    """Base URL of a module's Service (its sidecars), as the router calls it."""
    graph_name = graph.metadata.name
    return _service_url(
        naming.module_name(graph_name, module),
        namespace_of(graph, settings),
        settings.sidecar_port,
        settings,
    )


def canary_endpoint(graph: ModuleGraph, module: str, settings: RenderSettings) -> str:
    """Base URL of a module's canary Service, as the router calls it during a rollout."""
    return _service_url(
        naming.canary_name(graph.metadata.name, module),
        namespace_of(graph, settings),
        settings.sidecar_port,
        settings,
    )


def graph_endpoint(graph: ModuleGraph, settings: RenderSettings) -> str:
    """Base URL of the graph's router Service (the graph is served at ``/v2/models/<graph>``)."""
    return _service_url(
        naming.router_name(graph.metadata.name),
        namespace_of(graph, settings),
        settings.router_port,
        settings,
    )


def resolved_json(
    graph: ModuleGraph, gates: Sequence[PrivacyGate], settings: RenderSettings
) -> str:
    """The ResolvedGraph document the router runs, with in-cluster module endpoints."""
    namespace = namespace_of(graph, settings)
    placed = graph.model_copy(
        update={"metadata": graph.metadata.model_copy(update={"namespace": namespace})}
    )
    capture = graph.spec.capture
    if capture is not None and not capture.path.startswith("/"):
        # A relative capture file lives on the claim's volume, else in the pod's scratch /tmp
        # (the router's root file system is read-only).
        root = CAPTURE_MOUNT if capture.claim_name is not None else "/tmp"
        where = capture.model_copy(update={"path": f"{root}/{capture.path}"})
        spec = graph.spec.model_copy(update={"capture": where})
        placed = placed.model_copy(update={"spec": spec})
    endpoints = {m.name: module_endpoint(graph, m.name, settings) for m in graph.spec.modules}
    canaries = {
        m.name: canary_endpoint(graph, m.name, settings)
        for m in graph.spec.modules
        if m.canary is not None
    }
    return resolve(placed, gates, endpoints, canaries).dumps()


def render(
    graph: ModuleGraph, gates: Sequence[PrivacyGate], settings: RenderSettings
) -> list[dict[str, Any]]:
    """Every object the graph becomes, in apply order, without ownerReferences."""
    name = graph.metadata.name
    namespace = namespace_of(graph, settings)
    named = gates_of(graph, gates)
    content = resolved_json(graph, named, settings)
    modules = graph.spec.modules
    canaries = [m for m in modules if m.canary is not None]
    ledger = needs_ledger(graph, named)
    return [
        _config_map(name, namespace, content),
        *(
            _service(naming.module_name(name, m.name), namespace, name, "module", m.name, settings)
            for m in modules
        ),
        *(
            _service(
                naming.canary_name(name, m.name),
                namespace,
                name,
                "module",
                naming.canary_label(m.name),
                settings,
            )
            for m in canaries
        ),
        _service(naming.router_name(name), namespace, name, "router", None, settings),
        _network_policy(name, namespace, settings),
        *(
            disruption_budget(naming.module_name(name, m.name), namespace, name, "module", m.name)
            for m in modules
            if m.replicas > 1
        ),
        *(
            [disruption_budget(naming.router_name(name), namespace, name, "router", None)]
            if graph.spec.router.replicas > 1
            else []
        ),
        *(ledger_objects(name, namespace) if ledger else []),
        *(module_deployment(name, namespace, m, named, settings) for m in modules),
        *(canary_deployment(name, namespace, m, named, settings) for m in canaries),
        _router_deployment(graph, namespace, content, settings, ledger=ledger),
    ]


def canary_deployment(
    graph: str,
    namespace: str,
    module: Module,
    gates: Sequence[PrivacyGate],
    settings: RenderSettings,
) -> dict[str, Any]:
    """The Deployment of a module's canary: the module's own pods (resources, placement,
    clearance, sidecar) with the canary's model and version, named ``<graph>-<module>-canary``
    and labelled ``<module>.canary``, beside the module's Deployment; the router splits the
    module's calls between the two by its rollout policy. No disruption budget: a canary is
    short-lived."""
    assert module.canary is not None
    version = module.model_copy(
        update={"model": module.canary.model, "version": module.canary.version}
    )
    deployment = module_deployment(graph, namespace, version, gates, settings)
    deployment["metadata"]["name"] = naming.canary_name(graph, module.name)
    spec = deployment["spec"]
    for labels in (
        deployment["metadata"]["labels"],
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"],
    ):
        labels[naming.MODULE_LABEL] = naming.canary_label(module.name)
    return deployment


def _metadata(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels}


def _config_map(graph: str, namespace: str, content: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            naming.config_map_name(graph), namespace, naming.labels(graph, "graph")
        ),
        "data": {RESOLVED_KEY: content},
    }


def _service(
    name: str,
    namespace: str,
    graph: str,
    component: str,
    module: str | None,
    settings: RenderSettings,
) -> dict[str, Any]:
    router = component == "router"
    port = settings.router_port if router else settings.sidecar_port
    grpc_port = settings.router_grpc_port if router else settings.sidecar_grpc_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, naming.labels(graph, component, module)),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector(graph, component, module),
            "ports": [
                {
                    "name": "http",
                    "port": port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def _network_policy(graph: str, namespace: str, settings: RenderSettings) -> dict[str, Any]:
    """Module pods accept traffic only from this graph's router pods (and the scrapers named
    in ``metrics_from``), on the sidecar port; the router also on the sidecar's gRPC port."""
    port = {"protocol": "TCP", "port": settings.sidecar_port}
    grpc = {"protocol": "TCP", "port": settings.sidecar_grpc_port}
    router = {"podSelector": {"matchLabels": naming.selector(graph, "router")}}
    ingress: list[dict[str, Any]] = [{"from": [router], "ports": [dict(port), grpc]}]
    if settings.metrics_from:
        scrapers = copy.deepcopy(list(settings.metrics_from))
        ingress.append({"from": scrapers, "ports": [dict(port)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            naming.network_policy_name(graph), namespace, naming.labels(graph, "module")
        ),
        "spec": {
            "podSelector": {"matchLabels": naming.selector(graph, "module")},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def disruption_budget(
    name: str, namespace: str, graph: str, component: str, module: str | None
) -> dict[str, Any]:
    """The PodDisruptionBudget of a replicated Deployment (named like it): evictions one pod
    at a time, and never held up by pods that are not ready."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, namespace, naming.labels(graph, component, module)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector(graph, component, module)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


ROLLOUT_STATE = "/tmp/rollout-state.json"
"""The router's ``--rollout-state`` file in a cluster: on the pod's scratch emptyDir, which a
restarted container keeps and a new pod does not."""


def _has_canary(graph: ModuleGraph) -> bool:
    return any(m.canary is not None for m in graph.spec.modules)


def _router_deployment(
    graph: ModuleGraph, namespace: str, content: str, settings: RenderSettings, *, ledger: bool
) -> dict[str, Any]:
    """The router's Deployment; with ``ledger`` (a differentially private output) it runs as
    its own service account, token mounted, and charges the graph's ConfigMap ledger."""
    name = graph.metadata.name
    router = graph.spec.router
    labels = naming.labels(name, "router")
    config_hash = hashlib.sha256(content.encode()).hexdigest()[:16]
    env: list[dict[str, str]] = [{"name": "HOME", "value": "/tmp"}]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": settings.config_mount_dir, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [
        {"name": "config", "configMap": {"name": naming.config_map_name(name)}},
        scratch_volume("tmp", settings.tmp_size_limit),
    ]
    if (key := audit_key(settings)) is not None:
        volumes.append(key[0])
        mounts.append(key[1])
        env.append(key[2])
    capture = graph.spec.capture
    if capture is not None and capture.claim_name is not None:
        volumes.append(
            {"name": "capture", "persistentVolumeClaim": {"claimName": capture.claim_name}}
        )
        mounts.append({"name": "capture", "mountPath": CAPTURE_MOUNT})
    container = {
        "name": "router",
        "image": settings.router_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modulemesh"],
        "args": [
            "router",
            f"--config={settings.config_mount_dir}/{RESOLVED_KEY}",
            "--host=0.0.0.0",
            f"--port={settings.router_port}",
            f"--grpc-port={settings.router_grpc_port}",
            *([router_ledger_arg(name, namespace)] if ledger else []),
            # A rollout's step survives the router container's restarts (crash, OOM kill,
            # liveness) on the pod's /tmp emptyDir; only graphs with a canary get the flag, so
            # no other router's template changes.
            *([f"--rollout-state={ROLLOUT_STATE}"] if _has_canary(graph) else []),
        ],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": settings.router_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": settings.router_grpc_port, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": router.cpu, "memory": router.memory},
            "limits": {"cpu": router.cpu, "memory": router.memory},
        },
        "startupProbe": http_probe("/v2/health/live", "http", period=1, failures=30),
        "livenessProbe": http_probe("/v2/health/live", "http"),
        "readinessProbe": http_probe("/v2/health/ready", "http", period=5),
        "lifecycle": pre_stop(settings.drain_delay_s),
        "securityContext": container_security_context(settings),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(naming.router_name(name), namespace, labels),
        "spec": {
            "replicas": router.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": naming.selector(name, "router")},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    **(
                        {"serviceAccountName": naming.router_name(name)}
                        if ledger
                        else {"automountServiceAccountToken": False}
                    ),
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(settings),
                    "terminationGracePeriodSeconds": termination_grace_seconds(settings),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
