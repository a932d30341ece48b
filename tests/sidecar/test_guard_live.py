"""Compliance guard in front of a real runtime: allowed, denied and dry-run requests, each with
the right audit record in the sidecar's log (and never the payload)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from modulemesh import oip

from .conftest import Module, module

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
MARKER = 0.3141592  # a payload value that must never reach the audit log


def body() -> bytes:
    data, _ = oip.encode_request({"input": np.full((1, 8), MARKER, dtype=np.float32)})
    return data


@pytest.fixture(scope="module")
def enforced(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    with module(
        tmp_path_factory.mktemp("enforce"), models["clf"], "clf", "--clearance", "pii,eu"
    ) as m:
        yield m


@pytest.fixture(scope="module")
def dryrun(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    with module(
        tmp_path_factory.mktemp("dryrun"),
        models["clf"],
        "clf",
        "--clearance",
        "eu",
        "--mode",
        "dryrun",
    ) as m:
        yield m


def records_after(mod: Module, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = mod.sidecar.audit_records()
        if len(records) >= count:
            return records
        time.sleep(0.05)
    return mod.sidecar.audit_records()


def test_cleared_tags_pass_with_an_allow_record(enforced: Module) -> None:
    before = len(enforced.sidecar.audit_records())
    started = time.time()
    response = httpx.post(
        f"{enforced.url}/v2/models/clf/infer",
        content=body(),
        headers={"x-modulemesh-tags": "PII , eu", "traceparent": TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["name"] == "probabilities"
    record = records_after(enforced, before + 1)[before]
    assert record == {
        "kind": "audit",
        "time": record["time"],
        "component": "sidecar",
        "module": "clf",
        "tags": ["eu", "pii"],
        "decision": "allow",
        "reason": "tags cleared for module 'clf'",
        "traceId": TRACE_ID,
        "graph": None,
        "gate": None,
        "detectors": [],
        "chain": record["chain"],
        "seq": record["seq"],
        "prev": record["prev"],
        "mac": None,
    }
    assert started - 1 <= float(record["time"]) <= time.time() + 1  # type: ignore[arg-type]


def test_uncleared_tag_is_denied_naming_tag_and_module(enforced: Module) -> None:
    before_records = len(enforced.sidecar.audit_records())
    before = httpx.get(f"{enforced.url}/envelope").json()
    response = httpx.post(
        f"{enforced.url}/v2/models/clf/infer",
        content=body(),
        headers={"x-modulemesh-tags": "pii,phi", "traceparent": TRACEPARENT},
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert "'phi'" in error and "'clf'" in error
    assert "x-modulemesh-envelope" in response.headers
    record = records_after(enforced, before_records + 1)[before_records]
    assert record["decision"] == "deny" and record["module"] == "clf"
    assert record["tags"] == ["phi", "pii"] and record["traceId"] == TRACE_ID
    assert "'phi'" in str(record["reason"])
    after = httpx.get(f"{enforced.url}/envelope").json()
    assert after["denials"] == before["denials"] + 1
    assert after["requests"] == before["requests"]  # never reached the runtime
    assert str(MARKER) not in enforced.sidecar.output()


def test_untagged_requests_need_no_decision(enforced: Module) -> None:
    before = len(enforced.sidecar.audit_records())
    response = httpx.post(f"{enforced.url}/v2/models/clf/infer", content=body())
    assert response.status_code == 200
    time.sleep(0.2)
    assert len(enforced.sidecar.audit_records()) == before


def test_dryrun_forwards_and_records_would_be_denial(dryrun: Module) -> None:
    before = len(dryrun.sidecar.audit_records())
    response = httpx.post(
        f"{dryrun.url}/v2/models/clf/infer", content=body(), headers={"x-modulemesh-tags": "phi"}
    )
    assert response.status_code == 200
    record = records_after(dryrun, before + 1)[before]
    assert record["decision"] == "dryrun-deny" and record["tags"] == ["phi"]
    assert "'phi'" in str(record["reason"])
    assert re.fullmatch("[0-9a-f]{32}", str(record["traceId"]))  # none sent: one is made
    envelope = httpx.get(f"{dryrun.url}/envelope").json()
    assert envelope["denials"] >= 1 and envelope["requests"] >= 1
    metrics = httpx.get(f"{dryrun.url}/metrics").text
    assert (
        'modulemesh_compliance_decisions_total{decision="dryrun-deny",module="clf"} 1.0' in metrics
    )
