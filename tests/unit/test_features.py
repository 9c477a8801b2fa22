"""Point-in-time features: no leakage, known answers on a hand-made history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedrank.features.examples import build_examples
from feedrank.features.groups import FeatureGroups, FeatureSpec, age_band_expr
from feedrank.features.history import History, Snapshot
from feedrank.schema import validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _data(events: list[tuple[str, str, str, datetime]], settings: Settings) -> SiteData:
    users = validate_users(
        pl.DataFrame({"user_id": ["u1", "u2"], "age": [30, 70], "gender": ["f", "m"]})
    ).good
    items = validate_items(
        pl.DataFrame(
            {
                "item_id": ["A", "B", "C"],
                "created_at": [T0 - timedelta(days=d) for d in (2, 5, 1)],
                "content_type": ["video", "video", "article"],
            }
        )
    ).good
    ev = pl.DataFrame(events, schema=["user_id", "item_id", "type", "timestamp"], orient="row")
    return SiteData(users, items, validate_events(ev, settings).good.sort("timestamp"))


def _groups(data: SiteData, settings: Settings, spec: FeatureSpec | None = None) -> FeatureGroups:
    spec = spec or FeatureSpec.infer(data, settings)
    return FeatureGroups(spec, History(data, settings, spec.share_attributes))


def test_impression_example_sees_only_strictly_earlier_events() -> None:
    s = Settings()
    m = timedelta(minutes=1)
    data = _data(
        [
            ("u1", "A", "impression", T0),
            ("u1", "A", "click", T0 + m),
            ("u1", "A", "like", T0 + 2 * m),
            ("u1", "B", "impression", T0 + 60 * m),
            ("u1", "C", "impression", T0 + 60 * m),
            ("u1", "B", "click", T0 + 61 * m),
        ],
        s,
    )
    ex = build_examples(data, s)
    assert ex.select("item_id", "label").rows() == [("A", 1), ("B", 1), ("C", 0)]
    raw = _groups(data, s).rows(ex)
    first, second = raw.row(0, named=True), raw.row(1, named=True)
    # The first impression: nothing happened before it, and its own click is not a feature.
    assert first["user_n_click"] == 0 and first["user_n_impression"] == 0
    assert first["item_engaged"] == 0 and first["pair_engaged"] == 0
    # An hour later the first click, like and impression are history.
    assert (
        second["user_n_click"] == 1
        and second["user_n_like"] == 1
        and second["user_n_impression"] == 1
    )
    assert second["item_engaged"] == 0  # B's own click comes after
    # u1's engagement weight so far is all on video (click 1 + like 2): share of video = (3 + 2 * 1/2) / (3 + 2)
    assert second["user_share_content_type"] == pytest.approx((3 + 1) / 5)
    third = raw.row(2, named=True)  # C is an article
    assert third["user_share_content_type"] == pytest.approx((0 + 1) / 5)
    # Exact age never leaves the store; its band does.
    assert "age" not in raw.columns and first["age_band"] == "25-34"


def test_events_at_the_same_instant_are_not_history_of_each_other() -> None:
    s = Settings()
    data = _data(
        [
            ("u1", "A", "click", T0),
            ("u1", "B", "click", T0),
            ("u1", "C", "click", T0 + timedelta(seconds=1)),
        ],
        s,
    )
    ex = build_examples(data, s)  # no impressions: engagements are positives, negatives sampled
    raw = _groups(data, s).rows(ex.filter(pl.col("label") == 1))
    assert raw["user_n_click"].to_list() == [0, 0, 2]


def test_no_leakage_removing_later_events_leaves_features_unchanged(small_data: SiteData) -> None:
    s = Settings()
    spec = FeatureSpec.infer(small_data, s)
    ex = build_examples(small_data, s)
    full = _groups(small_data, s, spec)
    times = ex["timestamp"]
    for q in (0.2, 0.5, 0.8, 0.95):
        t = times.quantile(q, interpolation="nearest")
        at_t = ex.filter(pl.col("timestamp") == t)
        truncated = _groups(small_data.until(t), s, spec)  # every event at or after t removed
        assert_frame_equal(full.rows(at_t), truncated.rows(at_t))


def test_rows_in_chunks_equal_rows_at_once(
    small_data: SiteData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rows() computes a chunk of examples at a time (memory); the chunks' rows are the rows."""
    s = Settings()
    ex = build_examples(small_data, s)
    groups = _groups(small_data, s)
    whole = groups.rows(ex)
    monkeypatch.setattr("feedrank.features.groups.ROWS_CHUNK", ex.height // 7 + 1)
    assert_frame_equal(groups.rows(ex), whole)


def test_label_type_is_never_a_feature(small_data: SiteData, fitted_glm) -> None:  # type: ignore[no-untyped-def]
    # The seed's bug: "interaction_type_view" predicting "viewed". Our features carry no column
    # describing the example's own interaction.
    names = fitted_glm.encoder_.feature_names_
    assert not [n for n in names if n.startswith(("type", "interaction_type", "label"))]


def test_sampled_negatives_are_unengaged_existing_items_in_the_same_context() -> None:
    s = Settings(negative_ratio=3, seed=1)
    data = _data([("u1", "A", "click", T0), ("u2", "B", "like", T0 + timedelta(hours=1))], s)
    ex = build_examples(data, s)
    neg = ex.filter(pl.col("label") == 0)
    engaged = {("u1", "A"), ("u2", "B")}
    assert all((u, i) not in engaged for u, i in neg.select("user_id", "item_id").iter_rows())
    created = dict(data.items.select("item_id", "created_at").iter_rows())
    assert all(created[i] <= t for i, t in neg.select("item_id", "timestamp").iter_rows())
    assert_frame_equal(ex, build_examples(data, s))  # seeded


def test_age_bands() -> None:
    ages = pl.Series([None, 10, 18, 24, 25, 64, 65, 90], dtype=pl.Float64)
    got = pl.select(age_band_expr(pl.lit(ages), [18, 25, 35, 45, 55, 65])).to_series().to_list()
    assert got == [None, "<18", "18-24", "18-24", "25-34", "55-64", "65+", "65+"]


def test_age_band_from_age_else_a_stored_band() -> None:
    from feedrank.features.groups import user_age_band

    users = pl.DataFrame(
        {"user_id": ["a", "b", "c"], "age": [30.0, None, None], "age_band": [None, "65+", None]}
    )
    band = user_age_band(users, [18, 25, 35, 45, 55, 65])
    assert band is not None
    assert users.select(band).to_series().to_list() == ["25-34", "65+", None]
    assert user_age_band(users.select("user_id"), [18]) is None


def test_serving_snapshot_reads_the_same_features_as_training_history(
    small_data: SiteData,
) -> None:
    """History (each key as of its own time) and Snapshot (everything as of one time, from a
    view) are two readings of the same counters: at the same time they give the same rows."""
    s = Settings()
    spec = FeatureSpec.infer(small_data, s)
    history = _groups(small_data, s, spec)
    times = small_data.events["timestamp"]
    users = small_data.users["user_id"].to_list()[::20]
    items = small_data.items["item_id"].to_list()[::7]
    for q in (0.3, 0.9):
        t = times.quantile(q, interpolation="nearest")
        view = FrameView(small_data, s, t)
        snapshot = Snapshot(
            view.histories(users),
            view.profiles(users),
            view.catalogue,
            s,
            spec.share_attributes,
            t,
            sorted(set(spec.types) | set(view.types)),
        )
        keys = pl.DataFrame(
            [(u, i) for u in users for i in items], schema=["user_id", "item_id"], orient="row"
        ).with_columns(pl.lit(t).alias("timestamp"), position=pl.lit(1, pl.Int32))
        served = FeatureGroups(spec, snapshot).rows(keys)
        trained = history.rows(keys)
        assert served.columns == trained.columns
        assert trained["user_n_click"].sum() > 0 and trained["pair_shown"].sum() > 0
        # equal up to float rounding (polars' default tolerances: relative 1e-5, absolute 1e-8)
        assert_frame_equal(served, trained, check_exact=False)
