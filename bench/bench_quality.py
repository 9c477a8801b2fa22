"""Recommendation quality beside the peers a user would otherwise pick, on data at hand.

Data: seed 004's clickstream (seeded leave-one-out; no timestamps), a generated site whose
users follow a known chain half of the time (every step an engagement; leave-last-out), and a
MovieLens-shaped ratings file generated with weaker order (written as userId,movieId,rating,timestamp and read back;
ratings >= 3.5 count; leave-last-out). Every model, feedrank's and the peers', is tuned on a
validation split carved from the training part by the same protocol (feedrank.pipeline.tune);
the test hold-out is scored once per final configuration. Full-catalogue ranking, seen items
excluded, HR@10 and NDCG@10.

Peers: a plain NumPy EASE (closed form, l2 tuned), a plain "last three items -> next item"
counter over every rated item (Polars; no parameters), implicit's ALS (factors and alpha
tuned). feedrank: ease, als, transition (tuned), sasrec and ltr (defaults: tuning them costs
minutes each).
On the clickstream also the hybrids and the ranker over the seed's own signals
(feedrank.evaluation.clickstream_eval.attribute_pool: the tuned EASE, popularity, the user's
asset-type and business-unit profiles, transition): the hybrid chooses its members on its inner
hold-out and its n_candidates/alpha are tuned on validation; the ranker takes three random
inner hold-outs (folds=3), defaults otherwise. And the default hybrid (its members chosen).

Then a generated site whose clicks carry a latent user-by-author term (feedrank.datasets.demo,
author_affinity=3.0; temporal split, the last 7 days held out): held-out impressions' AUC of the
GLM with and without its affinity term, the learned ranker (its scores as of the cut; plain,
and with the affinity GLM as one more generator), popularity and the true click model.
Then the scale of a fit: transition on a million events beside the plain counter.

    .venv/bin/python bench/bench_quality.py [--small] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from _common import machine
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from feedrank.datasets.clickstream import (
    clickstream_settings,
    default_clickstream_dir,
    read_clickstream,
)
from feedrank.datasets.demo import generate_site
from feedrank.datasets.sequences import sequential_site
from feedrank.evaluation.clickstream_eval import attribute_pool
from feedrank.evaluation.metrics import classification_metrics
from feedrank.evaluation.offline import evaluate
from feedrank.evaluation.splits import Split, last_n_split, loo_split, temporal_split, time_cut
from feedrank.models import make
from feedrank.pipeline.tune import tune, validation_split
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

K = 10
TUNED = ("ease", "als", "transition")
UNTUNED = {"sasrec": {"epochs": 20}, "ltr": {}}
PeerScores = Callable[[SiteData, Settings, list[str], list[str], dict[str, Any]], np.ndarray]


# -- the peers: what a user would write ----------------------------------------------------------
def _matrix(
    train: SiteData, settings: Settings, users: list[str], items: list[str]
) -> sp.csr_matrix:
    pairs = train.engaged_pairs(settings)
    u = {x: i for i, x in enumerate(users)}
    it = {x: i for i, x in enumerate(items)}
    rows = [u[x] for x in pairs["user_id"]]
    cols = [it[x] for x in pairs["item_id"]]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), (len(users), len(items)))


def numpy_ease(train, settings, users, items, p):  # type: ignore[no-untyped-def]
    X = _matrix(train, settings, users, items)
    G = (X.T @ X).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += p["l2"]
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    B[np.diag_indices_from(B)] = 0.0
    return np.asarray(X @ B)


def implicit_als(train, settings, users, items, p):  # type: ignore[no-untyped-def]
    X = _matrix(train, settings, users, items)
    model = AlternatingLeastSquares(
        factors=p["factors"], alpha=p["alpha"], regularization=0.01, iterations=15, random_state=0
    )
    model.fit(X, show_progress=False)
    return np.asarray(model.user_factors @ model.item_factors.T)


def last_three_counter(train, settings, users, items, p):  # type: ignore[no-untyped-def]
    """Every rated/seen item is a step (what a user would count on ratings.csv)."""
    ev = train.events.filter(Settings.seen_expr()).sort("user_id", "timestamp", maintain_order=True)
    it = pl.DataFrame({"item_id": items}).with_row_index("i")
    ev = ev.join(it, on="item_id", maintain_order="left")
    pairs = ev.with_columns(nxt=pl.col("i").shift(-1).over("user_id")).drop_nulls("nxt")
    counts = sp.csr_matrix(
        (np.ones(pairs.height), (pairs["i"].to_numpy(), pairs["nxt"].to_numpy())),
        (len(items), len(items)),
    )
    last = ev.group_by("user_id", maintain_order=True).agg(pl.col("i").tail(3))
    u = {x: r for r, x in enumerate(users)}
    rows = np.repeat([u[x] for x in last["user_id"]], [len(x) for x in last["i"]])
    cols = np.concatenate(last["i"].to_list())
    H = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), (len(users), len(items)))
    S = np.asarray((H @ counts).todense())
    S[S == 0] = -np.inf  # no path from the last items: no signal
    return S


PEERS: dict[str, tuple[PeerScores, list[dict[str, Any]]]] = {
    "numpy EASE": (numpy_ease, [{"l2": x} for x in (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)]),
    "implicit ALS": (
        implicit_als,
        [{"factors": f, "alpha": a} for f, a in itertools.product((64, 128), (1.0, 10.0))],
    ),
    "last-3 -> next counter": (last_three_counter, [{}]),
}


def peer_metrics(
    fn: PeerScores, split: Split, settings: Settings, p: dict[str, Any]
) -> dict[str, float]:
    """HR@K and NDCG@K of a peer's full-catalogue scores, ties broken by catalogue position."""
    users = sorted(set(split.train.events["user_id"]) | set(split.test["user_id"]))
    items = sorted(set(split.train.items["item_id"]) | set(split.train.events["item_id"]) - {""})
    t0 = time.perf_counter()
    S = fn(split.train, settings, users, items, p).astype(np.float64)
    fit_s = time.perf_counter() - t0
    u = {x: i for i, x in enumerate(users)}
    it = {x: i for i, x in enumerate(items)}
    seen = split.train.seen_pairs()
    S[[u[x] for x in seen["user_id"]], [it[x] for x in seen["item_id"]]] = -np.inf
    r = np.array([u[x] for x in split.test["user_id"]])
    c = np.array([it.get(x, -1) for x in split.test["item_id"]])
    own = np.where(c >= 0, S[r, np.maximum(c, 0)], -np.inf)
    rank = (S[r] > own[:, None]).sum(1) + (
        (S[r] == own[:, None]) & (np.arange(len(items)) < c[:, None])
    ).sum(1)
    hit = np.isfinite(own) & (rank < K)
    return {
        f"HR@{K}": float(hit.mean()),
        f"NDCG@{K}": float(np.where(hit, 1 / np.log2(rank + 2), 0).mean()),
        "fit_s": fit_s,
    }


