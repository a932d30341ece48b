"""A split node's mirror over real processes: its result is discarded, it never fails nor
delays the client.

The mirror is a module of its own (``shadow``, a classifier whose answer is nothing like the
primary's: class 1 at ~99.9 % where the primary ``small`` says class 0 at ~37 %), taking 100 %
of the traffic. Checked: the client always gets the primary's answer, byte for byte (binary
tensors compared with the primary's sidecar's own answer to the same request), the mirror
really received every request (its sidecar's request count and the router's call metrics),
and a mirror that hangs (sidecar SIGSTOPped) or is dead (killed) costs the client neither an
error nor time: each request stays far below the mirror's call timeout.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modulemesh import oip, zoo

from .conftest import X8, Pool, Router, direct, explain, make_graph, outputs, router, start_pool

SHADOW: dict[str, tuple[Any, dict[str, Any]]] = {
    "shadow": (lambda: zoo.classifier(features=8, classes=3, temperature=0.1, seed=7), {})
}
MIRROR_TIMEOUT_MS = 2000
"""The mirror module's call timeout: a client that waited for a hung mirror would wait this."""
BOUND = 1.0
"""Seconds any one client request may take here (the primary answers in a few ms)."""


@pytest.fixture
def shadow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The mirror module, of its own: only the router under test calls it."""
    p = start_pool(tmp_path_factory.mktemp("shadow"), SHADOW)
    try:
        yield p
    finally:
        for child in (p.mesh.modules["shadow"].sidecar, p.mesh.modules["shadow"].runtime):
            child.signal(signal.SIGCONT)  # a stopped process would sit out SIGTERM's grace
        p.mesh.stop()


def split_graph(pool: Pool, shadow: Pool) -> Any:
    nodes = [{"name": "main", "type": "split",
              "targets": [{"module": "small", "weight": 100}],
              "mirror": {"module": "shadow", "percent": 100}}]  # fmt: skip
    modules = [pool.spec("small"), shadow.spec("shadow", timeoutMs=MIRROR_TIMEOUT_MS)]
    # no retries, and no ejection: every mirrored request really goes to the mirror
    policy = {"retries": {"attempts": 0}, "circuitBreaker": {"consecutiveFailures": 1000}}
    return make_graph("mirror", modules, nodes, policy=policy)


def binary_request() -> bytes:
    """A JSON request asking for binary outputs."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 8], "data": X8.ravel().tolist()}
    body: bytes = httpx.Request(
        "POST", "http://x", json={"inputs": [tensor], "parameters": {"binary_data_output": True}}
    ).content
    return body


def tensor_bytes(response: httpx.Response) -> bytes:
    """The binary tensor part of an infer response (after its JSON header)."""
    assert response.status_code == 200, response.text
    length = int(response.headers[oip.HEADER_LENGTH])
    assert length < len(response.content)
    return response.content[length:]


