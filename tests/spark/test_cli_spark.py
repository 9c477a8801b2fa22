"""The CLI's Spark path end to end: train --engine spark saves a model (with its fallback) that
`recommend` serves, and score --engine spark writes an active generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.store.sqlite import SQLiteStore
from feedrank.views.site import SiteData

runner = CliRunner()


def run(db: Path, *args: str) -> str:
    result = runner.invoke(app, ["--store", f"sqlite:///{db}", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.output


def test_train_and_score_on_spark_from_exported_parquet(
    spark: Any, data: SiteData, tmp_path: Path
) -> None:
    db = tmp_path / "feedrank.db"
    with SQLiteStore(str(db)) as store:
        store.upsert_users(data.users)
        store.upsert_items(data.items)
        store.add_events(data.events)
    run(db, "export", "interactions", "--format", "parquet", str(tmp_path / "events"))
    spark_opts = ["--engine", "spark", "--master", "local[2]", "--events", str(tmp_path / "events")]
    out = run(db, "train", "--model", "itemknn", "--param", "k_neighbours=20", *spark_opts)
    assert "saved itemknn/" in out and "fitted on Spark" in out
    out = run(db, "score", "--k", "10", *spark_opts)
    assert "generation 1 active" in out and "scored on Spark" in out
    with SQLiteStore(str(db)) as store:
        gen = store.active_generation()
        assert gen is not None and gen.n_users == len(
            set(data.events["user_id"]) | set(data.users["user_id"])
        )
    assert "source" in run(db, "recommend", "u00001", "--model", "itemknn", "--explain")