def tuned_peer(
    name: str, split: Split, settings: Settings, seed: int
) -> tuple[dict[str, Any], dict[str, float]]:
    fn, grid = PEERS[name]
    val = validation_split(split.train, settings, split.kind, seed)
    best = max(grid, key=lambda p: peer_metrics(fn, val, settings, p)[f"NDCG@{K}"])
    return best, peer_metrics(fn, split, settings, best)


# -- the data ------------------------------------------------------------------------------------
def movielens_shaped(n_users: int, n_items: int, length: int) -> SiteData:
    """A generated ratings.csv (MovieLens' columns), read back as a user would import it."""
    site = sequential_site(n_users, n_items, length, follow=0.2, seed=2)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ratings.csv"
        site.ratings().write_csv(path)
        r = pl.read_csv(path, schema_overrides={"userId": pl.String, "movieId": pl.String})
    events = r.select(
        event_id=pl.lit(None, pl.String),
        user_id="userId",
        item_id="movieId",
        type=pl.lit("rating"),
        timestamp=pl.from_epoch("timestamp", "s")
        .dt.replace_time_zone("UTC")
        .cast(EVENT_COLUMNS["timestamp"]),
        value=pl.col("rating").cast(pl.Float64),
    ).with_columns(position=None, device=None, context=None)
    events = events.select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()]).sort("timestamp")
    items = pl.DataFrame({"item_id": events["item_id"].unique().sort()}).with_columns(
        created_at=pl.lit(datetime(2023, 1, 1, tzinfo=UTC)).cast(pl.Datetime("us", "UTC"))
    )
    return SiteData(pl.DataFrame({"user_id": events["user_id"].unique().sort()}), items, events)


