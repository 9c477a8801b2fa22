"""The `feedrank` command end to end on a real SQLite file: import, train, predict, score,
recommend, stats, insights — and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from cli_run import run
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.demo import generate_site
from feedrank.pipeline.registry import Registry, models_dir
from feedrank.store import open_store
from feedrank.views.site import read_site

runner = CliRunner()


@pytest.fixture(scope="module")
def site_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("site")
    site = generate_site(n_users=250, n_items=100, days=10, seed=3)
    files = {"users": d / "users.csv", "items": d / "items.jsonl", "events": d / "events.parquet"}
    site.users.write_csv(files["users"])
    site.items.write_ndjson(files["items"])
    site.events.write_parquet(files["events"])
    return files


@pytest.fixture(scope="module")
def trained_db(site_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("db") / "feedrank.db"
    run(db, "import", "users", str(site_files["users"]))
    run(db, "import", "items", str(site_files["items"]))
    out = run(db, "import", "interactions", str(site_files["events"]))
    assert "0 bad" in out
    out = run(db, "train", "--model", "glm", "--test-days", "3")
    assert "roc_auc" in out and "popularity" in out and "temporal: fitted on events before" in out
    return db


def test_every_command_has_help() -> None:
    for args in (
        [],
        ["import"],
        ["import", "users"],
        ["import", "items"],
        ["import", "interactions"],
        ["train"],
        ["predict"],
        ["score"],
        ["recommend"],
        ["stats"],
        ["insights"],
        ["demo"],
        ["ctr"],
        ["evaluate"],
        ["offpolicy"],
        ["offpolicy", "estimate"],
        ["offpolicy", "open-bandit"],
        ["settings"],
        ["settings", "import"],
        ["settings", "show"],
        ["retrain"],
        ["models"],
        ["similar"],
        ["export"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_import_twice_adds_nothing(trained_db: Path, site_files: dict[str, Path]) -> None:
    before = open_store(f"sqlite:///{trained_db}").stats()["events"]
    out = run(trained_db, "import", "interactions", str(site_files["events"]))
    assert " 0 written" in out
    assert open_store(f"sqlite:///{trained_db}").stats()["events"] == before


def test_train_saves_a_model_with_a_coefficient_table(trained_db: Path) -> None:
    stats = json.loads(run(trained_db, "stats", "--json"))
    assert "glm" in [m["kind"] for m in stats["models"]]
    url = f"sqlite:///{trained_db}"
    path = Registry(models_dir(url)).resolve("glm").path
    coefs = pl.read_csv(path / "coefficients.csv")
    assert {"feature", "coefficient", "std_error", "p_value", "odds_ratio"} <= set(coefs.columns)


def test_predict_in_input_order(trained_db: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "user_id,item_id,timestamp\nu00002,p00010,2026-01-05T12:00:00Z\nu00001,p00003,\n"
    )
    out_file = tmp_path / "p.csv"
    run(trained_db, "predict", "--pairs", str(pairs), "--out", str(out_file))
    got = pl.read_csv(out_file)
    assert got.columns == ["user_id", "item_id", "timestamp", "probability"]
    assert got["user_id"].to_list() == ["u00002", "u00001"]
    assert got["timestamp"][0].startswith("2026-01-05T12:00:00")
    assert got["probability"].is_between(0, 1).all()


def test_score_then_recommend_all_jsonl(trained_db: Path) -> None:
    out = run(trained_db, "score", "--k", "20")
    assert "generation" in out
    stats = json.loads(run(trained_db, "stats", "--json"))
    assert stats["active_generation"]["rows"] == 250 * 20
    lines = (
        run(trained_db, "recommend", "--all", "--k", "5", "--format", "jsonl").strip().splitlines()
    )
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 250
    store = open_store(f"sqlite:///{trained_db}")
    seen = set(read_site(store).seen_pairs().select("user_id", "item_id").iter_rows())
    for e in entries:
        assert len(e["items"]) == 5
        assert [i["rank"] for i in e["items"]] == [1, 2, 3, 4, 5]
        assert all((e["user_id"], i["item_id"]) not in seen for i in e["items"])
        # the generation written by `score` holds the same top 5
        stored = store.recommendations(e["user_id"], k=5)["item_id"].to_list()
        assert stored == [i["item_id"] for i in e["items"]]


def test_recommend_one_user_with_explanations(trained_db: Path) -> None:
    payload = json.loads(run(trained_db, "recommend", "u00001", "--k", "3", "--explain", "--json"))
    assert payload["user_id"] == "u00001" and len(payload["items"]) == 3
    first = payload["items"][0]
    assert first["source"] == "model" and first["reasons"]
    assert {"feature", "value", "contribution"} <= set(first["reasons"][0])
    table = run(trained_db, "recommend", "u00001", "--k", "3", "--explain")
    assert "u00001" in table and "why" in table


def test_unknown_user_gets_marked_fallback(trained_db: Path) -> None:
    # Nothing is known of this user: the fallback serves, and says so (for every model).
    payload = json.loads(run(trained_db, "recommend", "nobody", "--json"))
    assert {i["source"] for i in payload["items"]} == {"popular_overall"}
    run(trained_db, "train", "--model", "itemknn", "--test-days", "3")
    payload = json.loads(run(trained_db, "recommend", "nobody", "--model", "itemknn", "--json"))
    assert {i["source"] for i in payload["items"]} == {"popular_overall"}
    assert all(i["score"] > 0 for i in payload["items"])


def test_stats_and_insights(trained_db: Path) -> None:
    stats = json.loads(run(trained_db, "stats", "--json"))
    assert stats["users"] == 250 and stats["items"] == 100
    assert stats["events_per_type"]["impression"] > 0
    out = run(trained_db, "insights")
    assert "favourite content_type per gender" in out and "engagement by hour of day" in out


def test_bad_rows_are_reported_and_good_rows_kept(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    f = tmp_path / "events.csv"
    f.write_text(
        "user_id,item_id,type,timestamp\n"
        "0042,p1,click,2026-01-01T10:00:00Z\n"
        "u2,p1,clik,2026-01-01T10:00:00Z\n"
        "u3,p2,view,yesterday\n"
    )
    out = run(db, "import", "interactions", str(f), code=1)
    flat = out.replace("\n", " ")
    assert "2 written" in out and "1 bad" in out
    assert "events.csv:4: timestamp: " in flat and "got 'yesterday'" in flat
    # an unknown type is stored, and said so: a typo is visible, a new type is usable
    assert "clik" in out and "not in the settings: weight 1" in flat
    assert open_store(f"sqlite:///{db}").events()["user_id"].to_list() == ["0042", "u2"]


def test_strict_import_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    f = tmp_path / "events.csv"
    f.write_text("user_id,item_id,type,timestamp\nu1,p1,click,2026-01-01\nu2,p1,click,soon\n")
    out = run(db, "import", "interactions", str(f), "--strict", code=2)
    assert (
        out
        == "events.csv:3: timestamp: timestamp must be an ISO 8601 time or epoch seconds; got 'soon'\n"
    )
    assert open_store(f"sqlite:///{db}").stats()["events"] == 0


def test_column_mapping(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    f = tmp_path / "clicks.csv"
    f.write_text(
        "cookie,page,kind,when\n20239734541707312813871963623233721188,p1,click,1767261600\n"
    )
    run(
        db,
        "import",
        "interactions",
        str(f),
        "--map",
        "cookie=user_id",
        "--map",
        "page=item_id",
        "--map",
        "kind=type",
        "--map",
        "when=timestamp",
    )
    ev = open_store(f"sqlite:///{db}").events()
    assert ev["user_id"].to_list() == ["20239734541707312813871963623233721188"]


def test_train_on_an_empty_store_says_what_to_do(tmp_path: Path) -> None:
    out = run(tmp_path / "empty.db", "train", code=2)
    assert "feedrank import" in out


def test_evaluate_compares_with_popularity_by_segment(trained_db: Path) -> None:
    out = json.loads(
        run(
            trained_db,
            "evaluate",
            "--model",
            "glm",
            "--split",
            "last",
            "--segment-by",
            "tenure,gender",
            "--json",
        )
    )
    assert out["split"].startswith("per-user leave-last-1")
    assert [m["model"] for m in out["models"]] == ["glm", "popularity"]
    assert {
        "HR@10",
        "NDCG@10",
        "MAP@10",
        "MRR",
        "coverage",
        "novelty",
        "intra_list_diversity",
        "personalisation",
    } <= set(out["models"][0])
    assert {s["segment"] for s in out["segments"]} == {"tenure", "gender"}
    bad = run(trained_db, "evaluate", "--split", "sideways", code=2)
    assert "--split must be one of" in bad


def test_report_renders_every_plot(trained_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    run(trained_db, "report", "--out", str(out), "--test-days", "3")
    page = out.read_text()
    for alt in (
        "model comparison",
        "hit-rate distribution",
        "calibration curve",
        "GLM coefficients",
        "CTR by position",
    ):
        assert f'alt="{alt}"' in page
    assert page.count('src="data:image/png;base64,') >= 5
    assert "By segment" in page and "temporal: fitted on events before" in page
