"""Seed 004's clickstream importer: exact ids, counts, the asset-type weights, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from feedrank.datasets.clickstream import (
    ASSET_CLASSES,
    EVENT_TIME,
    ITEM_CREATED_AT,
    asset_weights,
    clickstream_settings,
    default_clickstream_dir,
    import_clickstream,
    read_clickstream,
)
from feedrank.exceptions import ValidationError
from feedrank.features.history import History
from feedrank.store.sqlite import SQLiteStore
from feedrank.views.site import read_site

REAL = default_clickstream_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="../shared/data/clickstream not present")


def write_small(d: Path, count: str = "3") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "submissions.csv").write_text(
        ",cookie,gated_asset_type,page_url,form_submissions\n"
        f"0,00012345678901234567890123456789012345,Gated Get Pricing,p1,{count}\n"
        "1,00012345678901234567890123456789012345,None,p2,2\n"
        "2,99999999999999999999999999999999999999,Gated Ebook Forms,p2,1\n"
        "3,None,Gated DemoNow Forms,p3,4\n"
    )
    (d / "bu_mapping.csv").write_text(
        ",business_unit,page_url\n0,f,p1\n1,a,p1\n2,c,p2\n3,b,unused\n"
    )
    return d


def test_small_files_by_hand(tmp_path: Path) -> None:
    cs = read_clickstream(write_small(tmp_path / "cs"))
    assert cs.rows == 4 and cs.skipped_missing_cookie == 1
    assert sorted(cs.users["user_id"]) == [
        "00012345678901234567890123456789012345",
        "99999999999999999999999999999999999999",
    ]
    items = {r["item_id"]: r for r in cs.items.iter_rows(named=True)}
    assert set(items) == {"p1", "p2", "p3"}  # p3's only submitter is anonymous: still a form
    assert items["p1"]["business_unit"] == "f" and items["p1"]["business_units"] == "f|a"
    assert items["p2"]["business_units"] == "c" and items["p3"]["business_unit"] is None
    # 'None' is a category, not a missing value; p2's type is its most frequent one
    assert items["p2"]["gated_asset_type"] in ("None", "Gated Ebook Forms")
    assert items["p1"]["asset_class"] == "pricing" and items["p3"]["asset_class"] == "demo"
    assert (cs.items["created_at"] == ITEM_CREATED_AT).all()
    assert (cs.events["timestamp"] == EVENT_TIME).all()
    assert sorted(cs.events["value"].to_list()) == [1.0, 2.0, 3.0]


def test_event_weight_is_asset_weight_times_count(tmp_path: Path) -> None:
    store = SQLiteStore(":memory:")
    settings = clickstream_settings()
    import_clickstream(store, write_small(tmp_path / "cs"), settings)
    data = read_site(store)
    ev = History(data, settings, []).events.sort("item_id", "value")
    item_type = dict(data.items.select("item_id", "gated_asset_type").iter_rows())
    expected = [
        asset_weights()[item_type[i]] * v for i, v in ev.select("item_id", "value").iter_rows()
    ]
    assert ev["weight"].to_list() == pytest.approx(expected)
    assert ev.filter(pl.col("item_id") == "p1")["weight"].item() == pytest.approx(3.0 * 3)
    assert (ev["engaged"] == 1.0).all()  # every submission is one engagement


def test_weights_cover_every_seed_category() -> None:
    w = asset_weights()
    assert w["Gated Get Pricing"] == 3.0 and w["Gated DemoNow Forms"] == 2.5
    for t in ("Analyst Report", "Ebook", "Webinar", "Case Study", "Solution Brief", "Whitepaper"):
        assert w[f"Gated {t} Forms"] == 2.0
    assert w["None"] == w["Gated Best Practice Form"] == w["Gated Infographics Forms"] == 1.0
    s = clickstream_settings()
    assert s.engagement_types == ("form_submission",)
    assert s.attribute_weights is not None and s.attribute_weights.attribute == "gated_asset_type"


def test_bad_count_names_field_and_line(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        read_clickstream(write_small(tmp_path / "cs", count="zero"))
    e = err.value.errors[0]
    assert e.field == "form_submissions" and e.line == 2 and "'zero'" in e.message


def test_missing_column_is_named(tmp_path: Path) -> None:
    d = write_small(tmp_path / "cs")
    (d / "bu_mapping.csv").write_text(",unit,page_url\n0,a,p1\n")
    with pytest.raises(ValidationError, match="business_unit"):
        read_clickstream(d)


@needs_real
def test_real_data_counts_ids_and_idempotence() -> None:
    assert REAL is not None
    cs = read_clickstream(REAL)
    assert (cs.rows, cs.users.height, cs.items.height) == (3888, 999, 469)
    raw = pd.read_csv(REAL / "submissions.csv", keep_default_na=False, dtype=str)
    cookies = set(raw["cookie"]) - {"None"}
    assert set(cs.users["user_id"]) == cookies  # exact strings, leading zeros kept
    assert "03212683958060592948939236500980100806" in cookies
    assert set(cs.items["gated_asset_type"]) <= set(ASSET_CLASSES)
    assert (cs.items["gated_asset_type"] == "None").sum() == 64
    assert cs.summary()["forms with a business unit"] == 175
    store = SQLiteStore(":memory:")
    _, first = import_clickstream(store, REAL)
    _, second = import_clickstream(store, REAL)
    assert first == {"users": 999, "items": 469, "interactions": 3884}
    assert second["interactions"] == 0
    data = read_site(store)
    total = History(data, clickstream_settings(), []).events["weight"].sum()
    raw = raw[raw["cookie"] != "None"]
    expected = (
        raw["gated_asset_type"].map(asset_weights()) * raw["form_submissions"].astype(float)
    ).sum()
    assert total == pytest.approx(expected)
