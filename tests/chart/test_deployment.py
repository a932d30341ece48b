"""The operator Deployment: one replica, Recreate, the `restricted` Pod Security Standard,
probes on kopf's liveness endpoint, and every value reaching the operator's environment.

The environment variable names are the ones ``modulemesh.operator.config.OperatorSettings``
reads; a test checks the chart sets each of them, so a renamed setting fails here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from api.graph_builders import graph

from chart.helm import NAMESPACE, RELEASE, Helm, by_kind, container_env, one
from modulemesh.api.graph import ModuleGraph
from modulemesh.operator.config import ENV_PREFIX, OperatorSettings, WebhookSettings
from modulemesh.operator.module_pod import sidecar_container

APP_VERSION = "0.1.0"
ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Why a pod spec fails the `restricted` Pod Security Standard (baseline + restricted rules)."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{field} is set")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is of type {kinds}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    containers = list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps.get('add')}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def test_the_restricted_checker_catches_violations() -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
    }
    problems = restricted_violations(bad)
    for fragment in (
        "hostNetwork",
        "volume h",
        "allowPrivilegeEscalation",
        "drop ALL",
        "adds",
        "runAsNonRoot",
        "seccompProfile",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)


@pytest.mark.parametrize(
    "values_files",
    [[], ["scheduling.yaml"], ["tuning.yaml"], ["watch-namespaces.yaml"], ["custom-images.yaml"]],
    ids=["defaults", "scheduling", "tuning", "namespaced", "custom-images"],
)
def test_operator_pod_meets_restricted_and_reads_only(helm: Helm, values_files: list[str]) -> None:
    spec = pod_spec(helm.render(values_files))
    assert restricted_violations(spec) == []
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 65532  # the image's USER
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_one_replica_recreated_not_rolled(helm: Helm) -> None:
    deployment = one(helm.render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("values_files,port", [([], 8080), (["tuning.yaml"], 9090)])
def test_probes_hit_kopf_liveness_endpoint(helm: Helm, values_files: list[str], port: int) -> None:
    objects = helm.render(values_files)
    (container,) = pod_spec(objects)["containers"]
    assert container["ports"] == [
        {"name": "health", "containerPort": port, "protocol": "TCP"},
        {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    env = container_env(one(objects, "Deployment"))
    assert env["MODULEMESH_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{port}/healthz"
    assert container["args"] == ["operator"]


class RecordingEnv(dict[str, str]):
    """An environment that records which keys are looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_setting_the_operator_reads_is_set(helm: Helm) -> None:
    env = container_env(one(helm.render(), "Deployment"))
    recording = RecordingEnv()
    OperatorSettings.from_env(recording)  # which MODULEMESH_* variables does it read?
    read = {key for key in recording.read if key.startswith(ENV_PREFIX)}
    assert len(read) >= 10, read
    optional = {
        "MODULEMESH_IMAGE_ROUTER",  # unset: the router runs the sidecar image
        "MODULEMESH_WEBHOOK_ADDR",  # all interfaces
        "MODULEMESH_WEBHOOK_HOST",  # for a URL; in a cluster the Service is named instead
        "MODULEMESH_WEBHOOK_CERT_DIR",  # only with webhook.certSecret
        "MODULEMESH_AUDIT_KEY_SECRET",  # only with audit.keySecret
    }
    assert read - optional <= set(env), read - optional - set(env)
    assert set(env) <= read, f"the chart sets variables the operator ignores: {set(env) - read}"


def test_defaults_match_the_operators_own_defaults(helm: Helm) -> None:
    # Installing with default values behaves like `modulemesh operator` with no flags, but for
    # the webhook: the chart has a Service to announce it through, a bare operator does not.
    env = container_env(one(helm.render(), "Deployment"))
    settings = OperatorSettings.from_env(env)
    assert replace(settings, webhook=None) == OperatorSettings()
    assert settings.webhook == WebhookSettings(
        port=9443, service=(NAMESPACE, f"{RELEASE}-modulemesh-webhook", 443)
    )
    assert OperatorSettings().render.image_sidecar.endswith(f":{APP_VERSION}")


def test_watch_namespaces_reach_the_operator(helm: Helm) -> None:
    env = container_env(one(helm.render(["watch-namespaces.yaml"]), "Deployment"))
    assert OperatorSettings.from_env(env).watch_namespaces == ("team-a", "team-b")


