"""`feedrank export` (Parquet by day, read back as the store holds it), `train --events`, and the
Spark engine's bad input: one line, exit 2, nothing written — checked before Spark starts."""

from __future__ import annotations

import socket
from pathlib import Path

import polars as pl
import pytest
from cli_run import run
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.demo import generate_site
from feedrank.export import read_events
from feedrank.store.sqlite import SQLiteStore

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export")
    site = generate_site(n_users=80, n_items=40, days=4, seed=5)
    site.users.write_csv(d / "users.csv")
    site.items.write_ndjson(d / "items.jsonl")
    site.events.write_parquet(d / "events.parquet")
    db = d / "feedrank.db"
    for kind, f in (
        ("users", "users.csv"),
        ("items", "items.jsonl"),
        ("interactions", "events.parquet"),
    ):
        run(db, "import", kind, str(d / f))
    return db


def test_interactions_export_by_day_and_read_back_as_stored(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "events"
    assert "wrote" in run(db, "export", "interactions", "--format", "parquet", str(out))
    days = sorted(p.name for p in out.iterdir())
    assert len(days) >= 4 and all(d.startswith("day=") for d in days)
    with SQLiteStore(str(db)) as store:
        stored = store.events()
    back = read_events(out)
    assert back.schema == stored.schema
    key = ["timestamp", "user_id", "item_id", "type", "event_id"]
    assert back.sort(key).equals(stored.sort(key))
    # each file holds its day only
    for folder in out.iterdir():
        ts = pl.read_parquet(folder)["timestamp"].dt.strftime("%Y-%m-%d").unique().to_list()
        assert ts == [folder.name.removeprefix("day=")]


def test_users_and_items_export_and_train_reads_events_from_parquet(
    db: Path, tmp_path: Path
) -> None:
    for kind in ("users", "items"):
        run(db, "export", kind, str(tmp_path / kind))
        assert pl.read_parquet(tmp_path / kind / "part-0.parquet").height > 0
    run(db, "export", "interactions", str(tmp_path / "events"))
    out = run(db, "train", "--model", "popularity", "--events", str(tmp_path / "events"))
    assert "saved popularity/" in out


def test_export_refuses_a_non_empty_directory_and_unknown_kinds(db: Path, tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    out = run(db, "export", "interactions", str(tmp_path), code=2)
    assert "must be new or empty" in out and "Traceback" not in out
    out = run(db, "export", "ratings", str(tmp_path / "x"), code=2)
    assert "export must be one of ['interactions', 'users', 'items']; got 'ratings'" in out
    out = run(db, "export", "users", "--format", "csv", str(tmp_path / "y"), code=2)
    assert "--format must be one of ['parquet']; got 'csv'" in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_beside(db: Path) -> list[str]:
    """The store's folder, without SQLite's -wal/-shm files: they come and go as an earlier
    test's connection is closed by the garbage collector, whatever this test does."""
    return sorted(p.name for p in db.parent.iterdir() if not p.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--master", "mesos://x"], {}, "--master must be one of local, local[N]"),
        (
            ["--master", f"spark://127.0.0.1:{_closed_port()}"],
            {},
            "cannot be reached",
        ),
        (["--master", "local[2]"], {"JAVA_HOME": "/nonexistent"}, "Spark needs Java 17 or 21"),
        (["--master", "yarn"], {"HADOOP_CONF_DIR": "", "YARN_CONF_DIR": ""}, "HADOOP_CONF_DIR"),
        (["--engine", "flink"], {}, "--engine must be one of ['local', 'spark']; got 'flink'"),
        (["--test-days", "2"], {}, "--engine spark fits on every event"),
    ],
)
def test_spark_that_cannot_start_is_one_line_and_exit_2(
    db: Path, args: list[str], env: dict[str, str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = files_beside(db)
    engine = [] if "--engine" in args else ["--engine", "spark"]
    result = runner.invoke(
        app,
        ["--store", f"sqlite:///{db}", "train", "--model", "als", *engine, *args],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert files_beside(db) == before  # nothing written
