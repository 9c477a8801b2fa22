"""The recommender contract, in scikit-learn's manner: __init__ stores parameters, fit returns
self, fitted attributes end in '_'. A model scores (user, item) pairs as of a serving time and
recommends top-k per user; batch and per-user results agree by construction, because both go
through `score`. Saved as a directory (meta.json + arrays.npz), never a pickle."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import FeedrankError, NotFittedError, NotFoundError

FORMAT_VERSION = 1
# What recommend() returns: one row per (user, rank).
RECS_SCHEMA = {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float64}


def default_serving_time(data: SiteData) -> datetime:
    """Serve as of just after the newest event: a batch run scores the data it was given."""
    last = data.time_span[1]
    return (last + timedelta(microseconds=1)) if last else datetime.now().astimezone()


class Recommender(ABC):
    kind: ClassVar[str]

    # -- set by fit / serve_with -------------------------------------------------------------------
    data_: SiteData
    at_: datetime
    settings_: Settings

    @abstractmethod
    def fit(self, data: SiteData, settings: Settings | None = None) -> Self: ...

    def serve_with(self, data: SiteData, at: datetime | None = None) -> Self:
        """Serve against this data as of `at` (default: just after its newest event), without
        refitting: fresh events move history features at once."""
        self.data_ = data
        self.at_ = at or default_serving_time(data)
        self._prepare_serving()
        return self

    def _prepare_serving(self) -> None:  # noqa: B027 - optional hook
        """Precompute what scoring needs from data_ and at_."""

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "data_")

    def _check(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or serve_with()")

    # -- items and users ---------------------------------------------------------------------------
    @property
    def item_ids_(self) -> np.ndarray:
        """Candidate items: those created at or before the serving time."""
        items = self.data_.items.filter(pl.col("created_at") <= self.at_)
        return items["item_id"].to_numpy()

    def _engaged_before(self) -> pl.DataFrame:
        """Distinct (user_id, item_id) engaged before the serving time: computed once per
        serving state, not once per batch of users."""
        cached = getattr(self, "_engaged_cache", None)
        if cached is not None and cached[0] is self.data_ and cached[1] == self.at_:
            return cached[2]  # type: ignore[no-any-return]
        eng = (
            self.data_.events.filter(
                pl.col("type").is_in(self.settings_.engagement_types)
                & (pl.col("timestamp") < self.at_)
                & (pl.col("item_id") != "")
            )
            .select("user_id", "item_id")
            .unique()
        )
        self._engaged_cache = (self.data_, self.at_, eng)
        return eng

    def seen_mask(self, user_ids: Sequence[str], item_ids: np.ndarray) -> np.ndarray:
        """True where the user already engaged with the item (before the serving time)."""
        mask = np.zeros((len(user_ids), len(item_ids)), dtype=bool)
        users = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
        items = pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String})
        hit = (
            self._engaged_before()
            .join(users.with_row_index("__u"), on="user_id")
            .join(items.with_row_index("__i"), on="item_id")
        )
        mask[hit["__u"].to_numpy(), hit["__i"].to_numpy()] = True
        return mask

    # -- scoring -----------------------------------------------------------------------------------
    @abstractmethod
    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Scores (higher is better; a probability where the model has one), shape
        (len(user_ids), len(item_ids))."""

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 512,
    ) -> pl.DataFrame:
        """Top-k per user: columns user_id, rank (1-based), item_id, score."""
        self._check()
        items = self.item_ids_
        step = self._users_per_batch(batch_size, len(items))
        frames = []
        for start in range(0, len(user_ids), step):
            users = list(user_ids[start : start + step])
            scores = self.score(users, items).astype(np.float64, copy=True)
            if exclude_seen:
                scores[self.seen_mask(users, items)] = -np.inf
            frames.append(top_k(users, items, scores, k))
        if not frames:
            return pl.DataFrame(schema=RECS_SCHEMA)
        return pl.concat(frames)

    def _users_per_batch(self, batch_size: int, n_items: int) -> int:
        """Users scored at once by `recommend`; models whose scoring holds more than a score per
        pair narrow it."""
        return batch_size

    def explain(self, user_id: str, item_id: str, top: int = 5) -> list[dict[str, Any]]:
        """The largest contributions to a score; models without a decomposition give none."""
        return []

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """explain() of many pairs; models that can override it with one vectorised pass."""
        return [self.explain(u, i, top) for u, i in zip(user_ids, item_ids, strict=True)]

    def similar_items(self, item_ids: Sequence[str], k: int = 10) -> pl.DataFrame:
        """Item-to-item: the k most similar items of each (columns item_id, rank,
        similar_item_id, score), for models with an item similarity."""
        raise FeedrankError(
            f"similar items need a model with item similarity (itemknn, als, bpr, ease, content); "
            f"got '{self.kind}'"
        )

    # -- persistence -------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        """The constructor's parameters, JSON-able."""
        raise NotImplementedError(f"{type(self).__name__} must define _params or _state")

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and named arrays that fully describe the fitted model. By default
        the parameters and settings: models whose state is rebuilt from data at serving."""
        return {"params": self._params(), "settings": self.settings_.to_dict()}, {}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**meta["params"])
        model.settings_ = Settings.from_dict(meta["settings"])
        return model

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._state()
        meta = {"format_version": FORMAT_VERSION, "kind": self.kind, **meta, **(extra or {})}
        (path / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        np.savez(path / "arrays.npz", **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise NotFoundError(f"model directory must contain meta.json; got {path}")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("kind") != cls.kind:
            raise NotFoundError(
                f"model at {path} is a '{meta.get('kind')}' model, not '{cls.kind}'"
            )
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls._from_state(meta, arrays)


def top_k(users: Sequence[str], items: np.ndarray, scores: np.ndarray, k: int) -> pl.DataFrame:
    """Best k items per row of `scores` (argpartition, then a sort of the k), dropping -inf."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return pl.DataFrame(schema=RECS_SCHEMA)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    sc = np.take_along_axis(part_scores, order, axis=1)
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