def test_custom_images_tags_digests_and_pull_secrets(helm: Helm) -> None:
    objects = helm.render(["custom-images.yaml"])
    deployment = one(objects, "Deployment")
    (container,) = pod_spec(objects)["containers"]
    assert container["image"] == "registry.example.com/ml/modulemesh:0.1.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    settings = OperatorSettings.from_env(container_env(deployment))
    render = settings.render
    assert render.image_sidecar == "registry.example.com/ml/modulemesh:0.1.0-rc1"
    assert render.router_image == "registry.example.com/ml/modulemesh-router:0.1.0-rc1"
    assert render.image_runtime == "registry.example.com/ml/modulemesh-runtime:0.1.0-rc1"
    assert render.image_runtime_gpu == (
        "registry.example.com/ml/modulemesh-runtime-gpu@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert render.image_pull_policy == "Always"
    assert pod_spec(objects)["imagePullSecrets"] == [{"name": "registry-example"}]


def test_custom_gpu_resource_name(helm: Helm) -> None:
    env = container_env(one(helm.render(["custom-gpu.yaml"]), "Deployment"))
    assert OperatorSettings.from_env(env).gpu_resource == "amd.com/gpu"


def test_tuning_values(helm: Helm) -> None:
    objects = helm.render(["tuning.yaml"])
    settings = OperatorSettings.from_env(container_env(one(objects, "Deployment")))
    assert settings.envelope_interval_s == 5.0
    assert settings.resync_interval_s == 120.0
    assert settings.log_format == "plain"
    assert settings.render.cluster_domain == "k8s.internal"
    (container,) = pod_spec(objects)["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


def test_metrics_peers_reach_the_operator(helm: Helm) -> None:
    env = container_env(one(helm.render(["metrics-from.yaml"]), "Deployment"))
    assert OperatorSettings.from_env(env).render.metrics_from == (
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
    )


def test_scheduling_values(helm: Helm) -> None:
    objects = helm.render(["scheduling.yaml"])
    spec = pod_spec(objects)
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in spec["affinity"]["nodeAffinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    template_meta = one(objects, "Deployment")["spec"]["template"]["metadata"]
    assert template_meta["annotations"] == {"prometheus.io/scrape": "false"}
    assert template_meta["labels"]["team"] == "platform"
    # defaults render none of these
    default_spec = pod_spec(helm.render())
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert key not in default_spec, key


def test_only_the_operator_deployment_runs_pods(helm: Helm) -> None:
    objects = helm.render()
    for kind in ("Pod", "DaemonSet", "StatefulSet", "Job", "CronJob", "ReplicaSet"):
        assert not by_kind(objects, kind), kind


def test_the_webhook_service_reaches_the_operator_pod(helm: Helm) -> None:
    objects = helm.render()
    (service,) = by_kind(objects, "Service")
    assert service["metadata"]["name"] == f"{RELEASE}-modulemesh-webhook"
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_a_certificate_secret_is_mounted_and_named_to_the_operator(helm: Helm) -> None:
    objects = helm.render(set_values={"webhook.certSecret": "modulemesh-webhook-tls"})
    spec = pod_spec(objects)
    assert {"name": "webhook-tls", "secret": {"secretName": "modulemesh-webhook-tls"}} in spec[
        "volumes"
    ]
    (container,) = spec["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["readOnly"] is True
    settings = OperatorSettings.from_env(container_env(one(objects, "Deployment")))
    assert settings.webhook is not None and settings.webhook.cert_dir == mount["mountPath"]
    assert restricted_violations(spec) == []


def test_the_audit_key_secret_reaches_the_routers_and_sidecars(helm: Helm) -> None:
    objects = helm.render(set_values={"audit.keySecret": "modulemesh-audit"})
    settings = OperatorSettings.from_env(container_env(one(objects, "Deployment")))
    assert settings.render.audit_key_secret == "modulemesh-audit"
    assert OperatorSettings.from_env(container_env(one(helm.render(), "Deployment"))).render \
        .audit_key_secret is None  # fmt: skip


def test_the_webhook_can_be_turned_off_or_made_strict(helm: Helm) -> None:
    off = helm.render(set_values={"webhook.enabled": "false"})
    assert not by_kind(off, "Service")
    assert OperatorSettings.from_env(container_env(one(off, "Deployment"))).webhook is None
    strict = helm.render(set_values={"webhook.failurePolicy": "Fail"})
    settings = OperatorSettings.from_env(container_env(one(strict, "Deployment")))
    assert settings.webhook is not None and settings.webhook.failure_policy == "Fail"
    assert not settings.webhook.strict_gates
    gates = helm.render(set_values={"webhook.strictGateChanges": "true"})
    settings = OperatorSettings.from_env(container_env(one(gates, "Deployment")))
    assert settings.webhook is not None and settings.webhook.strict_gates


def test_sidecar_resources_reach_every_module_pod(helm: Helm) -> None:
    settings = OperatorSettings.from_env(
        container_env(one(helm.render(["sidecar-resources.yaml"]), "Deployment"))
    )
    module = ModuleGraph.model_validate(graph()).spec.modules[0]
    sidecar = sidecar_container(module, [], settings.render)
    assert sidecar["resources"] == {
        "requests": {"cpu": "500m", "memory": "192Mi"},
        "limits": {"memory": "384Mi"},  # no CPU limit: a throttled proxy delays every call
    }
