"""The recommender contract, in scikit-learn's manner, split in two:

- a `Recommender` is the fitted model: `__init__` stores parameters, `fit(data, settings)`
  learns and returns self, fitted attributes end in '_' (arrays, id maps, the settings and the
  time window it was trained on). Nothing changes them after `fit`; saved as a directory
  (meta.json + arrays.npz), never a pickle.
- a `Scorer` is that model serving one view (`model.at(view)`): score, recommend, explain,
  similar items, reading users' histories from the view a batch at a time. Cheap to make,
  read-only, thread-safe. Fresh events mean a newer view, never a changed model.

Batch and per-user answers agree by construction: `recommend` scores blocks of users through
the same `score_users` as `score`. A score of NaN means "no signal" (a user the model knows
nothing about, an item with no path to the user's history): such items are never returned by
`recommend`, so a caller can fill the list from a fallback and say so."""

from __future__ import annotations

import inspect
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
from scipy.special import expit

from feedrank.exceptions import FeedrankError, NotFittedError, NotFoundError
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

FORMAT_VERSION = 2
# What recommend() returns: one row per (user, rank).
RECS_SCHEMA = {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float64}
SIMILAR_SCHEMA = {
    "item_id": pl.String,
    "rank": pl.Int32,
    "similar_item_id": pl.String,
    "score": pl.Float64,
}


class Unsupported(FeedrankError):
    """The model cannot do what was asked (e.g. item similarity from popularity)."""


