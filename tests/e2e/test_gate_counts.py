"""Gate counts reach ``kubectl get pgate`` the way the operator's refresh loop takes them: the
text-privacy example runs on 127.0.0.1 (``modulemesh run``), its router's ``/envelopes`` is read
with the operator's ``fetch_router``, recorded in the operator's compliance book under a graph
that names the example's gates, and ``refresh_gate_counts`` writes the sums into the gates'
status on the real API server, where the printer columns show them. Runs in a namespace of its
own; only the two gates are created there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from examples.test_text_privacy import running_example

from e2e.cluster import Cluster
from e2e.operator_process import install_crds
from modulemesh.operator import handlers
from modulemesh.operator.kube import Kube, load_config
from modulemesh.operator.reconcile import Reconciler

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "text-privacy.yaml"


@pytest.fixture
def example_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The text-privacy example under ``modulemesh run``; yields its router's base URL."""
    with running_example(tmp_path, monkeypatch) as port:
        yield f"http://127.0.0.1:{port}"


def columns(listing: str) -> dict[str, dict[str, str]]:
    """``kubectl get`` output as name -> column -> value, cut at the header's column starts
    (an empty cell is blank, so splitting on spaces would shift the columns)."""
    header, *rows = listing.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out[cells[0]] = dict(zip(names, cells, strict=True))
    return out


def send(base: str, text: str) -> int:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    response = httpx.post(
        f"{base}/v2/models/text-privacy/infer", json=body, headers={"x-tenant": "acme"},
        timeout=30,
    )  # fmt: skip
    return response.status_code


def test_router_counts_become_gate_status_and_columns(
    cluster: Cluster, namespace: str, example_router: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_crds(cluster)
    gates = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "PrivacyGate"]
    for gate in gates:
        cluster.apply(gate, namespace=namespace)
    assert send(example_router, "mail jane@example.org") == 200
    assert send(example_router, "card 4111 1111 1111 1111") == 403
    assert send(example_router, "a plain sentence") == 200

    kube = Kube(load_config(str(cluster.kubeconfig)))
    monkeypatch.setattr(handlers, "_reconciler", Reconciler(kube, handlers.SETTINGS))
    key = (namespace, "text-privacy")
    monkeypatch.setattr(handlers, "_known", {key})
    monkeypatch.setattr(handlers, "_gates_named", {key: ("pii", "word-counts")})
    monkeypatch.setattr(handlers, "_compliance", type(handlers._compliance)())
    monkeypatch.setattr(handlers, "_gate_counts", {})

    async def one_refresh() -> None:
        payload, error = await handlers.fetch_router(example_router)
        assert error is None
        handlers._compliance.record(*key, payload)
        await handlers.refresh_gate_counts(handlers.gate_graphs())

    asyncio.run(one_refresh())
    pii: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "pgate", "pii")["status"]
    assert pii["detectorHits"] == {"email/email": 1, "payment/payment-card": 1}
    assert (pii["hits"], pii["redactions"], pii["denials"]) == (2, 1, 1)
    counts = cluster.kubectl_json("-n", namespace, "get", "pgate", "word-counts")["status"]
    assert counts["dpAnswers"] == 2 and counts["budgetUsed"] == "1/2"
    assert counts["budget"]["principals"] == 1
    table = columns(cluster.kubectl("-n", namespace, "get", "pgate").stdout)
    assert list(table["pii"])[4:8] == ["HITS", "REDACTED", "DENIED", "BUDGET"]
    shown = {name: {k: row[k] for k in ("HITS", "REDACTED", "DENIED", "BUDGET")}
             for name, row in table.items()}  # fmt: skip
    assert shown == {
        "pii": {"HITS": "2", "REDACTED": "1", "DENIED": "1", "BUDGET": ""},
        "word-counts": {"HITS": "0", "REDACTED": "0", "DENIED": "0", "BUDGET": "1/2"},
    }

    # Nothing changed: the next refresh writes nothing (the resourceVersion stays).
    before = cluster.kubectl_json("-n", namespace, "get", "pgate", "pii")["metadata"]
    asyncio.run(one_refresh())
    after = cluster.kubectl_json("-n", namespace, "get", "pgate", "pii")["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
