"""Forwarding without tensor codec work gives the client exactly what the decoding path gives.

Two routers serve the same graph name over the same module: one plain (its only call
forwards the client's bytes and returns the module's answer renamed), one with the result
cache on (the cache needs decoded tensors, so every request takes the decoding path). Their
answers must be byte-identical for JSON and binary requests, requested outputs, binary wishes
and ids; ``/metrics`` shows which path each router took. Tags, explain, a 2-step sequence
whose first step gets the client's bytes, and malformed tensors are covered too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from modulemesh import oip

from .conftest import X8, X16, Pool, Router, direct, explain, make_gate, make_graph, router

Pair = tuple[Router, Router]


@pytest.fixture(scope="module")
def pair(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    gates = [make_gate("g", [{"name": "pii"}])]
    modules = [pool.spec("eu", clearance=["pii"])]
    nodes = [{"name": "main", "type": "sequence", "steps": [{"module": "eu"}]}]
    fast = make_graph("pt", modules, nodes, gates=["g"])
    slow = make_graph("pt", modules, nodes, gates=["g"], policy={"cache": {"enabled": True}})
    with (
        router(tmp_path_factory.mktemp("pt-fast"), fast, pool.urls, gates) as a,
        router(tmp_path_factory.mktemp("pt-slow"), slow, pool.urls, gates) as b,
    ):
        yield a, b


def post(r: Router, body: bytes, length: int | None, **headers: str) -> httpx.Response:
    h = {"content-type": "application/json" if length is None else oip.BINARY_CONTENT_TYPE}
    if length is not None:
        h[oip.HEADER_LENGTH] = str(length)
    return httpx.post(r.infer_url, content=body, headers={**h, **headers}, timeout=30)


def forwarded(r: Router) -> dict[str, float]:
    text = httpx.get(f"{r.base}/metrics", timeout=5).text
    found = re.findall(r'modulemesh_router_forwarded_total\{graph="pt",part="(\w+)"\} (\S+)', text)
    return {part: float(value) for part, value in found}


REQUESTS: list[dict[str, Any]] = [
    {"binary": False},
    {"binary": True},
    {"binary": False, "id": "req-1", "outputs": [oip.RequestedOutput("probabilities", True)]},
    {"binary": True, "binary_data_output": True},
    {"binary": True, "outputs": ["probabilities"], "id": "7"},
]


@pytest.mark.parametrize("kwargs", REQUESTS, ids=lambda k: ",".join(map(str, k.items())))
def test_forwarded_answer_is_byte_identical_to_the_decoding_path(
    pair: Pair, kwargs: dict[str, Any]
) -> None:
    fast, slow = pair
    before = forwarded(fast)
    body, length = oip.encode_request({"input": X8}, **kwargs)
    a, b = post(fast, body, length), post(slow, body, length)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.content == b.content
    for name in ("content-type", oip.HEADER_LENGTH):
        assert a.headers.get(name) == b.headers.get(name)
    after = forwarded(fast)
    assert after["request"] == before["request"] + 1 and after["answer"] == before["answer"] + 1
    assert forwarded(slow).get("answer", 0.0) == 0.0


def test_tagged_request_is_forwarded_with_its_tags(pool: Pool, pair: Pair) -> None:
    fast, _ = pair
    before = forwarded(fast)
    body, length = oip.encode_request({"input": X8}, binary=True, binary_data_output=True)
    tagged = post(fast, body, length, **{"x-modulemesh-tags": "pii"})
    assert tagged.status_code == 200, tagged.text
    answer = oip.decode_response(tagged.content, tagged.headers[oip.HEADER_LENGTH])
    assert answer.model_name == "pt"
    expected = direct(pool.urls["eu"], "eu", {"input": X8})["probabilities"]
    np.testing.assert_allclose(answer.outputs["probabilities"], expected, rtol=1e-6)
    assert forwarded(fast)["answer"] == before["answer"] + 1


def test_explain_takes_the_decoding_path_and_reports_the_call(pair: Pair) -> None:
    fast, slow = pair
    a = fast.infer({"input": X8})
    b = slow.infer({"input": X8})
    assert a.status_code == 200, a.text
    calls = [e for e in explain(a) if e["event"] == "call"]
    assert [(c["module"], c["outcome"], c["version"]) for c in calls] == [("eu", "ok", "1")]
    assert a.json()["outputs"] == b.json()["outputs"]


def test_malformed_tensors_get_the_routers_own_400(pair: Pair) -> None:
    fast, slow = pair
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[1,2]}]}'
    a, b = post(fast, body, None), post(slow, body, None)
    assert a.status_code == b.status_code == 400
    assert a.json()["error"] == b.json()["error"]
    assert a.json()["error"].startswith("bad request: input 'input'")


def test_first_step_gets_the_clients_bytes_and_last_answers_in_its_format(
    pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nodes = [{"name": "main", "type": "sequence",
              "steps": [{"module": "embed"},
                        {"module": "small", "inputs": {"input": "embed.embedding"}}]}]  # fmt: skip
    graph = make_graph("two", [pool.spec("embed"), pool.spec("small")], nodes)
    with router(tmp_path_factory.mktemp("two"), graph, pool.urls) as r:
        # The client's outputs name the graph's output, which step 1 does not have: step 1
        # must get the tensors without the client's wishes, step 2 with them.
        body, length = oip.encode_request(
            {"input": X16}, binary=True, outputs=[oip.RequestedOutput("probabilities", False)],
            id="x",
        )  # fmt: skip
        response = post(r, body, length)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["model_name"] == "two" and data["id"] == "x" and "model_version" not in data
        embedding = direct(pool.urls["embed"], "embed", {"input": X16})["embedding"]
        expected = direct(pool.urls["small"], "small", {"input": embedding})["probabilities"]
        got = np.asarray(data["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