class Recommender(ABC):
    kind: ClassVar[str]
    # True when scores are engagement probabilities: such models also `predict_proba`.
    probabilistic: ClassVar[bool] = False
    # False for models that rank items the same way for everyone (popularity, freshness):
    # an ensemble has something to say about a user only through its personal members.
    personal: ClassVar[bool] = True

    settings_: Settings
    window_: tuple[str | None, str | None]  # the training events' time span (ISO 8601)
    fit_id_: str  # names this fit (caches of per-catalogue work are keyed by it)

    # -- parameters (scikit-learn's get_params / set_params) -----------------------------------
    def get_params(self) -> dict[str, Any]:
        names = [
            p
            for p in inspect.signature(type(self).__init__).parameters
            if p not in ("self", "args", "kwargs")
        ]
        return {n: _jsonable(getattr(self, n)) for n in names}

    def set_params(self, **params: Any) -> Self:
        allowed = set(self.get_params())
        bad = sorted(set(params) - allowed)
        if bad:
            raise FeedrankError(
                f"parameters of '{self.kind}' must be among {sorted(allowed)}; got {bad}"
            )
        for k, v in params.items():
            setattr(self, k, v)
        return self

    # -- fitting ---------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, data: SiteData, settings: Settings | None = None) -> Self: ...

    def _fitted_on(self, data: SiteData, settings: Settings | None) -> Settings:
        """Record what every fit records: the settings, the data's window, a fit id."""
        return self.stamp(settings, data.time_span)

    def stamp(
        self, settings: Settings | None, span: tuple[datetime | None, datetime | None]
    ) -> Settings:
        """`_fitted_on` for a fit whose events are elsewhere (a Spark fit): their time span."""
        self.settings_ = settings or Settings()
        lo, hi = span
        self.window_ = (lo.isoformat() if lo else None, hi.isoformat() if hi else None)
        self.fit_id_ = uuid.uuid4().hex
        return self.settings_

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "fit_id_")

    def _check(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")

    # -- serving ---------------------------------------------------------------------------------
    @abstractmethod
    def at(self, view: View) -> Scorer:
        """This model serving `view`."""

    def predict_proba(self, data: SiteData, rows: pl.DataFrame) -> np.ndarray:
        """Engagement probability of each row (user_id, item_id, timestamp[, position, device])
        with features as of the row's own time, read from `data`. Probabilistic models only."""
        raise Unsupported(f"a '{self.kind}' model gives scores, not probabilities")

    def without_users(self, user_ids: Sequence[str]) -> Self:
        """This fitted model with no row or id of these users (erasure): a copy when it held
        any, else `self`. Most models hold aggregates only; those with per-user rows (factors,
        neighbour rows) override `_drop_users`."""
        self._check()
        meta, arrays = self.dump()
        dropped = self._drop_users(meta, arrays, set(user_ids))
        return type(self).restore(meta, arrays) if dropped else self

    def _drop_users(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], user_ids: set[str]
    ) -> bool:
        """Remove the users' rows from a dump in place; whether any was there."""
        return False

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and named arrays of the fitted parameters (beyond params, settings,
        window and fit id, which `save` writes for every model)."""
        return {}, {}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - models without fitted arrays restore nothing
        """Restore what `_state` wrote."""

    def dump(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything a fitted model is: JSON-able metadata and named arrays."""
        self._check()
        meta, arrays = self._state()
        return {
            "kind": self.kind,
            "params": self.get_params(),
            "settings": self.settings_.to_dict(),
            "window": list(self.window_),
            "fit_id": self.fit_id_,
            **meta,
        }, arrays

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """The fitted model `dump` described."""
        model = cls(**meta["params"])
        model.settings_ = Settings.from_dict(meta["settings"])
        model.window_ = tuple(meta["window"])  # type: ignore[assignment]
        model.fit_id_ = meta["fit_id"]
        model._load_state(meta, arrays)
        return model

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta, arrays = self.dump()
        meta = {"format_version": FORMAT_VERSION, **meta, **(extra or {})}
        (path / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        np.savez(path / "arrays.npz", **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise NotFoundError(f"model directory must contain meta.json; got {path.name}")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("kind") != cls.kind:
            raise NotFoundError(
                f"model {path.name} is a '{meta.get('kind')}' model, not '{cls.kind}'"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise NotFoundError(
                f"model {path.name} was saved in format {meta.get('format_version')}; this "
                f"version reads format {FORMAT_VERSION}: train it again"
            )
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls.restore(meta, arrays)


class Scorer(ABC):
    """A fitted model serving one view. Subclasses implement `score_users`; the rest follows."""

    def __init__(self, model: Recommender, view: View) -> None:
        model._check()
        self.model, self.view = model, view
        self.settings = model.settings_

    def prepare(self) -> Scorer:
        """Compute now the work that depends on the catalogue only (kept per catalogue), so no
        request pays for it. Reads no user."""
        return self

    @abstractmethod
    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        """Scores (len(user_ids) x len(item_ids), float64; NaN = no signal) of users whose
        histories (from the view) are given."""

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Scores of every (user, item) pair; no signal scores 0."""
        users = list(user_ids)
        s = self.score_users(users, self.view.histories(users), np.asarray(item_ids, dtype=object))
        return np.nan_to_num(s, nan=0.0)

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> pl.DataFrame:
        """Top-k per user over the view's candidates (columns user_id, rank, item_id, score;
        users in input order), without items the user already knows and without items the
        model has no signal for (so a list may be shorter than k). Users are scored a block at
        a time (`batch_size`, default: as many as keep a block near BLOCK_CELLS scores)."""
        items = self.view.candidates()
        step = batch_size or block_users(len(items))
        frames = []
        for start in range(0, len(user_ids), step):
            users = list(user_ids[start : start + step])
            hist = self.view.histories(users)
            scores = self.ranking_scores(users, hist, items)
            scores[np.isnan(scores)] = -np.inf  # no signal: never listed
            if exclude_seen:
                scores[seen_positions(hist, users, items)] = -np.inf
            top = top_k(users, items, scores, k)
            frames.append(top.with_columns(score=pl.Series(self.reported(top["score"].to_numpy()))))
        return pl.concat(frames) if frames else pl.DataFrame(schema=RECS_SCHEMA)

    def ranking_scores(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        """What `recommend` ranks by (a fresh float64 array it may change): `score_users`, or
        any increasing function of it that is cheaper (a click model's logits)."""
        return self.score_users(user_ids, histories, item_ids).astype(np.float64, copy=True)

    def reported(self, ranked: np.ndarray) -> np.ndarray:
        """The scores reported for ranked values (the inverse of the cheaper function)."""
        return ranked

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """The largest contributions to each pair's score; models without a decomposition give
        none."""
        return [[] for _ in user_ids]

    def similar_items(self, item_ids: Sequence[str], k: int = 10) -> pl.DataFrame:
        """Item-to-item: the k most similar candidates of each item (columns SIMILAR_SCHEMA)."""
        raise Unsupported(
            f"similar items need a model with item similarity (itemknn, als, bpr, ease, content, "
            f"transition); got '{self.model.kind}'"
        )


BLOCK_CELLS = 8_000_000  # user x item scores held at once by the generic recommend (64 MB)


def block_users(n_items: int) -> int:
    """Users per scored block: large blocks amortise the per-block work (one history read,
    one feature snapshot), bounded so a block's scores stay near BLOCK_CELLS."""
    return int(min(8192, max(64, BLOCK_CELLS // max(n_items, 1))))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function (one pass, no overflow warnings)."""
    return np.asarray(expit(z))


def has_events(user_ids: Sequence[str], histories: pl.DataFrame) -> np.ndarray:
    """Per user: whether their history holds any event. A click model scores a user it knows
    nothing about by item terms alone — popularity by another name — so it says it has no
    signal and the service's fallbacks, which say what they are, serve that user."""
    known = set(histories["user_id"].unique().to_list()) if histories.height else set()
    return np.array([u in known for u in user_ids], dtype=bool)


def seen_positions(
    histories: pl.DataFrame, users: Sequence[str], items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) where the user already knows the item (Settings.seen_expr)."""
    if histories.is_empty() or not len(items):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    seen = histories.filter(Settings.seen_expr()).select("user_id", "item_id").unique()
    u = pl.DataFrame({"user_id": list(users)}, schema={"user_id": pl.String}).with_row_index("__u")
    i = pl.DataFrame({"item_id": items}, schema={"item_id": pl.String}).with_row_index("__i")
    hit = seen.join(u, on="user_id").join(i, on="item_id")
    return hit["__u"].to_numpy().astype(np.int64), hit["__i"].to_numpy().astype(np.int64)


def seen_mask(histories: pl.DataFrame, users: Sequence[str], items: np.ndarray) -> np.ndarray:
    """True where the user already knows the item (Settings.seen_expr) in their history."""
    mask = np.zeros((len(users), len(items)), dtype=bool)
    mask[seen_positions(histories, users, items)] = True
    return mask


def top_k(users: Sequence[str], items: np.ndarray, scores: np.ndarray, k: int) -> pl.DataFrame:
    """Best k items per row of `scores`, best first, ties to the earlier item (so the answer is
    the same whatever k or block of users asked), dropping -inf."""
    k = min(k, scores.shape[1])
    if k <= 0 or not len(users):
        return pl.DataFrame(schema=RECS_SCHEMA)
    idx, sc = best_of(scores, k)
    out = pl.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=object), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
            "item_id": items[idx.ravel()],
            "score": sc.ravel(),
        },
        schema=RECS_SCHEMA,
    )
    return out.filter(pl.col("score").is_finite())


def best_of(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest entries, best first, ties broken by
    column (the answer of a stable sort of whole rows).

    A floor first: split each row into strided chunks (columns j, j + c, j + 2c, ...) and
    take their maxima in one vectorised pass; the k-th largest maximum is at most the row's
    k-th largest value, and usually few entries reach it, so only those are sorted. Rows of
    NaN or with many entries at the floor (ties, -inf) go through argpartition instead."""
    n, m = scores.shape
    if k >= m:
        return _sorted_whole(scores, k)
    chunks = min(m, max(4 * k, 256))
    width = m // chunks
    maxima = scores[:, : chunks * width].reshape(n, width, chunks).max(axis=1)
    if np.isnan(maxima).any():
        return _partitioned(scores, k)
    floor = np.partition(maxima, chunks - k, axis=1)[:, chunks - k]
    flat = np.flatnonzero(scores >= floor[:, None])
    if flat.size > 8 * k * n:
        return _partitioned(scores, k)
    rows, cols = np.divmod(flat, m)
    vals = scores.ravel()[flat]
    order = np.lexsort((-vals, rows))  # stable: ties stay in column order
    rows, cols, vals = rows[order], cols[order], vals[order]
    pos = np.arange(flat.size) - np.searchsorted(rows, rows)
    keep = pos < k
    part = np.empty((n, k), dtype=np.int64)
    best = np.empty((n, k), dtype=scores.dtype)
    part[rows[keep], pos[keep]] = cols[keep]
    best[rows[keep], pos[keep]] = vals[keep]
    return part, best


def _partitioned(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """best_of by one argpartition at n - k - 1 (the k + 1 largest; no negated copy): where
    the (k+1)-th ties the k-th, the tie may run beyond them and the row is sorted whole."""
    n = scores.shape[1]
    part = np.argpartition(scores, n - k - 1, axis=1)[:, n - k - 1 :]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    part = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    straddle = np.flatnonzero(vals[:, k] == vals[:, k - 1])
    part, vals = part[:, :k], vals[:, :k]
    if straddle.size:
        whole = np.argsort(-scores[straddle], axis=1, kind="stable")[:, :k]
        part[straddle] = whole
        vals[straddle] = np.take_along_axis(scores[straddle], whole, axis=1)
    return part, vals


def _sorted_whole(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    part = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return part, np.take_along_axis(scores, part, axis=1)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v
