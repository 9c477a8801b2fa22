"""Business rules against an exhaustive oracle: for random rule sets (fixed seed) on a small
catalogue, every model's served answer is the top-k of all eligible items by that model's own
scores (popularity, the newest, then any item filling in where it has none), ties to the
smaller id; filtered, hidden, excluded and negatively-rated items never appear; the batch path
equals the per-user one; bad rules say which parameter, what was got and what is allowed."""

from __future__ import annotations

import random
from datetime import timedelta
from functools import cache
from typing import Any

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.exceptions import ParameterError
from feedrank.models import MODELS, make
from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.serving.ranking import boosted
from feedrank.serving.rules import Condition, Rules
from feedrank.serving.service import RecommendationService
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

PARAMS = {
    "als": {"factors": 4, "iterations": 3},
    "bpr": {"factors": 4, "iterations": 5},
    "twotower": {"epochs": 1},
    "bilinear": {"max_iter": 20},
}
TAGS = ["x", "y", "z", "w"]


@cache
def site() -> SiteData:
    """A small demo site whose items also carry a list attribute (tags), a number (price),
    hidden items, an expired one, and users who said `not_interested`."""
    data = generate_site(n_users=40, n_items=30, days=6, seed=3).site_data()
    rng = np.random.default_rng(0)
    n = data.items.height
    end = data.events["timestamp"].max()
    items = data.items.with_columns(
        tags=pl.Series(
            [sorted(rng.choice(TAGS, rng.integers(1, 3), replace=False)) for _ in range(n)]
        ),
        price=pl.Series(np.round(rng.uniform(0, 100, n), 1)),
        hidden=pl.Series([i % 11 == 5 for i in range(n)]),
        available_until=pl.Series(
            [end - timedelta(days=1) if i == 7 else None for i in range(n)],
            dtype=pl.Datetime("us", "UTC"),
        ),
    )
    users = data.events["user_id"].unique().sort().to_list()
    item_ids = items["item_id"].to_list()
    negative = pl.DataFrame(
        {
            "user_id": users[:10],
            "item_id": [item_ids[(3 * j) % n] for j in range(10)],
            "type": ["not_interested"] * 10,
            "timestamp": [end - timedelta(hours=1)] * 10,
        }
    )
    events = pl.concat([data.events, negative], how="diagonal_relaxed").sort("timestamp")
    return SiteData(data.users, items, events)


@cache
def fitted(kind: str) -> tuple[Recommender, PopularityRecommender]:
    data = site()
    params = {k: v for k, v in PARAMS.get(kind, {}).items() if k in make(kind).get_params()}
    return make(kind, **params).fit(data, Settings()), PopularityRecommender().fit(data, Settings())


def service(kind: str) -> RecommendationService:
    model, fallback = fitted(kind)
    return RecommendationService(model, FrameView(site(), Settings()), fallback)


def random_rules(rng: random.Random, items: pl.DataFrame) -> Rules:
    """A random rule set over the site's attributes (a few of each kind, often none)."""
    ids = items["item_id"].to_list()
    filters: list[str] = []
    if rng.random() < 0.5:
        filters += [f"content_type={v}" for v in rng.sample(sorted(set(items["content_type"])), 2)]
    if rng.random() < 0.4:
        filters.append(f"tags={rng.choice(TAGS)}")
    if rng.random() < 0.4:
        filters.append(f"price{rng.choice(['<', '>=', '<='])}{rng.randint(20, 80)}")
    if rng.random() < 0.3:
        filters.append(f"age<{rng.randint(2, 6)}d")
    if rng.random() < 0.2:
        filters.append(f"lang!={rng.choice(sorted(set(items['lang'])))}")
    boost = [f"author={rng.choice(sorted(set(items['author'])))}:3"] if rng.random() < 0.4 else []
    caps = (
        [f"{rng.choice(['author', 'content_type'])}={rng.randint(1, 2)}"]
        if rng.random() < 0.4
        else []
    )
    return Rules.parse(
        filters,
        rng.sample(ids, 3) if rng.random() < 0.5 else [],
        rng.sample(ids, 20) if rng.random() < 0.3 else None,
        boost,
        caps,
        rng.choice([0, 0, 2]),
        rng.random() < 0.8,
    )


