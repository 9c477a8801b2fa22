"""The Spark jobs the CLI runs: fit a model (with the popularity fallback the service needs)
and score every user. Each opens a session, reads the events, and gives back what the local
pipeline gives back, so the registry and the store take it as they are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.serving.service import fallback_model
from feedrank.settings import Settings
from feedrank.spark.data import SparkSite, site_on_spark
from feedrank.spark.session import spark_session
from feedrank.store.base import Store
from feedrank.views.site import SiteData

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KINDS = ("als", "glm", "itemknn")


def _fitter(
    kind: str,
) -> Callable[[SparkSession, SparkSite, Settings, dict[str, Any]], Recommender]:
    if kind == "als":
        from feedrank.spark.matrix import fit_als

        return fit_als
    if kind == "itemknn":
        from feedrank.spark.matrix import fit_itemknn

        return fit_itemknn
    if kind == "glm":
        from feedrank.spark.glm import fit_glm

        return lambda spark, site, settings, params: fit_glm(site, settings, params)
    raise ConfigError(f"model must be one of {list(KINDS)} with --engine spark; got '{kind}'")


def fit_on_spark(
    spark: SparkSession, site: SparkSite, settings: Settings, kind: str, params: dict[str, Any]
) -> Recommender:
    return _fitter(kind)(spark, site, settings, params)


def spark_fallback(site: SparkSite, settings: Settings) -> PopularityRecommender:
    """The popularity fallback (serving.service.fallback_model) from the events counted per
    (user, item, type, value) on the cluster: the fit weighs each row by its count, `n`."""
    from pyspark.sql import functions as F

    counted = site.events.groupBy("user_id", "item_id", "type", "value").agg(
        F.count("*").alias("n"), F.max("timestamp").alias("timestamp")
    )
    events = pl.from_arrow(counted.toArrow())
    assert isinstance(events, pl.DataFrame)
    model = fallback_model(SiteData(site.users, site.items, events.sort("timestamp")), settings)
    model.stamp(settings, site.time_span)
    return model


def train(
    store: Store,
    settings: Settings,
    kind: str,
    params: dict[str, Any],
    master: str,
    events: str | Path | None = None,
    driver_memory: str | None = None,
) -> tuple[Recommender, PopularityRecommender]:
    """A model of `kind` fitted on Spark on every event, and its fallback."""
    _fitter(kind)  # an unknown kind fails before Spark starts
    spark = spark_session(master, driver_memory)
    with site_on_spark(spark, store, events) as site:
        model = fit_on_spark(spark, site, settings, kind, params)
        return model, spark_fallback(site, settings)


def score(
    store: Store,
    model: Recommender,
    label: str,
    fallback: PopularityRecommender | None,
    k: int,
    exclude_seen: bool,
    master: str,
    events: str | Path | None = None,
    driver_memory: str | None = None,
) -> tuple[int, pl.DataFrame]:
    from feedrank.spark.score import score_on_spark

    spark = spark_session(master, driver_memory)
    with site_on_spark(spark, store, events) as site:
        return score_on_spark(spark, site, store, model, label, fallback, k, exclude_seen)
