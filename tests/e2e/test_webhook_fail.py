"""``failurePolicy: Fail`` on the real control plane: nothing is admitted unchecked.

The configuration is installed with the strict policy and the operator sets its CA bundle;
when it stops, an apply is refused while it is away (the API server cannot call it), and once
it is back it sets the CA of its new certificate and applies go through again. (Under Ignore
they are admitted while it is away: test_webhook.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.cluster import Cluster, wait_until
from e2e.operator_process import (
    OperatorProcess,
    apply_doc,
    ca_bundles_set,
    delete_webhook_configuration,
    install_crds,
    install_webhook_configuration,
    local_webhook_env,
    webhooks_in,
)
from e2e.test_operator import graph_doc


@pytest.fixture
def strict_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    env = local_webhook_env(MODULEMESH_WEBHOOK_FAILURE_POLICY="Fail")
    install_webhook_configuration(cluster, env)
    log = tmp_path_factory.mktemp("strict") / "operator.log"
    proc = OperatorProcess(cluster, log, env=env)
    try:
        yield proc
    finally:
        proc.stop()
        delete_webhook_configuration(cluster)


def _fail_policy(cluster: Cluster) -> bool | None:
    hooks = webhooks_in(cluster)
    strict = bool(hooks) and all(h["failurePolicy"] == "Fail" for h in hooks)
    return (strict and ca_bundles_set(cluster)) or None


def test_with_fail_nothing_is_admitted_while_the_operator_is_away(
    cluster: Cluster, strict_operator: OperatorProcess, namespace: str
) -> None:
    strict_operator.start()
    wait_until(lambda: _fail_policy(cluster), timeout=60, message="the strict configuration")
    assert apply_doc(cluster, namespace, graph_doc("first")).returncode == 0

    strict_operator.stop()
    assert _fail_policy(cluster), "the configuration was withdrawn although the policy is Fail"
    refused = apply_doc(cluster, namespace, graph_doc("while-away"))
    assert refused.returncode != 0
    assert 'failed calling webhook "modulegraphs.modulemesh.io"' in refused.stderr, refused.stderr

    strict_operator.start()

    def admitted() -> bool:
        return apply_doc(cluster, namespace, graph_doc("while-away")).returncode == 0

    wait_until(admitted, timeout=60, message="applies admitted again once the operator is back")
