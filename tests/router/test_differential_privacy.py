"""Differential privacy at the router, over real processes: a gate's declared module outputs
leave the mesh only with OpenDP noise of the declared scale (checked statistically against
the module's own answer, which an identity model makes the input), each answer is paid for
from the principal's budget before it is released, the answer that would exceed the budget is
refused with 429 saying what is left and when it resets, and two router replicas sharing one
ledger, one of them killed with SIGKILL and restarted mid-run, never answer more than the
budget pays for. Every spend and refusal is an audit record.

OpenDP's samplers draw from the OS's cryptographic RNG and cannot be seeded (by design: a
seedable sampler is an attack surface), so the statistical tests use a bounded sample and a
rejection level of 1e-6: a correct scale fails about once in a million runs, while the same
test rejects half or double the scale on the same sample, which the tests check too."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modulemesh import zoo
from modulemesh.api.gate import PrivacyGate
from modulemesh.privacy.dp import gaussian_scale
from modulemesh.privacy.ledger import FileLedger

from .conftest import Pool, Router, make_graph, router, start_pool

WIDTH = 64
PRINCIPAL = "x-principal"


@pytest.fixture(scope="module")
def idents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """An identity module over FP32 [batch, 64]: its answer is its input, so the router's
    answer minus the input is exactly the noise."""
    pool = start_pool(
        tmp_path_factory.mktemp("dp"),
        {"ident": (lambda: zoo.identity(width=WIDTH), {})},
    )
    yield pool
    pool.mesh.stop()


def dp_gate(
    name: str, *, budget: float, output: dict[str, Any], window: int = 3600, delta: float = 0.0
) -> PrivacyGate:
    """A gate with differential privacy on module ``ident`` only."""
    return PrivacyGate.model_validate({
        "apiVersion": "modulemesh.io/v1alpha1", "kind": "PrivacyGate",
        "metadata": {"name": name},
        "spec": {"differentialPrivacy": {
            "principal": {"header": PRINCIPAL},
            "budget": {"epsilon": budget, "delta": delta, "windowSeconds": window},
            "outputs": [{"module": "ident", **output}],
        }},
    })  # fmt: skip


@contextlib.contextmanager
def dp_router(
    pool: Pool,
    tmp: Path,
    name: str,
    gate: PrivacyGate,
    ledger: Path | str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Router]:
    """A router over ``ident`` with ``gate``, charging ``ledger`` (a file, or
    ``configmap:NS/NAME``; a file in ``tmp`` by default)."""
    graph = make_graph(
        name,
        [pool.spec("ident")],
        [{"name": "main", "type": "sequence", "steps": [{"module": "ident"}]}],
        gates=[gate.metadata.name],
    )
    path = ledger or tmp / f"{name}-ledger.json"
    with router(tmp, graph, pool.urls, [gate], args=["--dp-ledger", str(path)], env=env) as r:
        yield r


def ask(r: Router, x: np.ndarray[Any, Any], principal: str | None = "alice") -> httpx.Response:
    headers = {} if principal is None else {PRINCIPAL: principal}
    return r.infer({"input": x}, headers=headers, explain=False)


def answer(response: httpx.Response) -> np.ndarray[Any, Any]:
    body = response.json()
    assert response.status_code == 200, body
    return np.asarray(body["outputs"][0]["data"], dtype=np.float64)


# -- statistics --------------------------------------------------------------------------------


def ks_distance(sample: np.ndarray[Any, Any], cdf: Callable[[Any], Any]) -> float:
    """Kolmogorov-Smirnov statistic of ``sample`` against a continuous ``cdf``."""
    xs = np.sort(sample)
    n = len(xs)
    f = cdf(xs)
    upper = np.arange(1, n + 1) / n - f
    lower = f - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def ks_critical(n: int, alpha: float = 1e-6) -> float:
    """The KS distance above which a sample of ``n`` is rejected at level ``alpha``."""
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)


def laplace_cdf(scale: float) -> Callable[[Any], Any]:
    def cdf(x: Any) -> Any:
        return np.where(x < 0, 0.5 * np.exp(x / scale), 1 - 0.5 * np.exp(-x / scale))

    return cdf


def gaussian_cdf(scale: float) -> Callable[[Any], Any]:
    erf = np.vectorize(math.erf)

    def cdf(x: Any) -> Any:
        return 0.5 * (1 + erf(x / (scale * math.sqrt(2))))

    return cdf


def noise_sample(r: Router, requests: int) -> np.ndarray[Any, Any]:
    """``requests`` x 64 noise draws: the router's answers minus their (identity) inputs."""
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(requests):
        x = rng.uniform(-5, 5, size=(1, WIDTH)).astype(np.float32)
        draws.append(answer(ask(r, x)) - x.ravel().astype(np.float64))
    return np.concatenate(draws)


