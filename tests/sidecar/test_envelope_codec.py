"""The health envelope's two encodings: JSON and compact header round-trip, agree, and their
parsers never crash on garbage (envelopes come from the network)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modulemesh.envelope import (
    SCHEMA,
    EnvelopeError,
    HealthEnvelope,
    Latency,
    State,
    parse_header,
)

FULL = HealthEnvelope(
    module="clf",
    state=State.HEALTHY,
    reason="",
    model_version="1",
    provider="CPUExecutionProvider",
    window_seconds=60,
    request_rate=12.5,
    latency=Latency(p50=0.0012, p95=0.003, p99=0.004),
    error_rate=0.0,
    queue_depth=0,
    in_flight=1,
    batch_fill=0.5,
    confidence=0.93,
    denials=0,
    requests=750,
    errors=0,
    timestamp=1732262400.123,
)


def test_header_matches_the_documented_example() -> None:
    assert FULL.to_header() == (
        "v=1;m=clf;s=Healthy;r=12.5;p50=1.2;p95=3;p99=4;e=0;q=0;f=1;b=0.5;c=0.93;d=0;"
        "t=1732262400.123"
    )


def test_json_matches_the_documented_example() -> None:
    assert FULL.to_dict() == {
        "schema": SCHEMA,
        "module": "clf",
        "modelVersion": "1",
        "provider": "CPUExecutionProvider",
        "state": "Healthy",
        "reason": "",
        "windowSeconds": 60,
        "requestRate": 12.5,
        "latency": {"p50": 0.0012, "p95": 0.003, "p99": 0.004},
        "errorRate": 0.0,
        "queueDepth": 0,
        "inFlight": 1,
        "batchFill": 0.5,
        "confidence": 0.93,
        "denials": 0,
        "requests": 750,
        "errors": 0,
        "timestamp": 1732262400.123,
    }


def test_json_round_trip() -> None:
    assert HealthEnvelope.from_json(FULL.to_json()) == FULL


def test_header_round_trip_keeps_the_header_fields() -> None:
    parsed = parse_header(FULL.to_header())
    assert parsed is not None
    assert parsed.module == "clf" and parsed.state is State.HEALTHY
    assert parsed.latency.p50 == pytest.approx(0.0012)
    assert parsed.latency.p99 == pytest.approx(0.004)
    assert parsed.request_rate == 12.5 and parsed.confidence == 0.93
    assert parsed.in_flight == 1 and parsed.queue_depth == 0 and parsed.batch_fill == 0.5
    assert parsed.timestamp == pytest.approx(1732262400.123)


def test_unknowns_are_dashes_and_nulls() -> None:
    empty = HealthEnvelope(module="m", timestamp=5.0)
    header = empty.to_header()
    assert "r=-;p50=-;p95=-;p99=-;e=-;q=-;f=-;b=-;c=-" in header
    parsed = parse_header(header)
    assert parsed is not None and parsed.latency == Latency() and parsed.confidence is None
    assert empty.to_dict()["latency"] == {"p50": None, "p95": None, "p99": None}
    assert HealthEnvelope.from_json(empty.to_json()) == empty


def test_header_parser_ignores_unknown_keys_and_accepts_bytes() -> None:
    parsed = parse_header((FULL.to_header() + ";zz=new").encode())
    assert parsed is not None and parsed.module == "clf"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "v=2;m=clf",
        "v=1",
        "v=1;m=",
        "v=1;m=clf;s=Sick",
        "v=1;m=clf;p50=fast",
        "v=1;m=clf;q=1.5",
        "v=1;m=clf;r=nan",
        "v=1;m=clf;r=1e999",
        "v=1;m=clf;;",
        b"\xff\xfe\x00",
        "v=1;m=clf;" + "x=1;" * 5000,
    ],
)
def test_header_parser_returns_none_on_garbage(value: str | bytes | None) -> None:
    assert parse_header(value) is None


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_header_parser_never_raises(value: str | bytes) -> None:
    result = parse_header(value)
    assert result is None or isinstance(result, HealthEnvelope)


@given(
    st.dictionaries(
        st.sampled_from(["p50", "p99", "r", "q", "c", "s", "m", "v", "t", "d"]),
        st.text(alphabet="0123456789.-eE+naifHealthy", max_size=12),
    )
)
def test_header_parser_never_raises_on_near_misses(pairs: dict[str, str]) -> None:
    value = ";".join(f"{k}={v}" for k, v in {"v": "1", "m": "x", **pairs}.items())
    result = parse_header(value)
    assert result is None or isinstance(result, HealthEnvelope)


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        "not json",
        json.dumps({"schema": "other/v9", "module": "x"}),
        json.dumps({"schema": SCHEMA}),
        json.dumps({"schema": SCHEMA, "module": 3}),
        json.dumps({"schema": SCHEMA, "module": "x", "state": "Sick"}),
        json.dumps({"schema": SCHEMA, "module": "x", "latency": [1]}),
        json.dumps({"schema": SCHEMA, "module": "x", "requests": "many"}),
        json.dumps({"schema": SCHEMA, "module": "x", "requestRate": True}),
    ],
)
def test_json_parser_raises_only_envelope_error(data: str) -> None:
    with pytest.raises(EnvelopeError):
        HealthEnvelope.from_json(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_json_parser_never_raises_anything_else(data: object) -> None:
    with contextlib.suppress(EnvelopeError):
        HealthEnvelope.from_dict(data)
