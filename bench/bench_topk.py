"""Batch top-100 for every user of a 10k-user x 5k-item site, from a fitted GLMRecommender.

The site is generate_site(n_users=10_000, n_items=5_000, days=14): ~0.9M events; the GLM is
fitted on its ~0.65M impressions before anything is timed.

feedrank: model.recommend(all users, k=100, exclude_seen=True): per batch of 512 users, the
point-in-time feature snapshot as of the serving time, the logit assembled from per-scope parts
(models/linear.py), engaged items masked, then top_k (argpartition, then a sort of the k).
Timed end to end from serve_with(data), so the history tables are rebuilt inside the timing.

Peer: numpy brute force on the same model's scores: S = model.score(all users, items) as one
dense matrix, the seen mask applied, then np.argsort(-S, axis=1)[:, :100] per chunk of users.
The top-k step alone is also compared on the same masked S: feedrank.models.base.top_k vs the
full argsort. Both must give the same items in the same order for every user.

    .venv/bin/python bench/bench_topk.py [--small]
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
from _common import Row, check, parse_args, print_table, timed

from feedrank.datasets.demo import generate_site
from feedrank.models.base import seen_mask, top_k
from feedrank.models.glm import GLMRecommender
from feedrank.settings import Settings
from feedrank.views.view import FrameView

K = 100
CHUNK = 1_000  # users per argsort chunk in the peer


def argsort_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The brute force: sort every row fully, keep the first k (stable, so ties keep item order)."""
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for start in range(0, scores.shape[0], CHUNK):
        block = scores[start : start + CHUNK]
        out[start : start + CHUNK] = np.argsort(-block, axis=1, kind="stable")[:, :k]
    return out


def feedrank_top(users: list[str], items: np.ndarray, scores: np.ndarray, k: int) -> pl.DataFrame:
    frames = [
        top_k(users[s : s + CHUNK], items, scores[s : s + CHUNK], k)
        for s in range(0, len(users), CHUNK)
    ]
    return pl.concat(frames)


def numpy_bound(n_users: int, n_items: int, k: int, dim: int = 32) -> None:
    """The bound on throughput: a dense dot product per user block and an argpartition top-k
    (no features, no seen mask): what scoring n_items per user cannot beat."""
    rng = np.random.default_rng(0)
    U = rng.normal(size=(n_users, dim)).astype(np.float32)
    V = rng.normal(size=(n_items, dim)).astype(np.float32)
    for start in range(0, n_users, CHUNK):
        S = U[start : start + CHUNK] @ V.T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        np.take_along_axis(part, np.argsort(-np.take_along_axis(S, part, 1), axis=1), 1)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n_users, n_items = (500, 300) if args.small else (10_000, 5_000)
    t0 = time.perf_counter()
    data = generate_site(n_users=n_users, n_items=n_items, days=14, seed=0).site_data()
    model = GLMRecommender().fit(data, Settings())
    view = FrameView(data, Settings())
    users = view.active_users()  # a user with no event is the fallback's, not the model's
    items = view.candidates()
    print(
        f"setup: {data.events.height:,} events, GLM with {model.coef_.size} coefficients fitted "
        f"on {model.n_examples_:,} examples in {time.perf_counter() - t0:.1f} s (not timed below)"
    )
    size = f"{len(users):,} users x {len(items):,} items"

    # -- end to end: a fresh view, snapshot features, scores, seen mask, top-k -----------------
    def feedrank_end_to_end() -> pl.DataFrame:
        return model.at(FrameView(data, Settings())).recommend(users, k=K, exclude_seen=True)

    def peer_end_to_end() -> tuple[np.ndarray, np.ndarray]:
        scorer = model.at(view)
        scores = scorer.score(users, items)
        scores[seen_mask(view.histories(users), users, items)] = -np.inf
        return scores, argsort_top(scores, K)

    model.at(view).recommend(users[:512], k=K)  # warm-up (first-call costs) on one batch
    t_fr, recs = timed(feedrank_end_to_end)
    t_pe, (scores, peer_idx) = timed(peer_end_to_end)
    t_bound, _ = timed(lambda: numpy_bound(len(users), len(items), K))

    # -- the top-k step alone, on the same masked score matrix ---------------------------------
    t_topk, top = timed(lambda: feedrank_top(users, items, scores, K), repeat=3, warmup=True)
    t_sort, _ = timed(lambda: argsort_top(scores, K), repeat=3)

    # -- agreement -----------------------------------------------------------------------------
    peer_items = items[peer_idx.ravel()]
    n_rows = len(users) * K
    check(recs.height == top.height == n_rows, f"{n_rows:,} rows (top-{K} for every user)")
    same_recs = (
        recs["user_id"].to_list() == np.repeat(users, K).tolist()
        and recs["item_id"].to_list() == peer_items.tolist()
    )
    check(same_recs, "recommend() lists equal the brute force's (same items, same order)")
    check(top["item_id"].to_list() == peer_items.tolist(), "top_k equals argsort on the same S")
    rows_ix = np.repeat(np.arange(len(users)), K)
    check(
        np.allclose(recs["score"].to_numpy(), scores[rows_ix, peer_idx.ravel()], rtol=1e-12),
        "recommend()'s scores equal score() of the same pairs",
    )

    print_table(
        f"Batch top-{K}, exclude_seen",
        [
            Row("recommend() end to end", size, t_fr, "score() all + np.argsort", t_pe,
                len(users), "users/s"),
            Row(f"top-{K} step only", size, t_topk, "np.argsort full sort", t_sort,
                len(users), "users/s"),
        Row("recommend() end to end", size, t_fr, "numpy bound: dot + argpartition", t_bound,
            len(users), "users/s"),
        ],
    )  # fmt: skip
    print(
        f"\nfeedrank end-to-end throughput (snapshot + scoring + mask + top-{K}): "
        f"{len(users) / t_fr:,.0f} users/s, {len(users) * len(items) / t_fr / 1e6:.1f}M pairs/s"
    )


if __name__ == "__main__":
    main()
