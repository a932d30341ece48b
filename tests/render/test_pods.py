"""What runs in a module pod: containers, flags, ports, probes, volumes, security.

The runtime and sidecar flags are parsed with the components' own argument parsers, so a
flag render emits that the runtime or sidecar does not accept fails here, not in a cluster.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest
from render.render_builders import by_kind, container, gate, graph, pod_of

from modulemesh.api.resolved import ResolvedGraph
from modulemesh.operator.render import render
from modulemesh.operator.settings import RenderSettings
from modulemesh.privacy import Classifier
from modulemesh.runtime.config import add_arguments, from_args
from modulemesh.sidecar import command as sidecar_command
from modulemesh.sidecar.config import Mode

Pod = Callable[..., dict[str, Any]]
SHA = "a" * 64


def runtime_config(pod: dict[str, Any]) -> Any:
    runtime = container(pod, "runtime")
    assert runtime["command"] == ["modulemesh"] and runtime["args"][0] == "runtime"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(runtime["args"][1:]))


def sidecar_config(pod: dict[str, Any]) -> Any:
    sidecar = container(pod, "sidecar")
    assert sidecar["command"] == ["modulemesh"] and sidecar["args"][0] == "sidecar"
    parser = argparse.ArgumentParser()
    sidecar_command.configure(parser)
    return sidecar_command.build_config(parser.parse_args(sidecar["args"][1:]))


# --- flags ---------------------------------------------------------------------------------


def test_runtime_listens_on_loopback_with_the_module_settings(module_pod: Pod) -> None:
    config = runtime_config(
        module_pod(
            {
                "name": "clf",
                "version": "7",
                "batching": {"maxBatchSize": 32, "maxDelayMs": 2.5, "maxQueue": 99},
            }
        )
    )
    assert (config.host, config.port) == ("127.0.0.1", 8081)
    assert (config.name, config.model_version) == ("clf", "7")
    assert config.model == "/opt/modulemesh/examples/m.onnx"
    assert (config.max_batch_size, config.max_delay_ms, config.max_queue) == (32, 2.5, 99)
    assert config.adaptive_delay is True
    assert str(config.cache_dir) == RenderSettings().model_cache_dir


def test_runtime_batch_delay_is_adaptive_unless_the_module_says_fixed(module_pod: Pod) -> None:
    assert runtime_config(module_pod({"name": "clf"})).adaptive_delay is True
    fixed = runtime_config(module_pod({"name": "clf", "batching": {"adaptive": False}}))
    assert (fixed.adaptive_delay, fixed.max_delay_ms) == (False, 1.0)


@pytest.mark.parametrize(
    ("gpu", "cpu_fallback", "provider", "runtime_fallback"),
    [
        (0, "Allow", "cpu", "allow"),
        (0, "Refuse", "cpu", "allow"),  # no GPU asked for: nothing to fall back from
        (1, "Allow", "auto", "allow"),
        (1, "Refuse", "auto", "refuse"),
    ],
)
def test_a_gpu_module_may_refuse_the_cpu_fallback(
    module_pod: Pod, gpu: int, cpu_fallback: str, provider: str, runtime_fallback: str
) -> None:
    config = runtime_config(module_pod({"resources": {"gpu": gpu}, "cpuFallback": cpu_fallback}))
    assert (config.provider, config.cpu_fallback) == (provider, runtime_fallback)


def test_sidecar_fronts_the_runtime_with_clearance_and_thresholds(module_pod: Pod) -> None:
    config = sidecar_config(
        module_pod(
            {
                "name": "clf",
                "version": "7",
                "clearance": ["pii", "phi"],
                "timeoutMs": 1500,
                "confidenceOutput": "probabilities",
                "health": {
                    "degradedErrorRate": 0.1,
                    "unhealthyErrorRate": 0.4,
                    "degradedP50Ms": 40,
                    "degradedP95Ms": 120.5,
                    "degradedP99Ms": 250,
                },
            }
        )
    )
    assert config.module == "clf" and config.model_version == "7"
    assert config.upstream.url == "http://127.0.0.1:8081"
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.clearance == frozenset({"phi", "pii"})
    assert config.mode is Mode.ENFORCE
    assert config.thresholds.degraded_error_rate == 0.1
    assert config.thresholds.unhealthy_error_rate == 0.4
    assert config.thresholds.degraded_p99_seconds == 0.25
    assert config.thresholds.degraded_p95_seconds == 0.1205
    assert config.thresholds.degraded_p50_seconds == 0.04
    assert config.confidence_output == "probabilities"
    assert config.upstream_timeout == 1.5


def test_sidecar_without_clearance_clears_nothing(module_pod: Pod) -> None:
    assert sidecar_config(module_pod({})).clearance == frozenset()


@pytest.mark.parametrize(
    ("clearance", "modes", "expected"),
    [
        ([], [], Mode.ENFORCE),  # no gates: uncleared tags have nobody asking for leniency
        ([], ["dryrun"], Mode.DRYRUN),
        ([], ["enforce"], Mode.ENFORCE),
        ([], ["dryrun", "enforce"], Mode.ENFORCE),  # one enforcing owner is enough
        (["t0"], ["enforce", "dryrun"], Mode.DRYRUN),  # cleared for the enforce gate's tag
        (["t0", "t1"], ["dryrun", "dryrun"], Mode.ENFORCE),  # cleared for all: none can deny
    ],
)
def test_sidecar_is_dryrun_only_when_every_gate_it_could_deny_for_is(
    module_pod: Pod, clearance: list[str], modes: list[str], expected: Mode
) -> None:
    gates = [gate(f"g{i}", [{"name": f"t{i}"}], mode=m) for i, m in enumerate(modes)]
    assert sidecar_config(module_pod({"clearance": clearance}, gates)).mode is expected


def test_sidecar_gets_the_classifying_gates_and_tags_as_the_router_does(
    module_pod: Pod, settings: RenderSettings
) -> None:
    classifying = gate(
        "phi", [{"name": "phi", "classifiers": [{"header": "x-data-class", "values": ["phi"]}]}]
    )
    gates = [classifying, gate("plain", [{"name": "pii"}])]
    pod = module_pod({}, gates)
    config = sidecar_config(pod)
    assert list(config.gates) == ["phi"]  # only what classifies: the others do not tag
    objects = render(graph(gates=["phi", "plain"]), gates, settings)
    (config_map,) = by_kind(objects, "ConfigMap").values()
    resolved = ResolvedGraph.model_validate_json(config_map["data"]["resolved.json"])
    router_side = Classifier.from_gates(resolved.gates.values())
    sidecar_side = Classifier.from_gates(config.gates.values())
    for fields in ({"x-data-class": "phi, other"}, {"x-data-class": "none"}, {}):
        assert router_side.classify(fields) == sidecar_side.classify(fields)
    assert sidecar_side.classify({"x-data-class": "none, phi"}) == {"phi"}
    assert not [a for a in container(module_pod({}), "sidecar")["args"] if "gates" in a]


# --- ports and probes ----------------------------------------------------------------------


def test_sidecar_ports_are_the_pods_only_container_ports(module_pod: Pod) -> None:
    pod = module_pod({})
    assert [c["name"] for c in pod["containers"]] == ["runtime", "sidecar"]
    assert "ports" not in container(pod, "runtime")
    assert container(pod, "sidecar")["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8082, "protocol": "TCP"},
    ]


def test_grpc_goes_through_the_sidecar_to_the_runtime_on_loopback(module_pod: Pod) -> None:
    pod = module_pod({})
    runtime = runtime_config(pod)
    assert (runtime.host, runtime.grpc_port, runtime.grpc_uds) == ("127.0.0.1", 8083, None)
    sidecar = sidecar_config(pod)
    assert (sidecar.grpc_port, sidecar.grpc_upstream) == (8082, "127.0.0.1:8083")


def test_sidecar_probes_and_runtime_readiness_through_the_sidecar(module_pod: Pod) -> None:
    pod = module_pod({})
    sidecar, runtime = container(pod, "sidecar"), container(pod, "runtime")
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("startupProbe", "readinessProbe"):
        assert runtime[probe]["httpGet"] == {"path": "/readyz", "port": 8080, "scheme": "HTTP"}
    # Kubelet cannot reach 127.0.0.1 in the pod: no probe may target the runtime's port.
    assert "livenessProbe" not in runtime
    assert all(
        c[p]["httpGet"]["port"] in (8080, "http")
        for c in pod["containers"]
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
        if p in c
    )


def test_pods_keep_serving_until_their_endpoints_are_gone(module_pod: Pod) -> None:
    """A deleted or rolled pod keeps accepting for a while (preStop sleep) before SIGTERM
    makes its servers stop: the router and sidecar 5 s, the runtime 3 s longer so the
    sidecar's last calls find it; the grace period covers that and the 30 s drain."""
    pod = module_pod({})
    assert container(pod, "sidecar")["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert container(pod, "runtime")["lifecycle"] == {"preStop": {"sleep": {"seconds": 8}}}
    assert pod["terminationGracePeriodSeconds"] == 40
    rendered = render(graph([{"name": "m", "model": {"path": "m.onnx"}}]), [], RenderSettings())
    router = pod_of(rendered, "g-router")
    assert container(router, "router")["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert router["terminationGracePeriodSeconds"] == 40


def test_sidecar_cpu_is_the_platform_default_unless_the_module_sets_its_own(
    module_pod: Pod, settings: RenderSettings
) -> None:
    default = container(module_pod({}), "sidecar")["resources"]
    assert default == {
        "requests": {"cpu": settings.sidecar_cpu, "memory": settings.sidecar_memory},
        "limits": {"memory": settings.sidecar_memory_limit},  # no CPU limit
    }
    busy = container(module_pod({"resources": {"sidecarCpu": "750m"}}), "sidecar")["resources"]
    assert busy["requests"] == {"cpu": "750m", "memory": settings.sidecar_memory}
    assert "cpu" not in busy["limits"]
    # the runtime's own resources are untouched by the sidecar's
    runtime = container(module_pod({"resources": {"sidecarCpu": "750m"}}), "runtime")
    assert runtime["resources"]["requests"]["cpu"] == "500m"


# --- security ------------------------------------------------------------------------------


def restricted(context: dict[str, Any]) -> None:
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_pod_and_container_meets_restricted(settings: RenderSettings) -> None:
    objects = render(
        graph([{"name": "m", "model": {"path": "m.onnx"}, "resources": {"gpu": 1}}]), [], settings
    )
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"g-m", "g-router"}
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert "hostNetwork" not in pod and "hostPID" not in pod
        for c in pod["containers"]:
            restricted(c["securityContext"])
            assert c["env"] == [{"name": "HOME", "value": "/tmp"}]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts  # writable scratch on a read-only root filesystem
        for volume in pod["volumes"]:
            # restricted allows only these volume types
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "persistentVolumeClaim"}


