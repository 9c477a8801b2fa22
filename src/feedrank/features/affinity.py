"""A latent user-by-level term, point in time: how much more than expected a user engaged with
items of each level of an item attribute (author, content type, ...) before t, carried over to
the levels that behave alike.

Per user and level, before t: `engaged` (engagements with the level's items) and `shown`
(exposures of them: impressions where the site logs them), and the user's shrunk relative
excess on the level

    r[l] = (engaged - p * shown) / (p * shown + 1)      (p: engagements per exposure)

Level factors V (levels x k) are the `rank` leading right singular vectors of the users x
levels matrix r over the training window, scaled by their singular values / sqrt(users): a
parameter fitted once (levels: the `max_levels` most exposed; others get 0). A user's vector
at t is the ridge fit of their r on V, each level weighted by its expected engagements
p * shown:

    u = (V' W V + l2 I)^-1 V' W r

and two features of a (user, item) pair at t follow:

- `affinity_<attr>`: u . V[level of the item] — the latent term: a user who engaged more than
  expected with levels that go together gets it on the whole group, including levels they
  were seldom shown;
- `affinity_own_<attr>`: r[level of the item] — the user's own past excess on it.

Everything about the user is read strictly before each example's time (the same counts a
serving snapshot reads before its time), so an example never sees its own label or anything
after it; V is fitted on the training window only. Training rows are computed by blocks of
users: each block's running counts a dense (events x levels) cumulative sum, read at each
key's last event before its time — no loop over events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

T = "timestamp"
ROWS_PER_BLOCK = 20_000  # user events per dense block of running counts


@dataclass
class LevelAffinity:
    attr: str
    levels: list[str]  # the levels V covers, in its order
    factors: np.ndarray  # V, levels x k
    prior: float  # p: engagements per exposure
    l2: float  # the ridge penalty of a user's vector

    @property
    def names(self) -> tuple[str, str]:
        return f"affinity_{self.attr}", f"affinity_own_{self.attr}"

    def excess(self, engaged: np.ndarray, shown: np.ndarray) -> np.ndarray:
        p = self.prior
        return (engaged - p * shown) / (p * shown + 1.0)

    def matrices(self, engaged: np.ndarray, shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latent, own) for every (user, level) from the users' counts: users x levels each."""
        r = self.excess(engaged, shown)
        v = self.factors
        w = self.prior * shown
        gram = np.einsum("nl,lk,lj->nkj", w, v, v) + self.l2 * np.eye(v.shape[1])[None]
        rhs = np.einsum("nl,lk->nk", w * r, v)
        u = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        return u @ v.T, r

    def codes(self, values: pl.Series) -> np.ndarray:
        """Each value's position among the levels; -1 for a level S does not cover."""
        index = pl.DataFrame({"level": self.levels}, schema={"level": pl.String}).with_row_index(
            "__c"
        )
        frame = pl.DataFrame({"level": values.cast(pl.String)})
        got = frame.join(index, on="level", how="left", maintain_order="left")["__c"]
        return got.fill_null(-1).cast(pl.Int64).to_numpy()

    def to_json(self) -> dict[str, Any]:
        return {"attr": self.attr, "levels": self.levels, "prior": self.prior, "l2": self.l2}

    @classmethod
    def from_json(cls, d: dict[str, Any], factors: np.ndarray) -> LevelAffinity:
        return cls(str(d["attr"]), list(d["levels"]), factors, float(d["prior"]), float(d["l2"]))


def level_events(
    events: pl.DataFrame, items: pl.DataFrame, attr: str, exposure: Sequence[str]
) -> pl.DataFrame:
    """user_id, level, timestamp, engaged, shown of the item events that count (engagements
    and exposures), from events carrying `engaged` (features.history.weighted)."""
    return (
        events.filter(pl.col("item_id") != "")
        .join(
            items.select("item_id", pl.col(attr).cast(pl.String).alias("level")),
            on="item_id",
            how="inner",
        )
        .select(
            "user_id",
            "level",
            T,
            engaged=pl.col("engaged").cast(pl.Float64),
            shown=pl.col("type").is_in(list(exposure)).cast(pl.Float64),
        )
        .filter((pl.col("engaged") > 0) | (pl.col("shown") > 0))
    )


