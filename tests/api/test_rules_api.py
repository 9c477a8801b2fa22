"""Rules, sessions, re-ranking and similar items over HTTP: the answers equal the Python
service's and the CLI's for the same request; the generation path with rules equals live
scoring; hidden and negatively-rated items disappear; bad input is a 422 naming the field
(CLI: exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from feedrank.cli.main import app as cli
from feedrank.pipeline.registry import Registry
from feedrank.serving.rules import Rules
from feedrank.serving.service import RecommendationService
from feedrank.settings import Settings
from feedrank.store import Store
from feedrank.views.view import StoreView, store_catalogue

from .conftest import INGEST, READ, eventually
from .sitebuild import MODELS, store_url

RULES = {"filter": ["content_type=video", "content_type=image"], "max_per": ["author=2"]}


def _users(store: Store, n: int = 4) -> list[str]:
    counts = store.user_counts().group_by("user_id").agg(pl.col("n").sum()).sort("n", "user_id")
    return counts["user_id"].to_list()[-n:]


def _python(site: Path, store: Store, user: str, k: int, rules: Rules) -> list[dict[str, Any]]:
    model, rec = Registry(site / MODELS).load(None)
    fallback = Registry(site / MODELS).fallback(rec)
    view = StoreView.for_user(store, model.settings_, store_catalogue(store), user)
    recs = RecommendationService(model, view, fallback).answer([user], k, rules).recs
    return recs.select("item_id", "score", "source").to_dicts()


def _shown(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("item_id", "score", "source")} for r in items]


def _cli(site: Path, *args: str) -> Any:
    got = CliRunner().invoke(
        cli, ["--store", store_url(site), "--models-dir", str(site / MODELS), *args]
    )
    return got


def test_http_equals_python_equals_cli(client: TestClient, site: Path, store: Store) -> None:
    for u in _users(store):
        params = {**RULES, "k": 5, "model": "glm", "boost": ["lang=python:2"], "offset": 1}
        http = client.get(f"/users/{u}/recommendations", params=params, headers=READ).json()
        assert http["served_from"] == "live" and len(http["items"]) == 5
        rules = Rules.parse(**RULES, boost=["lang=python:2"], offset=1)
        assert _shown(http["items"]) == _python(site, store, u, 5, rules)
        args = [f"--filter={f}" for f in RULES["filter"]] + ["--max-per", "author=2"]
        out = _cli(
            site,
            "recommend",
            u,
            "--k",
            "5",
            "--json",
            "--boost",
            "lang=python:2",
            "--offset",
            "1",
            *args,
        )
        assert out.exit_code == 0, out.output
        cli_answer = json.loads(out.stdout)
        assert cli_answer["items"] == http["items"]
        assert cli_answer["rules"] == http["rules"]


def test_generation_path_with_rules_equals_live_scoring(client: TestClient, store: Store) -> None:
    paths: set[str] = set()
    for u in _users(store):
        params = {"filter": ["content_type=video", "content_type=image"], "k": 4}
        fast = client.get(f"/users/{u}/recommendations", params=params, headers=READ).json()
        live = client.get(
            f"/users/{u}/recommendations", params={**params, "model": "glm"}, headers=READ
        ).json()
        assert fast["served_from"] == "generation", fast
        assert [r["item_id"] for r in fast["items"]] == [r["item_id"] for r in live["items"]]
        # a boost re-sorts the stored list where that is exact, and is scored live otherwise
        for factor in (1.5, 1e6):
            boost = {**params, "boost": f"lang=python:{factor}", "max_per": "author=2"}
            fast = client.get(f"/users/{u}/recommendations", params=boost, headers=READ).json()
            live = client.get(
                f"/users/{u}/recommendations", params={**boost, "model": "glm"}, headers=READ
            ).json()
            paths.add(fast["served_from"])
            assert fast["items"] == live["items"], (factor, fast)
            assert fast["rules"][:2] == live["rules"][:2]  # hidden, the filter
    assert "generation" in paths


def test_hidden_items_and_negative_feedback_disappear(client: TestClient, store: Store) -> None:
    u = _users(store, 1)[0]
    url = f"/users/{u}/recommendations"
    first = client.get(url, params={"k": 3}, headers=READ).json()["items"][0]["item_id"]
    item = store.items([first]).to_dicts()[0]
    body = {k: v for k, v in item.items() if k not in ("item_id", "created_at") and v is not None}
    assert (
        client.put(f"/items/{first}", json={**body, "hidden": True}, headers=INGEST).status_code
        == 200
    )
    got = eventually(
        lambda: client.get(url, params={"k": 40, "exclude_seen": False}, headers=READ).json(),
        lambda j: first not in [r["item_id"] for r in j["items"]],
    )
    assert first not in [r["item_id"] for r in got["items"]]
    second = got["items"][0]["item_id"]
    event = {"user_id": u, "item_id": second, "type": "not_interested"}
    assert client.post("/events", json=event, headers=INGEST).status_code == 200
    again = eventually(
        lambda: client.get(url, params={"k": 40, "exclude_seen": False}, headers=READ).json(),
        lambda j: second not in [r["item_id"] for r in j["items"]],
    )
    assert second not in [r["item_id"] for r in again["items"]]
    removed = {a["rule"]: a["removed"] for a in again["rules"]}
    assert removed["negative feedback"] == 1 and removed["hidden or unavailable"] >= 1


def test_sessions_for_anonymous_visitors_and_short_histories(
    client: TestClient, site: Path, store: Store
) -> None:
    items = store.items()["item_id"].to_list()[:3]
    anon = client.post(
        "/sessions/recommendations",
        json={"items": items, "k": 5, "filter": ["lang=python"]},
        headers=READ,
    )
    assert anon.status_code == 200, anon.text
    body = anon.json()
    assert len(body["items"]) == 5 and not set(items) & {r["item_id"] for r in body["items"]}
    assert body["session"]["blended"] and "anonymous" in body["session"]["reason"]
    langs = store.items([r["item_id"] for r in body["items"]])["lang"].to_list()
    assert set(langs) == {"python"}
    cli_out = _cli(
        site,
        "recommend",
        "--session",
        ",".join(items),
        "--k",
        "5",
        "--filter",
        "lang=python",
        "--json",
    )
    assert cli_out.exit_code == 0, cli_out.output
    assert json.loads(cli_out.stdout)["items"] == body["items"]
    # a user with a single event gets the session blended into it; a busy one does not
    counts = store.user_counts().group_by("user_id").agg(pl.col("n").sum()).sort("n", "user_id")
    short, busy = counts["user_id"][0], counts["user_id"][-1]
    for user, blended in ((short, True), (busy, False)):
        got = client.post(
            "/sessions/recommendations", json={"items": items, "user_id": user}, headers=READ
        ).json()
        assert got["session"]["blended"] is blended, got["session"]


def test_rerank_returns_exactly_the_items_given(
    client: TestClient, site: Path, store: Store
) -> None:
    u = _users(store, 1)[0]
    items = [*store.items()["item_id"].to_list()[5:15], "no-such-item"]
    got = client.post("/rerank", json={"user_id": u, "items": items, "explain": True}, headers=READ)
    assert got.status_code == 200, got.text
    rows = got.json()["items"]
    assert sorted(r["item_id"] for r in rows) == sorted(items)
    assert rows[-1] == {**rows[-1], "item_id": "no-such-item", "known": False, "source": "unknown"}
    scored = [r["score"] for r in rows if r["source"] == "model"]
    assert scored == sorted(scored, reverse=True) and rows[0]["reasons"]
    out = _cli(site, "rerank", u, "--items", ",".join(items), "--explain", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["items"] == rows


def test_similar_items_from_the_glm_with_rules(client: TestClient, store: Store) -> None:
    item = store.items()["item_id"][0]
    got = client.get(
        f"/items/{item}/similar", params={"k": 4, "filter": "content_type=video"}, headers=READ
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["similarity"] == "session" and body["model"].startswith("glm/")
    ids = [r["item_id"] for r in body["similar"]]
    assert len(ids) == 4 and item not in ids
    assert set(store.items(ids)["content_type"]) == {"video"}


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"filter": "colour=red"}, "filter", "'colour'"),
        ({"filter": "lang>en"}, "filter", "allowed: =, !="),
        ({"filter": "created_at>=not-a-date"}, "filter", "ISO 8601"),
        ({"filter": "age<3 days"}, "filter", "duration"),
        ({"boost": "lang=en"}, "boost", "field=value:factor"),
        ({"max_per": "author=x"}, "max_per", "field=n"),
        ({"model": "nope"}, "model", "'nope'"),
    ],
)
def test_bad_rules_are_422_naming_the_field(
    client: TestClient, site: Path, store: Store, params: dict[str, str], field: str, needle: str
) -> None:
    u = _users(store, 1)[0]
    got = client.get(f"/users/{u}/recommendations", params=params, headers=READ)
    assert got.status_code == 422 and got.json()["field"] == field, got.text
    assert needle in got.json()["detail"]
    opt = {"filter": "--filter", "boost": "--boost", "max_per": "--max-per", "model": "--model"}
    name, value = next(iter(params.items()))
    out = _cli(site, "recommend", u, opt[name], value)
    assert out.exit_code == 2 and needle in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1, out.output


def test_similar_and_session_bad_input(client: TestClient, store: Store) -> None:
    item = store.items()["item_id"][0]
    assert (
        client.get(f"/items/{item}/similar", params={"model": "nope"}, headers=READ).status_code
        == 422
    )
    assert client.get("/items/nope/similar", headers=READ).status_code == 404
    empty = client.post("/sessions/recommendations", json={"items": []}, headers=READ)
    assert empty.status_code == 422 and empty.json()["field"] == "items"
    odd = client.post("/sessions/recommendations", json={"items": ["a"], "colour": 1}, headers=READ)
    assert odd.status_code == 422
    rerank = client.post(
        "/rerank", json={"user_id": "u", "items": ["a"], "boost": ["x"]}, headers=READ
    )
    assert rerank.status_code == 422 and rerank.json()["field"] == "boost"


def test_settings_negative_types_are_a_setting() -> None:
    s = Settings.from_dict({"negative_types": ["dislike", "hide"]})
    assert s.negative_types == ("dislike", "hide")


def test_items_hide_and_unhide_from_the_cli(site: Path, store: Store) -> None:
    u = _users(store, 1)[0]
    first = _python(site, store, u, 3, Rules())[0]["item_id"]
    out = _cli(site, "items", "hide", first)
    assert out.exit_code == 0, out.output
    assert first not in [r["item_id"] for r in _python(site, store, u, 40, Rules())]
    assert _cli(site, "items", "unhide", first).exit_code == 0
    assert _python(site, store, u, 3, Rules())[0]["item_id"] == first
    missing = _cli(site, "items", "hide", "no-such-item")
    assert missing.exit_code == 2 and "no-such-item" in missing.output
