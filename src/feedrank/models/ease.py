"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): an item-item weight matrix B with
a zero diagonal, in closed form: P = (X'X + l2 I)^-1, B = -P / diag(P). A strong, simple
baseline; B is dense (items x items), so the model refuses catalogues above `max_items`."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import Interactions, MatrixRecommender, MatrixRows, MatrixScorer
from feedrank.views.site import SiteData


class EASERecommender(MatrixRecommender):
    kind = "ease"

    weights_: np.ndarray  # B, items x items, float32

    def __init__(self, l2: float = 100.0, binary: bool = True, max_items: int = 10_000) -> None:
        self.l2 = l2
        self.binary = binary
        self.max_items = max_items

    def _validate(self) -> None:
        if not self.l2 > 0:
            raise ConfigError(f"l2 must be > 0; got {self.l2}")

    def _x(self, m: Any) -> Any:
        """Binary (the paper's setting) or the confidence weights themselves."""
        if not self.binary:
            return m
        b = m.copy()
        b.data = np.ones_like(b.data)
        return b

    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        n = inter.matrix.shape[1]
        if n > self.max_items:
            raise ConfigError(
                f"EASE keeps a dense items x items matrix: the catalogue must have at most "
                f"max_items={self.max_items} items; got {n} (raise max_items if memory allows: "
                f"about {8 * n * n / 1e9:.1f} GB)"
            )
        x = self._x(inter.matrix).astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.l2
        # G is symmetric positive definite (l2 > 0), so the inverse exists.
        p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
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
        return meta, {**arrays, "weights": self.weights_}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.weights_ = arrays["weights"]
