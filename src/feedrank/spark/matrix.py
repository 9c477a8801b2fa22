"""The matrix models fitted on Spark: implicit ALS (MLlib) and item-kNN (a distributed sparse
product), each returned as the local model class with the same fitted arrays, so `recommend`,
`explain`, the registry and serving cannot tell where it was fitted.

- ALS: MLlib's implicit-feedback ALS (Hu, Koren & Volinsky, as implicit's) on the same
  confidence matrix (spark.data.weighted_pairs) and the same axes (users with a weighted event,
  every catalogue and event item, sorted). MLlib scales `regParam` by each row's number of
  interactions (ALS-WR) where implicit does not, and its solver is exact least squares where
  implicit's is conjugate gradient: the factors differ, the quality is the same (a parity test
  measures HR@10 on one split).
- item-kNN: cosine similarity by a self-join of the normalised item columns on users (the exact
  sparse product X'X, summed per item pair), each item's `k_neighbours` best kept by a window
  rank. Exact, so it equals the local model's similarities (an approximate LSH join would
  not; it was not measured here). Its cost is the sum over users of their items squared: heavy
  users dominate, and a cap on history length per user would be the first lever."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from feedrank.exceptions import ConfigError
from feedrank.models.factorization import ALSRecommender
from feedrank.models.knn import ItemKNNRecommender
from feedrank.models.matrix import IdMap
from feedrank.settings import Settings
from feedrank.spark.data import SparkSite, id_frame, weighted_pairs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def _axes(pairs: DataFrame, site: SparkSite) -> tuple[IdMap, IdMap]:
    """The local Interactions' axes: users with a weighted pair; catalogue and pair items."""
    users = pl.from_arrow(pairs.select("user_id").distinct().toArrow())["user_id"]  # type: ignore[index]
    got = pl.from_arrow(pairs.select("item_id").distinct().toArrow())["item_id"]  # type: ignore[index]
    return IdMap(users), IdMap(pl.concat([site.items["item_id"], got]))


def _indexed(spark: SparkSession, pairs: DataFrame, users: IdMap, items: IdMap) -> DataFrame:
    return pairs.join(id_frame(spark, users, "user_id"), "user_id").join(
        id_frame(spark, items, "item_id"), "item_id"
    )


def _factors(frame: DataFrame, n: int, rank: int) -> np.ndarray:
    """MLlib's (id, features) rows as an n x rank float32 array; rows it never saw are 0 (as
    implicit leaves an item without interactions)."""
    got = pl.from_arrow(frame.toArrow())
    out = np.zeros((n, rank), dtype=np.float32)
    if got.height:  # type: ignore[union-attr]
        out[got["id"].to_numpy()] = np.stack(got["features"].to_list()).astype(np.float32)  # type: ignore[index]
    return out


def fit_als(
    spark: SparkSession, site: SparkSite, settings: Settings, params: dict[str, Any]
) -> ALSRecommender:
    from pyspark.ml.recommendation import ALS

    model = ALSRecommender(**params)
    model._validate()
    model.stamp(settings, site.time_span)
    pairs = weighted_pairs(site, settings).cache()
    users, items = _axes(pairs, site)
    data = _indexed(spark, pairs, users, items)
    fitted = ALS(
        rank=int(model.factors),
        maxIter=int(model.iterations),
        regParam=float(model.regularization),
        alpha=float(model.alpha),
        implicitPrefs=True,
        seed=int(model.random_state),
        userCol="user_id_idx",
        itemCol="item_id_idx",
        ratingCol="weight",
    ).fit(data)
    pairs.unpersist()
    model.items_, model.users_ = items, users
    model.user_factors_ = _factors(fitted.userFactors, len(users), int(model.factors))
    model.item_factors_ = _factors(fitted.itemFactors, len(items), int(model.factors))
    return model


def item_similarity(spark: SparkSession, pairs: DataFrame, items: IdMap, k: int) -> sp.csr_matrix:
    """Each item's k most cosine-similar items (itself included, as implicit's all_pairs_knn)
    by the self-join of unit item columns on users; ties go to the lower item index."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    idx = pairs.join(id_frame(spark, items, "item_id"), "item_id").select(
        "user_id", F.col("item_id_idx").alias("i"), "weight"
    )
    norms = idx.groupBy("i").agg(F.sqrt(F.sum(F.col("weight") ** 2)).alias("norm"))
    unit = idx.join(norms, "i").select("user_id", "i", (F.col("weight") / F.col("norm")).alias("w"))
    a, b = unit.alias("a"), unit.alias("b")
    sims = (
        a.join(b, "user_id")
        .groupBy(F.col("a.i").alias("i"), F.col("b.i").alias("j"))
        .agg(F.sum(F.col("a.w") * F.col("b.w")).alias("s"))
        .where(F.col("s") != 0)
    )
    ranked = sims.withColumn(
        "r", F.row_number().over(Window.partitionBy("i").orderBy(F.desc("s"), F.asc("j")))
    ).where(F.col("r") <= k)
    got = pl.from_arrow(ranked.select("i", "j", "s").toArrow())
    m = sp.csr_matrix(
        (
            got["s"].to_numpy().astype(np.float32),  # type: ignore[index]
            (got["i"].to_numpy(), got["j"].to_numpy()),  # type: ignore[index]
        ),
        shape=(len(items), len(items)),
    )
    m.sort_indices()
    return m


def fit_itemknn(
    spark: SparkSession, site: SparkSite, settings: Settings, params: dict[str, Any]
) -> ItemKNNRecommender:
    model = ItemKNNRecommender(**params)
    model._validate()
    if model.weighting != "none":
        raise ConfigError(
            f"weighting must be one of ['none'] with --engine spark (cosine); got "
            f"'{model.weighting}' (tfidf and bm25 fit locally)"
        )
    model.stamp(settings, site.time_span)
    pairs = weighted_pairs(site, settings).cache()
    _, items = _axes(pairs, site)
    model.items_ = items
    model.similarity_ = item_similarity(spark, pairs, items, int(model.k_neighbours))
    pairs.unpersist()
    return model