def test_the_audit_key_secret_is_mounted_into_router_and_sidecar_only() -> None:
    """The MAC key reaches the two processes that write audit records, read-only and readable
    by the pod's group alone; the runtime never sees it."""
    settings = RenderSettings(audit_key_secret="audit-key-secret")
    objects = render(graph([{"name": "m", "model": {"path": "m.onnx"}}]), [], settings)
    deployments = by_kind(objects, "Deployment")
    for name, holder in (("g-m", "sidecar"), ("g-router", "router")):
        pod = deployments[name]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"] == {"secretName": "audit-key-secret", "defaultMode": 0o440,
                                    "items": [{"key": "key", "path": "key"}]}  # fmt: skip
        for c in pod["containers"]:
            env = {e["name"]: e["value"] for e in c["env"]}
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            if c["name"] != holder:
                assert "MODULEMESH_AUDIT_KEY_FILE" not in env and volume["name"] not in mounts
                continue
            mount = mounts[volume["name"]]
            assert mount["readOnly"] is True
            assert env["MODULEMESH_AUDIT_KEY_FILE"] == mount["mountPath"] + "/key"


# --- model sources -------------------------------------------------------------------------


def test_config_map_model_is_mounted_read_only(module_pod: Pod) -> None:
    pod = module_pod(
        {"name": "clf", "model": {"configMap": {"name": "clf-model", "key": "m.onnx"}}}
    )
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume["configMap"] == {
        "name": "clf-model",
        "items": [{"key": "m.onnx", "path": "model.onnx"}],
    }
    mount = next(m for m in container(pod, "runtime")["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models/clf", "readOnly": True}
    assert runtime_config(pod).model == "/models/clf/model.onnx"
    assert all(m["name"] != "model" for m in container(pod, "sidecar")["volumeMounts"])


def test_pvc_model_is_mounted_read_only(module_pod: Pod) -> None:
    pod = module_pod(
        {"name": "clf", "model": {"pvc": {"claimName": "models", "path": "/v3/clf.onnx"}}}
    )
    volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = next(m for m in container(pod, "runtime")["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True and mount["mountPath"] == "/models/clf"
    assert runtime_config(pod).model == "/models/clf/v3/clf.onnx"


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        # The examples' relative paths land where the runtime images ship the example models.
        ("models/embedder.onnx", None, "/opt/modulemesh/examples/models/embedder.onnx"),
        ("models/clf.onnx", "/srv/models", "/srv/models/models/clf.onnx"),
        ("/data/clf.onnx", None, "/data/clf.onnx"),
    ],
)
def test_a_relative_model_path_is_resolved_under_the_images_model_root(
    module_pod: Pod, path: str, root: str | None, expected: str
) -> None:
    """As `modulemesh run` resolves a relative path against the graph file's directory, the
    operator resolves it against the runtime image's model root; an absolute one is kept."""
    settings = RenderSettings() if root is None else RenderSettings(model_path_root=root)
    pod = module_pod({"model": {"path": path}}, settings=settings)
    assert runtime_config(pod).model == expected


def test_uri_model_is_passed_to_the_runtime_with_its_pin(module_pod: Pod) -> None:
    uri = "https://models.example.com/clf.onnx"
    pod = module_pod({"model": {"uri": uri, "sha256": SHA}})
    config = runtime_config(pod)
    assert (config.model, config.sha256) == (uri, SHA)
    assert all(v["name"] != "model" for v in pod["volumes"])
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert "emptyDir" in cache
