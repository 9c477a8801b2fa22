"""A site whose users move through the catalogue by a known sequential model: the truth a
next-item model must recover, and MovieLens-shaped ratings for benchmarks.

Each item i has a successor `successor[i]` (one random cycle through the catalogue: a series'
next episode; never the item itself).
A user starts at an item drawn by taste and then, step after step, goes to the current item's
successor with probability `follow`, else to an item drawn by taste: softmax(user . item / 0.5
+ log popularity) over the items they have not rated yet. So order explains `follow` of the
steps and the user's taste the rest. Ratings (1..5) rise with the user's affinity for the item;
one rating an hour per user, from a user-specific start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from feedrank.schema import EVENT_COLUMNS
from feedrank.views.site import SiteData

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SequentialSite:
    data: SiteData  # events of type "rating", value 1..5
    successor: np.ndarray  # item index -> the item index that follows it in the true chain

    def ratings(self) -> pl.DataFrame:
        """MovieLens' ratings.csv columns: userId, movieId, rating, timestamp (epoch seconds)."""
        ev = self.data.events
        return ev.select(
            userId=pl.col("user_id"),
            movieId=pl.col("item_id"),
            rating=pl.col("value"),
            timestamp=pl.col("timestamp").dt.epoch("s"),
        )


def item_id(i: int | np.ndarray) -> np.ndarray:
    return np.char.add("i", np.char.zfill(np.asarray(i).astype(str), 4))


def sequential_site(
    n_users: int = 300,
    n_items: int = 40,
    length: int = 10,
    follow: float = 0.8,
    dim: int = 4,
    seed: int = 0,
) -> SequentialSite:
    if not 0.0 <= follow <= 1.0 or length < 1 or length > n_items:
        raise ValueError(
            f"follow must be in [0, 1] and 1 <= length <= n_items; got {follow}, {length}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items)
    successor = np.empty(n_items, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    items_v = rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    users_v = rng.normal(size=(n_users, dim))
    log_pop = -0.8 * np.log1p(np.arange(n_items))[rng.permutation(n_items)]
    affinity = users_v @ items_v.T  # users x items
    taste = affinity / 0.5 + log_pop
    rows_u, rows_i = [], []
    for u in range(n_users):  # a simulator of a few thousand steps: plain loops read best
        seen = np.zeros(n_items, dtype=bool)
        cur = -1
        for _ in range(length):
            nxt = successor[cur] if cur >= 0 else -1
            if nxt < 0 or seen[nxt] or rng.random() >= follow:
                logits = np.where(seen, -np.inf, taste[u])
                p = np.exp(logits - logits.max())
                nxt = int(rng.choice(n_items, p=p / p.sum()))
            seen[nxt] = True
            rows_u.append(u)
            rows_i.append(nxt)
            cur = nxt
    u_idx, i_idx = np.asarray(rows_u), np.asarray(rows_i)
    step = np.arange(len(u_idx)) - np.searchsorted(u_idx, u_idx)
    start = rng.integers(0, 24 * 60, n_users)  # minutes: users start at different times
    minutes = start[u_idx] + 60 * step
    z = affinity[u_idx, i_idx]
    rating = np.clip(np.round(3 + 1.5 * z + rng.normal(0, 0.5, z.size)), 1, 5)
    events = pl.DataFrame(
        {
            "event_id": None,
            "user_id": np.char.add("u", np.char.zfill(u_idx.astype(str), 5)),
            "item_id": item_id(i_idx),
            "type": "rating",
            "timestamp": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "value": rating,
            "position": None,
            "device": None,
            "context": None,
        },
        schema=EVENT_COLUMNS,
    ).sort("timestamp")
    items = pl.DataFrame(
        {"item_id": item_id(np.arange(n_items)), "created_at": [T0 - timedelta(days=1)] * n_items}
    ).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    users = pl.DataFrame({"user_id": np.unique(events["user_id"].to_numpy()).astype(str)})
    return SequentialSite(SiteData(users, items, events), successor)
