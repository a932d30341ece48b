"""The sidecar derives a request's tags exactly as the router does (the shared
:mod:`modulemesh.privacy`, fed the graph's classifying gates through ``--gates``), so a caller
that reaches it directly gains nothing: a classifier header alone is tagged, repeated field
lines (sent raw, as HTTP clients would merge them) add tags and never remove one, a
list-valued classifier header is matched item by item, and every decision is a 403 or an
allow with its audit record, which always carries a trace id (generated, and passed on to the
runtime, when the request has none)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from raw_http import RawResponse, post

from modulemesh import oip

from .conftest import Module, Proc, free_port, module, start_sidecar, wait_status

GATES = json.dumps(
    {"phi": {"tags": [{"name": "phi",
                       "classifiers": [{"header": "x-data-class", "values": ["phi"]}]}]}}
)  # fmt: skip
ECHO = Path(__file__).with_name("echo_upstream.py")


def body() -> bytes:
    data, _ = oip.encode_request({"input": np.full((1, 8), 0.5, dtype=np.float32)})
    return data


@pytest.fixture(scope="module")
def guarded(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    """clf, cleared for pii only, told the phi gate's classifier."""
    tmp = tmp_path_factory.mktemp("guard-headers")
    with module(tmp, models["clf"], "clf", "--clearance", "pii", "--gates", GATES) as m:
        yield m


def send(mod: Module, *lines: tuple[str, str]) -> RawResponse:
    return post(f"{mod.url}/v2/models/clf/infer", [("content-type", "application/json"), *lines],
                body())  # fmt: skip


def new_records(mod: Module, before: int, count: int = 1) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while len(mod.sidecar.audit_records()) < before + count and time.monotonic() < deadline:
        time.sleep(0.05)
    return mod.sidecar.audit_records()[before:]


@pytest.mark.parametrize(
    "lines",
    [
        [("x-data-class", "phi")],
        [("x-modulemesh-tags", "phi"), ("x-modulemesh-tags", "")],
        [("x-data-class", "phi"), ("x-data-class", "none")],
        [("x-data-class", "phi, other")],
        [("x-modulemesh-tags", "pii"), ("x-data-class", "PHI")],
    ],
    ids=["classifier-only", "second-empty-tags-line", "second-classifier-line",
         "classifier-list", "declared-and-classified"],
)  # fmt: skip
def test_phi_is_denied_however_it_is_spelled(guarded: Module, lines: list[tuple[str, str]]) -> None:
    before = len(guarded.sidecar.audit_records())
    response = send(guarded, *lines)
    assert response.status == 403, response.body
    assert "'phi' is not in the clearance of module 'clf'" in response.json()["error"]
    (record,) = new_records(guarded, before)
    assert record["decision"] == "deny" and "phi" in record["tags"]  # type: ignore[operator]
    assert re.fullmatch("[0-9a-f]{32}", str(record["traceId"])), record


def test_cleared_and_unrelated_values_pass(guarded: Module) -> None:
    before = len(guarded.sidecar.audit_records())
    assert send(guarded, ("x-data-class", "none"), ("x-data-class", "public")).status == 200
    assert send(guarded, ("x-modulemesh-tags", "PII"), ("x-data-class", "none")).status == 200
    (record,) = new_records(guarded, before)  # the untagged request needed no decision
    assert record["decision"] == "allow" and record["tags"] == ["pii"]


def test_unreadable_headers_are_a_400_naming_them(guarded: Module) -> None:
    response = send(guarded, ("x-modulemesh-tags", "pii"), ("x-modulemesh-tags", "p;hi"))
    assert response.status == 400
    assert response.json()["error"].startswith("x-modulemesh-tags: 'p;hi' is not a tag")
    response = send(
        guarded, ("x-modulemesh-deadline-ms", "5000"), ("x-modulemesh-deadline-ms", "1")
    )
    assert response.status == 400
    assert response.json()["error"].startswith("x-modulemesh-deadline-ms is sent more than once")
    response = send(
        guarded,
        ("inference-header-content-length", "10"),
        ("inference-header-content-length", "20"),
    )
    assert response.status == 400  # the runtime frames the body by it: never two values
    assert response.json()["error"].startswith("inference-header-content-length is sent more")


def test_unreadable_gates_flag_exits_2_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modulemesh", "sidecar", "--module", "clf", "--gates", '{"phi": 1}'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("modulemesh sidecar: --gates (or MODULEMESH_SIDECAR_GATES): ")
    assert "phi" in result.stderr and "Traceback" not in result.stderr


# --- trace ids -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    """A sidecar (cleared for phi, told the gate) in front of a peer that echoes what it got."""
    tmp = tmp_path_factory.mktemp("echo-trace")
    upstream_port, port = free_port(), free_port()
    peer = Proc([sys.executable, str(ECHO), str(upstream_port)], tmp / "echo.log")
    sidecar = None
    try:
        wait_status(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        sidecar = start_sidecar(
            "echo", port, upstream_port, tmp / "sidecar.log", "--clearance", "phi",
            "--gates", GATES,
        )  # fmt: skip
        wait_status(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}", sidecar
    finally:
        if sidecar is not None:
            sidecar.stop()
        peer.stop()


def test_a_request_without_trace_context_gets_one_for_record_and_runtime(
    echo: tuple[str, Proc],
) -> None:
    url, sidecar = echo
    before = len(sidecar.audit_records())
    response = post(f"{url}/v2/models/echo/infer", [("x-data-class", "phi")], b"{}")
    assert response.status == 200
    seen = [v for k, v in response.json()["headers"] if k == "traceparent"]
    assert len(seen) == 1 and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", seen[0])
    deadline = time.monotonic() + 5
    while len(sidecar.audit_records()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = sidecar.audit_records()[before:]
    assert record["decision"] == "allow" and record["traceId"] == seen[0][3:35]


def test_repeated_traceparent_lines_are_replaced_by_one_fresh_context(
    echo: tuple[str, Proc],
) -> None:
    url, _ = echo
    first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    second = "00-11111111111111111111111111111111-00f067aa0ba902b7-01"
    response = post(
        f"{url}/v2/models/echo/infer",
        [("x-modulemesh-tags", "phi"), ("traceparent", first), ("traceparent", second)],
        b"{}",
    )
    seen = [v for k, v in response.json()["headers"] if k == "traceparent"]
    assert len(seen) == 1 and seen[0] not in (first, second)
    untagged = post(f"{url}/v2/models/echo/infer", [("traceparent", first)], b"{}")
    assert [v for k, v in untagged.json()["headers"] if k == "traceparent"] == [first]
