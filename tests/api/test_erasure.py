"""Issue 12: erasure leaves no trace. After DELETE /users/{id} (and `feedrank erase USER`) no
file under the store's and the models' directories holds the user's id — the database, its WAL,
ALS and user-kNN arrays, the frozen benchmark's Parquet files, and the sequence and ranking
families of issue 14 (transition, the learned ranker with its ALS member, the hybrid, sasrec)
— and a second server on the same store stops using the user within a refresh."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from feedrank.api import create_app
from feedrank.cli.main import app as cli
from feedrank.io import import_frame
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.retrain import RetrainPolicy, retrain
from feedrank.pipeline.train import train
from feedrank.settings import Settings
from feedrank.store import Store
from feedrank.views.site import read_site

from .conftest import ADMIN, READ, eventually, settings_for
from .sitebuild import MODELS, store_url

API_USER, CLI_USER = "erase-me-7f3a9", "erase-me-cli-2b"
NEW_FAMILIES = {  # issue 14's families, small: the test is about what their files hold
    "transition": {},
    "ltr": {"n_estimators": 20},
    "hybrid": {"generators": ["transition", "als", "popularity"], "n_candidates": 20},
    "sasrec": {"max_len": 10, "dim": 16, "epochs": 2},
}


def _traces(root: Path, user: str) -> list[str]:
    """Files holding the id: as UTF-8 (the database, JSON, Parquet's dictionary), as UTF-32
    (NumPy's string arrays in .npz), or as a row of a Parquet file (compressed pages)."""
    needles = (user.encode(), user.encode("utf-32-le"))
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data for n in needles) or (
            path.suffix == ".parquet" and user in pl.read_parquet(path)["user_id"].to_list()
        ):
            found.append(path.name)
    return found


def _add_user(store: Store, user: str) -> None:
    """A user with a profile and engagements up to the site's end (held-out ones included)."""
    end = store.stats()["last_event"]
    items = store.items()["item_id"].head(12).to_list()
    last = pl.Series([end]).str.to_datetime(time_zone="UTC")[0]
    events = pl.DataFrame(
        {
            "user_id": [user] * len(items),
            "item_id": items,
            "type": ["click", "like"] * (len(items) // 2),
            "timestamp": [last - timedelta(hours=12 * i) for i in range(len(items))],
        }
    )
    import_frame(store, "interactions", events, strict=True)
    import_frame(store, "users", pl.DataFrame({"user_id": [user], "country": ["NL"]}), strict=True)


def test_erasure_leaves_no_trace_and_every_server_follows(site: Path, store: Store) -> None:
    _add_user(store, API_USER)
    _add_user(store, CLI_USER)
    registry = Registry(site / MODELS)
    data = read_site(store)
    retrain(data, Settings(), registry, RetrainPolicy(test_days=2, kind="als"))  # + benchmark
    knn = train(data, Settings(), "userknn", test_days=2)
    registry.save(knn.model, "userknn", fallback=knn.fallback)
    for kind, params in NEW_FAMILIES.items():
        result = train(data, Settings(), kind, params, test_days=2)
        registry.save(result.model, kind, fallback=result.fallback)
    with_factors = [registry.root / "ltr", registry.root / "hybrid"]  # their ALS members
    for user in (API_USER, CLI_USER):  # the check can see the id where it is
        found = set(_traces(site, user))
        assert {"arrays.npz", "benchmark.parquet"} <= found and found & {"site.db", "site.db-wal"}
        assert all(_traces(d, user) for d in with_factors), "ALS members hold the user's rows"

    with (
        TestClient(create_app(settings_for(site))) as a,
        TestClient(create_app(settings_for(site, model="userknn"))) as b,
    ):
        rt_b = b.app.state.runtime  # type: ignore[attr-defined]
        assert rt_b.state.served.model.users_.index([API_USER])[0] >= 0
        r = b.get(f"/users/{API_USER}/recommendations", headers=READ).json()
        assert r["cold_start"] is False
        r = a.delete(f"/users/{API_USER}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["removed"]["files"] >= 3
        # The other server: the rewritten model, no cached answer, no history.
        eventually(
            lambda: rt_b.state.served.model.users_.index([API_USER])[0],
            lambda i: i == -1,
        )
        assert rt_b.state.served.model.users_.index([API_USER])[0] == -1
        r = b.get(f"/users/{API_USER}/recommendations", headers=READ).json()
        assert r["cold_start"] is True
        assert a.delete("/users/" + "x" * 257, headers=ADMIN).status_code == 422
    assert _traces(site, API_USER) == []

    out = CliRunner().invoke(
        cli, ["--store", store_url(site), "--models-dir", str(site / MODELS), "erase", CLI_USER]
    )
    assert out.exit_code == 0 and f"erased {CLI_USER}" in out.output, out.output
    assert _traces(site, CLI_USER) == []
    assert store.events(user_ids=[CLI_USER]).is_empty()