def datasets(small: bool) -> list[tuple[str, SiteData, Settings, str]]:
    n = 300 if small else 2000
    out = []
    directory = default_clickstream_dir()
    if directory is not None:
        cs = read_clickstream(directory)
        out.append(
            (
                "clickstream (seed 004)",
                SiteData(cs.users, cs.items, cs.events.sort("timestamp")),
                clickstream_settings(),
                "loo",
            )
        )
    chain = sequential_site(n, 100 if small else 500, 20, follow=0.5, seed=1).data
    every_step = Settings(rating_threshold=1.0)  # a click stream: every step an engagement
    out.append(("generated chain (follow 0.5, every step engaged)", chain, every_step, "last"))
    ml = movielens_shaped(n, 300 if small else 1500, 30)
    out.append(("MovieLens-shaped ratings (>= 3.5 count)", ml, Settings(), "last"))
    return out


# -- the run -------------------------------------------------------------------------------------
def compare(
    name: str, data: SiteData, settings: Settings, kind: str, small: bool, seed: int = 0
) -> None:
    split = loo_split(data, settings, seed) if kind == "loo" else last_n_split(data, settings, 1)
    print(f"\n== {name}: {data.events.height} events, {split.description}  [{machine()}]")
    rows = [_feedrank_row("popularity", {}, "baseline", split, settings)]
    tuned: dict[str, dict[str, Any]] = {}
    for family in TUNED:
        t0 = time.perf_counter()
        chosen = tune(data, settings, family, trials=4 if small else 8, split=kind, seed=seed)
        tune_s = time.perf_counter() - t0
        tuned[family] = chosen.params
        rows.append(
            _feedrank_row(
                family,
                chosen.params,
                f"tuned ({chosen.trials.height} trials, {tune_s:.0f} s)",
                split,
                settings,
            )
        )
    for family, params in UNTUNED.items():
        p = {**params, "epochs": 5} if small and family == "sasrec" else params
        rows.append(_feedrank_row(family, p, "defaults", split, settings))
    if kind == "loo":  # the clickstream: its own signals
        rows += seed_signals(data, settings, split, float(tuned["ease"]["l2"]), small, seed)
    for peer in PEERS:
        p, m = tuned_peer(peer, split, settings, seed)
        rows.append({"model": peer, "params": str(p) or "-", **m, "recommend_s": float("nan")})
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=30, tbl_cols=10, tbl_width_chars=200, fmt_str_lengths=80):
        print(table)
    best_peer = (
        table.filter(~pl.col("model").str.starts_with("feedrank"))
        .sort(f"NDCG@{K}", descending=True)
        .row(0, named=True)
    )
    ours = (
        table.filter(pl.col("model").str.starts_with("feedrank"))
        .sort(f"NDCG@{K}", descending=True)
        .row(0, named=True)
    )
    for metric in (f"HR@{K}", f"NDCG@{K}"):
        print(
            f"{metric}: best feedrank ({ours['model']}) {ours[metric]:.4f} / best peer ({best_peer['model']}) {best_peer[metric]:.4f} = {ours[metric] / max(best_peer[metric], 1e-12):.2f}x"
        )


