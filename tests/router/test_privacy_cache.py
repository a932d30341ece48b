"""Privacy-aware routing and the result cache over real processes. That a tagged request never
reached an uncleared module is checked from that module's own sidecar (its audit records and
its request count), not from the router's word."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .conftest import X8, Pool, Router, explain, make_gate, make_graph, outputs, router

PHI_GATE = make_gate(
    "phi",
    [{"name": "phi", "allowedRegions": ["eu-west"],
      "classifiers": [{"type": "header", "header": "x-data-class", "values": ["phi"]}]}],
)  # fmt: skip


def settle(pool: Pool, name: str) -> int:
    """The module's request count once its sidecar envelope has caught up."""
    time.sleep(0.7)  # the sidecar refreshes its envelope every 0.5 s
    return int(pool.envelope(name)["requests"])


@pytest.fixture(scope="module")
def phi_router(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """small (no clearance) falls back to eu (cleared for phi, in eu-west); large is cleared
    for phi but in the wrong region and has no fallback."""
    modules = [pool.spec("small", fallback="eu"), pool.spec("eu"),
               pool.spec("large", clearance=["phi"], region="us-east")]  # fmt: skip
    cases = [{"when": "'x-strict' in request.headers", "module": "large"}]
    nodes = [{"name": "main", "type": "switch", "cases": cases, "default": {"module": "small"}}]
    graph = make_graph("phi", modules, nodes, gates=["phi"])
    with router(tmp_path_factory.mktemp("phi"), graph, pool.urls, [PHI_GATE]) as r:
        yield r


def test_tagged_request_takes_cleared_fallback_and_never_reaches_uncleared(
    pool: Pool, phi_router: Router
) -> None:
    small_before = settle(pool, "small")
    eu_before = int(pool.envelope("eu")["requests"])
    for headers in ({"x-modulemesh-tags": "phi"}, {"x-data-class": "PHI"}):
        response = phi_router.infer(headers=headers)
        expected = outputs(phi_router.infer(headers=headers))  # deterministic
        np.testing.assert_allclose(outputs(response)["probabilities"], expected["probabilities"])
        path = explain(response)
        fb = next(e for e in path if e["event"] == "fallback")
        assert fb["module"] == "small" and fb["to"] == "eu"
        assert "tag 'phi' is not in its clearance" in fb["reason"]
        assert [e["module"] for e in path if e["event"] == "call"] == ["eu"]
    assert settle(pool, "small") == small_before  # the uncleared module saw nothing
    assert int(pool.envelope("eu")["requests"]) >= eu_before + 4
    assert not [r for r in pool.audit("small") if "phi" in r["tags"]]
    denials = [r for r in phi_router.audit() if r["module"] == "small" and r["decision"] == "deny"]
    assert denials and denials[-1]["tags"] == ["phi"] and denials[-1]["component"] == "router"
    untagged = phi_router.infer()
    assert [e["module"] for e in explain(untagged) if e["event"] == "call"] == ["small"]


def test_wrong_region_without_fallback_fails_closed_with_audit(
    pool: Pool, phi_router: Router
) -> None:
    large_before = settle(pool, "large")
    response = phi_router.infer(headers={"x-modulemesh-tags": "phi", "x-strict": "1"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert "module 'large' is not cleared" in error and "['eu-west']" in error
    assert "fail closed" in error
    assert settle(pool, "large") == large_before
    record = [r for r in phi_router.audit() if r["module"] == "large"][-1]
    assert record["decision"] == "deny" and "us-east" in record["reason"]


def test_cache_hits_and_tagged_data_exception(pool: Pool, tmp_path: Path) -> None:
    gates = [
        make_gate("g", [{"name": "pii"}, {"name": "public-ish", "cacheable": True}]),
    ]
    modules = [pool.spec("eu", clearance=["pii", "public-ish"])]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "eu"}]}]
    graph = make_graph("cache", modules, nodes, gates=["g"], policy={"cache": {"enabled": True}})
    with router(tmp_path, graph, pool.urls, gates) as r:
        before = settle(pool, "eu")
        first, second = r.infer(), r.infer()
        np.testing.assert_allclose(
            outputs(first)["probabilities"], outputs(second)["probabilities"]
        )
        assert not [e for e in explain(first) if e["event"] == "cache"]  # a miss calls the module
        assert [e["result"] for e in explain(second) if e["event"] == "cache"] == ["hit"]
        other = r.infer({"input": X8 * 2})
        assert not [e for e in explain(other) if e["event"] == "cache"]
        assert settle(pool, "eu") == before + 2  # the hit never reached the module
        for _ in range(2):
            tagged = r.infer(headers={"x-modulemesh-tags": "pii"})
            cache = [e for e in explain(tagged) if e["event"] == "cache"]
            assert cache[0]["result"] == "bypass"
        assert settle(pool, "eu") == before + 4
        r.infer(headers={"x-modulemesh-tags": "public-ish"})
        allowed = r.infer(headers={"x-modulemesh-tags": "public-ish"})
        assert [e["result"] for e in explain(allowed) if e["event"] == "cache"] == ["hit"]
