"""A newcomer's first hour, on data shaped unlike the demo: ratings only, no users or items
file; an e-commerce log with its own type names and no header row. Every step says what it
did with the data, and nothing silently falls back to popularity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_run import run

N_USERS, N_ITEMS, N_GROUPS = 240, 60, 4


def ratings(path: Path, seed: int = 0) -> None:
    """MovieLens-shaped: user, item, rating (0.5..5), epoch seconds. Users belong to one of four
    taste groups; they rate their group's items high (4-5) and a few others low (1-3), over 60
    days. A model that learns who likes what beats popularity on the last week."""
    rng = np.random.default_rng(seed)
    rows = []
    t0 = 1_767_225_600  # 2026-01-01
    for u in range(N_USERS):
        g = u % N_GROUPS
        mine = [i for i in range(N_ITEMS) if i % N_GROUPS == g]
        liked = rng.choice(mine, size=9, replace=False)
        disliked = rng.choice([i for i in range(N_ITEMS) if i % N_GROUPS != g], 3, replace=False)
        for i in liked:
            rows.append(
                (u, i, float(rng.choice([4.0, 4.5, 5.0])), t0 + int(rng.integers(0, 60 * 86400)))
            )
        for i in disliked:
            rows.append(
                (u, i, float(rng.choice([1.0, 2.0, 3.0])), t0 + int(rng.integers(0, 60 * 86400)))
            )
    pl.DataFrame(
        rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row"
    ).with_columns(
        user_id=pl.format("u{}", pl.col("user_id")), item_id=pl.format("m{}", pl.col("item_id"))
    ).write_csv(path)


def test_ratings_only_with_stored_settings_and_retrain(tmp_path: Path) -> None:
    db, f = tmp_path / "ml.db", tmp_path / "ratings.csv"
    ratings(f)
    # a rating file: type from a constant, value from the rating column
    df = pl.read_csv(f).with_columns(type=pl.lit("rating")).rename({"rating": "value"})
    df.write_csv(f)
    out = run(db, "import", "interactions", str(f))
    assert "rating" in out and "counts when value >= 3.5" in out  # the summary says what counts
    out = run(db, "train", "--model", "ease", "--test-days", "7", "--json")
    result = json.loads(out)
    ease, pop = result["metrics"]["ease"], result["metrics"]["popularity"]
    assert ease["HR@10"] > pop["HR@10"] + 0.15, (ease["HR@10"], pop["HR@10"])  # personalised
    # settings stored once serve every later command
    s = tmp_path / "s.toml"
    s.write_text("rating_threshold = 4.5\n")
    out = run(db, "settings", "import", str(s))
    assert "settings version 1 stored" in out and "rating_threshold: 3.5 -> 4.5" in out
    shown = json.loads(run(db, "settings", "show", "--json"))
    assert shown["settings"]["rating_threshold"] == 4.5 and shown["stored"]
    out = run(db, "train", "--model", "itemknn", "--test-days", "7")
    assert "HR@10" in out and "popularity" in out
    meta = json.loads(run(db, "models", "show", "itemknn"))
    assert meta["settings"]["rating_threshold"] == 4.5  # the model travels with its settings
    out = run(db, "retrain", "--model", "ease", "--json")
    decision = json.loads(out)
    assert decision["challenger"].startswith("ease/")
    rec = json.loads(run(db, "recommend", "u1", "--model", "ease", "--explain", "--json"))
    assert len(rec["items"]) == 10 and rec["items"][0]["source"] == "model"
    # u1 (group 1) gets group-1 items first
    assert int(rec["items"][0]["item_id"][1:]) % N_GROUPS == 1


def test_nothing_counting_as_an_engagement_is_an_error_naming_the_types(tmp_path: Path) -> None:
    db, f = tmp_path / "low.db", tmp_path / "low.csv"
    f.write_text(
        "user_id,item_id,type,value,timestamp\n"
        "a,m1,rating,2,2026-01-01\nb,m2,rating,1,2026-01-02\nc,m1,impression,1,2026-01-03\n"
    )
    out = run(db, "import", "interactions", str(f))
    assert "none of these events counts as an engagement" in out.replace("\n", " ")
    out = run(db, "train", "--model", "ease", code=2)
    flat = out.replace("\n", " ")
    assert "no stored event counts as an engagement" in flat
    assert "rating (2)" in flat and "impression (1)" in flat and "rating_threshold" in flat
    assert "Traceback" not in out


def test_ecommerce_log_without_header_users_or_items(tmp_path: Path) -> None:
    """pv / cart / fav / buy, a headerless CSV, no users file, no items file."""
    rng = np.random.default_rng(1)
    lines = []
    t0 = 1_767_225_600
    for u in range(150):
        g = u % 3
        for _ in range(12):
            item = int(rng.choice([i for i in range(45) if i % 3 == g]))
            kind = str(rng.choice(["pv", "pv", "pv", "cart", "fav", "buy"]))
            lines.append(f"v{u},sku{item},{kind},{t0 + int(rng.integers(0, 40 * 86400))}")
    f = tmp_path / "log.csv"
    f.write_text("\n".join(lines) + "\n")
    db = tmp_path / "shop.db"
    out = run(
        db,
        "import",
        "interactions",
        str(f),
        "--no-header",
        "user_id,item_id,type,timestamp",
        "--map-type",
        "pv=page_view,cart=add_to_cart,fav=favorite,buy=purchase",
    )
    for t in ("page_view", "add_to_cart", "favorite", "purchase"):
        assert t in out
    assert "not in the settings" not in out  # every type mapped onto a known one
    stats = json.loads(run(db, "stats", "--json"))
    assert {t["type"] for t in stats["types"] if t["engagement"]} == {
        "page_view",
        "add_to_cart",
        "favorite",
        "purchase",
    }
    out = json.loads(
        run(db, "train", "--model", "als", "--test-days", "7", "--param", "factors=8", "--json")
    )
    assert out["metrics"]["als"]["HR@10"] >= 0.0 and "popularity" in out["metrics"]
    rec = json.loads(run(db, "recommend", "v0", "--json"))
    assert rec["items"] and rec["items"][0]["source"] == "model"
    assert int(rec["items"][0]["item_id"][3:]) % 3 == 0  # v0's group
    # without a users file there is no segment to claim: a newcomer gets overall popularity
    cold = json.loads(run(db, "recommend", "newcomer", "--json"))
    assert {i["source"] for i in cold["items"]} == {"popular_overall"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 1\n", "settings keys must be among"),
        ('type_weights = { view = "heavy" }\n', "type_weights.view must be a finite number"),
        ('engagement_types = ["click", "click"]\n', "must list each value once"),
        (
            'type_weights = { pin = 0.0 }\nengagement_types = ["pin"]\n',
            "engagement types must have a weight > 0",
        ),
    ],
)
def test_a_bad_settings_file_is_one_line_and_stores_nothing(
    tmp_path: Path, toml: str, message: str
) -> None:
    db, s = tmp_path / "x.db", tmp_path / "bad.toml"
    s.write_text(toml)
    out = run(db, "settings", "import", str(s), code=2)
    assert message in out and "bad.toml" in out and "Traceback" not in out
    assert json.loads(run(db, "settings", "show", "--json"))["stored"] is False