def calls(r: Router, module: str, outcome: str) -> float:
    """``modulemesh_router_module_calls`` for one module and outcome."""
    text = httpx.get(f"{r.base}/metrics", timeout=5).text
    pattern = (
        rf'^modulemesh_router_module_calls_total\{{[^}}]*module="{module}"'
        rf'[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$'
    )
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def timed(r: Router, **kw: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = r.infer(**kw)
    return response, time.monotonic() - started


def test_mirror_receives_every_request_and_the_client_gets_only_the_primary_answer(
    pool: Pool, shadow: Pool, tmp_path: Path
) -> None:
    primary = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    mirrored = direct(shadow.urls["shadow"], "shadow", {"input": X8})["probabilities"]
    assert np.argmax(primary) != np.argmax(mirrored)  # a leaked mirror answer would show
    body = binary_request()
    json_headers = {"content-type": "application/json"}
    reference = httpx.post(
        f"{pool.urls['small']}/v2/models/small/infer", content=body, headers=json_headers
    )
    primary_bytes = tensor_bytes(reference)
    assert primary_bytes == primary.astype(np.float32).tobytes()
    with router(tmp_path, split_graph(pool, shadow), {**pool.urls, **shadow.urls}) as r:
        before = shadow.envelope("shadow")["requests"]
        rounds = 10
        for _ in range(rounds):
            # JSON, explained: the router decodes the primary's answer and encodes it again
            response = r.infer()
            got = outputs(response)["probabilities"]
            assert got.tobytes() == primary.tobytes()
            assert not np.allclose(got, mirrored)
            path = explain(response)
            assert any(e["event"] == "mirror" and e["target"] == "module:shadow" for e in path)
            answered = [e for e in path if e["event"] == "call" and e["step"] != "mirror"]
            assert [(e["module"], e["step"]) for e in answered] == [("small", "targets[0]")]
            # binary, not explained: the primary's answer is passed through undecoded
            raw = httpx.post(r.infer_url, content=body, headers=json_headers, timeout=10)
            assert tensor_bytes(raw) == primary_bytes
            header = raw.content[: int(raw.headers[oip.HEADER_LENGTH])]
            assert b'"model_name":"mirror"' in header.replace(b" ", b"")
        sent = 2 * rounds
        eventually(
            lambda: calls(r, "shadow", "ok") >= sent, 10, f"{sent} mirrored calls to succeed"
        )
        assert calls(r, "shadow", "ok") == sent
        assert calls(r, "small", "ok") == sent
        eventually(
            lambda: shadow.envelope("shadow")["requests"] >= before + sent,
            5,
            "the mirror's sidecar to count the mirrored requests",
        )
        assert shadow.envelope("shadow")["requests"] == before + sent


def test_hung_or_dead_mirror_never_fails_or_delays_the_client(
    pool: Pool, shadow: Pool, tmp_path: Path
) -> None:
    primary = direct(pool.urls["small"], "small", {"input": X8})["probabilities"]
    procs = shadow.mesh.modules["shadow"]
    with router(tmp_path, split_graph(pool, shadow), {**pool.urls, **shadow.urls}) as r:
        response, _ = timed(r)
        np.testing.assert_array_equal(outputs(response)["probabilities"], primary)
        eventually(lambda: calls(r, "shadow", "ok") == 1, 5, "the first mirrored call")

        # hung: the sidecar's socket still accepts connections, nothing answers
        procs.sidecar.signal(signal.SIGSTOP)
        hung = [timed(r) for _ in range(8)]
        for response, seconds in hung:
            assert outputs(response)["probabilities"].tobytes() == primary.tobytes()
            assert any(e["event"] == "mirror" for e in explain(response))
            assert seconds < BOUND, f"a request took {seconds:.3f}s with the mirror hung"
        # the mirrored calls really were sent and hung, each until the mirror's own timeout
        eventually(
            lambda: calls(r, "shadow", "timeout") >= len(hung),
            MIRROR_TIMEOUT_MS / 1000 + 5,
            "every mirrored call to time out",
        )
        assert calls(r, "shadow", "timeout") == len(hung)
        assert calls(r, "shadow", "ok") == 1  # only the one before the hang

        # dead: connections refused
        procs.sidecar.signal(signal.SIGKILL)
        procs.runtime.signal(signal.SIGKILL)
        procs.sidecar.popen.wait(10)
        procs.runtime.popen.wait(10)
        dead = [timed(r) for _ in range(8)]
        for response, seconds in dead:
            assert outputs(response)["probabilities"].tobytes() == primary.tobytes()
            assert seconds < BOUND, f"a request took {seconds:.3f}s with the mirror dead"
        # and without explain (the primary's answer forwarded undecoded), still fine
        for _ in range(4):
            response, seconds = timed(r, explain=False)
            assert outputs(response)["probabilities"].tobytes() == primary.tobytes()
            assert seconds < BOUND
        # every one of those was mirrored, refused, and discarded
        eventually(lambda: calls(r, "shadow", "error") >= 12, 5, "12 refused mirrored calls")
        assert calls(r, "shadow", "error") == 12
        assert calls(r, "shadow", "ok") == 1
        assert calls(r, "small", "ok") == 1 + 8 + 8 + 4
        assert any("mirror of split 'main' failed (discarded)" in line for line in r.child.lines)
