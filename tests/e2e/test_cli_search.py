"""The `feedrank` command end to end on OpenSearch beside SQLite, with identical answers: import,
train, predict, score (generations swapped in through the alias), recommend and stats; and a
server that cannot be used is exit 2 with one line. Runs against the session's real node."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.demo import generate_site
from feedrank.store import open_store
from feedrank.store.search import SearchStore

pytestmark = pytest.mark.opensearch
runner = CliRunner()


def run(store: str, models: Path, *args: str, code: int = 0) -> str:
    argv = ["--store", store, "--models-dir", str(models), *args]
    result = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output + str(result.exception)
    return result.output


@pytest.fixture(scope="module")
def stores(
    opensearch_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[str, Path]]]:
    """The same site imported and trained into SQLite and into OpenSearch."""
    d = tmp_path_factory.mktemp("cli_search")
    site = generate_site(n_users=120, n_items=60, days=8, seed=5)
    files = {"users": d / "users.csv", "items": d / "items.jsonl", "events": d / "ev.parquet"}
    site.users.write_csv(files["users"])
    site.items.write_ndjson(files["items"])
    site.events.write_parquet(files["events"])
    prefix = f"frc{uuid.uuid4().hex[:12]}_"
    both = {
        "sqlite": (f"sqlite:///{d / 'site.db'}", d / "sqlite.models"),
        "opensearch": (f"{opensearch_url}/?prefix={prefix}&replicas=0", d / "os.models"),
    }
    for url, models in both.values():
        for kind in ("users", "items", "interactions"):
            key = "events" if kind == "interactions" else kind
            assert "0 bad" in run(url, models, "import", kind, str(files[key]))
        out = run(url, models, "train", "--model", "glm", "--test-days", "3")
        assert "roc_auc" in out
    yield both
    search = open_store(both["opensearch"][0])
    assert isinstance(search, SearchStore)
    search.drop()
    search.close()


def both(stores: dict[str, tuple[str, Path]], *args: str) -> tuple[str, str]:
    sq, os_ = (run(url, models, *args) for url, models in stores.values())
    return sq, os_


def answer(text: str) -> dict[str, object]:
    """A recommend answer without the model's name (its training time differs per store)."""
    payload: dict[str, object] = json.loads(text)
    payload.pop("model", None)
    return payload


def test_import_stats_are_the_same(stores: dict[str, tuple[str, Path]]) -> None:
    sq, os_ = (json.loads(out) for out in both(stores, "stats", "--json"))
    keys = ("users", "users_with_events", "items", "events", "events_per_type")
    for key in (*keys, "first_event", "last_event"):
        assert sq[key] == os_[key], key
    assert os_["similar_items"] == "knn" and os_["server"].startswith("opensearch 2.")


def test_predictions_are_the_same(stores: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    at = "2026-01-05T12:00:00Z"  # one request time for both (the default is now)
    pairs.write_text(
        f"user_id,item_id,timestamp\nu00002,p00010,{at}\nu00001,p00003,{at}\nnobody,p00001,{at}\n"
    )
    outs = []
    for name, (url, models) in stores.items():
        out = tmp_path / f"{name}.csv"
        run(url, models, "predict", "--pairs", str(pairs), "--out", str(out))
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_scored_generations_and_recommendations_are_the_same(
    stores: dict[str, tuple[str, Path]],
) -> None:
    for url, models in stores.values():
        run(url, models, "score", "--k", "10")
        run(url, models, "score", "--k", "10")  # a second generation swapped in
    sq, os_ = (json.loads(out) for out in both(stores, "stats", "--json"))
    assert sq["active_generation"]["rows"] == os_["active_generation"]["rows"] == 120 * 10
    args = ("recommend", "--all", "--k", "5", "--format", "jsonl")
    sq_all, os_all = ([answer(line) for line in out.splitlines()] for out in both(stores, *args))
    assert len(sq_all) == 120 and sq_all == os_all
    one = ("recommend", "u00001", "--k", "3", "--explain", "--json")
    sq_one, os_one = (answer(out) for out in both(stores, *one))
    assert sq_one == os_one
    search = open_store(stores["opensearch"][0])
    gens = search.generations()
    assert len(gens) == 2 and gens[-1].active  # the served one and the previous (rollback)
    search.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("opensearch+http://127.0.0.1:1", "cannot reach the opensearch server"),
        ("elasticsearch+http://127.0.0.1:1", "cannot reach the elasticsearch server"),
    ],
)
def test_an_unusable_server_is_exit_2_with_one_line(url: str, message: str, tmp_path: Path) -> None:
    out = run(url, tmp_path, "stats", code=2)
    assert message in " ".join(out.split())
