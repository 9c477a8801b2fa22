"""Hold-outs: what a model is fitted on, what it is judged on, and the view it serves from.

- temporal: fit on events before a cut; judge on each user's new engagements after it (items
  they did not know before the cut), served as of the cut. Labelled examples after the cut
  judge probabilities.
- last: each user's N most recent distinct engaged items hidden.
- loo: one engaged item per user hidden at random (seeded), for data whose time carries no
  signal (seed 004's forms).
Every number printed with a split carries its description."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from feedrank.exceptions import FeedrankError
from feedrank.features.examples import build_examples
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, serving_time

SPLITS = ("temporal", "last", "loo")


@dataclass(frozen=True)
class Split:
    kind: str
    data: SiteData  # everything: features of the test examples are read from it, as of their time
    train: SiteData  # what models are fitted on
    test: pl.DataFrame  # user_id, item_id: each judged user's held-out engagements
    at: datetime  # the time the judged users are served at
    description: str
    examples: pl.DataFrame | None = None  # labelled examples for probabilities (temporal)
    seed: int | None = None  # of a random hold-out

    def view(self, settings: Settings) -> FrameView:
        """What a fitted model serves the judged users from."""
        return FrameView(self.train, settings, self.at)

    @property
    def users(self) -> list[str]:
        return self.test["user_id"].unique(maintain_order=True).to_list()


def temporal_split(data: SiteData, settings: Settings, cut: datetime) -> Split:
    train = data.until(cut)
    seen = train.seen_pairs()
    later = data.engagements(settings).filter(pl.col("timestamp") >= cut)
    test = (
        later.select("user_id", "item_id")
        .unique()
        .join(seen, on=["user_id", "item_id"], how="anti")
        .sort("user_id", "item_id")
    )
    if test.is_empty():
        raise FeedrankError(
            f"the split at {cut.isoformat()} leaves no new engagements after it to judge on "
            "(choose another --test-days / --test-from, or --split loo)"
        )
    if train.engagements(settings).is_empty():
        raise FeedrankError(
            f"the split at {cut.isoformat()} leaves no engagements before it to learn from "
            "(choose a later --test-from / fewer --test-days)"
        )
    new_items = test.join(train.items.select("item_id"), on="item_id", how="anti")
    new_items = new_items.join(train.events.select("item_id").unique(), on="item_id", how="anti")
    examples = build_examples(data, settings, start=cut)
    return Split(
        "temporal",
        data,
        train,
        test,
        cut,
        f"temporal: fitted on events before {cut.isoformat()}, judged on the {test.height} new "
        f"(user, item) engagements of {test['user_id'].n_unique()} users after it "
        f"({new_items.height} on items no model fitted before the cut can know); full ranking",
        examples if examples.height and examples["label"].n_unique() == 2 else None,
    )


def last_n_split(data: SiteData, settings: Settings, n: int = 1) -> Split:
    if n < 1:
        raise FeedrankError(f"n must be >= 1; got {n}")
    first = (
        data.engagements(settings).group_by("user_id", "item_id").agg(t=pl.col("timestamp").min())
    )
    ranked = first.with_columns(
        r=pl.col("t").rank("ordinal", descending=True).over("user_id"), m=pl.len().over("user_id")
    )
    hidden = (
        ranked.filter((pl.col("r") <= n) & (pl.col("m") > n))
        .select("user_id", "item_id")
        .sort("user_id", "item_id")
    )
    if hidden.is_empty():
        raise FeedrankError(f"no user has more than {n} distinct engaged items to hold out")
    return Split(
        "last",
        data,
        data.without(hidden),
        hidden,
        serving_time(data),
        f"per-user leave-last-{n}: each user's {n} most recent distinct engaged item(s) hidden "
        f"({hidden['user_id'].n_unique()} users with more than {n}); full ranking",
    )


def loo_split(data: SiteData, settings: Settings, seed: int = 0, min_items: int = 2) -> Split:
    """Among the distinct engaged (user, item) pairs, every user with at least `min_items` has
    one hidden, chosen uniformly at random with a seeded generator (pairs sorted first, so the
    choice depends on the seed and the data only); every event of a hidden pair is removed
    from training."""
    if min_items < 2:
        raise FeedrankError(
            f"min_items must be >= 2 (a user keeps one item to learn from); got {min_items}"
        )
    pairs = data.engaged_pairs(settings).sort("user_id", "item_id")
    if pairs.is_empty():
        raise FeedrankError("no engagements to hold out: see `feedrank stats` for what counts")
    rng = np.random.default_rng(seed)
    hidden = (
        pairs.with_columns(__key=pl.Series(rng.random(pairs.height)), __n=pl.len().over("user_id"))
        .filter(pl.col("__n") >= min_items)
        .sort("user_id", "__key")
        .group_by("user_id", maintain_order=True)
        .first()
        .select("user_id", "item_id")
    )
    if hidden.is_empty():
        raise FeedrankError(f"no user has >= {min_items} distinct engaged items to hold one out")
    return Split(
        "loo",
        data,
        data.without(hidden),
        hidden,
        serving_time(data),
        f"seeded leave-one-out (seed {seed}): one item hidden per user with >= {min_items} "
        f"distinct engaged items ({hidden.height} users, {hidden.height} of {pairs.height} pairs "
        "hidden); models fitted on the rest; full ranking",
        seed=seed,
    )


def time_cut(data: SiteData, test_from: datetime | None, test_days: float | None) -> datetime:
    if test_from is not None:
        return test_from
    last = data.time_span[1]
    if last is None:
        raise FeedrankError("the store has no events to split: import interactions first")
    return last - timedelta(days=test_days if test_days is not None else 7.0)


def make_split(
    data: SiteData,
    settings: Settings,
    kind: str = "temporal",
    test_days: float | None = None,
    test_from: datetime | None = None,
    n: int = 1,
    seed: int = 0,
) -> Split:
    if kind == "temporal":
        return temporal_split(data, settings, time_cut(data, test_from, test_days))
    if kind == "last":
        return last_n_split(data, settings, n)
    if kind == "loo":
        return loo_split(data, settings, seed)
    raise FeedrankError(f"--split must be one of {list(SPLITS)}; got '{kind}'")
