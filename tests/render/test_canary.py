"""A module's canary in a cluster (issue 16): render adds a canary Service and Deployment beside
the module's (the module's pods with the canary's model and version, labelled so the module's
own Service never selects them, still inside the graph's NetworkPolicy) and names the canary's
Service in the resolved graph, where the router walks the rollout; without a canary, none of
it; the router keeps its rollout state on the pod's scratch emptyDir (with a canary only);
a module named like another's canary objects is refused."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pydantic
import pytest
from render.render_builders import by_kind, graph

from modulemesh.operator.render import RESOLVED_KEY, ROLLOUT_STATE, render
from modulemesh.operator.settings import RenderSettings
from modulemesh.router import command as router_command

CANARY = {"model": {"path": "/models/m-v2.onnx"}, "version": "2"}


def _objects(**module: Any) -> list[dict[str, Any]]:
    g = graph([{"name": "m", "model": {"path": "/models/m.onnx"}, "replicas": 2, **module}])
    return render(g, [], RenderSettings())


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _arg(container: dict[str, Any], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{flag}="))


def test_a_canary_gets_its_own_deployment_and_service() -> None:
    objects = _objects(canary=CANARY)
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    assert set(deployments) == {"g-m", "g-m-canary", "g-router"}
    assert set(services) == {"g-m", "g-m-canary", "g-router"}
    stable, canary = deployments["g-m"], deployments["g-m-canary"]
    runtime = {c["name"]: c for c in canary["spec"]["template"]["spec"]["containers"]}["runtime"]
    assert _arg(runtime, "model") == "/models/m-v2.onnx"
    assert _arg(runtime, "model-version") == "2"
    assert _arg(runtime, "name") == "m"  # served under the module's name
    sidecar = {c["name"]: c for c in canary["spec"]["template"]["spec"]["containers"]}["sidecar"]
    assert _arg(sidecar, "module") == "m"
    # Same pods otherwise: replicas, resources, security.
    assert canary["spec"]["replicas"] == stable["spec"]["replicas"] == 2
    assert (
        canary["spec"]["template"]["spec"]["securityContext"]
        == (stable["spec"]["template"]["spec"]["securityContext"])
    )


def test_the_modules_own_selectors_never_take_canary_pods() -> None:
    objects = _objects(canary=CANARY)
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    stable_pod = deployments["g-m"]["spec"]["template"]["metadata"]["labels"]
    canary_pod = deployments["g-m-canary"]["spec"]["template"]["metadata"]["labels"]
    assert canary_pod["modulemesh.io/module"] == "m.canary"
    assert not _selects(services["g-m"]["spec"]["selector"], canary_pod)
    assert not _selects(deployments["g-m"]["spec"]["selector"]["matchLabels"], canary_pod)
    assert _selects(services["g-m-canary"]["spec"]["selector"], canary_pod)
    assert not _selects(services["g-m-canary"]["spec"]["selector"], stable_pod)
    (policy,) = by_kind(objects, "NetworkPolicy").values()
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], canary_pod)
    # Only the module's own Deployment gets a disruption budget.
    assert set(by_kind(objects, "PodDisruptionBudget")) == {"g-m"}


def test_the_router_is_told_the_canarys_endpoint() -> None:
    (config,) = by_kind(_objects(canary=CANARY), "ConfigMap").values()
    resolved = json.loads(config["data"][RESOLVED_KEY])
    assert resolved["canaryEndpoints"] == {"m": "http://g-m-canary.ns.svc.cluster.local:8080"}
    assert resolved["spec"]["modules"][0]["canary"]["version"] == "2"


def test_the_router_keeps_its_rollout_state_on_the_pods_scratch_volume() -> None:
    router = by_kind(_objects(canary=CANARY), "Deployment")["g-router"]["spec"]["template"]
    (container,) = router["spec"]["containers"]
    parser = argparse.ArgumentParser()
    router_command.configure(parser)  # the router's own parser reads the flag
    args = parser.parse_args(container["args"][1:])
    assert args.rollout_state == ROLLOUT_STATE == "/tmp/rollout-state.json"
    scratch = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
    volumes = {v["name"]: v for v in router["spec"]["volumes"]}
    assert [("emptyDir" in volumes[n]) for n in scratch] == [True]
    # Without a canary the router's template is what it was (no rollout of every router).
    plain = by_kind(_objects(), "Deployment")["g-router"]["spec"]["template"]
    assert not any("rollout-state" in a for a in plain["spec"]["containers"][0]["args"])


def test_without_a_canary_nothing_of_it_is_rendered() -> None:
    objects = _objects(rollout={"steps": [{"percent": 10, "holdSeconds": 5}]})
    names = {o["metadata"]["name"] for o in objects}
    assert not any("canary" in n for n in names)
    # The resolved graph is the document it was before rollouts existed: its config hash is
    # unchanged, so upgrading the operator rolls no router.
    (config,) = by_kind(objects, "ConfigMap").values()
    assert "canaryEndpoints" not in json.loads(config["data"][RESOLVED_KEY])


def test_a_module_named_like_a_canary_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="module 'm' has a canary, whose Deployment"):
        graph([
            {"name": "m", "model": {"path": "m.onnx"}, "canary": CANARY},
            {"name": "m-canary", "model": {"path": "x.onnx"}},
        ])  # fmt: skip
