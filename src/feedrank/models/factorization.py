"""Model-based collaborative filtering through `implicit` (CPU): ALS for implicit feedback and
BPR. The confidence matrix (type weight x item-attribute weight x value, summed per pair) is
what ALS sees as C_ui (scaled by `alpha`); BPR samples (liked, not liked) pairs from it.

Only the factors are kept, as arrays; the implicit object is rebuilt from them when needed
(folding in users unknown at fit), so a saved model is meta.json + arrays.npz, not a pickle.
Users known at fit keep their fitted factors, as implicit's own recommend does; users who
arrive with history after the fit are folded in: ALS solves their least-squares step against
the item factors (implicit's recalculate_user), BPR (which has no such step) takes the
confidence-weighted mean of their items' factors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from feedrank.data.site import SiteData
from feedrank.exceptions import ConfigError
from feedrank.models.matrix import IdMap, Interactions, MatrixRecommender


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{name} must be > 0; got {v}")


class _FactorModel(MatrixRecommender):
    users_: IdMap
    user_factors_: np.ndarray
    item_factors_: np.ndarray
    num_threads: int

    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        # implicit runs its own threads; a multi-threaded BLAS underneath only oversubscribes.
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            model.fit(inter.matrix, show_progress=False)
        self.users_ = inter.users
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)

    def _implicit(self) -> Any: ...

    def _fold_in(self, history_rows: np.ndarray) -> np.ndarray:
        """Factors for serving users unknown at fit, from their history rows."""
        raise NotImplementedError

    def _prepare_model(self) -> None:
        known = self.users_.index(self.history_.users.ids)
        vecs = np.zeros((len(known), self.user_factors_.shape[1]), dtype=np.float32)
        vecs[known >= 0] = self.user_factors_[known[known >= 0]]
        new = np.flatnonzero(known < 0)
        if new.size:
            vecs[new] = self._fold_in(new)
        self.user_vecs_ = vecs

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        u = self.user_vecs_[np.maximum(rows, 0)]
        u[rows < 0] = 0.0
        return u @ self.item_factors_.T

    def similar_items(self, item_ids: Sequence[str], k: int = 10) -> pl.DataFrame:
        """Cosine similarity of item factors."""
        cols = self._item_cols(item_ids)
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.where(norms > 0, norms, 1.0)[:, None]
        return self._similar_from(item_ids, unit[cols] @ unit.T, k)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = self._base_state()
        return {"params": self._params(), **meta}, {
            **arrays,
            "users": self.users_.to_array(),
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
        }

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**meta["params"])
        model._load_base(meta, arrays)
        model.users_ = IdMap(arrays["users"].astype(object))
        model.user_factors_ = arrays["user_factors"]
        model.item_factors_ = arrays["item_factors"]
        return model

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError


class ALSRecommender(_FactorModel):
    """Hu, Koren & Volinsky's implicit-feedback ALS (implicit.als, conjugate gradient)."""

    kind = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _validate(self) -> None:
        _positive(factors=self.factors, alpha=self.alpha, iterations=self.iterations)
        if self.regularization < 0:
            raise ConfigError(f"regularization must be >= 0; got {self.regularization}")

    def _params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
        }

    def _implicit(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=int(self.factors),
            regularization=float(self.regularization),
            alpha=float(self.alpha),
            iterations=int(self.iterations),
            random_state=self.random_state,
            num_threads=int(self.num_threads),
        )

    def _fold_in(self, history_rows: np.ndarray) -> np.ndarray:
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            model.item_factors = self.item_factors_
            model.user_factors = self.user_factors_
            vecs = model.recalculate_user(history_rows, self.history_.matrix[history_rows])
        return np.asarray(vecs, dtype=np.float32)


class BPRRecommender(_FactorModel):
    """Rendle et al.'s Bayesian personalised ranking (implicit.bpr, SGD on sampled pairs).
    implicit keeps an item bias as the last factor column (the user's is fixed at 1)."""

    kind = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _validate(self) -> None:
        _positive(
            factors=self.factors, learning_rate=self.learning_rate, iterations=self.iterations
        )
        if self.regularization < 0:
            raise ConfigError(f"regularization must be >= 0; got {self.regularization}")

    def _params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
        }

    def _implicit(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=int(self.factors),
            learning_rate=float(self.learning_rate),
            regularization=float(self.regularization),
            iterations=int(self.iterations),
            random_state=self.random_state,
            num_threads=int(self.num_threads),
        )

    def _fold_in(self, history_rows: np.ndarray) -> np.ndarray:
        h = self.history_.matrix[history_rows].astype(np.float32)
        total = np.asarray(h.sum(axis=1)).ravel()
        vecs = np.asarray(h @ self.item_factors_) / np.where(total > 0, total, 1.0)[:, None]
        vecs[:, -1] = 1.0  # the bias column: users' entry is fixed at 1 in implicit's BPR
        return vecs.astype(np.float32)
