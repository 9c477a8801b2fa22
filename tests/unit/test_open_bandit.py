"""The Open Bandit preparation: point-in-time user vectors and the GLM design, on the real log."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feedrank.evaluation.open_bandit import glm_design, item_vectors, load, user_vectors

ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "open-bandit"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"no open bandit data at {ROOT}")


def test_a_row_never_sees_its_own_click_or_later_ones() -> None:
    ob = load(ROOT, ("random",), ("men",))
    assert ob.rows.height == 10_000 and ob.affinity.shape == (10_000, 34)
    assert ob.rows["timestamp"].is_sorted()
    Y = item_vectors(ob, dim=8)
    X = user_vectors(ob, Y)
    k = int(np.flatnonzero(ob.rows["click"].to_numpy())[0])
    flipped = ob.rows.with_columns(
        click=pl.when(pl.int_range(pl.len()) == k).then(0).otherwise(pl.col("click"))
    )
    X2 = user_vectors(replace(ob, rows=flipped), Y)
    # rows up to k (k included) are unchanged; later rows of the same cell move
    np.testing.assert_allclose(X[: k + 1], X2[: k + 1])
    cell = ob.rows["cell"].to_numpy()
    later = np.flatnonzero((cell == cell[k]) & (np.arange(len(cell)) > k))
    assert later.size and not np.allclose(X[later], X2[later])


def test_glm_design_has_one_row_per_impression() -> None:
    ob = load(ROOT, ("random",), ("men",))
    D = glm_design(ob)
    assert D.shape[0] == ob.rows.height
    # each of the 11 categorical blocks holds exactly one 1 per row; then 2 numeric columns
    assert np.all(np.asarray((D[:, :-2] != 0).sum(axis=1)).ravel() == 11)
