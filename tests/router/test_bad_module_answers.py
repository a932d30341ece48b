"""A module that answers 200 with a body the router cannot read (not JSON, no outputs, text
in a float tensor): the client gets a 502 naming the module and what was wrong, never a 400
that blames its own request, and the router keeps serving.

The broken module (``conftest.broken_module``) is a small HTTP server on 127.0.0.1 in the test
process that answers every infer with a fixed body: a misbehaving peer, as a foreign or
corrupted model server would be.
Both router paths are covered: the graph's last call, whose answer is passed through with only
the model name changed, and an earlier sequence step, whose answer is decoded for the next.
(A last answer that begins the way the runtime writes its answers, ``{"model_name":...``, is
passed through unread by design: that pass-through is what keeps a 1-step graph cheap.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Pool, broken_module, make_graph, module_spec, router

BAD_ANSWERS = [
    pytest.param(b"<html>oops</html>", "response body is not valid JSON", id="not-json"),
    pytest.param(b'{"id":"7","outputs":[]}', "response has no 'outputs' list", id="no-outputs"),
    pytest.param(
        b'{"outputs":[{"name":"embedding","datatype":"FP32","shape":[1,8],"data":["x"]}]}',
        "output 'embedding': 'data' for FP32 must hold only numbers, found 'x'",
        id="string-in-fp32",
    ),
]


NO_RETRIES = {"retries": {"attempts": 0}}


@pytest.mark.parametrize(("answer", "problem"), BAD_ANSWERS)
def test_last_call_answering_garbage_is_a_502_naming_the_module(
    tmp_path: Path, answer: bytes, problem: str
) -> None:
    graph = make_graph(
        "garbage", [module_spec("m", Path("/unused/m.onnx"))],
        [{"name": "main", "type": "sequence", "steps": [{"module": "m"}]}], policy=NO_RETRIES,
    )  # fmt: skip
    with broken_module(answer) as url, router(tmp_path, graph, {"m": url}) as r:
        for _ in range(2):  # and the router is still there for the next request
            response = r.infer(explain=False)
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert "module 'm' sent a bad response" in error and problem in error, error


@pytest.mark.parametrize(("answer", "problem"), BAD_ANSWERS)
def test_earlier_step_answering_garbage_is_a_502_naming_the_module(
    pool: Pool, tmp_path: Path, answer: bytes, problem: str
) -> None:
    graph = make_graph(
        "garbage2",
        [module_spec("m", Path("/unused/m.onnx")), pool.spec("small")],
        [{"name": "main", "type": "sequence",
          "steps": [{"module": "m"}, {"module": "small", "inputs": {"input": "m.embedding"}}]}],
        policy=NO_RETRIES,
    )  # fmt: skip
    with broken_module(answer) as url, router(tmp_path, graph, {"m": url, **pool.urls}) as r:
        response = r.infer(explain=False)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert "module 'm' sent a bad response" in error and problem in error, error