def seed_signals(
    data: SiteData, settings: Settings, split: Split, l2: float, small: bool, seed: int
) -> list[dict[str, Any]]:
    """The hybrid (tuned) and the ranker over the seed's signals, and the default hybrid."""
    pool = attribute_pool(l2)
    fixed = {"generators": pool, "holdout": "random"}
    t0 = time.perf_counter()
    chosen = tune(
        data, settings, "hybrid", trials=3 if small else 6, fixed=fixed, split="loo", seed=seed
    )
    note = f"tuned ({chosen.trials.height} trials, {time.perf_counter() - t0:.0f} s)"
    return [
        _feedrank_row("hybrid", chosen.params, note, split, settings, "seed's signals"),
        _feedrank_row("ltr", {**fixed, "folds": 3}, "defaults", split, settings, "seed's signals"),
        _feedrank_row("hybrid", {"holdout": "random"}, "default pool", split, settings),
    ]


def _feedrank_row(
    family: str,
    params: dict[str, Any],
    source: str,
    split: Split,
    settings: Settings,
    label: str = "",
) -> dict[str, Any]:
    ev = evaluate({family: make(family, **params)}, split, settings, K)
    model = ev.models[family]
    users = FrameView(split.train, settings).active_users()
    t0 = time.perf_counter()
    model.at(split.view(settings)).recommend(users, k=K)
    rec_s = time.perf_counter() - t0
    m = ev.table().row(0, named=True)
    if family == "ltr":
        source += f"; {model.summary()}"  # type: ignore[attr-defined]
    if family in ("hybrid", "ltr"):
        source += f"; members {model.names_}"  # type: ignore[attr-defined]
    shown = {k: v for k, v in params.items() if k != "generators"}
    return {
        "model": f"feedrank {family}" + (f" ({label})" if label else ""),
        "params": f"{source}: " + ", ".join(f"{k}={v}" for k, v in shown.items()),
        f"HR@{K}": m[f"HR@{K}"],
        f"NDCG@{K}": m[f"NDCG@{K}"],
        "fit_s": ev.fit_seconds[family],
        "recommend_s": rec_s,
    }


def latent_site(small: bool) -> None:
    """Held-out AUC on a site with a latent user-by-author term (see the module docstring)."""
    site = (
        generate_site(n_users=600, n_items=120, days=21, author_affinity=3.0)
        if small
        else generate_site(author_affinity=3.0)
    )
    data, s = site.site_data(), Settings()
    split = temporal_split(data, s, time_cut(data, None, 7.0))
    ex = split.examples
    assert ex is not None
    y = ex["label"].to_numpy()
    print(f"\n== latent user-by-author site: {split.description}  [{machine()}]")
    print(f"{ex.height} held-out impressions, positive rate {y.mean():.4f}")
    glm_aff = {"kind": "glm", "name": "glm_affinity", "params": {"affinity": ["author"]}}
    models = {
        "popularity": make("popularity"),
        "glm": make("glm"),
        "glm, affinity author": make("glm", affinity=["author"]),
        "ltr": make("ltr"),
        "ltr + glm affinity": make(
            "ltr", generators=["transition", "ease", "als", "popularity", glm_aff]
        ),
    }
    ev = evaluate(models, split, s, K)
    rows = []
    for name in models:
        if name in ev.probabilities:
            auc = ev.probabilities[name]["roc_auc"]
        else:  # a ranker: its scores of the held-out (user, item) pairs as of the cut
            auc = scores_auc(ev.models[name], split, s)
        rows.append(
            {
                "model": name,
                "AUC": auc,
                f"HR@{K}": ev.metric(name, f"HR@{K}"),
                f"NDCG@{K}": ev.metric(name, f"NDCG@{K}"),
                "fit_s": ev.fit_seconds.get(name, float("nan")),
            }
        )
    truth = site.click_probability(ex.select("user_id", "item_id", "position", "timestamp"))
    rows.append(
        {"model": "truth (the click model)", "AUC": classification_metrics(y, truth)["roc_auc"]}
    )
    with pl.Config(tbl_rows=30, tbl_width_chars=200):
        print(pl.DataFrame(rows, infer_schema_length=None))
    glm = ev.models["glm, affinity author"]
    print(glm.coef_table().filter(pl.col("feature").str.starts_with("affinity")))  # type: ignore[attr-defined]


