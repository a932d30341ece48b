"""The ConfigMap privacy budget ledger against the real API server: two router processes on
127.0.0.1 charging one ConfigMap (``--dp-ledger configmap:NS/NAME``, resourceVersion
compare-and-swap, retried on 409), one killed with SIGKILL mid-run and restarted, never answer
more than the budget pays for, and the ConfigMap records every answer; charges from many
threads at once all land (none lost to a conflict) and none past the budget; an unreachable API
server stops the router at start. Runs in a namespace of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from router.conftest import Pool, make_graph, start_pool
from router.test_differential_privacy import WIDTH, replicas_with_a_kill

from e2e.cluster import Cluster
from modulemesh import zoo
from modulemesh.api.gate import PrivacyBudget
from modulemesh.api.resolved import resolve
from modulemesh.operator.kube import load_config
from modulemesh.privacy.ledger import ConfigMapLedger, LedgerError
from modulemesh.router.command import open_ledger

pytestmark = pytest.mark.e2e

BUDGET = PrivacyBudget(epsilon=10.0, delta=0.0, window_seconds=3600)


@pytest.fixture(scope="module")
def idents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The identity module the router tests noise, on 127.0.0.1."""
    pool = start_pool(
        tmp_path_factory.mktemp("dp-cm"), {"ident": (lambda: zoo.identity(width=WIDTH), {})}
    )
    yield pool
    pool.mesh.stop()


def ledger_data(cluster: Cluster, namespace: str, name: str) -> dict[str, float]:
    """Account -> epsilon spent, as the ConfigMap holds it."""
    cm = cluster.kubectl_json("-n", namespace, "get", "configmap", name)
    accounts = json.loads(cm["data"]["ledger.json"])["accounts"]
    return {k: float(v["epsilon"]) for k, v in accounts.items()}


def test_two_replicas_and_a_kill_never_overspend(
    cluster: Cluster, namespace: str, idents: Pool, tmp_path: Path
) -> None:
    env = {"KUBECONFIG": str(cluster.kubeconfig)}

    def spent() -> float:
        return ledger_data(cluster, namespace, "budget")["default/shared/carol"]

    replicas_with_a_kill(
        idents, tmp_path, "shared", f"configmap:{namespace}/budget", spent, env=env
    )


def test_concurrent_charges_all_land_and_stop_at_the_budget(
    cluster: Cluster, namespace: str
) -> None:
    api = load_config(str(cluster.kubeconfig))
    ledgers = [ConfigMapLedger(api, namespace, "race") for _ in range(2)]
    granted: list[bool] = []
    lock = threading.Lock()

    def charge(ledger: ConfigMapLedger) -> None:
        for _ in range(5):
            outcome = ledger.charge("ns/g/dave", 0.5, 0.0, BUDGET)
            with lock:
                granted.append(outcome.granted)

    threads = [threading.Thread(target=charge, args=(ledgers[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(granted) == 30 and granted.count(True) == 20  # 10 / 0.5, the rest refused
    assert ledger_data(cluster, namespace, "race") == {"ns/g/dave": pytest.approx(10.0)}
    usage = ledgers[0].usage("ns/g/", 3600)
    assert usage.principals == 1 and usage.max_spent_epsilon == pytest.approx(10.0)


def test_unreachable_api_server_stops_the_router_at_start(idents: Pool, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    with pytest.raises(LedgerError, match="cannot read it"):
        ConfigMapLedger(load_config(str(kubeconfig)), "default", "budget")
    with pytest.raises(LedgerError, match="configmap:NAMESPACE/NAME"):
        open_ledger("configmap:nope")
    graph = make_graph(
        "unreachable", [idents.spec("ident")],
        [{"name": "main", "type": "sequence", "steps": [{"module": "ident"}]}],
    )  # fmt: skip
    config = tmp_path / "resolved.json"
    config.write_text(resolve(graph, [], idents.urls).dumps())
    done = subprocess.run(
        [sys.executable, "-m", "modulemesh", "router", "--config", str(config),
         "--dp-ledger", "configmap:default/budget"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--dp-ledger: privacy budget ledger configmap:default/budget: cannot read it" in (
        done.stderr
    )
