"""best_of (the top-k of every ranking path) against an exhaustive oracle: a stable sort of
whole rows, on scores with many ties, -inf and k from 1 to n."""

import numpy as np

from feedrank.models.base import best_of


def oracle(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=1)


def test_best_of_equals_a_stable_sort_of_whole_rows() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 17):
        # few distinct values: ties across the k-th place in most rows
        scores = rng.integers(0, 4, (200, n)).astype(np.float32)
        scores[rng.random(scores.shape) < 0.2] = -np.inf
        for k in range(1, n + 1):
            idx, vals = best_of(scores, k)
            want_idx, want_vals = oracle(scores, k)
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(vals, want_vals)


def test_best_of_on_distinct_scores_takes_the_k_largest_in_order() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    idx, vals = best_of(scores, 2)
    assert idx.tolist() == [[1, 3], [0, 1]]
    assert vals.tolist() == [[0.9, 0.7], [4.0, 3.0]]


def test_best_of_on_wide_rows_with_ties_and_no_signal() -> None:
    """Rows wide enough for the floor of chunk maxima, in its three regimes: distinct scores,
    heavy ties at the floor, and rows that are mostly -inf."""
    rng = np.random.default_rng(11)
    distinct = rng.standard_normal((50, 3000)).astype(np.float32)
    tied = rng.integers(0, 3, (50, 3000)).astype(np.float64)
    sparse = np.full((50, 3000), -np.inf)
    sparse[rng.random(sparse.shape) < 0.002] = 1.0
    for scores in (distinct, tied, sparse):
        for k in (1, 10, 100):
            idx, vals = best_of(scores, k)
            want_idx, want_vals = oracle(scores, k)
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(vals, want_vals)
