"""One SparkSession (local[2]) for the whole test session: start-up is the cost. Every Spark test
is marked `spark` (`pytest -m spark` runs them alone) and grouped on one xdist worker, so a
parallel run starts one JVM, not one per worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from feedrank.datasets.demo import generate_site
from feedrank.settings import Settings
from feedrank.views.site import SiteData

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from feedrank.spark.data import SparkSite


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/spark/" in str(item.fspath):
            item.add_marker(pytest.mark.spark)
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from feedrank.spark.session import SparkUnavailable, spark_session

    try:
        session = spark_session("local[2]")
    except SparkUnavailable as exc:  # says what to install: pyspark, or Java 17/21
        pytest.skip(f"no Spark here: {exc}")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def data() -> SiteData:
    """A small demo site (the one the unit tests use, smaller): Spark's per-step cost, not the
    data, is what these tests pay for."""
    from feedrank.schema import validate_events, validate_items, validate_users

    site = generate_site(n_users=150, n_items=60, days=8, seed=7)
    return SiteData(
        validate_users(site.users).good,
        validate_items(site.items).good,
        validate_events(site.events, Settings()).good.sort("timestamp"),
    )


@pytest.fixture(scope="session")
def site(spark: SparkSession, data: SiteData) -> SparkSite:
    from feedrank.spark.data import SparkSite

    return SparkSite(spark.createDataFrame(data.events.to_arrow()).cache(), data.users, data.items)
