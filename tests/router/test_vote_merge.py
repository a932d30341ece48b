"""The ``vote`` ensemble merge as docs/architecture.md ("Ensemble merges") states it: vote shares
per class, and a tie broken by the steps' mean score for the tied classes (equal or non-positive
scores: equal shares, the lowest class index wins), one row at a time."""

from __future__ import annotations

import numpy as np
import pytest

from modulemesh.api.graph import MergeStrategy
from modulemesh.router.errors import RouteError
from modulemesh.router.tensors import merge


def vote(*rows: list[list[float]]) -> np.ndarray:
    """Merge one ``probabilities`` output per step (each a list of rows)."""
    steps = [(f"s{i}", {"probabilities": np.asarray(r, np.float32)}) for i, r in enumerate(rows)]
    out = merge(MergeStrategy.VOTE, steps, "ensemble 'voted'")["probabilities"]
    assert out.dtype == np.float32
    return out


def test_a_majority_gives_vote_shares() -> None:
    out = vote([[0.7, 0.2, 0.1]], [[0.6, 0.3, 0.1]], [[0.1, 0.3, 0.6]])
    np.testing.assert_allclose(out, [[2 / 3, 0.0, 1 / 3]], rtol=1e-6)


def test_agreement_is_a_share_of_one() -> None:
    np.testing.assert_allclose(vote([[0.1, 0.9]], [[0.3, 0.7]]), [[0.0, 1.0]])


def test_the_documented_two_step_tie_goes_to_the_more_confident_class() -> None:
    # The example in docs/architecture.md: mean scores 0.55 and 0.35 split the tied votes.
    out = vote([[0.7, 0.2, 0.1]], [[0.4, 0.5, 0.1]])
    np.testing.assert_allclose(out, [[0.55 / 0.9, 0.35 / 0.9, 0.0]], rtol=1e-5)
    assert int(np.argmax(out)) == 0 and out.max() < 0.8


def test_the_tie_break_follows_the_scores_not_the_class_order() -> None:
    out = vote([[0.7, 0.2, 0.1]], [[0.1, 0.7, 0.2]])  # mean scores 0.40 and 0.45
    assert int(np.argmax(out)) == 1
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-6)


def test_a_three_way_tie_keeps_its_total_and_splits_by_score() -> None:
    out = vote([[0.5, 0.3, 0.2]], [[0.2, 0.5, 0.3]], [[0.1, 0.3, 0.6]])
    means = np.array([0.8, 1.1, 1.1]) / 3
    np.testing.assert_allclose(out, [means / means.sum()], rtol=1e-5)


def test_only_the_tied_classes_are_resplit() -> None:
    # Votes 0, 0, 1, 1, 2: classes 0 and 1 tie at 0.4 each, class 2 keeps its 0.2.
    rows = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]]
    out = vote(*([r] for r in rows))
    mean0, mean1 = 1.7 / 5, 2.1 / 5
    np.testing.assert_allclose(
        out, [[0.8 * mean0 / (mean0 + mean1), 0.8 * mean1 / (mean0 + mean1), 0.2]], rtol=1e-5
    )


def test_equal_scores_leave_equal_shares_and_the_lowest_index_wins() -> None:
    out = vote([[0.6, 0.4]], [[0.4, 0.6]])
    np.testing.assert_allclose(out, [[0.5, 0.5]])
    assert int(np.argmax(out)) == 0


def test_logits_tie_keeps_equal_shares() -> None:
    out = vote([[1.0, -2.0, 0.0]], [[-3.0, 2.0, 0.0]])
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]])


def test_each_row_is_voted_on_its_own() -> None:
    out = vote([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]], [[0.4, 0.5, 0.1], [0.2, 0.1, 0.7]])
    np.testing.assert_allclose(out, [[0.55 / 0.9, 0.35 / 0.9, 0.0], [0.0, 0.0, 1.0]], rtol=1e-5)


def test_outputs_that_do_not_stack_are_a_502_naming_the_node() -> None:
    with pytest.raises(RouteError, match="ensemble 'voted': cannot vote-merge output") as info:
        vote([[0.5, 0.5]], [[0.2, 0.3, 0.5]])
    assert info.value.status == 502
