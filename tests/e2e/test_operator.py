"""The operator as a process against the real control plane with simulated GPU nodes.

Covers: every example graph reconciles into Deployments with the right GPU limits, tolerations
and region affinity, its pods land on GPU nodes of the allowed region, and the status goes Ready
with correct conditions and printer columns; an invalid graph gets Validated=False naming the
field plus an Event, and converges once fixed; a graph asking for more GPUs than any node has
gets Scheduled=False naming the module; deleted or hand-edited children come back; deleting the
graph removes everything; a PrivacyGate change re-renders affinity; an operator killed in the
middle of applying 20 graphs converges after restart with no duplicates or orphans; and
``modulemesh status`` shows it all.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import REPO_ROOT, OperatorProcess, install_crds
from modulemesh.api import load_files
from modulemesh.operator.naming import module_name, router_name, short_name

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
REGION = "topology.kubernetes.io/region"


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """CRDs installed and one operator process watching every namespace."""
    install_crds(cluster)
    proc = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield proc
    proc.stop()


def graph_doc(name: str, **spec_overrides: Any) -> dict[str, Any]:
    """A small valid graph: an embedder (CPU) feeding a classifier (1 GPU)."""
    spec: dict[str, Any] = {
        "modules": [
            {"name": "embedder", "model": {"path": "/models/embedder.onnx"}},
            {
                "name": "classifier",
                "model": {"path": "/models/classifier.onnx"},
                "resources": {"gpu": 1},
            },
        ],
        "routing": {
            "entry": "main",
            "nodes": [
                {
                    "name": "main",
                    "type": "sequence",
                    "steps": [
                        {"module": "embedder", "inputs": {"input": "request.input"}},
                        {"module": "classifier", "inputs": {"input": "embedder.embedding"}},
                    ],
                }
            ],
        },
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "ModuleGraph",
        "metadata": {"name": name},
        "spec": spec,
    }


def get_graph(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = cluster.kubectl_json("-n", ns, "get", "modulegraph", name)
    return doc


def condition(graph: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (graph.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_condition(
    cluster: Cluster,
    op: OperatorProcess,
    ns: str,
    name: str,
    type_: str,
    status: str,
    timeout: float = 90,
) -> dict[str, Any]:
    """Wait until the graph's condition has ``status``; return the graph."""

    def probe() -> dict[str, Any] | None:
        graph = get_graph(cluster, ns, name)
        return graph if condition(graph, type_).get("status") == status else None

    try:
        return wait_until(probe, timeout=timeout, interval=1.0, message=f"{name} {type_}={status}")
    except TimeoutError as error:
        graph = get_graph(cluster, ns, name)
        raise AssertionError(
            f"{error}\nstatus: {json.dumps(graph.get('status'), indent=1)}\noperator log:\n{op.log()}"
        ) from error


def owned(cluster: Cluster, ns: str, kind: str, graph: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", ns, "get", kind, "-l", f"modulemesh.io/graph={graph}"
    )["items"]
    return items


def node_regions(cluster: Cluster) -> dict[str, dict[str, str]]:
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    return {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in nodes}


def allowed_regions(module: Any, gates: dict[str, Any], graph_gates: list[str]) -> set[str] | None:
    """Regions a module may run in: its own region intersected with its gated tags' regions."""
    allowed: set[str] | None = {module.region} if module.region else None
    for gate_name in graph_gates:
        gate = gates.get(gate_name)
        if gate is None:
            continue
        for tag in gate.spec.tags:
            if tag.name in module.clearance and tag.allowed_regions:
                regions = set(tag.allowed_regions)
                allowed = regions if allowed is None else allowed & regions
    return allowed


