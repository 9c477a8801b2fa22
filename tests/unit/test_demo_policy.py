"""The demo site's logging policies and its truth as an oracle: the default (recency) site is
unchanged, the uniform policy draws uniformly and logs its exact propensities, and
click_probability prices any hypothetical impression with the same code as impression_truth."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import kstest

from feedrank.datasets.demo import AGE_BANDS, DemoSite, generate_site
from feedrank.exceptions import ConfigError
from feedrank.io import import_frame
from feedrank.schema import validate_events
from feedrank.settings import Settings
from feedrank.store.sqlite import SQLiteStore

TINY = {"n_users": 30, "n_items": 40, "days": 3, "seed": 7}
# Digests of generate_site(**TINY) taken before logging_policy existed: the default must not move.
TINY_EVENTS_CSV_SHA256 = "aa81d64350d289dadadd013e2f4e81b9ad20117f993d041e96a8c9e6a309b089"
TINY_P_CLICK_SUM = 21.134549550237118


@pytest.fixture(scope="module")
def uniform() -> DemoSite:
    return generate_site(n_users=150, n_items=60, days=6, seed=2, logging_policy="uniform")


def _impressions(site: DemoSite) -> pl.DataFrame:
    return site.events.filter(pl.col("type") == "impression")


def _creation_rank(site: DemoSite, imp: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(index of the shown item in creation order, number of items created before the session);
    the session starts 1 s before its impressions."""
    created = site.items["created_at"].dt.epoch("us").to_numpy()
    index = dict(zip(site.items["item_id"], range(site.items.height), strict=True))
    session = (imp["timestamp"] - timedelta(seconds=1)).dt.epoch("us").to_numpy()
    n_elig = np.searchsorted(created, session, side="left")
    return np.array([index[i] for i in imp["item_id"]]), n_elig


# -- the default stays what it was ---------------------------------------------------------------
def test_the_default_recency_policy_is_unchanged() -> None:
    default, explicit = generate_site(**TINY), generate_site(**TINY, logging_policy="recency")
    assert_frame_equal(default.events, explicit.events)
    assert default.logging_policy == "recency"
    digest = hashlib.sha256(default.events.write_csv().encode()).hexdigest()
    assert digest == TINY_EVENTS_CSV_SHA256
    assert default.events["context"].null_count() == default.events.height
    assert default.impression_truth()["p_click"].sum() == pytest.approx(TINY_P_CLICK_SUM, 1e-12)


def test_an_unknown_logging_policy_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"one of \['recency', 'uniform'\]; got 'thompson'"):
        generate_site(n_users=5, n_items=10, logging_policy="thompson")


# -- the uniform policy --------------------------------------------------------------------------
def test_uniform_impressions_carry_their_exact_propensity(uniform: DemoSite) -> None:
    imp = _impressions(uniform)
    propensity = np.array([json.loads(c)["propensity"] for c in imp["context"]])
    index, n_elig = _creation_rank(uniform, imp)
    assert np.array_equal(propensity, 1.0 / n_elig)  # exact, through the JSON text
    assert (index < n_elig).all()  # only items that existed before the session
    other = uniform.events.filter(pl.col("type") != "impression")
    assert other["context"].null_count() == other.height
    slates = imp.group_by("user_id", "timestamp").agg(pl.col("item_id").n_unique(), pl.len())
    assert (slates["item_id"] == 8).all() and (slates["len"] == 8).all()
    checked = validate_events(uniform.events, Settings())  # the store's validation keeps them
    assert checked.n_bad == 0
    assert_frame_equal(checked.good.drop("context"), uniform.events.drop("context"))
    kept = checked.good.filter(pl.col("type") == "impression")["context"]
    assert kept.equals(imp["context"])  # the very same JSON text


def test_uniform_propensities_come_back_from_the_store(
    uniform: DemoSite, mem_store: SQLiteStore
) -> None:
    for kind, frame in (("users", uniform.users), ("items", uniform.items)):
        import_frame(mem_store, kind, frame, strict=True)
    import_frame(mem_store, "interactions", uniform.events, strict=True)
    loaded = mem_store.events().filter(pl.col("type") == "impression")
    got = loaded.select(
        "event_id", pl.col("context").str.json_path_match("$.propensity").cast(pl.Float64)
    )
    want = _impressions(uniform).select(
        "event_id", pl.col("context").str.json_path_match("$.propensity").cast(pl.Float64)
    )
    assert_frame_equal(got.sort("event_id"), want.sort("event_id"), check_exact=True)


