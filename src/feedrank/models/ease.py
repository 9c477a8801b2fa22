"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): an item-item weight matrix B with
a zero diagonal, in closed form: P = (X'X + l2 I)^-1, B = -P / diag(P) (the inverse by a
Cholesky factorisation: the Gram matrix is symmetric positive definite, and that halves the
work of a general inverse). A strong, simple baseline; B is dense (items x items), so on a
catalogue above `max_items` the model keeps the `max_items` items with the most engaged users
(the others get no signal, and `kept_items_` says how many were kept out of how many)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import (
    IdMap,
    Interactions,
    MatrixRecommender,
    MatrixRows,
    MatrixScorer,
)
from feedrank.views.site import SiteData


class EASERecommender(MatrixRecommender):
    kind = "ease"

    weights_: np.ndarray  # B, items x items, float32
    kept_items_: tuple[int, int]  # items in B, items in the training catalogue

    def __init__(self, l2: float = 100.0, binary: bool = True, max_items: int = 10_000) -> None:
        self.l2 = l2
        self.binary = binary
        self.max_items = max_items

    def _validate(self) -> None:
        if not self.l2 > 0:
            raise ConfigError(f"l2 must be > 0; got {self.l2}")
        if int(self.max_items) < 1:
            raise ConfigError(f"max_items must be an integer >= 1; got {self.max_items}")

    def _x(self, m: Any) -> Any:
        """Binary (the paper's setting) or the confidence weights themselves."""
        if not self.binary:
            return m
        b = m.copy()
        b.data = np.ones_like(b.data)
        return b

    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        x = self._x(inter.matrix).astype(np.float64)
        n_all = x.shape[1]
        if n_all > self.max_items:
            users_per_item = np.diff(x.tocsc().indptr)
            keep = np.sort(np.argsort(-users_per_item, kind="stable")[: int(self.max_items)])
            x = x[:, keep]
            self.items_ = IdMap(inter.items.ids[keep])  # ids sorted, as the columns are
        n = x.shape[1]
        self.kept_items_ = (n, n_all)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.l2
        # G is symmetric positive definite (l2 > 0): its inverse from a Cholesky factor.
        c, info = scipy.linalg.lapack.dpotrf(gram, lower=False, overwrite_a=True)
        p, info2 = scipy.linalg.lapack.dpotri(c, lower=False, overwrite_c=True)
        if info or info2:
            raise ConfigError(f"l2 must make X'X + l2 I positive definite; got l2={self.l2}")
        p = np.triu(p) + np.triu(p, 1).T  # dpotri fills the upper triangle only
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices(n)] = 0.0
        self.weights_ = b.astype(np.float32)

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        return np.asarray(self._x(rows.matrix) @ self.weights_)

    def _item_to_item(self, rows: MatrixRows) -> tuple[Any, np.ndarray]:
        return self._x(rows.matrix), self.weights_

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        """Row i of B: how much engaging with item i raises each other item's score."""
        return self.weights_[cols]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        return {**meta, "kept_items": list(self.kept_items_)}, {**arrays, "weights": self.weights_}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.weights_ = arrays["weights"]
        self.kept_items_ = (int(meta["kept_items"][0]), int(meta["kept_items"][1]))
