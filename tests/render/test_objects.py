"""The set of objects a graph becomes: names, labels, order, the resolved-graph ConfigMap,
Services, the router, the NetworkPolicy and the PodDisruptionBudgets of replicated
Deployments; and that the output is owner-agnostic and stable."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json

from render.render_builders import by_kind, container, gate, graph

from modulemesh.api.resolved import ResolvedGraph
from modulemesh.operator import naming
from modulemesh.operator.render import CONFIG_HASH_ANNOTATION, graph_endpoint, render
from modulemesh.operator.settings import RenderSettings
from modulemesh.router import command as router_command

TWO = [{"name": "emb", "model": {"path": "e.onnx"}}, {"name": "clf", "model": {"path": "c.onnx"}}]


def test_objects_in_apply_order(settings: RenderSettings) -> None:
    objects = render(graph(TWO), [], settings)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "g-graph"),
        ("Service", "g-emb"),
        ("Service", "g-clf"),
        ("Service", "g-router"),
        ("NetworkPolicy", "g-modules"),
        ("Deployment", "g-emb"),
        ("Deployment", "g-clf"),
        ("Deployment", "g-router"),
    ]
    assert all(o["metadata"]["namespace"] == "ns" for o in objects)


def test_every_object_is_labelled_and_owner_agnostic(settings: RenderSettings) -> None:
    for obj in render(graph(TWO), [], settings):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "modulemesh"
        assert labels["app.kubernetes.io/instance"] == "g"
        assert labels["app.kubernetes.io/managed-by"] == "modulemesh-operator"
        assert labels["modulemesh.io/graph"] == "g"
        assert labels["app.kubernetes.io/component"] in {"module", "router", "graph"}
        assert "ownerReferences" not in obj["metadata"]
        if obj["kind"] == "Deployment":
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert pod_labels == labels
            assert obj["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    deployments = by_kind(render(graph(TWO), [], settings), "Deployment")
    assert deployments["g-emb"]["metadata"]["labels"]["modulemesh.io/module"] == "emb"
    assert deployments["g-emb"]["metadata"]["labels"]["app.kubernetes.io/component"] == "module"
    assert "modulemesh.io/module" not in deployments["g-router"]["metadata"]["labels"]


def test_config_map_round_trips_through_resolved_graph(settings: RenderSettings) -> None:
    g = graph(TWO, gates=["phi"])
    gates = [
        gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}]),
        gate("unused", [{"name": "x"}]),
    ]
    cm = by_kind(render(g, gates, settings), "ConfigMap")["g-graph"]
    resolved = ResolvedGraph.model_validate_json(cm["data"]["resolved.json"])
    assert resolved.name == "g" and resolved.namespace == "ns"
    assert resolved.spec == g.spec
    assert set(resolved.gates) == {"phi"}
    assert resolved.endpoints == {
        "emb": "http://g-emb.ns.svc.cluster.local:8080",
        "clf": "http://g-clf.ns.svc.cluster.local:8080",
    }
    assert resolved.dumps() == cm["data"]["resolved.json"]


def test_default_namespace_and_cluster_domain_in_endpoints() -> None:
    settings = RenderSettings(cluster_domain="corp.internal", default_namespace="models")
    g = graph(TWO, namespace=None)
    objects = render(g, [], settings)
    assert {o["metadata"]["namespace"] for o in objects} == {"models"}
    resolved = json.loads(by_kind(objects, "ConfigMap")["g-graph"]["data"]["resolved.json"])
    assert resolved["namespace"] == "models"
    assert resolved["endpoints"]["emb"] == "http://g-emb.models.svc.corp.internal:8080"
    assert graph_endpoint(g, settings) == "http://g-router.models.svc.corp.internal:8080"


def test_services_target_the_sidecar_and_router_ports(settings: RenderSettings) -> None:
    services = by_kind(render(graph(TWO), [], settings), "Service")
    # HTTP on 8080 and OIP gRPC beside it: the router's on the convention's 8081, a module's
    # on its sidecar's 8082 (8081 is the runtime's loopback HTTP port in the pod)
    for name, component, grpc in (("g-emb", "module", 8082), ("g-router", "router", 8081)):
        spec = services[name]["spec"]
        assert spec["type"] == "ClusterIP"
        assert spec["ports"] == [
            {
                "name": "http",
                "port": 8080,
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            },
            {
                "name": "grpc",
                "port": grpc,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            },
        ]
        assert spec["selector"]["app.kubernetes.io/component"] == component
    assert services["g-emb"]["spec"]["selector"]["modulemesh.io/module"] == "emb"


def test_router_runs_the_mounted_resolved_graph(settings: RenderSettings) -> None:
    g = graph(TWO, router={"replicas": 2, "cpu": "250m", "memory": "128Mi"})
    deployment = by_kind(render(g, [], settings), "Deployment")["g-router"]
    pod = deployment["spec"]["template"]["spec"]
    router = container(pod, "router")
    assert deployment["spec"]["replicas"] == 2
    assert router["image"] == settings.image_sidecar
    assert router["command"] == ["modulemesh"] and router["args"][0] == "router"
    parser = argparse.ArgumentParser()
    router_command.configure(parser)  # the router's own parser: every flag must exist
    args = parser.parse_args(router["args"][1:])
    assert (args.config, args.host, args.port) == ("/etc/modulemesh/resolved.json", "0.0.0.0", 8080)
    assert args.grpc_port == 8081
    assert router["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert router["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert router["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert router["resources"]["limits"] == {"cpu": "250m", "memory": "128Mi"}
    config = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config["configMap"]["name"] == "g-graph"
    assert {"name": "config", "mountPath": "/etc/modulemesh", "readOnly": True} in router[
        "volumeMounts"
    ]
    custom = RenderSettings(image_router="registry.local/router:dev")
    assert (
        container(
            by_kind(render(g, [], custom), "Deployment")["g-router"]["spec"]["template"]["spec"],
            "router",
        )["image"]
        == "registry.local/router:dev"
    )


def test_router_pod_annotation_is_the_config_hash(settings: RenderSettings) -> None:
    def annotation_and_content(g: object) -> tuple[str, str]:
        objects = render(g, [], settings)  # type: ignore[arg-type]
        content = by_kind(objects, "ConfigMap")["g-graph"]["data"]["resolved.json"]
        router = by_kind(objects, "Deployment")["g-router"]
        return router["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ], content

    before, content = annotation_and_content(graph(TWO))
    assert before == hashlib.sha256(content.encode()).hexdigest()[:16]
    changed = copy.deepcopy(TWO)
    changed[1]["version"] = "2"
    after, _ = annotation_and_content(graph(changed))
    assert after != before


def test_network_policy_admits_only_this_graphs_router(settings: RenderSettings) -> None:
    policy = by_kind(render(graph(TWO), [], settings), "NetworkPolicy")["g-modules"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        "modulemesh.io/graph": "g",
        "app.kubernetes.io/component": "module",
    }
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"modulemesh.io/graph": "g", "app.kubernetes.io/component": "router"}
            }
        }
    ]
    # the router may call modules over HTTP and over their sidecars' gRPC port
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8082}]


def test_network_policy_also_admits_the_configured_scrapers(settings: RenderSettings) -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    scraping = dataclasses.replace(settings, metrics_from=(monitoring,))
    policy = by_kind(render(graph(TWO), [], scraping), "NetworkPolicy")["g-modules"]["spec"]
    router_rule, scrape_rule = policy["ingress"]
    assert router_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "router"
    )
    assert scrape_rule == {"from": [monitoring], "ports": [{"protocol": "TCP", "port": 8080}]}
    assert scrape_rule["from"][0] is not monitoring  # the settings are never shared with output


def test_render_is_deterministic_and_does_not_share_state(settings: RenderSettings) -> None:
    g = graph(TWO, gates=["phi"])
    gates = [gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}])]
    first = render(g, gates, settings)
    first[0]["metadata"]["labels"]["mutated"] = "yes"  # the operator adds fields to its copy
    second = render(g, gates, settings)
    assert "mutated" not in second[0]["metadata"]["labels"]
    assert "mutated" not in second[1]["metadata"]["labels"]
    assert json.dumps(render(g, gates, settings)) == json.dumps(second)


def test_long_names_are_cut_to_63_with_a_hash_suffix(settings: RenderSettings) -> None:
    long_graph = "g" * 50
    modules = [
        {"name": "a" * 40 + "x", "model": {"path": "a.onnx"}},
        {"name": "a" * 40 + "y", "model": {"path": "b.onnx"}},
    ]
    objects = render(graph(modules, name=long_graph), [], settings)
    names = [o["metadata"]["name"] for o in objects]
    assert all(len(n) <= 63 for n in names)
    # Kind + name stays unique: the two long module names do not collide once cut.
    assert len({(o["kind"], o["metadata"]["name"]) for o in objects}) == len(objects) == 8
    module_names = {n for n in names if not n.endswith(("-graph", "-modules", "-router"))}
    assert len(module_names) == 2 and all(len(n) == 63 for n in module_names)
    for obj in objects:
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
    assert naming.short_name("short", "name") == "short-name"
    cut = naming.short_name("x" * 70)
    assert (
        len(cut) == 63 and cut == naming.short_name("x" * 70) and cut != naming.short_name("x" * 71)
    )


def test_replicated_deployments_get_a_disruption_budget_evicting_one_pod_at_a_time(
    settings: RenderSettings,
) -> None:
    modules = [{**TWO[0], "replicas": 3}, TWO[1]]  # emb replicated, clf single
    objects = render(graph(modules, router={"replicas": 2}), [], settings)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    budgets = by_kind(objects, "PodDisruptionBudget")
    assert set(budgets) == {"g-emb", "g-router"}  # not the single-replica clf
    # Before the Deployments, so the pods are protected from their start.
    first_deployment = kinds.index(("Deployment", "g-emb"))
    assert all(kinds.index(("PodDisruptionBudget", n)) < first_deployment for n in budgets)
    deployments = by_kind(objects, "Deployment")
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        assert budget["metadata"]["labels"] == deployments[name]["metadata"]["labels"]
        spec = budget["spec"]
        assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        # It selects exactly this Deployment's pods, not the other steps' or the router's.
        assert spec["selector"] == deployments[name]["spec"]["selector"]
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        for other, deployment in deployments.items():
            if other != name:
                others = deployment["spec"]["template"]["metadata"]["labels"]
                assert not spec["selector"]["matchLabels"].items() <= others.items()


def test_single_replica_deployments_get_no_disruption_budget(settings: RenderSettings) -> None:
    # A budget for one pod could only block a node drain: nothing keeps serving either way.
    for modules in (TWO, [{**TWO[0], "replicas": 0}, TWO[1]]):
        objects = render(graph(modules), [], settings)
        assert by_kind(objects, "PodDisruptionBudget") == {}
