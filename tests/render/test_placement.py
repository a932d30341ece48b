"""Where module pods may run: GPU limits, tolerations, node selection and region affinity.

Region affinity ties data residency to placement: the module's region and the allowed regions
of every tag it is cleared for (enforce gates) are intersected and ANDed into the user's own
node-selector terms; dryrun gates only add a preference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from render.render_builders import container, gate

from modulemesh.operator.placement import NO_ALLOWED_REGION
from modulemesh.operator.settings import RenderSettings

REGION = "topology.kubernetes.io/region"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
Pod = Callable[..., dict[str, Any]]


def required_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    node = pod["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = node["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


def regions_of(term: dict[str, Any]) -> list[str]:
    return next(e["values"] for e in term["matchExpressions"] if e["key"] == REGION)


# --- GPUs ----------------------------------------------------------------------------------


def test_gpu_module_gets_gpu_limit_toleration_and_gpu_image(module_pod: Pod) -> None:
    pod = module_pod({"resources": {"gpu": 2, "cpu": "2", "memory": "4Gi"}})
    runtime = container(pod, "runtime")
    assert runtime["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 2}
    assert runtime["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert runtime["image"] == RenderSettings().image_runtime_gpu
    assert "--provider=auto" in runtime["args"]
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert "nvidia.com/gpu" not in container(pod, "sidecar")["resources"]["limits"]


def test_cpu_module_has_no_gpu_limit_toleration_or_selector(module_pod: Pod) -> None:
    pod = module_pod({})
    runtime = container(pod, "runtime")
    assert set(runtime["resources"]["limits"]) == {"cpu", "memory"}
    assert runtime["image"] == RenderSettings().image_runtime
    assert "--provider=cpu" in runtime["args"]
    assert "tolerations" not in pod and "nodeSelector" not in pod and "affinity" not in pod


def test_gpu_resource_name_from_settings_and_overridden_per_module(module_pod: Pod) -> None:
    amd = RenderSettings(gpu_resource="amd.com/gpu")
    pod = module_pod({"resources": {"gpu": 1}}, settings=amd)
    assert container(pod, "runtime")["resources"]["limits"]["amd.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(pod, "runtime")["resources"]["limits"]
    own = module_pod(
        {"resources": {"gpu": 1, "gpuResource": "example.com/mig-1g.10gb"}}, settings=amd
    )
    limits = container(own, "runtime")["resources"]["limits"]
    assert limits["example.com/mig-1g.10gb"] == 1 and "amd.com/gpu" not in limits


def test_gpu_type_selects_product_label_and_wins_over_user_selector(module_pod: Pod) -> None:
    pod = module_pod(
        {
            "resources": {"gpu": 1, "gpuType": "NVIDIA-A100-SXM4-80GB"},
            "nodeSelector": {"nvidia.com/gpu.product": "other", "pool": "inference"},
        }
    )
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "pool": "inference",
    }


def test_user_tolerations_kept_and_gpu_toleration_not_duplicated(module_pod: Pod) -> None:
    spot = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    pod = module_pod({"resources": {"gpu": 1}, "tolerations": [spot, GPU_TOLERATION]})
    assert pod["tolerations"] == [spot, GPU_TOLERATION]
    cpu = module_pod({"tolerations": [spot]})
    assert cpu["tolerations"] == [spot]


# --- regions -------------------------------------------------------------------------------


def test_module_region_becomes_required_affinity(module_pod: Pod) -> None:
    pod = module_pod({"region": "eu-west"})
    (term,) = required_terms(pod)
    assert term["matchExpressions"] == [{"key": REGION, "operator": "In", "values": ["eu-west"]}]


def test_gate_allowed_regions_of_cleared_tags_are_intersected(module_pod: Pod) -> None:
    gates = [
        gate("phi", [{"name": "phi", "allowedRegions": ["eu-west", "eu-central", "us-east"]}]),
        gate("pci", [{"name": "pci", "allowedRegions": ["eu-central", "eu-west"]}]),
        gate("other", [{"name": "gdpr", "allowedRegions": ["eu-north"]}]),
    ]
    pod = module_pod({"clearance": ["phi", "pci"]}, gates)
    (term,) = required_terms(pod)
    assert regions_of(term) == ["eu-central", "eu-west"]
    with_region = module_pod({"clearance": ["phi", "pci"], "region": "eu-west"}, gates)
    assert regions_of(required_terms(with_region)[0]) == ["eu-west"]


def test_uncleared_tags_and_unregioned_tags_do_not_constrain(module_pod: Pod) -> None:
    gates = [gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}, {"name": "pii"}])]
    assert "affinity" not in module_pod({}, gates)
    assert "affinity" not in module_pod({"clearance": ["pii"]}, gates)


def test_empty_intersection_fails_closed_without_crashing(module_pod: Pod) -> None:
    gates = [gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}])]
    pod = module_pod({"clearance": ["phi"], "region": "us-east"}, gates)
    assert regions_of(required_terms(pod)[0]) == [NO_ALLOWED_REGION]


def test_dryrun_gate_regions_are_only_preferred(module_pod: Pod) -> None:
    gates = [gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}], mode="dryrun")]
    pod = module_pod({"clearance": ["phi"]}, gates)
    node = pod["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in node
    (preferred,) = node["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"][0]["values"] == ["eu-west"]
    # A dryrun gate never makes a module unschedulable, even against its own region.
    elsewhere = module_pod({"clearance": ["phi"], "region": "us-east"}, gates)
    assert regions_of(required_terms(elsewhere)[0]) == ["us-east"]
    assert (
        "preferredDuringSchedulingIgnoredDuringExecution"
        not in elsewhere["affinity"]["nodeAffinity"]
    )


def test_gates_the_graph_does_not_name_are_ignored(settings: RenderSettings) -> None:
    from render.render_builders import graph, pod_of

    from modulemesh.operator.render import render

    g = graph([{"name": "m", "model": {"path": "m.onnx"}, "clearance": ["phi"]}])
    gates = [gate("phi", [{"name": "phi", "allowedRegions": ["eu-west"]}])]
    assert "affinity" not in pod_of(render(g, gates, settings), "g-m")


def test_user_affinity_terms_each_get_the_region_requirement(module_pod: Pod) -> None:
    anti = {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
        ]
    }
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]},
                }
            ],
        },
        "podAntiAffinity": anti,
    }
    pod = module_pod({"region": "eu-west", "affinity": user})
    first, second = required_terms(pod)
    assert first["matchExpressions"] == [
        {"key": "pool", "operator": "In", "values": ["a"]},
        {"key": REGION, "operator": "In", "values": ["eu-west"]},
    ]
    assert (
        second["matchFields"]
        == user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][1]["matchFields"]
    )  # type: ignore[index]
    assert regions_of(second) == ["eu-west"]
    node = pod["affinity"]["nodeAffinity"]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 10
    assert pod["affinity"]["podAntiAffinity"] == anti
    # The graph's own affinity is not mutated by rendering.
    assert (
        len(
            user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ][0]["matchExpressions"]
        )
        == 1
    )  # type: ignore[index]


def test_user_affinity_passes_through_when_nothing_constrains(module_pod: Pod) -> None:
    user = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}
    assert module_pod({"affinity": user})["affinity"] == user
