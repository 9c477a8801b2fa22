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

import dataclasses
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import (
    IdMap,
    Interactions,
    MatrixRecommender,
    MatrixRows,
    MatrixScorer,
    drop_user_rows,
    trained_until,
)
from feedrank.views.site import SiteData


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"{name} must be > 0; got {v}")


class _FactorModel(MatrixRecommender):
    """Users known at fit keep their fitted factors while their history has nothing newer than
    the training window; a user with newer events, or unknown at fit, is folded in from their
    history row (a user with no history has no signal)."""

    zero_is_no_signal = False
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

    def _fold_in(self, matrix: Any) -> np.ndarray:
        """Factors of users from their history rows."""
        raise NotImplementedError

    def user_vectors(self, rows: MatrixRows) -> np.ndarray:
        known = self.users_.index(rows.user_ids)
        end = trained_until(self)
        fresh = (
            rows.newest > np.datetime64(end.replace(tzinfo=None), "us")
            if end is not None
            else np.ones(len(known), dtype=bool)
        )
        fitted = (known >= 0) & ~fresh
        vecs = np.zeros((len(known), self.item_factors_.shape[1]), dtype=np.float32)
        vecs[fitted] = self.user_factors_[known[fitted]]
        fold = np.flatnonzero(~fitted & rows.has_history())
        if fold.size:
            vecs[fold] = self._fold_in(rows.matrix[fold])
        return vecs

    def _with_state(self, rows: MatrixRows) -> MatrixRows:
        vectors = self.user_vectors(rows)
        # a user the model cannot place (unknown at fit, no history on its axis): no signal
        vectors[~vectors.any(axis=1)] = np.nan
        return dataclasses.replace(rows, vectors=vectors)

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        vectors = rows.vectors if rows.vectors is not None else self._with_state(rows).vectors
        assert vectors is not None
        return vectors @ self.item_factors_.T  # float32, as implicit's

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        """Cosine similarity of item factors."""
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.where(norms > 0, norms, 1.0)[:, None]
        return unit[cols] @ unit.T

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        return meta, {
            **arrays,
            "users": self.users_.to_array(),
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
        }

    def _drop_users(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], user_ids: set[str]
    ) -> bool:
        # An erased user is then unknown: folded in from their history, which is gone.
        return drop_user_rows(arrays, user_ids, dense=["user_factors"])

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.users_ = IdMap.from_array(arrays["users"])
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]


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

    def _fold_in(self, matrix: Any) -> np.ndarray:
        # implicit's recalculate_user: the least-squares step of ALS for these rows, against
        # the fitted item factors (the user ids it takes only index `matrix`'s rows).
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            model.item_factors = self.item_factors_
            model.user_factors = np.zeros(
                (matrix.shape[0], self.item_factors_.shape[1]), np.float32
            )
            vecs = model.recalculate_user(np.arange(matrix.shape[0]), matrix.tocsr())
        return np.asarray(vecs, dtype=np.float32).reshape(matrix.shape[0], -1)


class BPRRecommender(_FactorModel):
    """Rendle et al.'s Bayesian personalised ranking (implicit.bpr, SGD on sampled pairs).
    implicit keeps an item bias as the last factor column (the user's is fixed at 1). Its
    threads update shared factors without locks (Hogwild), so only num_threads=1 gives the
    same model bit for bit from the same data and random_state."""

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

    def _fold_in(self, matrix: Any) -> np.ndarray:
        h = matrix.astype(np.float32)
        total = np.asarray(h.sum(axis=1)).ravel()
        vecs = np.asarray(h @ self.item_factors_) / np.where(total > 0, total, 1.0)[:, None]
        vecs[:, -1] = 1.0  # the bias column: users' entry is fixed at 1 in implicit's BPR
        return vecs.astype(np.float32)
