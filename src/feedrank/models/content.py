"""Content-based recommendations: each item is a vector of TF-IDF over its text (title, text,
tags, ... whichever are present) and one-hot metadata (content_type, lang, author, ... every
categorical item attribute), L2-normalised so dot products are cosines. A user's profile is
the confidence-weighted mean of the vectors of the items they engaged with before the serving
time; items are scored by cosine to it. Items are vectorised at serving time with what was
learned at fit (vocabulary, idf, metadata levels), so new items with no interactions yet are
reachable at once (item cold start)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import IdMap, Interactions, MatrixRecommender, MatrixRows, MatrixScorer
from feedrank.views.site import SiteData
from feedrank.views.view import View

TEXT_COLUMNS = ("title", "text", "tags", "description", "summary", "body", "keywords", "name")
_CATEGORICAL = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


def _normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr().astype(np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m


def _text(items: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    """One document per item: the text columns joined (list columns, e.g. tags, flattened)."""
    if not columns:
        return [""] * items.height
    parts = [
        (
            pl.col(c).list.eval(pl.element().cast(pl.String)).list.join(" ")
            if isinstance(items.schema[c], pl.List)
            else pl.col(c).cast(pl.String)
        ).fill_null("")
        for c in columns
    ]
    return items.select(pl.concat_str(parts, separator=" ").alias("doc"))["doc"].to_list()


class ContentRecommender(MatrixRecommender):
    kind = "content"

    vocabulary_: np.ndarray  # terms, in column order
    idf_: np.ndarray
    levels_: dict[str, list[str]]  # metadata column -> its levels, in one-hot column order
    text_columns_: list[str]

    def __init__(
        self,
        text_columns: Sequence[str] | None = None,
        metadata_columns: Sequence[str] | None = None,
        metadata_weight: float = 0.5,
        max_features: int = 20_000,
        min_df: int = 1,
        max_levels: int = 200,
        stop_words: str | None = "english",
    ) -> None:
        self.text_columns = None if text_columns is None else list(text_columns)
        self.metadata_columns = None if metadata_columns is None else list(metadata_columns)
        self.metadata_weight = metadata_weight
        self.max_features = max_features
        self.min_df = min_df
        self.max_levels = max_levels
        self.stop_words = stop_words

    def _validate(self) -> None:
        if not 0.0 <= self.metadata_weight <= 1.0:
            raise ConfigError(f"metadata_weight must be in [0, 1]; got {self.metadata_weight}")

    # -- fitting: what the vectors are made of -----------------------------------------------------
    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        items = data.items
        present = set(items.columns)
        if self.text_columns is not None:
            bad = [c for c in self.text_columns if c not in present]
            if bad:
                raise ConfigError(
                    f"text_columns must be item columns among {sorted(present)}; got {bad}"
                )
        self.text_columns_ = [c for c in (self.text_columns or TEXT_COLUMNS) if c in present]
        skip = {"item_id", "created_at", *self.text_columns_}
        candidates = self.metadata_columns or [
            c for c in items.columns if c not in skip and isinstance(items.schema[c], _CATEGORICAL)
        ]
        self.levels_ = {}
        for c in candidates:
            if c not in present:
                raise ConfigError(
                    f"metadata_columns must be item columns among {sorted(present)}; got '{c}'"
                )
            levels = items[c].cast(pl.String).drop_nulls().unique().sort().to_list()
            if 1 < len(levels) <= self.max_levels:
                self.levels_[c] = levels
        docs = _text(items, self.text_columns_)
        self.vocabulary_ = np.zeros(0, dtype=str)
        self.idf_ = np.zeros(0)
        if any(d.strip() for d in docs):
            vec = CountVectorizer(
                max_features=self.max_features, min_df=self.min_df, stop_words=self.stop_words
            )
            try:
                counts = vec.fit_transform(docs)
            except ValueError:  # nothing left after stop words
                counts = None
            if counts is not None:
                self.vocabulary_ = vec.get_feature_names_out().astype(str)
                df = np.bincount(counts.tocsr().indices, minlength=counts.shape[1])
                # scikit-learn's smooth idf
                self.idf_ = np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0
        if not self.vocabulary_.size and not self.levels_:
            raise ConfigError(
                "the content model needs item attributes: text columns (one of "
                f"{list(TEXT_COLUMNS)}) or categorical attributes with 2 to {self.max_levels} "
                f"values; the items have {sorted(present - {'item_id', 'created_at'}) or 'none'} "
                "(import an items file with them, or pass --param text_columns=[...])"
            )

    def item_vectors(self, items: pl.DataFrame) -> sp.csr_matrix:
        """Unit vectors of these items: sqrt(1-w) x text TF-IDF beside sqrt(w) x metadata."""
        blocks = []
        w = self.metadata_weight
        if self.vocabulary_.size:
            vec = CountVectorizer(vocabulary=list(self.vocabulary_), stop_words=self.stop_words)
            tf = vec.transform(_text(items, self.text_columns_)).astype(np.float64)
            blocks.append(_normalize_rows(tf @ sp.diags(self.idf_)) * np.sqrt(1.0 - w))
        if self.levels_:
            onehots = []
            for c, levels in self.levels_.items():
                code = (
                    items.select(
                        pl.col(c)
                        .cast(pl.String)
                        .replace_strict(
                            levels, list(range(len(levels))), default=-1, return_dtype=pl.Int64
                        )
                    )
                    .to_series()
                    .to_numpy()
                )
                rows = np.flatnonzero(code >= 0)
                onehots.append(
                    sp.csr_matrix(
                        (np.ones(rows.size), (rows, code[rows])), shape=(items.height, len(levels))
                    )
                )
            blocks.append(_normalize_rows(sp.hstack(onehots, format="csr")) * np.sqrt(w))
        if not blocks:
            return sp.csr_matrix((items.height, 0))
        return _normalize_rows(sp.hstack(blocks, format="csr"))

    # -- serving -----------------------------------------------------------------------------------
    def serving_axis(self, view: View) -> IdMap:
        # Every item of the catalogue, including those created after the fit (item cold start).
        return IdMap(view.catalogue.items["item_id"])

    def vectors(self, scorer: MatrixScorer) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Item vectors on the scorer's axis and their transpose, once per catalogue."""

        def compute() -> tuple[sp.csr_matrix, sp.csr_matrix]:
            items = scorer.view.catalogue.items.join(
                scorer.axis.frame.rename({"id": "item_id"}), on="item_id"
            ).sort("idx")
            v = self.item_vectors(items.unique("idx", keep="first", maintain_order=True))
            return v, v.T.tocsr()

        return scorer.view.catalogue.memo(("content-vectors", self.fit_id_), compute)

    def _prepare(self, scorer: MatrixScorer) -> None:
        self.vectors(scorer)

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        vectors, vectors_t = self.vectors(scorer)
        # A profile is the weighted mean of the engaged items' vectors (normalised: a direction).
        profiles = _normalize_rows(rows.matrix.astype(np.float64) @ vectors)
        return np.asarray((profiles @ vectors_t).toarray())

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        """Cosine similarity of item vectors (text and metadata)."""
        vectors, vectors_t = self.vectors(scorer)
        return np.asarray((vectors[cols] @ vectors_t).toarray())

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        return {
            **meta,
            "levels": self.levels_,
            "text_columns_used": self.text_columns_,
        }, {**arrays, "vocabulary": self.vocabulary_, "idf": self.idf_}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.levels_ = {k: list(v) for k, v in meta["levels"].items()}
        self.text_columns_ = list(meta["text_columns_used"])
        self.vocabulary_ = arrays["vocabulary"]
        self.idf_ = arrays["idf"]
