"""Gate status from what routers report: the latest report of each router replica counts once
(a replica read again replaces its report, never adds to it), replicas of every graph naming
the gate add up, a replica not heard from for ten minutes drops out, the budget shown is the
window of the graph whose principal spent the most, and reports without a compliance part
(older routers) are ignored."""

from __future__ import annotations

from typing import Any

from modulemesh.operator.gate_status import FORGET_AFTER_S, ComplianceBook, parse_compliance


def report(instance: str, **gates: dict[str, Any]) -> dict[str, Any]:
    """A router's /envelopes answer with only what the book reads."""
    return {"graph": "g", "modules": {}, "compliance": {"instance": instance, "started": 0.0,
                                                         "gates": gates}}  # fmt: skip


def counts(hits: int = 0, redactions: int = 0, **more: Any) -> dict[str, Any]:
    return {"detectorHits": {"email/email": hits}, "redactions": redactions, "denials": 0,
            "dpAnswers": 0, "dpRefusals": 0, **more}  # fmt: skip


class TestReplicas:
    def test_each_replica_counts_once_with_its_latest_report(self) -> None:
        book = ComplianceBook()
        book.record("ns", "g", report("a", pii=counts(1, 1)), now=100)
        book.record("ns", "g", report("b", pii=counts(2, 0)), now=101)
        book.record("ns", "g", report("a", pii=counts(5, 3)), now=102)  # a read again
        status = book.gate_status("ns", "pii", ["g"], now=103)
        assert status is not None
        assert status["detectorHits"] == {"email/email": 7}
        assert (status["hits"], status["redactions"]) == (7, 3)
        assert "budget" not in status and "budgetUsed" not in status

    def test_graphs_naming_the_gate_add_up(self) -> None:
        book = ComplianceBook()
        book.record("ns", "g1", report("a", pii=counts(1)), now=100)
        book.record("ns", "g2", report("b", pii=counts(2)), now=100)
        book.record("other", "g1", report("c", pii=counts(50)), now=100)
        status = book.gate_status("ns", "pii", ["g1", "g2"], now=100)
        assert status is not None and status["hits"] == 3

    def test_a_silent_replica_drops_out(self) -> None:
        book = ComplianceBook()
        book.record("ns", "g", report("old", pii=counts(10)), now=0)
        book.record("ns", "g", report("new", pii=counts(1)), now=FORGET_AFTER_S)
        status = book.gate_status("ns", "pii", ["g"], now=FORGET_AFTER_S + 1)
        assert status is not None and status["hits"] == 1

    def test_forgotten_graph_and_unreported_gate(self) -> None:
        book = ComplianceBook()
        book.record("ns", "g", report("a", pii=counts(1)), now=0)
        assert book.gate_status("ns", "other-gate", ["g"], now=0) is None
        book.forget("ns", "g")
        assert book.gate_status("ns", "pii", ["g"], now=0) is None


class TestBudget:
    def test_the_window_where_a_principal_spent_most_is_shown(self) -> None:
        def window(spent: float, top: float) -> dict[str, Any]:
            return {"epsilon": 2.0, "windowStart": "2026-12-06T23:00:00Z",
                    "resetAt": "2026-12-07T00:00:00Z", "principals": 3,
                    "spentEpsilon": spent, "maxSpentEpsilon": top}  # fmt: skip

        book = ComplianceBook()
        book.record("ns", "g1", report("a", dp=counts(dpAnswers=4, budget=window(2, 0.5))))
        book.record("ns", "g2", report("b", dp=counts(dpAnswers=1, budget=window(1, 1.5))))
        status = book.gate_status("ns", "dp", ["g1", "g2"])
        assert status is not None
        assert status["dpAnswers"] == 5
        assert status["budget"]["maxSpentEpsilon"] == 1.5
        assert status["budgetUsed"] == "1.5/2"


class TestMalformed:
    def test_reports_without_a_compliance_part_are_ignored(self) -> None:
        assert parse_compliance({"modules": {}}) is None
        assert parse_compliance({"compliance": {"instance": 3, "gates": {}}}) is None
        assert parse_compliance("nope") is None
        book = ComplianceBook()
        book.record("ns", "g", {"modules": {}})
        assert book.reports == {}

    def test_bad_numbers_count_as_zero(self) -> None:
        book = ComplianceBook()
        bad = {"detectorHits": {"email/email": -4, "x/y": "many"}, "redactions": True,
               "denials": 2.5, "dpAnswers": None}  # fmt: skip
        book.record("ns", "g", report("a", pii=bad))
        status = book.gate_status("ns", "pii", ["g"])
        assert status is not None
        assert (status["hits"], status["redactions"], status["denials"]) == (0, 0, 0)
