"""Batch scoring on Spark: top-K for every user, written back as one new generation.

Spark spreads the users, not the rules: users are hashed into buckets, each bucket's events and
profiles meet on one executor (a cogroup), and there the local service — the same fitted model,
fallbacks and exclusion of seen items — scores them over the catalogue the driver read from
the store. Every user's answer depends only on their own history and the catalogue, so it is
the local answer whatever the bucket (a parity test checks it row for row). The driver then
writes the rows as one generation and activates it atomically, as `feedrank score` does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.pipeline.score import every_user
from feedrank.serving.service import SERVED_SCHEMA, RecommendationService
from feedrank.settings import Settings
from feedrank.spark.data import SparkSite
from feedrank.store.base import Store
from feedrank.views.catalogue import Catalogue
from feedrank.views.view import View, store_catalogue

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BUCKET = "__bucket"
USERS_PER_BUCKET = 50_000
SCHEMA = "user_id string, rank int, item_id string, score double, source string"
ARROW_SCHEMA = pa.schema(  # SCHEMA as Arrow has it (Polars writes large strings)
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float64()),
        ("source", pa.string()),
    ]
)


class BucketView(View):
    """The view of one bucket of users: their events and profiles, the shared catalogue."""

    def __init__(
        self, settings: Settings, catalogue: Catalogue, events: pl.DataFrame, users: pl.DataFrame
    ) -> None:
        self.settings, self.catalogue, self.at = settings, catalogue, catalogue.as_of
        self._events = events.filter(pl.col("timestamp") < self.at).sort(
            "timestamp", maintain_order=True
        )
        self._users = users

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self._events.filter(pl.col("user_id").is_in(list(user_ids)))

    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self._users.filter(pl.col("user_id").is_in(list(user_ids)))

    def active_users(self) -> list[str]:
        return sorted(self._events["user_id"].unique().to_list())


def _dumped(model: Recommender | None) -> tuple[str, dict[str, Any], dict[str, np.ndarray]] | None:
    if model is None:
        return None
    meta, arrays = model.dump()
    return model.kind, meta, arrays


def _restored(dumped: tuple[str, dict[str, Any], dict[str, np.ndarray]] | None) -> Any:
    if dumped is None:
        return None
    from feedrank.models import model_class

    kind, meta, arrays = dumped
    return model_class(kind).restore(meta, arrays)


def recommend_on_spark(
    spark: SparkSession,
    site: SparkSite,
    store: Store,
    model: Recommender,
    fallback: PopularityRecommender | None = None,
    k: int = 100,
    exclude_seen: bool = True,
) -> pl.DataFrame:
    """Every user's top k (SERVED_SCHEMA), as `pipeline.score.score_all` computes them."""
    from pyspark.sql import functions as F

    catalogue = store_catalogue(store)
    users = every_user(store)
    n_buckets = max(2 * spark.sparkContext.defaultParallelism, len(users) // USERS_PER_BUCKET + 1)
    # What every bucket needs, shipped once per executor.
    shared = spark.sparkContext.broadcast(
        (
            _dumped(model),
            _dumped(fallback),
            catalogue.items,
            catalogue.counts,
            catalogue.as_of,
            store.users(),
        )
    )

    def score_bucket(events: pa.Table, members: pa.Table) -> pa.Table:
        dumped, fb, items, counts, as_of, profiles = shared.value
        fitted = _restored(dumped)
        ids = sorted(pl.from_arrow(members)["user_id"].to_list())  # type: ignore[index]
        view = BucketView(
            fitted.settings_,
            Catalogue(items, counts, as_of),
            pl.from_arrow(events).drop(BUCKET),  # type: ignore[union-attr]
            profiles.filter(pl.col("user_id").is_in(ids)),
        )
        recs = RecommendationService(fitted, view, _restored(fb)).recommend(ids, k, exclude_seen)
        return recs.select(list(SERVED_SCHEMA)).to_arrow().cast(ARROW_SCHEMA)

    bucket = (F.abs(F.xxhash64("user_id")) % n_buckets).alias(BUCKET)
    members = spark.createDataFrame(pl.DataFrame({"user_id": users}).to_arrow()).select(
        "user_id", bucket
    )
    events = site.events.select("*", bucket)
    out = events.groupBy(BUCKET).cogroup(members.groupBy(BUCKET)).applyInArrow(score_bucket, SCHEMA)
    recs = pl.from_arrow(out.toArrow())
    assert isinstance(recs, pl.DataFrame)
    shared.unpersist()
    return recs.cast(SERVED_SCHEMA).sort("user_id", "rank")  # type: ignore[arg-type]


def score_on_spark(
    spark: SparkSession,
    site: SparkSite,
    store: Store,
    model: Recommender,
    label: str,
    fallback: PopularityRecommender | None = None,
    k: int = 100,
    exclude_seen: bool = True,
) -> tuple[int, pl.DataFrame]:
    """The new generation's id and its rows (pipeline.score.score_all's contract)."""
    recs = recommend_on_spark(spark, site, store, model, fallback, k, exclude_seen)
    return store.write_generation(recs, label), recs