class TestNoiseScale:
    """The noise on a declared output has the distribution the declared epsilon and
    sensitivity call for."""

    def test_laplace_scale_is_sensitivity_over_epsilon(self, idents: Pool, tmp_path: Path) -> None:
        gate = dp_gate(
            "lap", budget=1000, output={"mechanism": "laplace", "sensitivity": 2, "epsilon": 0.5}
        )
        with dp_router(idents, tmp_path, "lap", gate) as r:
            sample = noise_sample(r, 32)
        scale = 2 / 0.5
        n = len(sample)
        assert ks_distance(sample, laplace_cdf(scale)) < ks_critical(n)
        # The same test tells a wrong scale: half or double the declared noise is rejected.
        assert ks_distance(sample, laplace_cdf(scale / 2)) > ks_critical(n)
        assert ks_distance(sample, laplace_cdf(scale * 2)) > ks_critical(n)
        assert abs(float(np.var(sample)) / (2 * scale**2) - 1) < 0.25

    def test_gaussian_scale_is_calibrated_by_opendp(self, idents: Pool, tmp_path: Path) -> None:
        gate = dp_gate(
            "gauss", budget=1000, delta=0.5,
            output={"mechanism": "gaussian", "sensitivity": 1, "epsilon": 1.0, "delta": 1e-6},
        )  # fmt: skip
        scale = gaussian_scale(1.0, 1.0, 1e-6)
        # The classic analytic bound sqrt(2 ln(1.25/delta)) * sensitivity / epsilon holds it.
        assert 3.0 < scale <= math.sqrt(2 * math.log(1.25 / 1e-6))
        with dp_router(idents, tmp_path, "gauss", gate) as r:
            sample = noise_sample(r, 32)
        n = len(sample)
        assert ks_distance(sample, gaussian_cdf(scale)) < ks_critical(n)
        assert ks_distance(sample, gaussian_cdf(scale / 2)) > ks_critical(n)
        assert ks_distance(sample, gaussian_cdf(scale * 2)) > ks_critical(n)


class TestBudget:
    """A principal's budget pays for each answer; the answer that would exceed it is refused."""

    def test_refuses_the_answer_that_would_exceed_the_budget(
        self, idents: Pool, tmp_path: Path
    ) -> None:
        gate = dp_gate(
            "quota", budget=1.0,
            output={"mechanism": "laplace", "sensitivity": 1, "epsilon": 0.25},
        )  # fmt: skip
        x = np.zeros((1, WIDTH), dtype=np.float32)
        ledger = tmp_path / "quota-ledger.json"
        with dp_router(idents, tmp_path, "quota", gate, ledger) as r:
            for _ in range(4):
                assert ask(r, x).status_code == 200
            refused = ask(r, x)
            assert ask(r, x, principal="bob").status_code == 200  # bob has his own budget
            records = r.audit()
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert "privacy budget exhausted" in body["error"] and "'alice'" in body["error"]
        budget = body["budget"]
        assert budget["remaining"]["epsilon"] == pytest.approx(0)
        assert budget["spent"]["epsilon"] == pytest.approx(1.0)
        assert budget["cost"]["epsilon"] == 0.25
        reset = budget["resetAt"]
        assert refused.headers["x-modulemesh-budget-reset"] == reset
        assert refused.headers["x-modulemesh-budget-remaining"] == "epsilon=0;delta=0"
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 3600 and budget["retryAfterSeconds"] == retry
        spends = [rec for rec in records if rec["decision"] == "budget-spend"]
        refusals = [rec for rec in records if rec["decision"] == "budget-refuse"]
        assert len(spends) == 5 and len(refusals) == 1
        assert refusals[0]["gate"] == "quota" and refusals[0]["module"] == "ident"
        assert "'alice'" in refusals[0]["reason"] and reset in refusals[0]["reason"]
        usage = FileLedger(ledger).usage("default/quota/", 3600)
        assert usage.principals == 2 and usage.spent_epsilon == pytest.approx(1.25)

    def test_a_new_window_resets_the_budget(self, idents: Pool, tmp_path: Path) -> None:
        gate = dp_gate(
            "window", budget=0.5, window=2,
            output={"mechanism": "laplace", "sensitivity": 1, "epsilon": 0.5},
        )  # fmt: skip
        x = np.zeros((1, WIDTH), dtype=np.float32)
        with dp_router(idents, tmp_path, "window", gate) as r:
            # Start just after a window boundary so the two calls fall in one window.
            time.sleep(2 - time.time() % 2 + 0.05)
            assert ask(r, x).status_code == 200
            refused = ask(r, x)
            assert refused.status_code == 429
            time.sleep(max(0.0, refused.json()["budget"]["retryAfterSeconds"] - 0.5))
            deadline = time.monotonic() + 5
            while (again := ask(r, x)).status_code == 429 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert again.status_code == 200

    @pytest.mark.parametrize(
        ("headers", "needle"),
        [({}, "the request has none"), ({PRINCIPAL: "alice, bob"}, "more than once")],
    )
    def test_missing_or_ambiguous_principal_fails_closed(
        self, idents: Pool, tmp_path: Path, headers: dict[str, str], needle: str
    ) -> None:
        gate = dp_gate(
            "who", budget=10, output={"mechanism": "laplace", "sensitivity": 1, "epsilon": 1}
        )
        x = np.zeros((1, WIDTH), dtype=np.float32)
        ledger = tmp_path / "who-ledger.json"
        with dp_router(idents, tmp_path, "who", gate, ledger) as r:
            refused = r.infer({"input": x}, headers=headers, explain=False)
        assert refused.status_code == 400
        assert needle in refused.json()["error"] and PRINCIPAL in refused.json()["error"]
        assert FileLedger(ledger).usage("default/who/", 3600).principals == 0

    def test_the_module_answer_never_leaves_unnoised(self, idents: Pool, tmp_path: Path) -> None:
        """Binary outputs, explain and the forwarded-answer fast path all get noise."""
        gate = dp_gate(
            "raw", budget=100, output={"mechanism": "laplace", "sensitivity": 1, "epsilon": 1}
        )
        x = np.zeros((1, WIDTH), dtype=np.float32)
        with dp_router(idents, tmp_path, "raw", gate) as r:
            plain = answer(ask(r, x))  # explain off: the module could have answered directly
            explained = r.infer({"input": x}, headers={PRINCIPAL: "alice"})
        assert np.count_nonzero(plain) == WIDTH
        assert np.count_nonzero(answer(explained)) == WIDTH
        events = [e for e in explained.json()["parameters"]["modulemesh_explain"]["path"]
                  if e["event"] == "budget"]  # fmt: skip
        assert events and events[0]["noise"] == {"*": 1.0} and events[0]["gate"] == "raw"

    def test_router_refuses_to_start_without_a_ledger(self, idents: Pool, tmp_path: Path) -> None:
        gate = dp_gate(
            "noledger", budget=1, output={"mechanism": "laplace", "sensitivity": 1, "epsilon": 1}
        )
        graph = make_graph(
            "noledger", [idents.spec("ident")],
            [{"name": "main", "type": "sequence", "steps": [{"module": "ident"}]}],
            gates=["noledger"],
        )  # fmt: skip
        with (
            pytest.raises(AssertionError, match="--dp-ledger"),
            router(tmp_path, graph, idents.urls, [gate]),
        ):
            pass


