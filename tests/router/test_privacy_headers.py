"""Privacy headers at the router, sent as raw field lines (HTTP clients would merge them):
a repeated tags or classifier line adds to the request's tags and never removes one, a
classifier header is matched item by item, a non-list header sent twice differently is a 400
naming it, and every audit record carries a W3C trace id, the router's and the sidecars' the
same one, with no trace exporter configured. That a tagged request never reached the uncleared
module is read from the explain path and from that module's own sidecar."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from raw_http import RawResponse, post

from .conftest import X8, Pool, Router, make_gate, make_graph, router

GATE = make_gate(
    "phi",
    [{"name": "phi", "classifiers": [{"header": "x-data-class", "values": ["phi"]}]}],
)
BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                 "data": X8.ravel().tolist()}]}
).encode()  # fmt: skip
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def phi(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """small (not cleared for phi) falls back to eu (cleared for phi)."""
    modules = [pool.spec("small", fallback="eu"), pool.spec("eu")]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "small"}]}]
    graph = make_graph("phihdr", modules, nodes, gates=["phi"])
    with router(tmp_path_factory.mktemp("phihdr"), graph, pool.urls, [GATE]) as r:
        yield r


def send(r: Router, *lines: tuple[str, str]) -> RawResponse:
    """POST the X8 request with explain on and exactly these extra field lines."""
    base = [("content-type", "application/json"), ("x-modulemesh-explain", "1")]
    return post(r.infer_url, [*base, *lines], BODY)


def called(response: RawResponse) -> list[str]:
    """The modules the router called, in order (from the explain path)."""
    body: dict[str, Any] = response.json()
    assert response.status == 200, body
    path = body["parameters"]["modulemesh_explain"]["path"]
    return [e["module"] for e in path if e["event"] == "call"]


def requests_of(pool: Pool, name: str) -> int:
    time.sleep(0.7)  # the sidecar refreshes its envelope every 0.5 s
    return int(pool.envelope(name)["requests"])


# --- repeated and list-valued privacy headers ------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        [("x-modulemesh-tags", "phi"), ("x-modulemesh-tags", "")],
        [("x-data-class", "phi"), ("x-data-class", "none")],
        [("x-data-class", "phi, other")],
        [("x-data-class", "other"), ("x-data-class", '"phi"')],
    ],
    ids=["second-empty-tags-line", "second-classifier-line", "classifier-list", "quoted-item"],
)
def test_tags_survive_repeated_and_list_valued_lines(
    pool: Pool, phi: Router, lines: list[tuple[str, str]]
) -> None:
    small_before = requests_of(pool, "small")
    denials_before = len(phi.audit())
    response = send(phi, *lines)
    assert called(response) == ["eu"]
    assert requests_of(pool, "small") == small_before  # the uncleared module saw nothing
    record = phi.audit()[denials_before]
    assert record["module"] == "small" and record["decision"] == "deny"
    assert record["tags"] == ["phi"]


def test_other_classifier_values_leave_the_request_untagged(phi: Router) -> None:
    assert called(send(phi, ("x-data-class", "none"), ("x-data-class", "public"))) == ["small"]


def test_a_tag_that_is_no_tag_is_a_400_naming_the_header(phi: Router) -> None:
    response = send(phi, ("x-modulemesh-tags", "phi"), ("x-modulemesh-tags", "p h i"))
    assert response.status == 400
    assert response.json()["error"].startswith("x-modulemesh-tags: 'p h i' is not a tag")


# --- non-list headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("x-modulemesh-priority", "critical", "sheddable"),
        ("x-modulemesh-deadline-ms", "5000", "1"),
        ("x-modulemesh-explain", "1", "0"),
        ("inference-header-content-length", "10", "20"),
    ],
)
def test_a_non_list_header_sent_twice_differently_is_a_400_naming_it(
    phi: Router, name: str, first: str, second: str
) -> None:
    response = send(phi, (name, first), (name, second))
    assert response.status == 400
    assert response.json()["error"].startswith(f"{name} is sent more than once")


def test_the_same_value_sent_twice_is_that_value(phi: Router) -> None:
    lines = [("x-modulemesh-priority", "critical")] * 2 + [("x-modulemesh-deadline-ms", "9000")] * 2
    assert called(send(phi, *lines)) == ["small"]


# --- trace ids in audit records --------------------------------------------------------------


def sidecar_record(pool: Pool, module: str, trace_id: str) -> dict[str, Any]:
    """The module's sidecar audit record of the request with ``trace_id`` (waits for it)."""
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in pool.audit(module) if r["traceId"] == trace_id]
        if found or time.monotonic() > deadline:
            assert found, f"no audit record with trace id {trace_id} from {module}'s sidecar"
            return found[-1]
        time.sleep(0.05)


def test_every_audit_record_has_a_trace_id_shared_with_the_sidecars(
    pool: Pool, phi: Router
) -> None:
    before = len(phi.audit())
    assert called(send(phi, ("x-modulemesh-tags", "phi"))) == ["eu"]
    (record,) = phi.audit()[before:]
    trace_id = record["traceId"]
    assert isinstance(trace_id, str) and re.fullmatch("[0-9a-f]{32}", trace_id), record
    allowed = sidecar_record(pool, "eu", trace_id)  # generated here, propagated there
    assert allowed["decision"] == "allow" and allowed["tags"] == ["phi"]
    # a second request gets a trace of its own
    assert called(send(phi, ("x-modulemesh-tags", "phi"))) == ["eu"]
    assert phi.audit()[-1]["traceId"] not in (None, trace_id)


def test_the_clients_trace_id_is_kept_and_a_repeated_traceparent_is_none(
    pool: Pool, phi: Router
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    before = len(phi.audit())
    send(phi, ("x-modulemesh-tags", "phi"), ("traceparent", traceparent))
    assert phi.audit()[before]["traceId"] == TRACE_ID
    assert sidecar_record(pool, "eu", TRACE_ID)["decision"] == "allow"
    # two traceparent lines are no trace context (W3C): a fresh trace, not the first or last
    other = f"00-{'1' * 32}-00f067aa0ba902b7-01"
    send(phi, ("x-modulemesh-tags", "phi"), ("traceparent", traceparent), ("traceparent", other))
    trace_id = phi.audit()[-1]["traceId"]
    assert re.fullmatch("[0-9a-f]{32}", trace_id) and trace_id not in (TRACE_ID, "1" * 32)