def fit_affinity(
    events: pl.DataFrame,
    items: pl.DataFrame,
    attr: str,
    exposure: Sequence[str],
    rank: int = 3,
    l2: float = 0.3,
    max_levels: int = 200,
) -> LevelAffinity:
    """V from the users x levels excess over all of `events` (the training window)."""
    ev = level_events(events, items, attr, exposure)
    top = (
        ev.group_by("level")
        .agg(n=pl.col("shown").sum() + pl.col("engaged").sum())
        .sort("n", "level", descending=[True, False], nulls_last=True)
        .filter(pl.col("level").is_not_null())
        .head(max_levels)
    )
    levels = sorted(top["level"].to_list())
    engaged_total, shown_total = float(ev["engaged"].sum()), float(ev["shown"].sum())
    prior = min(max(engaged_total / shown_total, 1e-4), 0.5) if shown_total > 0 else 0.05
    k = max(1, min(int(rank), len(levels)))
    aff = LevelAffinity(attr, levels, np.zeros((len(levels), k)), prior, float(l2))
    if not levels:
        return aff
    per_user = ev.group_by("user_id", "level").agg(pl.col("engaged", "shown").sum())
    users = per_user["user_id"].unique().sort()
    u = users.to_frame().with_row_index("__u")
    per_user = per_user.join(u, on="user_id")
    per_user = per_user.with_columns(__l=pl.Series(aff.codes(per_user["level"]), dtype=pl.Int64))
    per_user = per_user.filter(pl.col("__l") >= 0)
    engaged = np.zeros((users.len(), len(levels)))
    shown = np.zeros_like(engaged)
    rows, cols = per_user["__u"].to_numpy(), per_user["__l"].to_numpy()
    engaged[rows, cols] = per_user["engaged"].to_numpy()
    shown[rows, cols] = per_user["shown"].to_numpy()
    r = aff.excess(engaged, shown)
    _, sv, vt = np.linalg.svd(r, full_matrices=False)
    k = min(k, len(sv))
    aff.factors[:, :k] = vt[:k].T * (sv[:k] / np.sqrt(r.shape[0]))
    return aff


