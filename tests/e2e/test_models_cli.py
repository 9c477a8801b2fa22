"""Every model family through the CLI on a real SQLite file: train, recommend --all, similar."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from cli_run import run

from feedrank.datasets.demo import generate_site

# Small, fast parameters; every other parameter keeps its default.
PARAMS = {
    "popularity": [],
    "itemknn": ["k_neighbours=20", "weighting=bm25"],
    "userknn": ["k_neighbours=15"],
    "als": ["factors=8", "iterations=5"],
    "bpr": ["factors=8", "iterations=20"],
    "ease": ["l2=50"],
    "transition": [],
    "content": [],
}
SIMILAR = {"itemknn", "als", "bpr", "ease", "transition", "content"}


SITE = generate_site(n_users=120, n_items=50, days=6, seed=9)
# the most clicked item: every model has neighbours for it
ITEM = SITE.events.filter(pl.col("type") == "click")["item_id"].mode().sort()[0]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    site = SITE
    site.users.write_csv(d / "users.csv")
    site.items.write_ndjson(d / "items.jsonl")
    site.events.write_parquet(d / "events.parquet")
    path = d / "feedrank.db"
    run(path, "import", "users", str(d / "users.csv"))
    run(path, "import", "items", str(d / "items.jsonl"))
    run(path, "import", "interactions", str(d / "events.parquet"))
    for kind, params in PARAMS.items():
        args = [a for p in params for a in ("--param", p)]
        assert f"saved {kind}/" in run(path, "train", "--model", kind, *args)
    return path


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_recommend_all_for_every_model(db: Path, kind: str) -> None:
    out = run(db, "recommend", "--all", "--model", kind, "--k", "5", "--format", "jsonl")
    entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(entries) == 120
    sources = set()
    for e in entries:
        assert e["model"].startswith(f"{kind}/")
        assert 1 <= len(e["items"]) <= 5
        assert [i["rank"] for i in e["items"]] == list(range(1, len(e["items"]) + 1))
        sources |= {i["source"] for i in e["items"]}
    assert "model" in sources


@pytest.mark.parametrize("kind", sorted(SIMILAR))
def test_similar_items(db: Path, kind: str) -> None:
    out = run(db, "similar", ITEM, "--model", kind, "--k", "4", "--json")
    payload = json.loads(out)
    assert payload["item_id"] == ITEM and payload["model"].startswith(f"{kind}/")
    assert payload["similarity"] == "item"
    rows = payload["similar"]  # the shape GET /items/{id}/similar answers
    assert 1 <= len(rows) <= 4
    assert ITEM not in {r["item_id"] for r in rows}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    table = run(db, "similar", ITEM, "--model", kind)
    assert rows[0]["item_id"] in table


def test_similar_from_a_model_without_item_similarity_is_a_session_of_one(db: Path) -> None:
    payload = json.loads(run(db, "similar", ITEM, "--model", "userknn", "--k", "3", "--json"))
    assert payload["similarity"] == "session" and len(payload["similar"]) == 3
    assert ITEM not in {r["item_id"] for r in payload["similar"]}


def test_similar_errors_name_what_is_allowed(db: Path) -> None:
    out = run(db, "similar", ITEM, "--model", "popularity", code=2)
    assert "item similarity" in out and "popularity" in out
    out = run(db, "similar", "no-such-item", "--model", "itemknn", code=2)
    assert "no-such-item" in out


def test_train_rejects_bad_parameters(db: Path) -> None:
    out = run(db, "train", "--model", "itemknn", "--param", "weighting=cosine", code=2)
    assert "weighting must be one of ['none', 'tfidf', 'bm25']; got 'cosine'" in out
    out = run(db, "train", "--model", "ease", "--param", "max_items=0", code=2)
    assert "max_items must be an integer >= 1; got 0" in out


def test_tune_then_train_uses_the_chosen_parameters(db: Path) -> None:
    out = run(db, "tune", "--model", "userknn", "--trials", "3", "--test-days", "1", "--json")
    tuned = json.loads(out)
    assert tuned["trials"] == 3 and len(tuned["table"]) == 3
    assert tuned["table"][0]["params"] == "k_neighbours=50, weighting=none"  # defaults first
    assert tuned["validation"].startswith("inside the test split's training part")
    out = run(db, "train", "--model", "userknn", "--test-days", "1")
    assert "parameters from `feedrank tune`" in out
    newest = sorted((db.parent / "feedrank.models" / "userknn").glob("*/meta.json"))[-1]
    meta = json.loads(newest.read_text())
    assert meta["tuned"]["params"] == tuned["params"]
    assert meta["params"] == meta["params"] | tuned["params"]
    assert "trials" in run(db, "tune", "--model", "userknn", "--trials", "2", "--test-days", "1")


def test_tune_rejects_bad_input(db: Path) -> None:
    out = run(db, "tune", "--model", "nosuch", code=2)
    assert "model must be one of" in out and "got 'nosuch'" in out
    out = run(db, "tune", "--model", "ease", "--param", "l2=-1", "--trials", "1", code=2)
    assert "l2 must be > 0; got -1" in out