def replicas_with_a_kill(
    pool: Pool,
    tmp: Path,
    name: str,
    ledger: str,
    spent: Callable[[], float],
    env: dict[str, str] | None = None,
) -> None:
    """Two routers charging ``ledger`` under concurrent load, one SIGKILLed mid-run and
    restarted, until the budget runs out; then the answers, refusals and what the ledger
    says it spent (``spent()``) must agree with the budget. Shared by the file ledger here
    and the ConfigMap ledger's test against the API server (tests/e2e)."""
    eps, budget = 0.1, 3.0
    gate = dp_gate(
        name, budget=budget, output={"mechanism": "laplace", "sensitivity": 1, "epsilon": eps}
    )
    x = np.zeros((1, WIDTH), dtype=np.float32)
    answered: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(r: Router) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    resp = client.post(
                        r.infer_url, headers={PRINCIPAL: "carol"},
                        json={"inputs": [{"name": "input", "datatype": "FP32",
                                          "shape": [1, WIDTH], "data": x.ravel().tolist()}]},
                    )  # fmt: skip
                except httpx.HTTPError:  # the killed replica: in-flight answers never arrive
                    time.sleep(0.05)
                    continue
                with lock:
                    (answered if resp.status_code == 200 else refused).append(resp.status_code)

    with (
        dp_router(pool, tmp, name, gate, ledger, env=env) as a,
        dp_router(pool, tmp, name, gate, ledger, env=env) as b,
    ):
        threads = [threading.Thread(target=hammer, args=(r,)) for r in (a, a, b, b)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 40
        while len(answered) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(b.child.pid, signal.SIGKILL)  # mid-run: requests are in flight
        b.child.popen.wait(10)
        with dp_router(pool, tmp, name, gate, ledger, env=env) as b2:
            restarted = [threading.Thread(target=hammer, args=(b2,)) for _ in range(2)]
            for t in restarted:
                t.start()
            while not refused and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # let both replicas meet the exhausted budget
            stop.set()
            for t in threads + restarted:
                t.join(15)
    total = spent()
    assert refused and set(refused) == {429}
    assert len(answered) * eps <= budget + 1e-9
    assert total <= budget + 1e-9
    # Answers delivered are at most what the ledger recorded; the difference is what the
    # killed replica reserved and never delivered (at most its in-flight requests).
    assert len(answered) * eps <= total + 1e-9
    assert total - len(answered) * eps <= 2 * eps + 1e-9


class TestReplicasAndRestart:
    """Two router processes sharing one ledger file, one killed with SIGKILL mid-run and
    restarted, never answer more than the budget pays for."""

    def test_two_replicas_and_a_kill_never_overspend(self, idents: Pool, tmp_path: Path) -> None:
        ledger = tmp_path / "shared-ledger.json"

        def spent() -> float:
            accounts = json.loads(ledger.read_text())["accounts"]
            return float(accounts["default/shared/carol"]["epsilon"])

        replicas_with_a_kill(idents, tmp_path, "shared", str(ledger), spent)