def asof_features(
    aff: LevelAffinity,
    events: pl.DataFrame,
    items: pl.DataFrame,
    exposure: Sequence[str],
    keys: pl.DataFrame,
) -> pl.DataFrame:
    """The two features of each key row (user_id, item_id, timestamp) from the user's events
    strictly before its timestamp; row order kept. Blocks of users: each block's running
    counts are a dense (events x levels) cumulative sum, read at the last event before each key."""
    latent_name, own_name = aff.names
    n = keys.height
    latent, own = np.zeros(n), np.zeros(n)
    if n and aff.levels:
        ev = level_events(events, items, aff.attr, exposure)
        ev = ev.with_columns(__l=pl.Series(aff.codes(ev["level"]), dtype=pl.Int64)).filter(
            pl.col("__l") >= 0
        )
        k = keys.select("user_id", "item_id", T).with_row_index("__row")
        k = k.join(
            items.select("item_id", pl.col(aff.attr).cast(pl.String).alias("level")),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        k = k.with_columns(__l=pl.Series(aff.codes(k["level"]), dtype=pl.Int64))
        users = pl.concat([ev["user_id"], k["user_id"]]).unique().sort().to_frame()
        users = users.with_row_index("__u")
        ev = ev.join(users, on="user_id").sort("__u", T)
        k = k.join(users, on="user_id", maintain_order="left").sort("__u", T)
        _fill_blocks(aff, ev, k, latent, own)
    return pl.DataFrame({latent_name: latent, own_name: own})


def _fill_blocks(
    aff: LevelAffinity, ev: pl.DataFrame, k: pl.DataFrame, latent: np.ndarray, own: np.ndarray
) -> None:
    e_u, e_t = ev["__u"].cast(pl.Int64).to_numpy(), ev[T].dt.epoch("us").to_numpy()
    e_l = ev["__l"].to_numpy()
    e_eng, e_shown = ev["engaged"].to_numpy(), ev["shown"].to_numpy()
    k_u, k_t = k["__u"].cast(pl.Int64).to_numpy(), k[T].dt.epoch("us").to_numpy()
    k_l, k_row = k["__l"].to_numpy(), k["__row"].to_numpy()
    n_levels = len(aff.levels)
    n_users = int(max(e_u.max(initial=-1), k_u.max(initial=-1))) + 1
    e_start = np.searchsorted(e_u, np.arange(n_users + 1))  # each user's first event row
    k_start = np.searchsorted(k_u, np.arange(n_users + 1))
    u0 = 0
    while u0 < n_users:  # users [u0, u1): at most ROWS_PER_BLOCK events (or one user)
        u1 = int(np.searchsorted(e_start, e_start[u0] + ROWS_PER_BLOCK, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n_users)
        r0, r1 = e_start[u0], e_start[u1]
        keys = np.arange(k_start[u0], k_start[u1])
        if keys.size:
            counts = np.zeros((r1 - r0 + 1, 2 * n_levels))  # row 0: nothing yet
            rows = np.arange(1, r1 - r0 + 1)
            counts[rows, e_l[r0:r1]] = e_eng[r0:r1]
            counts[rows, n_levels + e_l[r0:r1]] = e_shown[r0:r1]
            np.cumsum(counts, axis=0, out=counts)
            # Cumulative row of the user's events strictly before the key's time, minus the
            # row before the user's first event: the user's counts before t.
            first = e_start[k_u[keys]] - r0
            before = _events_before(e_u[r0:r1], e_t[r0:r1], k_u[keys], k_t[keys])
            c = counts[before] - counts[first]
            lat_m, own_m = aff.matrices(c[:, :n_levels], c[:, n_levels:])
            lv = k_l[keys]
            known = lv >= 0
            safe = np.where(known, lv, 0)
            rows = np.arange(len(keys))
            latent[k_row[keys]] = np.where(known, lat_m[rows, safe], 0.0)
            own[k_row[keys]] = np.where(known, own_m[rows, safe], 0.0)
        u0 = u1


def _events_before(
    e_u: np.ndarray, e_t: np.ndarray, k_u: np.ndarray, k_t: np.ndarray
) -> np.ndarray:
    """Per key, how many of the block's events (sorted by user, then time) come before (user,
    t): the cumulative row that holds the user's events strictly before t."""
    # Composite keys compare (user, time) lexicographically: user * span + (time - min).
    lo = min(int(e_t.min(initial=0)), int(k_t.min(initial=0)))
    span = max(int(e_t.max(initial=0)), int(k_t.max(initial=0))) - lo + 1
    ek = e_u.astype(np.int64) * span + (e_t - lo)
    kk = k_u.astype(np.int64) * span + (k_t - lo)
    return np.searchsorted(ek, kk, side="left")


def snapshot_counts(
    aff: LevelAffinity,
    events: pl.DataFrame,
    items: pl.DataFrame,
    exposure: Sequence[str],
    user_ids: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(engaged, shown) of these users per level from `events` (already before the snapshot's
    time): users x levels each."""
    engaged = np.zeros((len(user_ids), len(aff.levels)))
    shown = np.zeros_like(engaged)
    if not aff.levels or events.is_empty():
        return engaged, shown
    ev = level_events(events, items, aff.attr, exposure)
    per = ev.group_by("user_id", "level").agg(pl.col("engaged", "shown").sum())
    u = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String}).with_row_index(
        "__u"
    )
    per = per.join(u, on="user_id")
    per = per.with_columns(__l=pl.Series(aff.codes(per["level"]), dtype=pl.Int64))
    per = per.filter(pl.col("__l") >= 0)
    rows, cols = per["__u"].to_numpy(), per["__l"].to_numpy()
    np.add.at(engaged, (rows, cols), per["engaged"].to_numpy())
    np.add.at(shown, (rows, cols), per["shown"].to_numpy())
    return engaged, shown


def fit_affinities(
    events: pl.DataFrame,
    items: pl.DataFrame,
    attrs: Sequence[str],
    exposure: Sequence[str],
    rank: int,
    l2: float,
) -> list[LevelAffinity]:
    """One LevelAffinity per attribute, fitted on `events` (weighted, the training window)."""
    return [fit_affinity(events, items, a, exposure, rank, l2) for a in attrs]


def asof_columns(
    affinities: Sequence[LevelAffinity],
    events: pl.DataFrame,
    items: pl.DataFrame,
    exposure: Sequence[str],
    keys: pl.DataFrame,
) -> pl.DataFrame:
    """Every affinity's two columns for key rows (user_id, item_id, timestamp), as of each."""
    parts = [asof_features(a, events, items, exposure, keys) for a in affinities]
    return pl.concat(parts, how="horizontal") if parts else pl.DataFrame()


class SnapshotAffinity:
    """The affinities of a batch of users at one time: their (latent, own) users x levels
    matrices from their events before it, computed once and read per level or per pair."""

    def __init__(
        self,
        affinities: Sequence[LevelAffinity],
        events: pl.DataFrame,
        items: pl.DataFrame,
        exposure: Sequence[str],
        user_ids: Sequence[str],
    ) -> None:
        self.user_ids = list(user_ids)
        self.by_attr = {}
        for a in affinities:
            engaged, shown = snapshot_counts(a, events, items, exposure, self.user_ids)
            self.by_attr[a.attr] = (a, *a.matrices(engaged, shown))

    def terms(self) -> list[tuple[str, str, Any]]:
        """(column, attribute, levels -> users x levels values) for every feature column."""
        out = []
        for attr, (a, latent, own) in self.by_attr.items():
            for name, m in zip(a.names, (latent, own), strict=True):
                out.append((name, attr, _gather(a, m)))
        return out

    def pairs(self, user_ids: Sequence[str], levels: dict[str, pl.Series]) -> pl.DataFrame:
        """The columns for (user, item) rows: `levels` holds each attribute's level per row."""
        row = {u: i for i, u in enumerate(self.user_ids)}
        users = np.array([row[u] for u in user_ids], dtype=np.int64)
        cols: dict[str, np.ndarray] = {}
        for attr, (a, latent, own) in self.by_attr.items():
            codes = a.codes(levels[attr]) if a.levels else np.full(len(users), -1)
            safe = np.maximum(codes, 0)
            if not a.levels:
                latent = own = np.zeros((len(self.user_ids), 1))
            for name, m in zip(a.names, (latent, own), strict=True):
                cols[name] = (
                    np.where(codes >= 0, m[users, safe], 0.0) if len(users) else np.zeros(0)
                )
        return pl.DataFrame(cols)


def _gather(a: LevelAffinity, m: np.ndarray) -> Any:
    def values(levels: pl.Series) -> np.ndarray:
        codes = a.codes(levels)
        if not a.levels:
            return np.zeros((m.shape[0], levels.len()))
        return np.where(codes[None, :] >= 0, m[:, np.maximum(codes, 0)], 0.0)

    return values
