"""Fuzzing the OIP v2 codec (`modulemesh.oip`) that every server decodes client bodies with:
whatever bytes or JSON arrive, decoding either succeeds or raises ``ProtocolError`` (a 4xx with
a reason), never another exception that would become a 500.

Bounded: hypothesis generates a fixed number of examples per test, no deadline flakiness, and
nothing touches the network. Three shapes of input: arbitrary bytes with arbitrary
``Inference-Header-Content-Length`` values, JSON objects shaped like requests but with wrong
types, shapes, datatypes and data, and well-formed binary-tensor heads whose binary part is cut,
padded or mislabelled.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from oip_strategies import FUZZ, header_lengths, requests, scalars

from modulemesh import oip


def decodes_or_refuses(body: bytes, header_length: Any) -> None:
    """Every decoder the servers use: a result or a ProtocolError saying why. A request the
    client sent is refused with a 4xx; a response a module sent is a 502 (the router's
    answer then names the module), never a 4xx that would blame the client."""
    for decode, statuses in (
        (lambda: oip.decode_request(body, header_length), range(400, 500)),
        (lambda: oip.parse_request(body, header_length).decode(), range(400, 500)),
        (lambda: oip.decode_response(body, header_length), (502,)),
    ):
        try:
            decode()
        except oip.ProtocolError as error:
            assert error.status in statuses, error
            assert str(error), "a refusal must say why"


@FUZZ
@given(body=st.binary(max_size=256), header_length=header_lengths)
def test_arbitrary_bytes_are_decoded_or_refused(body: bytes, header_length: Any) -> None:
    decodes_or_refuses(body, header_length)


@FUZZ
@given(request=requests, header_length=header_lengths)
def test_request_shaped_json_is_decoded_or_refused(
    request: dict[str, Any], header_length: Any
) -> None:
    # the standard library's encoder: it also writes integers beyond 64 bits, NaN and Infinity
    body = json.dumps(request).encode()
    decodes_or_refuses(body, header_length)
    decodes_or_refuses(body, None)


@FUZZ
@given(
    datatype=st.sampled_from(sorted(oip.DATATYPES)),
    shape=st.lists(st.integers(min_value=0, max_value=5), max_size=3),
    declared=st.integers(min_value=-2, max_value=80),
    payload=st.binary(max_size=96),
    cut=st.integers(min_value=-4, max_value=4),
)
def test_binary_tensors_with_wrong_sizes_are_decoded_or_refused(
    datatype: str, shape: list[int], declared: int, payload: bytes, cut: int
) -> None:
    head = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                     "parameters": {"binary_data_size": declared}}]}
    )  # fmt: skip
    body = head + payload
    decodes_or_refuses(body, len(head) + cut)
    decodes_or_refuses(body, len(head))


@FUZZ
@given(
    datatype=st.sampled_from(sorted(oip.DATATYPES)),
    shape=st.lists(st.integers(min_value=0, max_value=3), max_size=3),
    extra=st.integers(min_value=-1, max_value=1),
    values=st.lists(scalars, min_size=1, max_size=4),
    nested=st.booleans(),
)
def test_json_tensors_with_wrong_values_are_decoded_or_refused(
    datatype: str, shape: list[int], extra: int, values: list[Any], nested: bool
) -> None:
    # nearly valid: a known datatype and a plain shape, with element counts off by one and
    # values of every JSON type (strings into FP32, floats into BOOL, huge ints into INT8, ...)
    count = max(0, math.prod(shape) + extra)
    data: Any = [values[i % len(values)] for i in range(count)]
    if nested and shape and count == math.prod(shape) and shape[-1]:
        data = [data[i : i + shape[-1]] for i in range(0, count, shape[-1])]
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}
    )
    decodes_or_refuses(body.encode(), None)
    response = json.dumps(
        {"outputs": [{"name": "y", "datatype": datatype, "shape": shape, "data": data}]}
    )
    decodes_or_refuses(response.encode(), None)