# -- the oracle: plain Python over plain rows -----------------------------------------------------
def _matches(item: dict[str, Any], cond: Condition, as_of: Any) -> bool:
    name, op, value = cond.field, cond.op, cond.value
    if name == "age":
        days = float(value[:-1])
        age = (as_of - item["created_at"]).total_seconds() / 86400
        return {"<": age < days, "<=": age <= days, ">": age > days, ">=": age >= days}[op]
    v = item[name]
    if op == "=":
        return value in v if isinstance(v, list) else str(v) == value
    if op == "!=":
        return not (value in v if isinstance(v, list) else str(v) == value)
    x = float(value)
    return {"<": v < x, "<=": v <= x, ">": v > x, ">=": v >= x}[op]


def oracle(svc: RecommendationService, user: str, k: int, rules: Rules) -> list[str]:
    view = svc.view
    as_of = view.catalogue.as_of
    rows = view.catalogue.items.to_dicts()
    eligible = []
    for it in rows:
        if it["hidden"] or (it["available_until"] is not None and it["available_until"] <= as_of):
            continue
        if it["created_at"] is not None and it["created_at"] > as_of:
            continue
        equal: dict[str, list[Condition]] = {}
        for c in rules.filters:
            if c.op == "=":
                equal.setdefault(c.field, []).append(c)
        ok = all(any(_matches(it, c, as_of) for c in conds) for conds in equal.values())
        ok = ok and all(_matches(it, c, as_of) for c in rules.filters if c.op != "=")
        ok = ok and it["item_id"] not in rules.exclude
        ok = ok and (rules.include is None or it["item_id"] in rules.include)
        if ok:
            eligible.append(it)
    hist = view.histories([user])
    said_no = set(hist.filter(pl.col("type") == "not_interested")["item_id"].to_list())
    seen = set(hist.filter(Settings.seen_expr())["item_id"].to_list())
    eligible = [
        it
        for it in eligible
        if it["item_id"] not in said_no and not (rules.exclude_seen and it["item_id"] in seen)
    ]
    ids = np.array(sorted(it["item_id"] for it in eligible), dtype=object)
    factor = np.ones(len(ids))
    for b in rules.boosts:
        by_id = {it["item_id"]: it for it in eligible}
        factor *= np.array([b.factor if str(by_id[i][b.field]) == b.value else 1.0 for i in ids])
    ranked: list[str] = []
    for _, scorer in svc.sources():
        raw = scorer.ranking_scores([user], hist, ids)[0]
        s = boosted(scorer.reported(raw), factor) if rules.boosts else raw
        order = sorted(
            (i for i in range(len(ids)) if np.isfinite(s[i]) and ids[i] not in ranked),
            key=lambda i: (-s[i], ids[i]),
        )
        ranked += [ids[i] for i in order]
    by_id = {it["item_id"]: it for it in eligible}
    used: dict[tuple[str, Any], int] = {}
    out = []
    for i in ranked:
        vals = [(f, _hashable(by_id[i][f])) for f, _ in rules.max_per]
        if any(used.get(v, 0) >= n for v, (_, n) in zip(vals, rules.max_per, strict=True)):
            continue
        for v in vals:
            used[v] = used.get(v, 0) + 1
        out.append(i)
    return out[rules.offset : rules.offset + k]


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_serves_the_top_k_of_the_eligible_items(kind: str) -> None:
    svc = service(kind)
    rng = random.Random(13)
    users = [*sorted(site().events["user_id"].unique().to_list())[:6], "nobody"]
    items = svc.view.catalogue.items
    for trial in range(8):
        rules = random_rules(rng, items)
        k = rng.choice([3, 5, 10])
        ans = svc.answer(users, k, rules)
        for u in users:
            got = ans.recs.filter(pl.col("user_id") == u)["item_id"].to_list()
            assert got == oracle(svc, u, k, rules), (kind, trial, u, rules)