def scores_auc(model: Any, split: Split, settings: Settings) -> float:
    ex = split.examples
    assert ex is not None
    users = ex["user_id"].unique().sort().to_list()
    items = ex["item_id"].unique().sort().to_list()
    S = model.at(split.view(settings)).score(users, items)
    ui = {u: i for i, u in enumerate(users)}
    ii = {v: i for i, v in enumerate(items)}
    p = S[[ui[u] for u in ex["user_id"].to_list()], [ii[v] for v in ex["item_id"].to_list()]]
    p = np.nan_to_num(p, nan=-np.inf)
    return float(classification_metrics(ex["label"].to_numpy(), p)["roc_auc"])


def scale(small: bool) -> None:
    """transition's fit on a million events (users walking a chain half the time, vectorised
    generation) beside the plain counter's."""
    n_users, length, n_items = (2000, 50, 1000) if small else (20000, 50, 20000)
    rng = np.random.default_rng(0)
    succ = rng.permutation(n_items)
    walk = np.empty((n_users, length), dtype=np.int64)
    walk[:, 0] = rng.integers(0, n_items, n_users)
    for t in range(1, length):
        follow = rng.random(n_users) < 0.5
        walk[:, t] = np.where(follow, succ[walk[:, t - 1]], rng.integers(0, n_items, n_users))
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    ev = pl.DataFrame(
        {
            "event_id": None,
            "user_id": np.repeat(np.arange(n_users), length).astype(str),
            "item_id": walk.ravel().astype(str),
            "type": "click",
            "timestamp": pl.datetime_range(
                t0, t0 + timedelta(seconds=n_users * length - 1), "1s", eager=True
            ),
            "value": 1.0,
            "position": None,
            "device": None,
            "context": None,
        },
        schema=EVENT_COLUMNS,
    )
    items = pl.DataFrame({"item_id": np.arange(n_items).astype(str)}).with_columns(
        created_at=pl.lit(t0 - timedelta(days=1)).cast(pl.Datetime("us", "UTC"))
    )
    data = SiteData(pl.DataFrame({"user_id": np.arange(n_users).astype(str)}), items, ev)
    s = Settings()
    t = time.perf_counter()
    make("transition").fit(data, s)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    ev.sort("user_id", "timestamp").with_columns(
        nxt=pl.col("item_id").shift(-1).over("user_id")
    ).drop_nulls("nxt").group_by("item_id", "nxt").len()
    peer = time.perf_counter() - t
    print(
        f"\n== scale: transition fit on {ev.height} events, {n_items} items: {ours:.2f} s; plain Polars next-item count: {peer:.2f} s ({ours / peer:.1f}x)  [{machine()}]"
    )


SECTIONS = ("clickstream", "chain", "movielens", "latent", "scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a tiny input, to smoke-test")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run these sections")
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    with threadpool_limits(2):
        for name, data, settings, kind in datasets(args.small):
            section = (
                "clickstream" if kind == "loo" else "chain" if "chain" in name else "movielens"
            )
            if section in only:
                compare(name, data, settings, kind, args.small)
        if "latent" in only:
            latent_site(args.small)
        if "scale" in only:
            scale(args.small)


if __name__ == "__main__":
    main()
