"""A fitted recommender serving a view (a Scorer) seen as a ranking policy: the probability that
it would have shown a logged item at its logged position to its user — the target side of an
off-policy estimate.

- greedy (no temperature): the model's top-k as served; probability 1 where the model ranks the
  item at that position, else 0.
- softmax (a temperature): a Plackett-Luce ranking, drawn item by item with probability
  proportional to exp(z / temperature), where z is the user's scores standardised over the
  candidates (so one temperature means the same exploration for every model's score scale).
  Position marginals of Plackett-Luce have no closed form; they are estimated from `n_sim`
  Gumbel-top-k draws per user. The estimate is unbiased and drawn independently of the clicks,
  so an IPS estimate that uses it stays unbiased.

Items the model does not know at its serving time (created later, seen when `exclude_seen`, or
with no signal from the model) get probability 0: the policy could not have shown them."""

from __future__ import annotations

import numpy as np
import polars as pl

from feedrank.models.base import Scorer, seen_mask

_CELLS_PER_BLOCK = 8_000_000  # values held at once by the sampler (~32-64 MB)
MARGINALS_SCHEMA = {
    "user_id": pl.String,
    "item_id": pl.String,
    "position": pl.Int32,
    "p": pl.Float64,
}


def position_probabilities(
    scorer: Scorer,
    impressions: pl.DataFrame,
    temperature: float | None = None,
    exclude_seen: bool = True,
    n_sim: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """For each row of `impressions` (user_id, item_id, position >= 1), the probability that
    `model` shows item_id at that position to user_id."""
    if impressions.is_empty():
        return np.zeros(0)
    k = int(impressions["position"].max())  # type: ignore[arg-type]
    users = impressions["user_id"].unique(maintain_order=True).to_list()
    return at_logged(
        marginals(scorer, users, k, temperature, exclude_seen, n_sim, seed), impressions
    )


def at_logged(shown: pl.DataFrame, impressions: pl.DataFrame) -> np.ndarray:
    """The marginals `shown` read at each row of `impressions` (0 where the policy never shows
    that item at that position)."""
    joined = impressions.select("user_id", "item_id", pl.col("position").cast(pl.Int32)).join(
        shown, on=["user_id", "item_id", "position"], how="left", maintain_order="left"
    )
    return joined["p"].fill_null(0.0).to_numpy()


def marginals(
    scorer: Scorer,
    users: list[str],
    k: int,
    temperature: float | None = None,
    exclude_seen: bool = True,
    n_sim: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """user_id, item_id, position (Int32), p: every (user, item, position) the policy shows
    with positive probability, for positions 1..k."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or None for greedy); got {temperature}")
    if temperature is None:
        recs = scorer.recommend(users, k=k, exclude_seen=exclude_seen)
        return recs.select(
            "user_id", "item_id", pl.col("rank").cast(pl.Int32).alias("position"), p=pl.lit(1.0)
        )
    return _softmax_marginals(scorer, users, k, temperature, exclude_seen, n_sim, seed)


def _softmax_marginals(
    scorer: Scorer,
    users: list[str],
    k: int,
    temperature: float,
    exclude_seen: bool,
    n_sim: int,
    seed: int,
) -> pl.DataFrame:
    """user_id, item_id, position, p for every (user, item, position) drawn at least once."""
    rng = np.random.default_rng(seed)
    items = scorer.view.candidates()
    n_items = len(items)
    k = min(k, n_items)
    per_user = max(1, _CELLS_PER_BLOCK // max(n_items * k, 1))  # bounds the counts too
    frames = [pl.DataFrame(schema=MARGINALS_SCHEMA)]
    for start in range(0, len(users), per_user):
        block = users[start : start + per_user]
        z = (_standardised(scorer, block, items, exclude_seen) / temperature).astype(np.float32)
        sims = max(1, min(n_sim, _CELLS_PER_BLOCK // z.size))
        counts = np.zeros(len(block) * n_items * k, dtype=np.int64)
        done = 0
        while done < n_sim:
            m = min(sims, n_sim - done)
            noisy = z[None, :, :] + _gumbel(rng, (m, *z.shape))
            top = np.argpartition(-noisy, k - 1, axis=2)[:, :, :k]
            top_val = np.take_along_axis(noisy, top, axis=2)
            order = np.argsort(-top_val, axis=2)
            ranked = np.take_along_axis(top, order, axis=2)  # (m, users, k): item per position
            cell = (np.arange(len(block))[None, :, None] * n_items + ranked) * k + np.arange(k)
            # a user with fewer than k eligible items leaves the last positions empty
            shown = np.isfinite(np.take_along_axis(top_val, order, axis=2))
            counts += np.bincount(cell[shown], minlength=counts.size)
            done += m
        u, i, p = np.unravel_index(np.flatnonzero(counts), (len(block), n_items, k))
        frames.append(
            pl.DataFrame(
                {
                    "user_id": np.asarray(block, dtype=object)[u],
                    "item_id": items[i],
                    "position": (p + 1).astype(np.int32),
                    "p": counts[counts > 0] / n_sim,
                },
                schema=MARGINALS_SCHEMA,
            )
        )
    return pl.concat(frames)


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel noise in float32 (twice as fast as float64 here, and plenty: ties are
    about 1e-7 likely)."""
    u = np.maximum(rng.random(shape, dtype=np.float32), np.finfo(np.float32).tiny)
    return -np.log(-np.log(u))


def _standardised(
    scorer: Scorer, users: list[str], items: np.ndarray, exclude_seen: bool
) -> np.ndarray:
    """Scores standardised per user over the eligible candidates; ineligible ones are -inf."""
    hist = scorer.view.histories(users)
    s = scorer.score_users(users, hist, items).astype(np.float64, copy=True)
    eligible = np.isfinite(s)
    if exclude_seen:
        eligible &= ~seen_mask(hist, users, items)
    n = np.maximum(eligible.sum(axis=1, keepdims=True), 1)
    filled = np.where(eligible, s, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / n
    std = np.sqrt(np.where(eligible, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / n)
    z = (filled - mean) / np.where(std > 0, std, 1.0)
    return np.where(eligible, z, -np.inf)
