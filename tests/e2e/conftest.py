"""Fixtures for e2e tests: a real control plane on 127.0.0.1 (see hack/cluster and cluster.py).

Every test under tests/e2e is marked `e2e` (select with `-m e2e`, skip with `-m "not e2e"`).
The session-scoped `cluster` fixture reuses a running control plane or starts one. At the end of
the session it stops the cluster only if a test fixture started it (one started by hand with
hack/cluster/up is left running) and no other test session on the machine still uses it; set
MODULEMESH_KEEP_CLUSTER=1 to keep it running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import UP_TIMEOUT_S, Cluster, binaries_built, cluster_running, ensure_cluster
from e2e.operator_process import OperatorProcess, watching_operator
from e2e.real_node import RealNode, running_real_node, start_real_node

E2E_DIR = Path(__file__).resolve().parent


def _is_e2e(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as `e2e` before `-m` selection runs."""
    for item in items:
        if _is_e2e(item):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Give the first selected e2e test the time to build/start the cluster.

    pytest-timeout counts fixture set-up against the test that triggers it. A cold build of the
    control plane takes far longer than one test may, so when the cluster is not running the
    first e2e test gets a timeout that covers `hack/cluster/up`.
    """
    first = next((item for item in session.items if _is_e2e(item)), None)
    if first is None or cluster_running():
        return
    budget = UP_TIMEOUT_S if not binaries_built() else 300.0
    first.add_marker(pytest.mark.timeout(budget + 300.0))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local control plane: kubeconfig, kubectl/helm paths and helpers."""
    keep = os.environ.get("MODULEMESH_KEEP_CLUSTER", "") in ("1", "true")
    c = ensure_cluster(keep=keep)
    if os.environ.get("MODULEMESH_E2E_REAL_NODE", "") == "1":
        # bash hack/test: real-0 for the whole session (stopped with the cluster when the
        # session started it; the realnode modules then leave it running).
        start_real_node(c)
    yield c
    c.release(stop_if_ours=not keep)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    name = cluster.create_namespace("e2e")
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """CRDs installed and one operator process watching every namespace, for the module (a
    module needing another operator defines its own ``operator``)."""
    with watching_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def real_node(cluster: Cluster) -> Iterator[RealNode]:
    """The real node real-0 on the session's cluster (e2e/real_node.py): started when it is not
    running, and then stopped after the module."""
    yield from running_real_node(cluster)
