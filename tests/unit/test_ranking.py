"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from feedrank.evaluation.ranking import (
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mean_metric,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# user 0: relevant at ranks 2 and 4 (2 relevant in all); user 1: nothing found (1 relevant);
# user 2: relevant at rank 1 (3 relevant in all)
HITS = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)
N_REL = np.array([2, 1, 3])
L3 = 1 / math.log2(3)  # discount of rank 2


def test_hit_rate_precision_recall() -> None:
    np.testing.assert_allclose(hit_rate_at_k(HITS, 3), [1, 0, 1])
    np.testing.assert_allclose(hit_rate_at_k(HITS, 1), [0, 0, 1])
    np.testing.assert_allclose(precision_at_k(HITS, 3), [1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(precision_at_k(HITS, 4), [2 / 4, 0, 1 / 4])
    np.testing.assert_allclose(recall_at_k(HITS, N_REL, 3), [1 / 2, 0, 1 / 3])
    np.testing.assert_allclose(recall_at_k(HITS, N_REL, 4), [1, 0, 1 / 3])


def test_ndcg_by_hand() -> None:
    got = ndcg_at_k(HITS, N_REL, 3)
    # user 0: DCG = 1/log2(3); ideal with 2 relevant = 1 + 1/log2(3)
    # user 2: DCG = 1; ideal with 3 relevant = 1 + 1/log2(3) + 1/2
    np.testing.assert_allclose(got, [L3 / (1 + L3), 0.0, 1 / (1 + L3 + 0.5)])
    # k = 4: user 0 gets rank 4 too (discount 1/log2(5)), ideal still two items
    assert ndcg_at_k(HITS, N_REL, 4)[0] == pytest.approx((L3 + 1 / math.log2(5)) / (1 + L3))


def test_map_and_mrr_by_hand() -> None:
    # user 0 @3: relevant at rank 2 with precision 1/2, divided by min(2, 3) = 2
    np.testing.assert_allclose(map_at_k(HITS, N_REL, 3), [0.25, 0.0, 1 / 3])
    # user 0 @4: (1/2 + 2/4) / 2
    assert map_at_k(HITS, N_REL, 4)[0] == pytest.approx(0.5)
    np.testing.assert_allclose(mrr(HITS), [0.5, 0.0, 1.0])


def test_users_with_nothing_relevant_are_skipped_in_means() -> None:
    r = recall_at_k(HITS, [2, 0, 3], 3)
    assert math.isnan(r[1])
    assert mean_metric(r) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert math.isnan(mean_metric(np.array([np.nan])))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="2-d"):
        hit_rate_at_k(np.array([True, False]), 1)
    with pytest.raises(ValueError, match="one count per user"):
        recall_at_k(HITS, [1, 2], 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_at_k(HITS, 0)


def test_hit_matrix_from_frames() -> None:
    recs = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "rank": [1, 2, 3, 1, 2],
            "item_id": ["x", "y", "z", "y", "x"],
        }
    )
    relevant = pl.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["z", "x", "x"]})
    got = hit_matrix(recs, relevant, ["c", "b", "a"], depth=3)
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 1, 0], [0, 0, 1]])
