"""The latent user-by-level term (features.affinity) and the GLM that uses it: no leakage (a
row's features come from events strictly before it), one meaning at training and serving, and
a known answer: on a site whose clicks carry a latent user-by-author term, the GLM with it
ranks held-out impressions better than without it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.evaluation.metrics import classification_metrics
from feedrank.evaluation.splits import temporal_split, time_cut
from feedrank.exceptions import ConfigError
from feedrank.features.affinity import SnapshotAffinity, asof_features, fit_affinity
from feedrank.features.history import History, exposure_types
from feedrank.models import make
from feedrank.settings import Settings

SETTINGS = Settings()


@pytest.fixture(scope="module")
def site():  # type: ignore[no-untyped-def]
    return generate_site(n_users=600, n_items=120, days=21, author_affinity=3.0, seed=0)


@pytest.fixture(scope="module")
def history(site) -> History:  # type: ignore[no-untyped-def]
    return History(site.site_data(), SETTINGS, [])


def _keys(site, n: int = 3000) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    imp = site.events.filter(pl.col("type") == "impression")
    return imp.gather(np.linspace(0, imp.height - 1, n).astype(int)).select(
        "user_id", "item_id", "timestamp"
    )


def test_features_read_only_events_before_each_row(site, history) -> None:  # type: ignore[no-untyped-def]
    exposure = exposure_types(history.types)
    aff = fit_affinity(history.events, site.items, "author", exposure, rank=3)
    keys = _keys(site)
    full = asof_features(aff, history.events, site.items, exposure, keys)
    assert full["affinity_author"].abs().sum() > 0  # something to compare
    # Everything at or after a row's time removed (its label included): the same features.
    for t in keys["timestamp"].gather([500, 1500, 2500]).to_list():
        before = history.events.filter(pl.col("timestamp") < t)
        rows = keys.with_row_index("r").filter(pl.col("timestamp") == t)
        got = asof_features(aff, before, site.items, exposure, rows.drop("r"))
        expected = full[rows["r"].to_list()]
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-12)
    # Events after every row: nothing changes either (no row may see them).
    cut = keys["timestamp"].max()
    early = asof_features(
        aff, history.events.filter(pl.col("timestamp") <= cut), site.items, exposure, keys
    )
    np.testing.assert_allclose(early.to_numpy(), full.to_numpy(), atol=1e-12)


def test_serving_reads_the_same_counts_as_training(site, history) -> None:  # type: ignore[no-untyped-def]
    exposure = exposure_types(history.types)
    aff = fit_affinity(history.events, site.items, "author", exposure, rank=3)
    at = site.end - timedelta(days=3)
    users = site.users["user_id"].head(40).to_list()
    items = site.items["item_id"].head(25).to_list()
    keys = pl.DataFrame(
        {"user_id": np.repeat(users, len(items)), "item_id": items * len(users)}
    ).with_columns(timestamp=pl.lit(at).cast(pl.Datetime("us", "UTC")))
    train_path = asof_features(aff, history.events, site.items, exposure, keys)
    snap = SnapshotAffinity(
        [aff], history.events.filter(pl.col("timestamp") < at), site.items, exposure, users
    )
    levels = {"author": keys.join(site.items, on="item_id", maintain_order="left")["author"]}
    serve_path = snap.pairs(keys["user_id"].to_list(), levels)
    np.testing.assert_allclose(serve_path.to_numpy(), train_path.to_numpy(), atol=1e-9)


def test_glm_with_affinity_ranks_held_out_impressions_better(site) -> None:  # type: ignore[no-untyped-def]
    """Known answer (fixed seed, deterministic fits): measured AUC 0.850 without the term and
    0.882 with it on this site (truth 0.936); the test asks for half that gain."""
    data = site.site_data()
    split = temporal_split(data, SETTINGS, time_cut(data, None, 7.0))
    ex = split.examples
    y = ex["label"].to_numpy()
    plain = make("glm").fit(split.train, SETTINGS)
    latent = make("glm", affinity=["author"]).fit(split.train, SETTINGS)
    auc_plain = classification_metrics(y, plain.predict_proba(split.data, ex))["roc_auc"]
    auc_latent = classification_metrics(y, latent.predict_proba(split.data, ex))["roc_auc"]
    assert auc_latent >= auc_plain + 0.015, (auc_plain, auc_latent)
    table = latent.coef_table()
    row = table.filter(pl.col("feature") == "affinity_author").row(0, named=True)
    assert row["coefficient"] > 0 and row["p_value"] < 1e-6  # a named, significant row


def test_affinity_names_item_attributes(site) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="affinity must name item attributes"):
        make("glm", affinity=["colour"]).fit(site.site_data(), SETTINGS)
