"""An idle operator writes nothing, and still corrects drift (issue 14, "Build").

The operator reads graphs, gates, children and pods from what its watches report, applies a
child only when its rendered intent or the operator's own fields differ, patches status only
when it changed, and keeps no kopf bookkeeping on graphs. So once a graph is Ready, nothing
about it is written again, across several resyncs (a 4 s interval here): not the graph (its
status or annotations), not a child, no Event. Children deleted by hand still come back within
seconds, although the reconcile now reads them from the cache rather than the API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import OperatorProcess, install_crds
from e2e.test_operator import graph_doc, wait_condition

RESYNC_S = 4.0
CHILDREN = "deployments,services,configmaps,networkpolicies,poddisruptionbudgets"


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator that re-checks every graph every RESYNC_S seconds."""
    install_crds(cluster)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = OperatorProcess(cluster, log, envelope_interval_s=2, resync_interval_s=RESYNC_S)
    yield proc.start()
    proc.stop()


def versions(cluster: Cluster, ns: str, graph: str) -> dict[str, str]:
    """``kind/name -> resourceVersion`` of the graph and everything the operator made for it."""
    found = {f"ModuleGraph/{graph}": ""}
    doc = cluster.kubectl_json("-n", ns, "get", "modulegraph", graph)
    found[f"ModuleGraph/{graph}"] = doc["metadata"]["resourceVersion"]
    children = cluster.kubectl_json(
        "-n", ns, "get", CHILDREN, "-l", f"modulemesh.io/graph={graph}"
    )["items"]
    for child in children:
        found[f"{child['kind']}/{child['metadata']['name']}"] = child["metadata"]["resourceVersion"]
    return found


def graph_events(cluster: Cluster, ns: str, graph: str) -> list[str]:
    items = cluster.kubectl_json(
        "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={graph}"
    )["items"]
    return sorted(f"{e['reason']}:{e['metadata']['name']}" for e in items)


def resyncs(op: OperatorProcess) -> int:
    return op.log_path.read_text(errors="replace").count("resync: ")


def test_a_ready_graph_is_not_written_across_resyncs(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("still")
    doc["spec"]["modules"][1].pop("resources")  # CPU only: no GPU node needed
    cluster.apply(doc, namespace)
    wait_condition(cluster, operator, namespace, "still", "Ready", "True", timeout=180)
    # Settled: the Ready event is posted and the pods' last events are behind us.
    wait_until(
        lambda: any(e.startswith("Ready:") for e in graph_events(cluster, namespace, "still")),
        timeout=30,
        message="the Ready event",
    )
    time.sleep(3)
    before, events_before = (
        versions(cluster, namespace, "still"),
        graph_events(cluster, namespace, "still"),
    )
    assert len(before) >= 6, before  # the graph, Deployments, Services, ConfigMap, policy
    resyncs_before = resyncs(operator)
    time.sleep(3 * RESYNC_S + 2)
    assert resyncs(operator) >= resyncs_before + 2, operator.log()  # the window held resyncs
    assert versions(cluster, namespace, "still") == before, operator.log()
    assert graph_events(cluster, namespace, "still") == events_before
    assert "0 objects applied" in operator.log_path.read_text(errors="replace")


def test_deleted_children_come_back_within_seconds(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    doc = graph_doc("healed")
    doc["spec"]["modules"][1].pop("resources")
    cluster.apply(doc, namespace)
    wait_condition(cluster, operator, namespace, "healed", "Ready", "True", timeout=180)
    cluster.kubectl("-n", namespace, "delete", "service", "healed-embedder", "--wait=false")
    cluster.kubectl("-n", namespace, "delete", "configmap", "-l", "modulemesh.io/graph=healed")

    def back() -> bool:
        services = cluster.kubectl(
            "-n", namespace, "get", "service", "healed-embedder", check=False
        )
        maps = cluster.kubectl_json(
            "-n", namespace, "get", "configmaps", "-l", "modulemesh.io/graph=healed"
        )["items"]
        return services.returncode == 0 and len(maps) == 1

    started = time.monotonic()
    wait_until(back, timeout=30, message="the deleted Service and ConfigMap to come back")
    assert time.monotonic() - started < RESYNC_S + 10