@pytest.mark.parametrize("kind", ["glm", "ease", "itemknn", "als", "popularity"])
def test_withdrawn_filtered_and_rejected_items_never_appear(kind: str) -> None:
    svc = service(kind)
    items = svc.view.catalogue.items
    never = set(items.filter(pl.col("hidden"))["item_id"]) | set(
        items.filter(pl.col("available_until").is_not_null())["item_id"]
    )
    users = sorted(site().events["user_id"].unique().to_list())[:10]
    for exclude_seen in (True, False):
        rules = Rules.parse(["content_type=video", "tags=x"], exclude_seen=exclude_seen)
        recs = svc.answer(users, 30, rules).recs.join(items, on="item_id")
        assert not set(recs["item_id"]) & never
        assert (recs["content_type"] == "video").all()
        assert recs["tags"].list.contains("x").all()
        negatives = site().events.filter(pl.col("type") == "not_interested")
        assert recs.join(negatives, on=["user_id", "item_id"]).is_empty()


def test_k_results_whenever_k_items_are_eligible() -> None:
    svc = service("itemknn")  # a model with no signal for most items: refills do the rest
    user = sorted(site().events["user_id"].unique().to_list())[0]
    for rules in (Rules(), Rules.parse(["price<60"]), Rules.parse(["tags=y"], offset=2)):
        eligible = len(oracle(svc, user, 10_000, Rules(rules.filters, offset=0)))
        got = svc.answer([user], 8, rules).recs.height
        assert got == min(8, max(eligible - rules.offset, 0))


def test_batch_equals_per_user_with_and_without_rules() -> None:
    svc = service("ease")
    users = [*sorted(site().events["user_id"].unique().to_list())[:12], "nobody"]
    for rules in (Rules(), Rules.parse(["lang=en"], max_per=["author=1"])):
        batch = svc.answer(users, 5, rules).recs
        for u in users:
            one = svc.answer([u], 5, rules).recs
            assert one.equals(batch.filter(pl.col("user_id") == u)), u


def test_the_answer_says_what_each_rule_removed() -> None:
    svc = service("popularity")
    items = svc.view.catalogue.items
    ans = svc.answer(["nobody"], 5, Rules.parse(["content_type=video"], exclude=["zz"]))
    removed = {a["rule"]: a["removed"] for a in ans.applied}
    assert (
        removed["hidden or unavailable"]
        == items.filter(pl.col("hidden") | pl.col("available_until").is_not_null()).height
    )
    served = items.filter(~pl.col("hidden") & pl.col("available_until").is_null())
    assert removed["filter content_type=video"] == (served["content_type"] != "video").sum()
    assert removed["exclude"] == 0


def test_boosts_are_shown_and_multiply_the_score() -> None:
    svc = service("popularity")
    plain = svc.answer(["nobody"], 30, Rules()).recs
    author = svc.view.catalogue.items.filter(pl.col("item_id") == plain["item_id"][-1])["author"][0]
    ans = svc.answer(["nobody"], 30, Rules.parse(boost=[f"author={author}:1000"]))
    top = ans.recs["item_id"][0]
    assert ans.boosts[top] == (1000.0, [f"author={author}:1000"])
    before = plain.filter(pl.col("item_id") == top)["score"][0]
    assert ans.recs["score"][0] == pytest.approx(before * 1000, rel=1e-12)


@pytest.mark.parametrize(
    ("rules", "param", "needle"),
    [
        ({"filter": ["colour=red"]}, "filter", "'colour'"),
        ({"filter": ["lang<en"]}, "filter", "allowed: =, !="),
        ({"filter": ["price<cheap"]}, "filter", "must be a number; got 'cheap'"),
        ({"filter": ["created_at>=yesterday-ish"]}, "filter", "ISO 8601"),
        ({"filter": ["age<30x"]}, "filter", "duration such as 30d"),
        ({"filter": ["content_type"]}, "filter", "field<op>value"),
        ({"boost": ["author=a1"]}, "boost", "field=value:factor"),
        ({"boost": ["colour=red:2"]}, "boost", "'colour'"),
        ({"max_per": ["author=0"]}, "max_per", "whole n >= 1"),
        ({"max_per": ["colour=2"]}, "max_per", "'colour'"),
        ({"offset": -1}, "offset", ">= 0"),
    ],
)
def test_bad_rules_name_the_parameter_the_value_and_what_is_allowed(
    rules: dict[str, Any], param: str, needle: str
) -> None:
    svc = service("popularity")
    with pytest.raises(ParameterError) as err:
        svc.answer(["nobody"], 5, Rules.parse(**rules))
    assert err.value.param == param
    assert needle in str(err.value)
