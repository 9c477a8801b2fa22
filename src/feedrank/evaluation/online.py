"""What served recommendations earned: impressions shown vs clicked per model and position
(seed 002's click rate normalised by what was shown), and the average engagement value per
recommendation where events carry one (watch or listening time)."""

from __future__ import annotations

import polars as pl

from feedrank.features.examples import labelled_impressions
from feedrank.settings import Settings


def served_ctr(events: pl.DataFrame, settings: Settings, tag: str = "model") -> pl.DataFrame:
    """Per model (the impression context's `tag`, e.g. "model" or "variant") and position:
    impressions, clicks, CTR, and the mean value of the engagements credited to them."""
    imps = labelled_impressions(events, settings).with_columns(
        model=pl.col("context").str.json_path_match(f"$.{tag}").fill_null("(untagged)")
    )
    return (
        imps.group_by("model", "position")
        .agg(
            impressions=pl.len(),
            clicks=pl.col("label").sum(),
            engagement_value=pl.col("engaged_value").mean(),  # of the credited engagements
        )
        .with_columns(ctr=pl.col("clicks") / pl.col("impressions"))
        .sort("model", "position")
    )
