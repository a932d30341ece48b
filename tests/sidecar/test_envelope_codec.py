"""The health envelope's two encodings: JSON and compact header round-trip, agree, and their
parsers never crash on garbage (envelopes come from the network). The header carries the
state's reason, bounded and percent-encoded, so a router can say why it passed a module over."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modulemesh.envelope import (
    MAX_HEADER_REASON,
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
    mean_batch_size=4.0,
    confidence=0.93,
    denials=0,
    requests=750,
    errors=0,
    timestamp=1732262400.123,
)


def test_header_matches_the_documented_example() -> None:
    assert FULL.to_header() == (
        "v=1;m=clf;s=Healthy;r=12.5;p50=1.2;p95=3;p99=4;e=0;q=0;f=1;b=0.5;mb=4;c=0.93;d=0;"
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
        "meanBatchSize": 4.0,
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
    assert parsed.mean_batch_size == 4.0
    assert parsed.timestamp == pytest.approx(1732262400.123)


DEGRADED = HealthEnvelope(
    module="clf",
    state=State.DEGRADED,
    reason="p99 latency 612.3 ms > objective 250.0 ms over the last 57 requests in 60 s",
    timestamp=5.0,
)


def test_header_carries_the_reason() -> None:
    header = DEGRADED.to_header()
    assert header.endswith(";why=p99 latency 612.3 ms > objective 250.0 ms over the last 57 "
                           "requests in 60 s")  # fmt: skip
    parsed = parse_header(header)
    assert parsed is not None and parsed.reason == DEGRADED.reason
    assert "why=" not in FULL.to_header()  # no reason, no key
    parsed_full = parse_header(FULL.to_header())
    assert parsed_full is not None and parsed_full.reason == ""


def test_header_reason_escapes_what_would_break_the_header() -> None:
    reason = 'error; "rate" = 10%, runtime says: ü\r\nx-injected: 1\ttab'
    header = HealthEnvelope(module="m", reason=reason).to_header()
    why = header.rpartition(";why=")[2]
    assert all(32 <= ord(ch) < 127 for ch in why) and not set(why) & set(';,="\r\n\t')
    parsed = parse_header(header.encode("latin-1"))
    assert parsed is not None and parsed.reason == reason


def test_header_reason_is_bounded() -> None:
    parsed = parse_header(HealthEnvelope(module="m", reason="slow " * 100).to_header())
    assert parsed is not None
    assert len(parsed.reason) == MAX_HEADER_REASON and parsed.reason.endswith("...")
    assert parsed.reason.startswith("slow slow")


@pytest.mark.parametrize("why", ["%", "%4", "%zz", "a%G0b", "x" * (12 * MAX_HEADER_REASON + 1)])
def test_header_with_a_malformed_reason_is_not_read(why: str) -> None:
    assert parse_header(FULL.to_header() + ";why=" + why) is None


@given(st.text(max_size=400))
def test_header_reason_round_trips_any_text(reason: str) -> None:
    parsed = parse_header(HealthEnvelope(module="m", reason=reason).to_header())
    assert parsed is not None
    expected = reason.strip()
    if len(expected) > MAX_HEADER_REASON:
        assert parsed.reason.endswith("...") and len(parsed.reason) <= MAX_HEADER_REASON
    elif all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in expected):  # lone surrogates: "?"
        assert parsed.reason == expected


def test_unknowns_are_dashes_and_nulls() -> None:
    empty = HealthEnvelope(module="m", timestamp=5.0)
    header = empty.to_header()
    assert "r=-;p50=-;p95=-;p99=-;e=-;q=-;f=-;b=-;mb=-;c=-" in header
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
