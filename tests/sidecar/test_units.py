"""Pure pieces of the sidecar: rolling window percentiles, guard verdicts, state thresholds,
confidence extraction and upstream address checks (no processes needed)."""

from __future__ import annotations

import numpy as np
import pytest

from modulemesh import oip
from modulemesh.audit import Decision
from modulemesh.envelope import State
from modulemesh.sidecar.confidence import confidence_of
from modulemesh.sidecar.config import Mode, Thresholds, parse_upstream
from modulemesh.sidecar.guard import Guard
from modulemesh.sidecar.health import RuntimeInfo, assess
from modulemesh.sidecar.window import RollingWindow, WindowStats


def test_window_percentiles_match_numpy_within_bucket_error() -> None:
    rng = np.random.default_rng(1)
    samples = rng.lognormal(mean=-6, sigma=0.8, size=20_000)
    window = RollingWindow(60)
    for i, latency in enumerate(samples):
        window.record(1000.0 + i * 0.001, float(latency), error=i % 10 == 0)
    stats = window.snapshot(1020.0)
    assert stats.requests == 20_000 and stats.errors == 2_000
    assert stats.error_rate == pytest.approx(0.1)
    for got, q in ((stats.p50, 50), (stats.p95, 95), (stats.p99, 99)):
        assert got == pytest.approx(float(np.percentile(samples, q)), rel=0.02)


def test_window_forgets_old_slots() -> None:
    window = RollingWindow(6)
    window.record(100.0, 0.01, error=True)
    window.record_denial(100.0)
    assert window.snapshot(101.0).requests == 1
    later = window.snapshot(107.0)
    assert later.requests == 0 and later.denials == 0 and later.p50 is None
    assert later.error_rate is None


def test_window_confidence_is_mean_of_rows() -> None:
    window = RollingWindow(60)
    window.record_confidence(10.0, 1.6, 2)
    window.record_confidence(11.0, 0.5, 2)
    assert window.snapshot(12.0).confidence == pytest.approx(2.1 / 4)


def test_guard_enforce_names_tag_and_module() -> None:
    guard = Guard("clf", frozenset({"pii"}), Mode.ENFORCE)
    assert guard.check(frozenset({"pii"})).decision is Decision.ALLOW
    verdict = guard.check(frozenset({"pii", "phi"}))
    assert verdict.decision is Decision.DENY and not verdict.forwards
    assert "'phi'" in verdict.reason and "'clf'" in verdict.reason
    assert verdict.tags == frozenset({"pii", "phi"})


def test_guard_dryrun_forwards_but_says_so() -> None:
    verdict = Guard("clf", frozenset(), Mode.DRYRUN).check(frozenset({"phi"}))
    assert verdict.decision is Decision.DRYRUN_DENY and verdict.forwards


def _stats(requests: int, errors: int, p99: float | None = 0.01) -> WindowStats:
    return WindowStats(
        requests=requests,
        errors=errors,
        denials=0,
        request_rate=requests / 60,
        error_rate=errors / requests if requests else None,
        p50=p99,
        p95=p99,
        p99=p99,
        confidence=None,
    )


@pytest.mark.parametrize(
    ("ready", "requests", "errors", "state", "reason"),
    [
        (None, 0, 0, State.UNKNOWN, "not polled"),
        (False, 10, 0, State.UNHEALTHY, "down"),
        (True, 0, 0, State.HEALTHY, "no traffic"),
        (True, 100, 1, State.HEALTHY, ""),
        (True, 100, 10, State.DEGRADED, "error rate 10.0% > 5%"),
        (True, 100, 60, State.UNHEALTHY, "error rate 60.0% > 50%"),
    ],
)
def test_state_thresholds(
    ready: bool | None, requests: int, errors: int, state: State, reason: str
) -> None:
    runtime = RuntimeInfo(ready=ready, reason="runtime not polled yet" if ready is None else "down")
    got_state, got_reason = assess(_stats(requests, errors), runtime, Thresholds())
    assert got_state is state and reason in got_reason


def test_state_latency_and_queue_thresholds() -> None:
    thresholds = Thresholds(degraded_p99_seconds=0.005, degraded_queue_depth=4)
    state, reason = assess(_stats(10, 0, p99=0.02), RuntimeInfo(ready=True), thresholds)
    assert state is State.DEGRADED and "p99" in reason
    state, reason = assess(
        _stats(10, 0, p99=0.001), RuntimeInfo(ready=True, queue_depth=9), thresholds
    )
    assert state is State.DEGRADED and "queue depth 9" in reason


def test_confidence_from_json_and_binary_bodies() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    response = oip.InferResponse(model_name="clf", outputs={"probabilities": probs})
    body, length = oip.encode_response(response, binary=False)
    assert confidence_of(body, None, None) == pytest.approx((1.5, 2))
    body, length = oip.encode_response(response, binary=True)
    assert length is not None
    assert confidence_of(body, str(length).encode(), None) == pytest.approx((1.5, 2))


def test_confidence_ignores_non_distributions_unless_declared() -> None:
    scores = np.array([[0.4], [0.6]], dtype=np.float32)
    logits = np.array([[2.0, -1.0], [0.5, 0.5]], dtype=np.float32)
    body, _ = oip.encode_response(
        oip.InferResponse(model_name="v", outputs={"logits": logits, "score": scores})
    )
    assert confidence_of(body, None, None) is None
    assert confidence_of(body, None, "score") == pytest.approx((1.0, 2))
    assert confidence_of(b"not json", None, None) is None
    assert confidence_of(body, b"garbage", None) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8081",
        "https://127.0.0.1:1",
        "ftp://x",
        "http://example.com",
        "unix:relative/runtime.sock",
        "unix://host/runtime.sock",
    ],
)
def test_upstream_must_be_loopback_http(url: str) -> None:
    with pytest.raises(ValueError):
        parse_upstream(url)


def test_upstream_loopback_forms() -> None:
    assert parse_upstream("http://127.0.0.1:8081").port == 8081
    assert parse_upstream("http://localhost:9").host == "127.0.0.1"
    assert parse_upstream("http://[::1]:9").url == "http://[::1]:9"


def test_upstream_unix_socket_forms() -> None:
    upstream = parse_upstream("unix:/run/mm/runtime.sock")
    assert upstream.path == "/run/mm/runtime.sock"
    assert upstream.url == "unix:/run/mm/runtime.sock"
    assert upstream.host_header == b"localhost"
    assert parse_upstream("unix:///run/mm/runtime.sock").path == "/run/mm/runtime.sock"
    assert parse_upstream("http://127.0.0.1:8081").host_header == b"127.0.0.1:8081"
