"""The encoder's two forms of one design matrix: `transform` (scipy CSR, for serving's pieces)
and `design` (tabmat's split form, what the GLM is fitted on) must be the same matrix, with
unseen levels, a missing level column, missing numbers and crosses."""

import numpy as np
import polars as pl

from feedrank.features.encoder import Encoder


def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(3)
    n = 400
    train = pl.DataFrame(
        {
            "gender": rng.choice(["f", "m", None], n).tolist(),
            "content_type": rng.choice(
                ["video", "image", "text", "poll"], n, p=[0.4, 0.3, 0.29, 0.01]
            ),
            "user_n_click": rng.poisson(3, n).astype(float),
            "item_age_days": rng.uniform(0, 30, n),
        }
    )
    later = pl.DataFrame(
        {
            "gender": ["f", "x", None],  # x: never seen
            "content_type": ["audio", "video", "poll"],  # audio: never seen; poll: rare
            "user_n_click": [1.0, None, 1e6],
            "item_age_days": [float("nan"), 2.0, 40.0],
        }
    )
    return train, later


def test_design_is_the_transformed_matrix() -> None:
    train, later = frames()
    enc = Encoder(max_levels=50, min_count=5).fit(
        train,
        ["gender", "content_type"],
        ["user_n_click", "item_age_days"],
        [("gender", "content_type")],
    )
    for frame in (train, later):
        want = enc.transform(frame).toarray()
        got = enc.design(frame).toarray()
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
