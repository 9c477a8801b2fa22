"""Choosing an ensemble's members on validation rows carved from the training data.

The rows are the candidates of users whose one held-out engagement is the label (the hybrid's
inner hold-out: the generators never saw it). The users are split, seeded, into a fitting part
and a judging part; a subset of generators is judged by fitting the ensemble's learner on the
fitting users' rows (only the candidates those generators propose, only their feature columns)
and ranking the judging users' candidates: NDCG@k, HR@k as the tie-break — the evaluation
harness's metrics, as the candidates rank above every other item. Forward selection: the best
single member first, then the member that improves the score most, until none improves it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

K = 10
JUDGED_SHARE = 0.25
Learner = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def ranking_metrics(
    scores: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int, k: int = K
) -> tuple[float, float]:
    """(NDCG@k, HR@k) over `n_groups` groups (rows tagged by `group`, a group with no row or no
    positive among its rows counts 0): each group's rows ranked by score, ties by row order."""
    order = np.lexsort((np.arange(len(scores)), -scores, group))
    g = group[order]
    start = np.searchsorted(g, g, side="left")
    rank = np.arange(len(g)) - start
    hit = (y[order] > 0) & (rank < k)
    gain = np.zeros(n_groups)
    np.maximum.at(gain, g[hit], 1.0 / np.log2(rank[hit] + 2.0))
    return float(gain.sum() / n_groups), float((gain > 0).sum() / n_groups)


def column_groups(n_members: int, width: int, n_columns: int) -> list[np.ndarray]:
    """Each member's feature columns (`width` consecutive ones); columns past the members'
    (the user's activity, ...) belong to every subset."""
    shared = np.arange(n_members * width, n_columns)
    return [np.arange(g * width, (g + 1) * width) for g in range(n_members)] + [shared]


def subset_rows(
    X: np.ndarray, proposed: np.ndarray, members: Sequence[int], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows some member proposes, and the columns of those members (plus shared ones)."""
    cols = column_groups(proposed.shape[1], width, X.shape[1])
    keep = proposed[:, list(members)].any(axis=1)
    return np.asarray(keep), np.concatenate([cols[g] for g in members] + [cols[-1]])


def forward_select(
    X: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    proposed: np.ndarray,
    names: Sequence[str],
    learner: Learner,
    width: int = 2,
    seed: int = 0,
    k: int = K,
) -> tuple[list[int], pl.DataFrame]:
    """The chosen members (indices, in the order chosen) and one row per subset tried: step,
    members, NDCG@k and HR@k on the judging users, whether it was kept.

    X: rows x columns (member g's features at columns g*width..); y: 1 for the held-out item;
    group: each row's user (0..n_users-1); proposed: rows x members, which members proposed it."""
    n_groups = int(group.max()) + 1 if len(group) else 0
    judged = np.random.default_rng(seed).random(n_groups) < JUDGED_SHARE
    if not judged.any() or judged.all():
        return list(range(len(names))), pl.DataFrame()
    row_judged = judged[group]
    remap = np.cumsum(judged) - 1  # judging users renumbered 0..m-1

    def score(members: list[int]) -> tuple[float, float]:
        keep, cols = subset_rows(X, proposed, members, width)
        fit_rows, judge_rows = keep & ~row_judged, keep & row_judged
        if y[fit_rows].sum() == 0 or y[fit_rows].sum() == fit_rows.sum():
            return (0.0, 0.0)
        predict = learner(X[np.ix_(fit_rows, cols)], y[fit_rows])
        s = predict(X[np.ix_(judge_rows, cols)])
        return ranking_metrics(s, y[judge_rows], remap[group[judge_rows]], int(judged.sum()), k)

    chosen: list[int] = []
    best = (-1.0, -1.0)
    rows: list[tuple[int, list[str], tuple[float, float]]] = []
    step = 0
    while len(chosen) < len(names):
        step += 1
        tried = [(g, score([*chosen, g])) for g in range(len(names)) if g not in chosen]
        for g, m in tried:
            rows.append((step, [names[i] for i in [*chosen, g]], m))
        g, m = max(tried, key=lambda t: (t[1], -t[0]))
        if m <= best:
            break
        chosen.append(g)
        best = m
    table = pl.DataFrame(
        {
            "step": [r[0] for r in rows],
            "members": [", ".join(r[1]) for r in rows],
            f"NDCG@{k}": [r[2][0] for r in rows],
            f"HR@{k}": [r[2][1] for r in rows],
            "kept": [r[1] == [names[i] for i in chosen[: r[0]]] for r in rows],
        }
    )
    return chosen, table