# --- examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_reconciles_onto_gpu_nodes_of_the_right_region(
    cluster: Cluster, operator: OperatorProcess, namespace: str, example: Path
) -> None:
    docs = load_files([example])
    assert docs.graphs, f"{example} has no ModuleGraph"
    cluster.kubectl("-n", namespace, "apply", "-f", str(example))
    gates = {g.metadata.name: g for g in docs.gates}
    regions = node_regions(cluster)
    for graph in docs.graphs:
        name = graph.metadata.name
        ready = wait_condition(cluster, operator, namespace, name, "Ready", "True", timeout=120)
        status = ready["status"]
        assert status["observedGeneration"] == ready["metadata"]["generation"]
        assert not ready["metadata"].get("finalizers"), "graphs must stay deletable without us"
        assert status["modulesReady"] == f"{len(graph.spec.modules)}/{len(graph.spec.modules)}"
        for type_ in ("Validated", "Scheduled", "ModulesReady", "RouterReady"):
            assert condition(ready, type_)["status"] == "True", type_
        assert status["endpoint"].startswith(f"http://{name}-router.{namespace}.svc")

        deployments = {
            d["metadata"]["labels"].get("modulemesh.io/module"): d
            for d in owned(cluster, namespace, "deployments", name)
        }
        pods = owned(cluster, namespace, "pods", name)
        for module in graph.spec.modules:
            deployment = deployments[module.name]
            pod_spec = deployment["spec"]["template"]["spec"]
            runtime = next(c for c in pod_spec["containers"] if c["name"] == "runtime")
            limits = runtime.get("resources", {}).get("limits", {})
            if module.resources.gpu:
                assert limits.get("nvidia.com/gpu") == str(module.resources.gpu), module.name
                assert any(
                    t.get("key") == "nvidia.com/gpu" for t in pod_spec.get("tolerations", [])
                )
            else:
                assert "nvidia.com/gpu" not in limits
            expected = allowed_regions(module, gates, graph.spec.gates)
            module_pods = [
                p
                for p in pods
                if p["metadata"]["labels"].get("modulemesh.io/module") == module.name
            ]
            assert len(module_pods) == module.replicas
            for pod in module_pods:
                labels = regions[pod["spec"]["nodeName"]]
                if module.resources.gpu:
                    assert labels.get("nvidia.com/gpu.present") == "true", pod["spec"]["nodeName"]
                if expected is not None:
                    assert labels.get(REGION) in expected, (
                        module.name,
                        labels.get(REGION),
                        expected,
                    )

        printed = cluster.kubectl("-n", namespace, "get", "mg", name).stdout
        header, row = printed.strip().splitlines()[:2]
        assert header.split()[:5] == ["NAME", "READY", "REASON", "MODULES", "GPUS"]
        gpus = sum(m.resources.gpu * m.replicas for m in graph.spec.modules)
        assert row.split()[:5] == [
            name,
            "True",
            "GraphReady",
            f"{len(graph.spec.modules)}/{len(graph.spec.modules)}",
            str(gpus),
        ]


# --- invalid, unschedulable ----------------------------------------------------------------


