"""Ranking under rules, the one implementation every model and path shares.

For a block of users: the eligible candidates (serving.rules.select), each source's scores
on them (the model, then popularity, the newest, any item: a source fills what the earlier
ones could not), boosts applied, the user's seen and negatively-rated items masked, each
source's best taken in order (ties to the smaller id), the `max_per` cap applied greedily
(the best item of a value first), then the page (`offset`, k). The answer is the top-k of all
eligible items by (source, boosted score, id): the exhaustive oracle of the tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from feedrank.models.base import best_of, block_users
from feedrank.serving.rules import Rules, Selection, check_caps, select
from feedrank.settings import Settings

if TYPE_CHECKING:
    from feedrank.models.base import Scorer
    from feedrank.views.catalogue import Catalogue
    from feedrank.views.view import View

# A source of a list: its name (or per-user names, from the users) and its scorer.
Source = tuple["str | Callable[[list[str]], list[str]]", "Scorer"]

CAPPED_FIRST = 8  # under max_per, a source's first 8 x (offset + k) items are listed first
CAPPED_MIN = 64  # ... and at least this many
SCHEMA = {
    "user_id": pl.String,
    "rank": pl.Int32,
    "item_id": pl.String,
    "score": pl.Float64,
    "source": pl.String,
}


@dataclass(frozen=True)
class Answer:
    """Recommendations (user_id, rank, item_id, score, source; users in input order) and what
    the rules did: `applied` lists each rule with the candidates it removed (summed over the
    users asked for); `boosts` maps a boosted item to its factor and the boosts that matched."""

    recs: pl.DataFrame
    applied: list[dict[str, Any]]
    boosts: dict[str, tuple[float, list[str]]]

    def __len__(self) -> int:
        return self.recs.height


def boosted(scores: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Scores times their boost factor; a negative score is divided by it (never lowered)."""
    return np.where(scores >= 0, scores * factor, scores / factor)