def test_uniform_slates_are_uniform_over_the_catalogue_at_every_position(
    uniform: DemoSite,
) -> None:
    """A randomised probability integral transform: (creation index + U) / n_eligible is
    Uniform(0, 1) exactly when every eligible item is equally likely. Recency fails it."""
    rng = np.random.default_rng(0)

    def pit(site: DemoSite) -> tuple[np.ndarray, np.ndarray]:
        imp = _impressions(site)
        index, n_elig = _creation_rank(site, imp)
        return (index + rng.random(len(index))) / n_elig, imp["position"].to_numpy()

    u, position = pit(uniform)
    assert kstest(u, "uniform").pvalue > 1e-3
    for p in range(1, 9):  # position is independent of the item
        at = u[position == p]
        assert abs(at.mean() - 0.5) < 4 * math.sqrt(1 / 12 / len(at)), p
    recency, _ = pit(generate_site(n_users=150, n_items=60, days=6, seed=2))
    assert kstest(recency, "uniform").pvalue < 1e-6
    assert recency.mean() > 0.55  # recent (late-created) items are favoured


# -- click_probability: the truth of hypothetical impressions -------------------------------------
def test_click_probability_of_the_log_is_impression_truth(uniform: DemoSite) -> None:
    imp = _impressions(uniform)
    p = uniform.click_probability(imp)
    truth = imp.select("event_id").join(
        uniform.impression_truth().select("event_id", "p_click"), on="event_id", how="left"
    )
    assert np.abs(p - truth["p_click"].to_numpy()).max() < 1e-12
    reversed_rows = uniform.click_probability(imp.reverse())  # rows keep their order
    assert np.array_equal(reversed_rows, p[::-1])


def test_click_probability_by_hand_against_the_logit(uniform: DemoSite) -> None:
    t = uniform.truth
    user = uniform.users.row(0, named=True)
    item = uniform.items.row(3, named=True)
    when = uniform.end - timedelta(hours=1)
    hypothetical = pl.DataFrame(
        {"user_id": [user["user_id"]], "item_id": [item["item_id"]], "position": [5],
         "timestamp": [when]}
    )  # fmt: skip
    band = AGE_BANDS[sum(user["age"] >= lower for lower in (18, 25, 35, 45, 55, 65))]
    taste = t.user_taste.filter(user_id=user["user_id"])[item["content_type"]][0]
    z = t.logit(
        gender=user["gender"],
        content_type=item["content_type"],
        age_band=band,
        lang=item["lang"],
        taste=taste,
        position=5,
        item_age_days=(when - item["created_at"]).total_seconds() / 86_400,
        author=item["author"],
    )[0]
    (p,) = uniform.click_probability(hypothetical)
    assert p == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-12)


def test_another_policy_moving_items_only_changes_the_position_term(uniform: DemoSite) -> None:
    imp = _impressions(uniform)
    moved = imp.with_columns(position=9 - pl.col("position"))  # the slate shown upside down
    before, after = uniform.click_probability(imp), uniform.click_probability(moved)
    effect = uniform.truth.position_effect
    shift = np.array([effect[9 - p] - effect[p] for p in imp["position"]])
    logit = np.log(after / (1 - after)) - np.log(before / (1 - before))
    assert np.allclose(logit, shift, atol=1e-9)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"user_id": "nobody"}, r"user_id must be one of the site's users; got \['nobody'\]"),
        ({"item_id": "p99999"}, r"item_id must be one of the site's items; got \['p99999'\]"),
        ({"position": 9}, r"position must be one of \[1, 2, 3, 4, 5, 6, 7, 8\]; got \[9\]"),
        ({"position": None}, r"position must be one of .*; got \[None\]"),
        ({"timestamp": None}, "needs a timestamp"),
    ],
)
def test_click_probability_refuses_what_the_truth_does_not_cover(
    uniform: DemoSite, change: dict[str, object], fragment: str
) -> None:
    imp = _impressions(uniform).head(3)
    bad = imp.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(v, dtype=imp.schema[k]))
        .otherwise(pl.col(k))
        .alias(k)
        for k, v in change.items()
    )
    with pytest.raises(ValueError, match=fragment):
        uniform.click_probability(bad)


def test_click_probability_refuses_missing_columns_and_items_not_yet_created(
    uniform: DemoSite,
) -> None:
    imp = _impressions(uniform).head(2)
    with pytest.raises(ValueError, match=r"columns \['user_id', 'item_id', 'position'"):
        uniform.click_probability(imp.drop("position"))
    newest = uniform.items.row(-1, named=True)
    early = imp.with_columns(
        item_id=pl.lit(newest["item_id"]), timestamp=pl.lit(newest["created_at"] - timedelta(1))
    )
    with pytest.raises(ValueError, match=f"item '{newest['item_id']}' created"):
        uniform.click_probability(early)