def test_invalid_graph_reports_the_field_and_converges_once_fixed(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    bad = graph_doc("cyclic")
    bad["spec"]["routing"]["nodes"] = [
        {"name": "main", "type": "sequence", "steps": [{"node": "loop"}]},
        {"name": "loop", "type": "sequence", "steps": [{"node": "main"}]},
    ]
    cluster.apply(bad, namespace)
    graph = wait_condition(cluster, operator, namespace, "cyclic", "Validated", "False")
    message = condition(graph, "Validated")["message"]
    assert condition(graph, "Validated")["reason"] == "InvalidSpec"
    assert "spec.routing.nodes" in message and "cycle" in message.lower(), message
    assert condition(graph, "Ready")["status"] == "False"
    assert owned(cluster, namespace, "deployments", "cyclic") == []

    def invalid_event() -> bool:
        events = cluster.kubectl_json(
            "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=cyclic"
        )["items"]
        return any(e["reason"] == "Invalid" and e["type"] == "Warning" for e in events)

    wait_until(invalid_event, timeout=30, message="an Invalid warning event")

    cluster.apply(graph_doc("cyclic"), namespace)
    fixed = wait_condition(cluster, operator, namespace, "cyclic", "Ready", "True", timeout=120)
    assert condition(fixed, "Validated")["status"] == "True"
    assert len(owned(cluster, namespace, "deployments", "cyclic")) == 3


def test_more_gpus_than_any_node_has_is_unschedulable_naming_the_module(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("greedy")
    doc["spec"]["modules"][1]["resources"] = {"gpu": 8}
    cluster.apply(doc, namespace)
    graph = wait_condition(cluster, operator, namespace, "greedy", "Scheduled", "False")
    scheduled = condition(graph, "Scheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert "module classifier" in scheduled["message"]
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    # The simulated GPU nodes have 4 GPUs each: asking for less is what fits, not more nodes.
    assert "the largest node has 4: lower resources.gpu to at most 4" in scheduled["message"]
    assert ".." not in scheduled["message"] and "GPU nodes" not in scheduled["message"]
    module = next(m for m in graph["status"]["modules"] if m["name"] == "classifier")
    assert "Insufficient nvidia.com/gpu" in module["unschedulable"]
    assert condition(graph, "Ready")["status"] == "False"


# --- drift, deletion ---------------------------------------------------------------------


def test_deleted_and_hand_edited_children_are_restored(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(graph_doc("drift"), namespace)
    wait_condition(cluster, operator, namespace, "drift", "Ready", "True", timeout=120)
    old_uid = cluster.kubectl_json("-n", namespace, "get", "deployment", "drift-embedder")[
        "metadata"
    ]["uid"]

    cluster.kubectl("-n", namespace, "delete", "deployment", "drift-embedder", "--wait=true")

    def recreated() -> bool:
        proc = cluster.kubectl(
            "-n", namespace, "get", "deployment", "drift-embedder", "-o", "json", check=False
        )
        return proc.returncode == 0 and json.loads(proc.stdout)["metadata"]["uid"] != old_uid

    wait_until(recreated, timeout=60, message="the deleted Deployment to come back")

    cluster.kubectl("-n", namespace, "scale", "deployment", "drift-classifier", "--replicas=3")

    def restored() -> bool:
        d = cluster.kubectl_json("-n", namespace, "get", "deployment", "drift-classifier")
        return bool(d["spec"]["replicas"] == 1)

    wait_until(restored, timeout=60, message="hand-edited replicas to be restored")
    wait_condition(cluster, operator, namespace, "drift", "Ready", "True", timeout=120)


def test_deleting_the_graph_removes_everything(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(graph_doc("doomed"), namespace)
    wait_condition(cluster, operator, namespace, "doomed", "Ready", "True", timeout=120)
    cluster.kubectl("-n", namespace, "delete", "modulegraph", "doomed", "--wait=true")

    def gone() -> bool:
        return all(
            not owned(cluster, namespace, kind, "doomed")
            for kind in ("deployments", "services", "configmaps", "networkpolicies", "pods")
        )

    wait_until(gone, timeout=90, message="every child of the deleted graph to be collected")


def test_a_graph_name_longer_than_a_label_value_reconciles_prunes_and_heals(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    # Label values stop at 63 characters: the graph label carries the cut-and-hashed name,
    # and everything the operator finds by label (pods, children to prune) must use it.
    name = "a-graph-whose-name-is-far-longer-than-the-sixty-three-characters-of-a-label"
    label = short_name(name)
    assert len(name) > 63 and len(label) <= 63
    cluster.apply(graph_doc(name), namespace)
    graph = wait_condition(cluster, operator, namespace, name, "Ready", "True", timeout=120)
    assert graph["status"]["modulesReady"] == "2/2"
    deployments = {d["metadata"]["name"] for d in owned(cluster, namespace, "deployments", label)}
    assert deployments == {
        module_name(name, "embedder"), module_name(name, "classifier"), router_name(name)
    }  # fmt: skip

    # A deleted child comes back (its event is traced to the graph by its owner reference).
    embedder = module_name(name, "embedder")
    cluster.kubectl("-n", namespace, "delete", "deployment", embedder, "--wait=true")
    wait_until(
        lambda: cluster.kubectl("-n", namespace, "get", "deployment", embedder, check=False)
        .returncode == 0,
        timeout=60, message="the deleted Deployment of the long-named graph to come back",
    )  # fmt: skip

    # A module dropped from the spec is pruned.
    single = graph_doc(name)
    single["spec"]["modules"] = single["spec"]["modules"][:1]
    single["spec"]["routing"]["nodes"][0]["steps"] = [
        {"module": "embedder", "inputs": {"input": "request.input"}}
    ]
    cluster.apply(single, namespace)

    def pruned() -> bool:
        names = {d["metadata"]["name"] for d in owned(cluster, namespace, "deployments", label)}
        return names == {module_name(name, "embedder"), router_name(name)}

    wait_until(pruned, timeout=90, message="the dropped module's Deployment to be pruned")

    def current() -> dict[str, Any] | None:  # the status the prune's reconcile writes after it
        graph = get_graph(cluster, namespace, name)
        status = graph.get("status") or {}
        fresh = status.get("observedGeneration") == graph["metadata"]["generation"]
        return graph if fresh and condition(graph, "Ready").get("status") == "True" else None

    graph = wait_until(
        current, timeout=120, interval=1.0, message=f"{name} Ready at its generation"
    )
    assert graph["status"]["modulesReady"] == "1/1"


# --- gates ---------------------------------------------------------------------------------


def gate_doc(regions: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "modulemesh.io/v1alpha1",
        "kind": "PrivacyGate",
        "metadata": {"name": "phi"},
        "spec": {
            "mode": "enforce",
            "tags": [
                {
                    "name": "phi",
                    "classifiers": [
                        {"type": "header", "header": "x-data-class", "values": ["phi"]}
                    ],
                    "allowedRegions": regions,
                }
            ],
        },
    }


def affinity_regions(deployment: dict[str, Any]) -> set[str]:
    terms = (
        deployment["spec"]["template"]["spec"]
        .get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    return {
        value
        for term in terms
        for expr in term.get("matchExpressions", [])
        if expr["key"] == REGION
        for value in expr.get("values", [])
    }


def test_gate_change_re_renders_affinity(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cluster.apply(gate_doc(["eu-west"]), namespace)
    doc = graph_doc("gated", gates=["phi"])
    for module in doc["spec"]["modules"]:
        module["clearance"] = ["phi"]
    cluster.apply(doc, namespace)
    wait_condition(cluster, operator, namespace, "gated", "Ready", "True", timeout=120)
    assert affinity_regions(
        cluster.kubectl_json("-n", namespace, "get", "deployment", "gated-classifier")
    ) == {"eu-west"}

    cluster.apply(gate_doc(["us-east"]), namespace)

    def moved() -> bool:
        d = cluster.kubectl_json("-n", namespace, "get", "deployment", "gated-classifier")
        return affinity_regions(d) == {"us-east"}

    wait_until(moved, timeout=60, message="affinity to follow the gate to us-east")

    def gate_lists_graph() -> bool:
        gate = cluster.kubectl_json("-n", namespace, "get", "privacygate", "phi")
        return bool(gate.get("status", {}).get("graphs") == ["gated"])

    wait_until(gate_lists_graph, timeout=30, message="the gate's status to list the graph")
    listing = cluster.kubectl("-n", namespace, "get", "pgate", "phi").stdout.split("\n")
    assert listing[0].split() == [
        "NAME", "MODE", "TAGS", "GRAPHS", "HITS", "REDACTED", "DENIED", "BUDGET", "AGE",
    ], listing  # fmt: skip
    assert listing[1].split()[:4] == ["phi", "enforce", "phi", "1"], listing

    # The gate's graph list follows graphs that start naming it, are deleted, or stop naming it.
    def gate_graphs(expected: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            status = cluster.kubectl_json("-n", namespace, "get", "pgate", "phi").get("status")
            return bool(status) and (status["graphs"], status["graphCount"]) == (
                expected,
                len(expected),
            )

        return check

    second = graph_doc("also-gated", gates=["phi"])
    for module in second["spec"]["modules"]:
        module["clearance"] = ["phi"]
    cluster.apply(second, namespace)
    wait_until(gate_graphs(["also-gated", "gated"]), timeout=30, message="two graphs listed")
    cluster.kubectl("-n", namespace, "delete", "mg", "gated")
    wait_until(gate_graphs(["also-gated"]), timeout=30, message="the deleted graph unlisted")
    cluster.apply(graph_doc("also-gated"), namespace)  # no longer names the gate
    wait_until(gate_graphs([]), timeout=30, message="the graph that dropped the gate unlisted")


# --- restart in the middle of applying many graphs ----------------------------------------


def test_operator_killed_mid_apply_converges_without_duplicates_or_orphans(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    operator.stop()
    try:
        fresh = OperatorProcess(cluster, tmp_path / "first.log").start()
        docs = [graph_doc(f"g{i:02d}") for i in range(20)]
        for doc in docs:  # CPU only and small: 60 pods must fit the two 16-CPU simulated nodes
            for module in doc["spec"]["modules"]:
                module["resources"] = {"cpu": "100m", "memory": "128Mi"}
            doc["spec"]["router"] = {"cpu": "100m", "memory": "128Mi"}
        cluster.apply(docs, namespace)
        time.sleep(3.0)
        fresh.stop(kill=True)
        restarted = OperatorProcess(cluster, tmp_path / "second.log").start()
        try:
            for i in range(20):
                wait_condition(
                    cluster, restarted, namespace, f"g{i:02d}", "Ready", "True", timeout=240
                )
            deployments = cluster.kubectl_json("-n", namespace, "get", "deployments")["items"]
            names = [d["metadata"]["name"] for d in deployments]
            assert len(names) == len(set(names)) == 60
            for d in deployments:
                refs = d["metadata"].get("ownerReferences", [])
                assert len(refs) == 1 and refs[0]["kind"] == "ModuleGraph"
            graphs = {f"g{i:02d}" for i in range(20)}
            for kind in ("services", "configmaps", "networkpolicies"):
                items = cluster.kubectl_json(
                    "-n", namespace, "get", kind, "-l", "modulemesh.io/graph"
                )["items"]
                assert {i["metadata"]["labels"]["modulemesh.io/graph"] for i in items} <= graphs
            replicasets = cluster.kubectl_json("-n", namespace, "get", "replicasets")["items"]
            assert len(replicasets) == 60, "a re-applied template must not roll a new ReplicaSet"
        finally:
            restarted.stop()
    finally:
        operator.start()


# --- modulemesh status -------------------------------------------------------------------


def test_modulemesh_status_shows_graphs_and_modules(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("shown")
    bad = copy.deepcopy(doc)
    bad["metadata"]["name"] = "hungry"
    bad["spec"]["modules"][1]["resources"] = {"gpu": 8}
    cluster.apply([doc, bad], namespace)
    wait_condition(cluster, operator, namespace, "shown", "Ready", "True", timeout=120)
    wait_condition(cluster, operator, namespace, "hungry", "Scheduled", "False")

    def status(*args: str) -> str:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "modulemesh",
                "status",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "-n",
                namespace,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout

    listing = status()
    assert "shown" in listing and "hungry" in listing and "Unschedulable" in listing
    detail = status("hungry")
    assert "Scheduled" in detail and "Insufficient nvidia.com/gpu" in detail
    assert "classifier" in detail and "0/1" in detail
    as_json = yaml.safe_load(status("shown", "-o", "json"))
    assert as_json["status"]["modulesReady"] == "2/2"