def rank_users(
    view: View,
    sources: Sequence[Source],
    user_ids: Sequence[str],
    k: int,
    rules: Rules,
    negative_types: Sequence[str] = (),
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> Answer:
    """Each user's top-k eligible items under `rules`, filled from `sources` in order."""
    check_caps(view.catalogue, rules)
    sel = select(view.catalogue, rules)
    caps = [(f, _value_map(view.catalogue, f)) for f, _ in rules.max_per]
    counts = {"negative feedback": 0}
    if rules.exclude_seen:
        counts["exclude_seen"] = 0
    counts |= {f"max_per {f}={n}": 0 for f, n in rules.max_per}
    users = list(user_ids)
    step = min(batch_size, block_users(len(sel.items)))
    frames = []
    for start in range(0, len(users), step):
        chunk = users[start : start + step]
        hist = view.histories(chunk)
        blocked = _blocked(negative_types, hist, chunk, sel, rules, counts)
        frames.append(_rank_block(sources, chunk, hist, sel, blocked, rules, k, caps, counts))
        if progress:
            progress(len(chunk))
    recs = pl.concat(frames) if frames else pl.DataFrame(schema=SCHEMA)
    applied = sel.removed + [{"rule": r, "removed": n} for r, n in counts.items()]
    return Answer(recs, applied, sel.boosts)


def _blocked(
    negative_types: Sequence[str],
    hist: pl.DataFrame,
    users: list[str],
    sel: Selection,
    rules: Rules,
    counts: dict[str, int],
) -> np.ndarray:
    """Per user and eligible item: whether the user said no to it or (with exclude_seen)
    already knows it."""
    # the users' item events (Settings.seen_expr) found in the sorted selection by binary
    # search, not by joining a frame of every eligible item
    known = hist.filter(Settings.seen_expr())
    n, m = len(users), len(sel.items)
    negative = np.zeros((n, m), dtype=bool)
    seen = np.zeros((n, m), dtype=bool)
    if known.height and m:
        row_of = {u: r for r, u in enumerate(users)}
        who = known["user_id"].to_list()
        rows = np.fromiter((row_of.get(u, -1) for u in who), np.int64, len(who))
        ids = known["item_id"].to_numpy().astype(object)
        cols = np.minimum(np.searchsorted(sel.items, ids), m - 1)
        ok = (rows >= 0) & (sel.items[cols] == ids)
        said_no = ok & np.isin(known["type"].to_numpy().astype(object), list(negative_types))
        negative[rows[said_no], cols[said_no]] = True
        seen[rows[ok], cols[ok]] = True
    counts["negative feedback"] += int(negative.sum())
    if not rules.exclude_seen:
        return negative
    counts["exclude_seen"] += int((seen & ~negative).sum())
    return negative | seen


def _rank_block(
    sources: Sequence[Source],
    users: list[str],
    hist: pl.DataFrame,
    sel: Selection,
    blocked: np.ndarray,
    rules: Rules,
    k: int,
    caps: list[tuple[str, dict[str, Any]]],
    counts: dict[str, int],
) -> pl.DataFrame:
    need = rules.offset + k
    m = len(sel.items)
    # Under a cap a list may skip many items: each source's best `first` are listed, and a
    # user whose page they cannot fill is listed again with every item.
    first = min(m, max(CAPPED_FIRST * need, CAPPED_MIN)) if caps else m
    lists = _choose(sources, users, hist, sel, blocked, rules, need, bool(caps), first)
    out: list[dict[str, Any]] = []
    ids = sel.items
    for r, u in enumerate(users):
        chosen, scores, labels, cut = lists[r]
        mine: dict[str, int] = {}
        # lazily: the cap stops reading once the page is full
        values = ([vals.get(ids[i]) for _, vals in caps] for i in chosen)
        keep = capped(values, rules, need, mine)
        if len(keep) < need and cut:
            part = hist.filter(pl.col("user_id") == u)
            again = _choose(sources, [u], part, sel, blocked[r : r + 1], rules, need, True, m)
            chosen, scores, labels, _ = again[0]
            mine = {}
            values = ([vals.get(ids[i]) for _, vals in caps] for i in chosen)
            keep = capped(values, rules, need, mine)
        for c, n in mine.items():
            counts[c] = counts.get(c, 0) + n
        for rank, pos in enumerate(keep[rules.offset : need], start=1):
            out.append(
                {
                    "user_id": u,
                    "rank": rank,
                    "item_id": ids[chosen[pos]],
                    "score": scores[pos],
                    "source": labels[pos],
                }
            )
    return pl.DataFrame(out, schema=SCHEMA)


def _choose(
    sources: Sequence[Source],
    users: list[str],
    hist: pl.DataFrame,
    sel: Selection,
    blocked: np.ndarray,
    rules: Rules,
    need: int,
    capped: bool,
    limit: int,
) -> list[tuple[list[int], list[float], list[str], bool]]:
    """Per user: eligible item positions, best first, with their scores and sources, and
    whether a source's list was cut at `limit` (what follows it is then unknown). Without
    caps a user needs `need` items; with caps, every item, or a source's first `limit`."""
    n, m = len(users), len(sel.items)
    chosen: list[list[int]] = [[] for _ in users]
    scores: list[list[float]] = [[] for _ in users]
    labels: list[list[str]] = [[] for _ in users]
    cut = [False] * n
    taken = blocked.copy()  # masked or already listed
    for name, scorer in sources:
        full = np.asarray(taken.all(axis=1))  # nothing left: no later source can add
        todo = [
            r
            for r in range(n)
            if len(chosen[r]) < (m if capped else need) and not full[r] and not cut[r]
        ]
        if not todo:
            break
        rows = [users[r] for r in todo]
        part = hist.filter(pl.col("user_id").is_in(rows)) if len(todo) < n else hist
        raw = scorer.ranking_scores(rows, part, sel.items)
        # a boost multiplies the reported score (a probability, not the GLM's logit)
        ranked = boosted(scorer.reported(raw), sel.factor) if rules.boosts else raw
        ranked[~np.isfinite(ranked) | taken[todo]] = -np.inf
        short = min(len(chosen[r]) for r in todo)
        want = limit if capped else min(m, max(need - short, 1))
        idx, vals = best_of(ranked, want)
        reported = vals if rules.boosts else scorer.reported(vals)
        names = [name] * len(todo) if isinstance(name, str) else name(rows)
        for j, r in enumerate(todo):
            ok = np.isfinite(vals[j])
            got = idx[j][ok][: (m if capped else need - len(chosen[r]))]
            # a full list short of every item: the source has more, ranked below these
            cut[r] = capped and len(got) == want < int((~taken[r]).sum())
            chosen[r] += got.tolist()
            scores[r] += reported[j][ok][: len(got)].tolist()
            labels[r] += [names[j]] * len(got)
            taken[r, got] = True
    return [(chosen[r], scores[r], labels[r], cut[r]) for r in range(n)]


def capped(
    values: Iterable[list[Any]], rules: Rules, need: int, counts: dict[str, int]
) -> list[int]:
    """Positions of a ranked list kept under the max_per caps (greedy: the best item of a
    value first), up to `need`; `values` holds each item's value of each capped field (None:
    no value, never capped), read only as far as the page needs. Counts the items each cap
    skipped."""
    if not rules.max_per:
        return list(range(min(need, sum(1 for _ in values))))
    used: list[dict[Any, int]] = [{} for _ in rules.max_per]
    keep = []
    for pos, vals in enumerate(values):
        full = [
            c
            for c, v in enumerate(vals)
            if v is not None and used[c].get(v, 0) >= rules.max_per[c][1]
        ]
        if full:
            f, n = rules.max_per[full[0]]
            counts[f"max_per {f}={n}"] = counts.get(f"max_per {f}={n}", 0) + 1
            continue
        for c, v in enumerate(vals):
            if v is not None:
                used[c][v] = used[c].get(v, 0) + 1
        keep.append(pos)
        if len(keep) >= need:
            break
    return keep


def page(
    catalogue: Catalogue, item_ids: list[str], rules: Rules, need: int, counts: dict[str, int]
) -> list[int]:
    """`capped` over a ranked list of item ids (a stored generation's)."""
    check_caps(catalogue, rules)
    values = [_value_map(catalogue, f) for f, _ in rules.max_per]
    return capped([[v.get(i) for v in values] for i in item_ids], rules, need, counts)


def _value_map(catalogue: Catalogue, name: str) -> dict[str, Any]:
    """item id -> its value of `name` (lists as tuples, so they can be counted); kept per
    catalogue."""

    def build() -> dict[str, Any]:
        rows = catalogue.items.select("item_id", name).iter_rows()
        return {i: tuple(v) if isinstance(v, list) else v for i, v in rows}

    return catalogue.memo_items(("values", name), build)


def items_out(
    recs: list[dict[str, Any]],
    why: list[list[dict[str, Any]]] | None,
    boosts: dict[str, tuple[float, list[str]]],
) -> list[dict[str, Any]]:
    """An answer's rows as the API and the CLI print them: rank, item_id, score, source, the
    boost (factor and the boosts that matched) where one applied, reasons when asked."""
    rows = []
    for rank, r in enumerate(recs, start=1):
        row = {"rank": rank, "item_id": r["item_id"], "score": r["score"], "source": r["source"]}
        if r["item_id"] in boosts:
            factor, by = boosts[r["item_id"]]
            row["boost"] = {"factor": factor, "by": by}
        if why is not None:
            row["reasons"] = why[rank - 1] if rank - 1 < len(why) else []
        rows.append(row)
    return rows
