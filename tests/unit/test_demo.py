"""The synthetic site: deterministic, well-formed, causally ordered, and its clicks really follow
the documented true model."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import chi2

from feedrank.datasets.demo import (
    AGE_BANDS,
    CONTENT_TYPES,
    COUNTRIES,
    DEVICES,
    GENDERS,
    LANGS,
    DemoSite,
    generate_site,
)
from feedrank.exceptions import ConfigError
from feedrank.schema import EVENT_COLUMNS, TS, validate_events
from feedrank.settings import Settings

SMALL = {"n_users": 120, "n_items": 60, "days": 5}
LANG_NAMES = {"python": "Python", "java": "Java", "javascript": "JavaScript", "go": "Go"}


@pytest.fixture(scope="module")
def site() -> DemoSite:
    # ~5,000 sessions, ~40,000 impressions: enough for calibration checks, well under a second.
    return generate_site(n_users=600, n_items=150, days=14, seed=7)


@pytest.fixture(scope="module")
def imp(site: DemoSite) -> pl.DataFrame:
    return site.impression_truth()


def _band(age: int) -> str:
    for label, upper in zip(AGE_BANDS, (18, 25, 35, 45, 55, 65), strict=False):
        if age < upper:
            return label
    return "65+"


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_the_same_site() -> None:
    a, b = generate_site(**SMALL, seed=3), generate_site(**SMALL, seed=3)
    assert_frame_equal(a.users, b.users)
    assert_frame_equal(a.items, b.items)
    assert_frame_equal(a.events, b.events)
    assert_frame_equal(a.truth.user_taste, b.truth.user_taste)
    assert a.truth.author_quality == b.truth.author_quality
    assert (a.start, a.end) == (b.start, b.end)


def test_different_seeds_give_different_sites() -> None:
    a, b = generate_site(**SMALL, seed=3), generate_site(**SMALL, seed=4)
    assert not a.users.equals(b.users)
    assert not a.items.equals(b.items)
    assert not a.events.equals(b.events)
    assert a.truth.author_quality != b.truth.author_quality


# -- schema --------------------------------------------------------------------------------------


def test_users_schema_and_values() -> None:
    s = generate_site(n_users=5000, n_items=20, days=1, seed=1)
    u = s.users
    assert u.schema == pl.Schema(
        {"user_id": pl.String, "age": pl.Int64, "gender": pl.String, "country": pl.String}
    )
    assert u["user_id"].to_list()[:2] == ["u00001", "u00002"]
    assert u["user_id"].is_unique().all()
    assert u["age"].min() >= 16 and u["age"].max() <= 75  # type: ignore[operator]
    assert set(u["gender"]) == set(GENDERS)
    assert set(u["country"]) == set(COUNTRIES)
    nonbinary = (u["gender"] == "nonbinary").mean()
    assert 0.02 < nonbinary < 0.06  # type: ignore[operator]
    shares = u["country"].value_counts(normalize=True)["proportion"]
    assert shares.max() > 2 * shares.min()  # type: ignore[operator]
    bands = {_band(a) for a in u["age"]}
    assert bands == set(AGE_BANDS)


def test_items_schema_and_titles(site: DemoSite) -> None:
    it = site.items
    assert it.schema == pl.Schema(
        {
            "item_id": pl.String,
            "created_at": TS,
            "content_type": pl.String,
            "lang": pl.String,
            "author": pl.String,
            "title": pl.String,
        }
    )
    assert it["item_id"][0] == "p00001" and it["item_id"].is_unique().all()
    assert it["created_at"].is_sorted()
    assert it["created_at"].min() >= site.start - timedelta(days=14)  # type: ignore[operator]
    assert it["created_at"].max() < site.end  # type: ignore[operator]
    assert (it["created_at"] < site.start).sum() >= 8  # a catalogue at the start
    assert set(it["content_type"]) == set(CONTENT_TYPES)
    assert set(it["lang"]) == set(LANGS)
    assert it["author"].str.contains(r"^a\d{3}$").all()
    assert set(it["author"]) <= set(site.truth.author_quality)
    for lang, title in it.select("lang", "title").iter_rows():
        assert LANG_NAMES.get(lang, "Rust") in title, (lang, title)


def test_events_schema_and_values(site: DemoSite) -> None:
    ev = site.events
    assert dict(ev.schema) == EVENT_COLUMNS
    assert ev["event_id"].is_unique().all() and ev["event_id"].null_count() == 0
    assert ev["timestamp"].is_sorted()
    assert ev["timestamp"].min() >= site.start and ev["timestamp"].max() < site.end  # type: ignore[operator]
    assert set(ev["type"]) == {
        "login",
        "impression",
        "click",
        "like",
        "comment",
        "share",
        "logout",
    }
    assert set(ev["device"]) == set(DEVICES)
    itemless = ev["type"].is_in(["login", "logout"])
    assert ((ev["item_id"] == "") == itemless).all()
    is_imp = ev["type"] == "impression"
    assert (ev["position"].is_not_null() == is_imp).all()
    assert ev["position"].min() == 1 and ev["position"].max() == 8
    assert set(ev["user_id"]) <= set(site.users["user_id"])
    assert set(ev.filter(~itemless)["item_id"]) <= set(site.items["item_id"])


def test_events_are_already_canonical(site: DemoSite) -> None:
    out = validate_events(site.events, Settings())
    assert out.n_bad == 0
    assert_frame_equal(out.good, site.events)


def test_truth_is_complete_and_documented_shape(site: DemoSite) -> None:
    t = site.truth
    assert set(t.gender_content) == {(g, c) for g in GENDERS for c in CONTENT_TYPES}
    assert set(t.ageband_lang) == {(b, lg) for b in AGE_BANDS for lg in LANGS}
    assert t.gender_content["female", "article"] == 0 and t.ageband_lang["<18", "python"] == 0
    assert max(abs(v) for v in [*t.gender_content.values(), *t.ageband_lang.values()]) <= 0.8
    pos = [t.position_effect[p] for p in range(1, 9)]
    assert pos[0] == 0 and all(a > b for a, b in itertools.pairwise(pos))
    assert pos[-1] == pytest.approx(-1.0)
    assert t.freshness_coef < 0 < t.taste_coef
    taste = t.user_taste
    assert taste.columns == ["user_id", *CONTENT_TYPES]
    assert taste["user_id"].equals(site.users["user_id"])
    assert np.allclose(taste.select(CONTENT_TYPES).sum_horizontal().to_numpy(), 1.0)


def test_logit_matches_the_formula(site: DemoSite) -> None:
    t = site.truth
    q = t.author_quality["a001"]
    z = t.logit(
        gender="male",
        content_type="video",
        age_band="65+",
        lang="rust",
        taste=0.5,
        position=8,
        item_age_days=math.e - 1,
        author="a001",
    )
    assert z[0] == pytest.approx(t.intercept + 0.4 - 0.8 + 0.5 * t.taste_coef - 1.0 - 0.3 + q)
    with pytest.raises(ValueError, match="gender must be one of"):
        t.logit(
            gender="x",
            content_type="video",
            age_band="65+",
            lang="rust",
            taste=0.5,
            position=1,
            item_age_days=0,
            author="a001",
        )


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ConfigError, match="n_items must be >= slate_size"):
        generate_site(n_users=5, n_items=4, slate_size=8)
    with pytest.raises(ConfigError, match="sessions_per_day must be > 0"):
        generate_site(n_users=5, sessions_per_day=0)


def test_naive_start_means_utc() -> None:
    s = generate_site(n_users=10, n_items=10, days=1, start=datetime(2026, 3, 1))
    assert s.start == datetime(2026, 3, 1, tzinfo=UTC)


# -- causal order ----------------------------------------------------------------------------------


def test_items_exist_before_they_are_shown_or_engaged(site: DemoSite) -> None:
    ev = site.events.filter(pl.col("item_id") != "").join(
        site.items.select("item_id", "created_at"), on="item_id", how="left"
    )
    assert ev["created_at"].null_count() == 0
    assert (ev["created_at"] < ev["timestamp"]).all()


def test_sessions_are_login_slate_logout(site: DemoSite) -> None:
    ev = site.events
    counts = ev["type"].value_counts()
    n = dict(counts.iter_rows())
    assert n["login"] == n["logout"] and n["impression"] == 8 * n["login"]
    slates = (
        ev.filter(pl.col("type") == "impression")
        .group_by("user_id", "timestamp")
        .agg(
            n=pl.len(),
            items=pl.col("item_id").n_unique(),
            pos=pl.col("position").sort(),
            devices=pl.col("device").n_unique(),
        )
    )
    assert (slates["n"] == 8).all() and (slates["items"] == 8).all()
    assert slates["pos"].to_list()[0] == list(range(1, 9))
    assert (slates["pos"].list.eval(pl.element() == pl.int_range(1, 9)).list.all()).all()
    assert (slates["devices"] == 1).all()
    # per user, events alternate login ... logout with nothing outside a session
    depth = (
        ev.sort("user_id", "timestamp", maintain_order=True)
        .with_columns(
            step=pl.when(pl.col("type") == "login")
            .then(1)
            .when(pl.col("type") == "logout")
            .then(-1)
            .otherwise(0)
        )
        .with_columns(depth=pl.col("step").cum_sum().over("user_id"))
    )
    inside = depth.filter(~pl.col("type").is_in(["login", "logout"]))
    assert (inside["depth"] == 1).all()
    assert depth["depth"].is_in([0, 1]).all()


def test_clicks_follow_their_impression_within_10_minutes(site: DemoSite) -> None:
    imps = site.events.filter(pl.col("type") == "impression").select(
        "user_id", "item_id", pl.col("timestamp").alias("imp_ts")
    )
    for kind, window in (("click", 10), ("like", 30), ("comment", 30), ("share", 30)):
        ev = site.events.filter(pl.col("type") == kind).select("user_id", "item_id", "timestamp")
        assert ev.height > 0, kind
        matched = ev.join_asof(
            imps.sort("imp_ts"),
            left_on="timestamp",
            right_on="imp_ts",
            by=["user_id", "item_id"],
            strategy="backward",
            check_sortedness=False,
        )
        gap = matched["timestamp"] - matched["imp_ts"]
        assert matched["imp_ts"].null_count() == 0, kind
        assert (gap > timedelta(0)).all() and (gap <= timedelta(minutes=window)).all(), kind


def test_engagements_follow_a_click(site: DemoSite) -> None:
    clicks = site.events.filter(pl.col("type") == "click").select(
        "user_id", "item_id", pl.col("timestamp").alias("click_ts")
    )
    follow = site.events.filter(pl.col("type").is_in(["like", "comment", "share"]))
    matched = follow.join_asof(
        clicks.sort("click_ts"),
        left_on="timestamp",
        right_on="click_ts",
        by=["user_id", "item_id"],
        strategy="backward",
        tolerance=timedelta(minutes=30),
        check_sortedness=False,
    )
    assert matched["click_ts"].null_count() == 0
    assert (matched["timestamp"] > matched["click_ts"]).all()
    like_rate = (follow["type"] == "like").sum() / clicks.height
    assert 0.2 < like_rate < 0.4


# -- the clicks follow the true model ----------------------------------------------------------


def test_impression_truth_recomputes_the_formula(site: DemoSite, imp: pl.DataFrame) -> None:
    """An independent, row-by-row evaluation of the documented formula."""
    t = site.truth
    users = {r["user_id"]: r for r in site.users.iter_rows(named=True)}
    items = {r["item_id"]: r for r in site.items.iter_rows(named=True)}
    taste = {r["user_id"]: r for r in t.user_taste.iter_rows(named=True)}
    rows = imp.sample(300, seed=0).iter_rows(named=True)
    for r in rows:
        u, i = users[r["user_id"]], items[r["item_id"]]
        age_days = (r["timestamp"] - i["created_at"]).total_seconds() / 86400
        z = (
            t.intercept
            + t.gender_content[u["gender"], i["content_type"]]
            + t.ageband_lang[_band(u["age"]), i["lang"]]
            + t.taste_coef * taste[r["user_id"]][i["content_type"]]
            + t.position_effect[r["position"]]
            + t.freshness_coef * math.log1p(age_days)
            + t.author_quality[i["author"]]
        )
        assert r["z"] == pytest.approx(z, abs=1e-9)
        assert r["p_click"] == pytest.approx(1 / (1 + math.exp(-z)))
    clicks = site.events.filter(pl.col("type") == "click").height
    assert imp["clicked"].sum() == clicks


def test_overall_click_rate_is_calibrated(imp: pl.DataFrame) -> None:
    observed = imp["clicked"].mean()
    p = imp["p_click"].to_numpy()
    se = math.sqrt(float((p * (1 - p)).sum())) / len(p)
    assert 0.04 < observed < 0.11  # type: ignore[operator]
    assert abs(observed - p.mean()) < 3 * se  # type: ignore[operator]


def test_click_rate_by_position_follows_the_truth(imp: pl.DataFrame) -> None:
    by_pos = (
        imp.group_by("position")
        .agg(
            ctr=pl.col("clicked").mean(),
            p=pl.col("p_click").mean(),
            var=(pl.col("p_click") * (1 - pl.col("p_click"))).sum(),
            n=pl.len(),
        )
        .sort("position")
    )
    se = (by_pos["var"].sqrt() / by_pos["n"]).to_numpy()
    ctr, p = by_pos["ctr"].to_numpy(), by_pos["p"].to_numpy()
    assert np.all(np.abs(ctr - p) < 4 * se)
    assert np.all(np.diff(p) < 0)  # the truth decreases with position
    assert ctr[0] > 1.8 * ctr[-1]  # and so do the observed clicks, clearly
    assert np.corrcoef(ctr, p)[0, 1] > 0.9


@pytest.mark.parametrize(
    "by",
    [["decile"], ["author"], ["gender", "content_type"], ["age_band", "lang"], ["position"]],
    ids="-".join,
)
def test_click_rate_is_calibrated_within_groups(imp: pl.DataFrame, by: list[str]) -> None:
    """Observed clicks per group against the truth's expectation: a chi-square goodness of fit.
    Each group tests one term of the model (decile: the whole of z)."""
    groups = (
        imp.with_columns(decile=(pl.col("z").rank("ordinal") - 1) * 10 // pl.len())
        .group_by(by)
        .agg(
            obs=pl.col("clicked").sum(),
            exp=pl.col("p_click").sum(),
            var=(pl.col("p_click") * (1 - pl.col("p_click"))).sum(),
        )
        .filter(pl.col("exp") >= 5)
    )
    stat = ((groups["obs"] - groups["exp"]) ** 2 / groups["var"]).sum()
    assert groups.height >= 5
    assert stat < chi2.ppf(0.9999, groups.height), (by, stat, groups.height)


def test_users_click_the_content_they_have_a_taste_for(imp: pl.DataFrame) -> None:
    for ct in ("article", "video", "image"):
        sub = imp.filter(pl.col("content_type") == ct)
        high = sub["taste"] > sub["taste"].median()
        ctr_high, ctr_low = sub.filter(high)["clicked"].mean(), sub.filter(~high)["clicked"].mean()
        assert ctr_high > 1.5 * ctr_low, (ct, ctr_high, ctr_low)  # type: ignore[operator]


def test_recent_items_are_favoured_and_clicked_more(imp: pl.DataFrame) -> None:
    assert imp["item_age_days"].median() < 7  # type: ignore[operator]
    fresh = imp["item_age_days"] < 1
    ctr_fresh = imp.filter(fresh)["clicked"].mean()
    ctr_old = imp.filter(imp["item_age_days"] > 10)["clicked"].mean()
    assert ctr_fresh > ctr_old  # type: ignore[operator]


def test_sessions_are_evening_heavy(site: DemoSite) -> None:
    hours = site.events.filter(pl.col("type") == "login")["timestamp"].dt.hour()
    evening = hours.is_between(18, 22).sum()
    night = hours.is_between(1, 5).sum()
    assert evening > 3 * night
