"""Fuzzing the data plane over HTTP: whatever body and ``x-modulemesh-*`` headers a client
sends, the router, the sidecars and the runtimes behind it answer with a 2xx or a 4xx that
says why (or a 504 under a deadline the client set itself), never a 5xx, and they all
keep serving afterwards; the same holds for a module (sidecar and runtime) called directly.

Bounded: a fixed, derandomised number of requests per test, one at a time, to real processes
on 127.0.0.1 (the shared module pool and one router per graph). Two graphs cover the router's
two paths: a 1-step graph forwards the client's bytes to the module as they are (so the
sidecar and runtime see the garbage too), and a 2-step sequence decodes them itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oip_strategies import FUZZ, header_lengths, requests

from .conftest import X16, Pool, Router, direct, make_graph, outputs, router

HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24
).map(str.strip)
"""Printable header values (HTTP clients refuse leading or trailing spaces)."""
MODULEMESH_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "x-modulemesh-tags": st.one_of(HEADER_TEXT, st.sampled_from(["phi", "pii,phi", ",,"])),
        "x-modulemesh-priority": st.one_of(
            HEADER_TEXT, st.sampled_from(["critical", "standard", "sheddable"])
        ),
        "x-modulemesh-deadline-ms": st.one_of(
            HEADER_TEXT, st.sampled_from(["0", "-1", "1e9", "nan", "5000"])
        ),
        "x-modulemesh-explain": HEADER_TEXT,
        "traceparent": st.one_of(
            HEADER_TEXT, st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        ),
        "content-type": st.sampled_from(["application/json", "application/octet-stream", "x/y"]),
    },
)
WELL_FORMED_HEADERS = st.fixed_dictionaries(
    {"content-type": st.just("application/json")},
    optional={
        "x-modulemesh-priority": st.sampled_from(["critical", "standard", "sheddable"]),
        "x-modulemesh-deadline-ms": st.sampled_from(["5000", "1e9", "2500.5"]),
        "x-modulemesh-explain": st.sampled_from(["1", "0", "true"]),
        "traceparent": st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    },
)
"""Headers that let a request through, so the body decides how far it gets."""
FEATURES = [float(v) for v in X16.ravel()]
"""A valid 1 x 16 ``features`` row."""
near_valid_bodies = st.builds(
    lambda shape, data, name: json.dumps(
        {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}
    ).encode(),
    st.sampled_from([[1, 16], [1, 16], [1, 16], [16], [2, 8], [1, 16, 1], [0, 16]]),
    st.sampled_from(
        [FEATURES, FEATURES, FEATURES, FEATURES[:8], [*FEATURES[:15], None], ["x"] * 16,
         [1e300] * 16, [True] * 16]
    ),
    st.sampled_from(["features", "features", "input", ""]),
)  # fmt: skip
"""Mostly valid requests with one thing off: the shape, a value, the input's name."""
VALID_BODY = json.dumps(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": FEATURES}]}
).encode()
exchanges = st.one_of(
    st.tuples(st.just(VALID_BODY), WELL_FORMED_HEADERS),
    st.tuples(near_valid_bodies, WELL_FORMED_HEADERS),
    st.tuples(near_valid_bodies, MODULEMESH_HEADERS),
    st.tuples(st.binary(max_size=200), MODULEMESH_HEADERS),
    st.tuples(requests.map(lambda r: json.dumps(r).encode()), WELL_FORMED_HEADERS),
)


@pytest.fixture(scope="module")
def graphs(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Router]]:
    one = make_graph(
        "fuzz1", [pool.spec("embed")],
        [{"name": "main", "type": "sequence",
          "steps": [{"module": "embed", "inputs": {"input": "request.features"}}]}],
    )  # fmt: skip
    two = make_graph(
        "fuzz2", [pool.spec("embed"), pool.spec("small")],
        [{"name": "main", "type": "sequence",
          "steps": [{"module": "embed", "inputs": {"input": "request.features"}},
                    {"module": "small", "inputs": {"input": "embed.embedding"}}]}],
    )  # fmt: skip
    with (
        router(tmp_path_factory.mktemp("fuzz1"), one, pool.urls) as r1,
        router(tmp_path_factory.mktemp("fuzz2"), two, pool.urls) as r2,
    ):
        yield {"one": r1, "two": r2}


def client_deadline(sent: dict[str, str]) -> bool:
    """Whether the client set a deadline (under 10 s) that a 504 may fairly answer: on a busy
    machine even a few hundred milliseconds can run out, so any such deadline counts."""
    try:
        return float(sent.get("x-modulemesh-deadline-ms", "inf")) < 10_000
    except ValueError:
        return False


def answers_without_a_5xx(url: str, body: bytes, sent: dict[str, str]) -> None:
    with httpx.Client(timeout=30) as client:
        response = client.post(url, content=body, headers=sent)
    status = response.status_code
    if status == 504 and client_deadline(sent):
        return
    assert status < 500, f"{status} {response.text} for {sent} {body[:120]!r}"
    if status >= 400:
        error: Any = response.json().get("error")
        assert isinstance(error, str) and error, response.text


def fuzz_against(url: str, *, input_name: str = "features") -> None:
    """Send the bounded, derandomised fuzz run to ``url``; every answer must pass
    :func:`answers_without_a_5xx`. ``input_name`` renames the near-valid bodies' tensor."""

    @FUZZ
    @given(
        exchange=exchanges,
        length=st.one_of(st.none(), header_lengths.filter(lambda v: v is not None)),
    )
    def fuzz(exchange: tuple[bytes, dict[str, str]], length: Any) -> None:
        body, sent = exchange
        if length is not None and body != VALID_BODY:
            sent = {**sent, "inference-header-content-length": str(length).strip()}
        body = body.replace(b'"features"', f'"{input_name}"'.encode())
        answers_without_a_5xx(url, body, sent)

    fuzz()


@pytest.mark.parametrize("path", ["one", "two"])
def test_fuzzed_requests_never_get_a_5xx_and_everything_keeps_serving(
    graphs: dict[str, Router], path: str
) -> None:
    target = graphs[path]
    fuzz_against(target.infer_url)
    # nothing crashed: the graph still answers a plain request
    response = target.infer({"features": X16}, explain=False)
    assert outputs(response), response.text


def test_fuzzed_requests_straight_to_a_module_never_get_a_5xx(pool: Pool) -> None:
    # the sidecar and the runtime behind it, with the client's raw bytes (the module's input is
    # called "input", so the near-valid bodies are renamed to reach its tensor checks)
    fuzz_against(f"{pool.urls['embed']}/v2/models/embed/infer", input_name="input")
    assert direct(pool.urls["embed"], "embed", {"input": X16})["embedding"].shape == (1, 8)
