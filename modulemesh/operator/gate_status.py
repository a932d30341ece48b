"""What routers report about gates, added up into each ``PrivacyGate``'s status.

Every router's ``GET /envelopes`` (the document the operator already reads into the graph's
status) carries a ``compliance`` part: the router process's id and, per gate, its detector
hits, redactions, denials, noisy answers and budget refusals since it started, and the budget
ledger's current window. A graph's router Service answers from one replica per read, so the
book keeps the latest report of each replica (by its process id) and forgets a replica not
heard from for :data:`FORGET_AFTER_S`; a gate's counts are the sum over the replicas of every
graph naming it. The budget window is the ledger's, shared by the replicas of a graph; with
several graphs, the one whose principal spent the most is shown.

Pure: no Kubernetes, no HTTP, so the rules are unit-tested on plain dicts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["FORGET_AFTER_S", "ComplianceBook", "parse_compliance"]

FORGET_AFTER_S = 600.0
"""A replica not heard from for this long (scaled down, replaced) no longer counts."""

_COUNTS = ("redactions", "denials", "dpAnswers", "dpRefusals")


def parse_compliance(payload: Any) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """``(instance, gate -> counts)`` from a router's ``/envelopes`` answer; None when it has
    no usable compliance part (an older router)."""
    if not isinstance(payload, Mapping):
        return None
    part = payload.get("compliance")
    if not isinstance(part, Mapping):
        return None
    instance, gates = part.get("instance"), part.get("gates")
    if not isinstance(instance, str) or not isinstance(gates, Mapping):
        return None
    return instance, {str(k): dict(v) for k, v in gates.items() if isinstance(v, Mapping)}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@dataclass
class _Report:
    gates: dict[str, dict[str, Any]]
    seen: float


@dataclass
class ComplianceBook:
    """The latest compliance report of every router replica, by graph."""

    reports: dict[tuple[str, str], dict[str, _Report]] = field(default_factory=dict)
    """``(namespace, graph) -> instance -> report``."""

    def record(self, namespace: str, graph: str, payload: Any, now: float | None = None) -> None:
        """Keep the compliance part of one ``/envelopes`` answer of the graph's router."""
        parsed = parse_compliance(payload)
        if parsed is None:
            return
        instance, gates = parsed
        self.reports.setdefault((namespace, graph), {})[instance] = _Report(
            gates, time.time() if now is None else now
        )

    def forget(self, namespace: str, graph: str) -> None:
        """The graph is gone: its routers no longer count."""
        self.reports.pop((namespace, graph), None)

    def gate_status(
        self, namespace: str, gate: str, graphs: Iterable[str], now: float | None = None
    ) -> dict[str, Any] | None:
        """The gate's count and budget status fields (camelCase) from the reports of the
        ``graphs`` naming it; None when no router has reported on it yet."""
        at = time.time() if now is None else now
        hits: Counter[str] = Counter()
        sums: Counter[str] = Counter()
        budget: dict[str, Any] | None = None
        found = False
        for graph in graphs:
            replicas = self.reports.get((namespace, graph), {})
            for instance in [i for i, r in replicas.items() if at - r.seen > FORGET_AFTER_S]:
                del replicas[instance]
            for report in replicas.values():
                counts = report.gates.get(gate)
                if counts is None:
                    continue
                found = True
                raw_hits = counts.get("detectorHits")
                if isinstance(raw_hits, Mapping):
                    for key, value in raw_hits.items():
                        hits[str(key)] += _int(value)
                for key in _COUNTS:
                    sums[key] += _int(counts.get(key))
                window = counts.get("budget")
                if (
                    isinstance(window, Mapping)
                    and "epsilon" in window
                    and (
                        budget is None
                        or _float(window.get("maxSpentEpsilon")) > budget["maxSpentEpsilon"]
                    )
                ):
                    budget = {
                        "epsilon": _float(window.get("epsilon")),
                        "windowStart": window.get("windowStart"),
                        "resetAt": window.get("resetAt"),
                        "principals": _int(window.get("principals")),
                        "spentEpsilon": _float(window.get("spentEpsilon")),
                        "maxSpentEpsilon": _float(window.get("maxSpentEpsilon")),
                    }
        if not found:
            return None
        status: dict[str, Any] = {
            "detectorHits": dict(sorted(hits.items())),
            "hits": sum(hits.values()),
            **{key: sums[key] for key in _COUNTS},
            "countedAt": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        }
        if budget is not None:
            status["budget"] = budget
            status["budgetUsed"] = f"{budget['maxSpentEpsilon']:.4g}/{budget['epsilon']:.4g}"
        return status
