"""Memory-based collaborative filtering: item-kNN and user-kNN on the confidence matrix.

Weighting follows implicit's nearest_neighbours (so the two can be checked against each other):
the compared rows ("documents": items for item-kNN, users for user-kNN) are weighted over their
columns ("terms"), then
- "none":  cosine similarity;
- "tfidf": cosine of sqrt(count) x idf, idf = log(n_docs) - log1p(docs containing the term);
- "bm25":  dot product of BM25-weighted rows (k1, b), the same idf.
Item-kNN keeps each item's `k_neighbours` most similar items (itself included, as implicit does)
in a sparse matrix S and scores a user's history row h by h @ S. User-kNN finds each user's
`k_neighbours` most similar training users at serving time and scores their
similarity-weighted confidence rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import all_pairs_knn

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import (
    IdMap,
    Interactions,
    MatrixRecommender,
    MatrixRows,
    MatrixScorer,
    block_rows,
    csr_arrays,
    csr_from,
    drop_user_rows,
    parallel_map,
    sparse_top_k,
)
from feedrank.views.site import SiteData

WEIGHTINGS = ("none", "tfidf", "bm25")


@dataclass(frozen=True)
class Weighting:
    """Per-term idf and the mean document length, learned on the training rows so query rows
    are weighted the same way."""

    scheme: str
    idf: np.ndarray
    mean_length: float
    k1: float
    b: float

    @classmethod
    def fit(cls, docs: sp.csr_matrix, scheme: str, k1: float, b: float) -> Weighting:
        df = np.bincount(docs.indices, minlength=docs.shape[1]).astype(np.float64)
        idf = np.log(float(max(docs.shape[0], 1))) - np.log1p(df)
        lengths = np.asarray(docs.sum(axis=1)).ravel()
        return cls(scheme, idf, float(lengths.mean()) if lengths.size else 1.0, k1, b)

    def transform(self, docs: sp.csr_matrix) -> sp.csr_matrix:
        x = docs.astype(np.float64).tocsr(copy=True)
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        if self.scheme == "tfidf":
            x.data = np.sqrt(x.data) * self.idf[x.indices]
        elif self.scheme == "bm25":
            lengths = np.asarray(x.sum(axis=1)).ravel()
            norm = (1.0 - self.b) + self.b * lengths / max(self.mean_length, 1e-12)
            x.data = (
                x.data * (self.k1 + 1.0) / (self.k1 * norm[rows] + x.data) * self.idf[x.indices]
            )
        if self.scheme in ("none", "tfidf"):
            sq = np.bincount(rows, weights=x.data**2, minlength=x.shape[0])
            x.data = x.data / np.sqrt(np.where(sq > 0, sq, 1.0))[rows]
        x.eliminate_zeros()
        return x

    def state(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {f"{prefix}_mean_length": self.mean_length}, {f"{prefix}_idf": self.idf}

    @classmethod
    def from_state(
        cls,
        prefix: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        params: dict[str, Any],
    ) -> Weighting:
        return cls(
            params["weighting"],
            arrays[f"{prefix}_idf"],
            float(meta[f"{prefix}_mean_length"]),
            params["bm25_k1"],
            params["bm25_b"],
        )


def pruned_similarity(
    docs: sp.csr_matrix, k: int, block: int = 0, queries: sp.csr_matrix | None = None
) -> sp.csr_matrix:
    """Rows of (queries or docs) @ docs.T, each pruned to its k largest stored entries;
    computed a block of rows at a time (on a few threads) so memory stays bounded."""
    q = docs if queries is None else queries
    docs_t = docs.T.tocsr()
    step = block or block_rows(docs.shape[0], 4096)

    def pruned(s: int) -> sp.csr_matrix:
        prod = (q[s : s + step] @ docs_t).tocsr()
        prod.eliminate_zeros()
        return sparse_top_k(prod, k)

    parts = parallel_map(pruned, range(0, q.shape[0], step))
    out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, docs.shape[0]))
    out.sort_indices()
    return out


class _KNN(MatrixRecommender):
    def __init__(
        self,
        k_neighbours: int = 50,
        weighting: str = "none",
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
    ) -> None:
        self.k_neighbours = k_neighbours
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b

    def _validate(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"weighting must be one of {list(WEIGHTINGS)}; got '{self.weighting}'"
            )
        if int(self.k_neighbours) < 1:
            raise ConfigError(f"k_neighbours must be >= 1; got {self.k_neighbours}")
        if self.bm25_k1 < 0 or not 0.0 <= self.bm25_b <= 1.0:
            raise ConfigError(
                f"bm25_k1 must be >= 0 and bm25_b in [0, 1]; got {self.bm25_k1}, {self.bm25_b}"
            )


class ItemKNNRecommender(_KNN):
    kind = "itemknn"

    similarity_: sp.csr_matrix  # items x items, k_neighbours per row

    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        item_docs = inter.matrix.T.tocsr()
        w = Weighting.fit(item_docs, self.weighting, self.bm25_k1, self.bm25_b)
        # implicit's multi-threaded all-pairs kNN: the same pruned similarities as
        # pruned_similarity (a test checks it), without SciPy's single-threaded product.
        weighted = w.transform(item_docs).T.tocsr()
        sim = all_pairs_knn(weighted, int(self.k_neighbours), num_threads=0, show_progress=False)
        self.similarity_ = sim.tocsr().astype(np.float32)  # scores in float32, as implicit's are
        self.similarity_.sort_indices()

    def _score_sparse(self, scorer: MatrixScorer, rows: MatrixRows) -> sp.csr_matrix:
        return (rows.matrix @ self.similarity_).tocsr()

    def _item_to_item(self, rows: MatrixRows) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return rows.matrix, self.similarity_

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        return self._score_sparse(scorer, rows).toarray()

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        return self.similarity_[cols].toarray()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        return meta, {**arrays, **csr_arrays("similarity", self.similarity_)}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.similarity_ = csr_from("similarity", arrays)


class UserKNNRecommender(_KNN):
    kind = "userknn"

    users_: IdMap  # training users: the neighbours
    neighbours_: sp.csr_matrix  # weighted training rows (users x items)
    ratings_: sp.csr_matrix  # their confidence rows
    weighting_: Weighting

    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        self.users_ = inter.users
        self.weighting_ = Weighting.fit(inter.matrix, self.weighting, self.bm25_k1, self.bm25_b)
        self.neighbours_ = self.weighting_.transform(inter.matrix)
        self.ratings_ = inter.matrix.astype(np.float64)

    def _score_sparse(self, scorer: MatrixScorer, rows: MatrixRows) -> sp.csr_matrix:
        q = self.weighting_.transform(rows.matrix)
        sims = (q @ self.neighbours_.T).tocoo()
        # A user is not their own neighbour.
        own = self.users_.index(rows.user_ids)
        keep = sims.col != own[sims.row]
        sims = sp.csr_matrix((sims.data[keep], (sims.row[keep], sims.col[keep])), shape=sims.shape)
        sims.eliminate_zeros()
        top = sparse_top_k(sims, int(self.k_neighbours))
        return (top @ self.ratings_).tocsr()

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        return self._score_sparse(scorer, rows).toarray()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        wmeta, warrays = self.weighting_.state("weighting")
        return {**meta, **wmeta}, {
            **arrays,
            **warrays,
            "users": self.users_.to_array(),
            **csr_arrays("neighbours", self.neighbours_),
            **csr_arrays("ratings", self.ratings_),
        }

    def _drop_users(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], user_ids: set[str]
    ) -> bool:
        # An erased user is no one's neighbour any more (idf and lengths are aggregates).
        return drop_user_rows(arrays, user_ids, csr=["neighbours", "ratings"])

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.users_ = IdMap.from_array(arrays["users"])
        self.weighting_ = Weighting.from_state("weighting", meta, arrays, self.get_params())
        self.neighbours_ = csr_from("neighbours", arrays)
        self.ratings_ = csr_from("ratings", arrays)
