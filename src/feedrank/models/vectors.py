"""Item and user vectors for seed 003's click models: x_u and y_i of one dimension d.

Item vectors come from one of three sources, each a linear map of a sparse item featurisation F
(``"auto"``, the models' default, picks ``"metadata"`` when the catalogue has categorical item
attributes and ``"cf"`` when it has none, and keeps the source it picked):

- ``"text"``: TF-IDF of a text column (default ``title``), reduced by truncated SVD;
- ``"metadata"``: one-hots of the item's categorical attributes (content type, lang, author...);
- ``"cf"``: collaborative-filtering item factors — from
  ``feedrank.models.factorization.ALSRecommender`` when that model is installed, else a truncated
  SVD of the user x item engagement matrix; F is then the one-hot of the item id, so an item
  unseen at fit time gets the zero vector (it is scored by the model's bias terms alone).

Then a reduction to the production dimension (``"pca"``, or a Gaussian ``"random"`` projection,
or ``"none"``), and every row scaled to unit length, so x_u . y_i is a cosine when x_u is one
item's vector. Every step after F is linear, so the embedder is (featurisation, P, c):
``y = normalise(F @ P - c)`` — saved as JSON + arrays, and new items are embedded at serving
time without refitting.

A user vector is the engagement-weighted mean of the vectors of the items the user engaged with
strictly before the example's time: the as-of rule of features/history.py, one place for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from feedrank.exceptions import ConfigError
from feedrank.features.groups import ITEM_CATEGORICALS
from feedrank.features.history import T, weighted
from feedrank.settings import Settings
from feedrank.views.site import SiteData

SOURCES = ("auto", "metadata", "text", "cf")
REDUCTIONS = ("pca", "random", "none")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}; got '{value}'")


def normalise_rows(Y: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norm = np.linalg.norm(Y, axis=1, keepdims=True)
    return np.divide(Y, norm, out=np.zeros_like(Y), where=norm > 0)


def reduce_dim(
    Z: np.ndarray, dim: int, method: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A linear map (k x dim) and an offset (dim,) taking Z (n x k) to the production dimension:
    PCA (centred, keeps the most variance) or a Gaussian random projection (no fit; distances
    kept in expectation, Johnson-Lindenstrauss). With dim >= k, or "none", the identity."""
    _choice("reduction", method, REDUCTIONS)
    k = Z.shape[1]
    if method == "none" or dim >= k:
        return np.eye(k), np.zeros(k)
    if method == "pca":
        n_comp = min(dim, Z.shape[0])
        pca = PCA(n_components=n_comp, random_state=seed).fit(Z)
        comps = pca.components_.T  # k x n_comp
        if n_comp < dim:  # fewer items than dimensions: pad with zero columns
            comps = np.hstack([comps, np.zeros((k, dim - n_comp))])
        return comps, pca.mean_ @ comps
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0 / np.sqrt(dim), size=(k, dim)), np.zeros(dim)


@dataclass
class ItemEmbedder:
    """y_i = normalise(F(item) @ P - c). `fit` learns the featurisation and P from a SiteData."""

    source: str = "metadata"
    dim: int = 32
    source_dim: int = 300
    reduction: str = "pca"
    text_column: str = "title"
    columns: list[str] = field(default_factory=list)  # metadata: attributes one-hot encoded
    max_levels: int = 200
    seed: int = 0
    # -- fitted ------------------------------------------------------------------------------------
    levels_: dict[str, list[str]] = field(default_factory=dict)
    vocabulary_: list[str] = field(default_factory=list)
    idf_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ids_: list[str] = field(default_factory=list)
    P_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    c_: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        _choice("vectors", self.source, SOURCES)
        _choice("reduction", self.reduction, REDUCTIONS)
        if self.dim < 1 or self.source_dim < 1:
            raise ConfigError(
                f"dim and source_dim must be >= 1; got dim={self.dim}, source_dim={self.source_dim}"
            )

    # -- featurisation ---------------------------------------------------------------------------
    def features(self, items: pl.DataFrame) -> sp.csr_matrix:
        """The sparse featurisation F of these items (rows in input order)."""
        n = items.height
        if self.source == "metadata":
            blocks = []
            for col in self.columns:
                levels = self.levels_[col]
                codes = (
                    items[col]
                    .cast(pl.String)
                    .replace_strict(
                        levels, list(range(len(levels))), default=-1, return_dtype=pl.Int64
                    )
                    if col in items.columns
                    else pl.Series(np.full(n, -1))
                ).to_numpy()
                ok = codes >= 0
                blocks.append(
                    sp.csr_matrix(
                        (np.ones(ok.sum()), (np.flatnonzero(ok), codes[ok])),
                        shape=(n, len(levels)),
                    )
                )
            return sp.hstack(blocks, format="csr")
        if self.source == "text":
            tf = TfidfVectorizer(vocabulary=self.vocabulary_, sublinear_tf=True)
            tf.idf_ = self.idf_
            return tf.transform(_texts(items, self.text_column)).tocsr()  # type: ignore[no-any-return]
        index = {v: i for i, v in enumerate(self.ids_)}
        codes = np.array([index.get(i, -1) for i in items["item_id"].to_list()], dtype=np.int64)
        ok = codes >= 0
        return sp.csr_matrix(
            (np.ones(ok.sum()), (np.flatnonzero(ok), codes[ok])), shape=(n, len(self.ids_))
        )

    def transform(self, items: pl.DataFrame) -> np.ndarray:
        """Unit-length item vectors (n x dim), rows in input order."""
        return normalise_rows(np.asarray(self.features(items) @ self.P_) - self.c_)

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, data: SiteData, settings: Settings) -> ItemEmbedder:
        items = data.items
        if self.source == "auto":  # attributes where the catalogue has them, else behaviour
            attributed = bool(self.columns) or any(c in items.columns for c in ITEM_CATEGORICALS)
            self.source = "metadata" if attributed else "cf"
        if items.is_empty() and self.source != "cf":
            raise ConfigError(
                "item vectors from attributes need an items file; got none (import items, or "
                "use collaborative vectors: --param vectors=cf)"
            )
        if self.source == "metadata":
            if not self.columns:
                self.columns = [c for c in ITEM_CATEGORICALS if c in items.columns]
            missing = [c for c in self.columns if c not in items.columns]
            if not self.columns or missing:
                raise ConfigError(
                    f"metadata vectors need categorical item attributes (among "
                    f"{list(ITEM_CATEGORICALS)}); the item columns are {items.columns}, got "
                    f"columns={self.columns or []} (use collaborative vectors: --param vectors=cf)"
                )
            self.levels_ = {
                c: items[c]
                .cast(pl.String)
                .drop_nulls()
                .value_counts(sort=True)[c]
                .head(self.max_levels)
                .to_list()
                for c in self.columns
            }
            Z = self.features(items).toarray()
            P1 = np.eye(Z.shape[1])
        elif self.source == "text":
            if self.text_column not in items.columns:
                raise ConfigError(
                    f"text_column must be one of the item columns {items.columns}; "
                    f"got '{self.text_column}'"
                )
            tf = TfidfVectorizer(sublinear_tf=True).fit(_texts(items, self.text_column))
            self.vocabulary_ = tf.get_feature_names_out().tolist()
            self.idf_ = tf.idf_
            F = self.features(items)
            P1 = _svd_components(F, self.source_dim, self.seed)
            Z = np.asarray(F @ P1)
        else:
            self.ids_, factors = cf_item_factors(data, settings, self.source_dim, self.seed)
            P1, Z = factors, factors
        M, c = reduce_dim(Z, self.dim, self.reduction, self.seed)
        self.P_, self.c_ = P1 @ M, c
        return self

    @property
    def out_dim(self) -> int:
        return int(self.P_.shape[1])

    # -- persistence -------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "source": self.source,
            "dim": self.dim,
            "source_dim": self.source_dim,
            "reduction": self.reduction,
            "text_column": self.text_column,
            "columns": self.columns,
            "max_levels": self.max_levels,
            "seed": self.seed,
            "levels": self.levels_,
            "vocabulary": self.vocabulary_,
            "ids": self.ids_,
        }
        return meta, {"emb_P": self.P_, "emb_c": self.c_, "emb_idf": self.idf_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ItemEmbedder:
        emb = cls(
            source=meta["source"],
            dim=meta["dim"],
            source_dim=meta["source_dim"],
            reduction=meta["reduction"],
            text_column=meta["text_column"],
            columns=list(meta["columns"]),
            max_levels=meta["max_levels"],
            seed=meta["seed"],
        )
        emb.levels_, emb.vocabulary_, emb.ids_ = meta["levels"], meta["vocabulary"], meta["ids"]
        emb.P_, emb.c_, emb.idf_ = arrays["emb_P"], arrays["emb_c"], arrays["emb_idf"]
        return emb


def _texts(items: pl.DataFrame, column: str) -> list[str]:
    return items[column].cast(pl.String).fill_null("").to_list()


def _svd_components(F: sp.csr_matrix, k: int, seed: int) -> np.ndarray:
    """Right singular vectors (f x k') of F, k' = min(k, f - 1, n - 1) (at least 1)."""
    k = max(1, min(k, F.shape[1] - 1, F.shape[0] - 1))
    if F.shape[1] <= 1:
        return np.eye(F.shape[1])
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(F)
    return np.asarray(svd.components_.T)


def engagement_matrix(
    data: SiteData, settings: Settings
) -> tuple[list[str], list[str], sp.csr_matrix]:
    """User ids, item ids and the user x item matrix of log(1 + summed engagement weight)."""
    ev = engagements(data, settings)
    agg = ev.group_by("user_id", "item_id").agg(pl.col("weight").sum())
    users = sorted(set(agg["user_id"].to_list()))
    items = sorted(set(data.items["item_id"].to_list()) | set(agg["item_id"].to_list()))
    keep = agg.join(
        pl.DataFrame({"user_id": users}, schema={"user_id": pl.String}).with_row_index("__u"),
        on="user_id",
    ).join(
        pl.DataFrame({"item_id": items}, schema={"item_id": pl.String}).with_row_index("__i"),
        on="item_id",
    )
    rows, cols = keep["__u"].to_numpy(), keep["__i"].to_numpy()
    vals = np.log1p(keep["weight"].to_numpy())
    return users, items, sp.csr_matrix((vals, (rows, cols)), shape=(len(users), len(items)))


def cf_item_factors(
    data: SiteData, settings: Settings, k: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Item ids and their collaborative-filtering factors (n_items x k')."""
    als = _als_factors(data, settings, k, seed)
    if als is not None:
        return als
    _, items, R = engagement_matrix(data, settings)
    if R.nnz == 0:
        raise ConfigError("cf vectors need engagements; got none in the training data")
    kk = max(1, min(k, R.shape[0] - 1, R.shape[1] - 1))
    svd = TruncatedSVD(n_components=kk, random_state=seed).fit(R)
    # V sqrt(S): user and item factors share the singular values, as in ALS's symmetric split.
    return items, np.asarray(svd.components_.T * np.sqrt(svd.singular_values_))


def _als_factors(
    data: SiteData, settings: Settings, k: int, seed: int
) -> tuple[list[str], np.ndarray] | None:
    """Item factors of feedrank's ALS model (models/factorization.py) when it is importable
    (it needs the `implicit` package); None otherwise."""
    try:
        from feedrank.models.factorization import ALSRecommender
    except ImportError:
        return None
    k = max(1, min(k, data.items.height - 1)) if data.items.height > 1 else k
    model = ALSRecommender(factors=k, random_state=seed).fit(data, settings)
    ids = [str(i) for i in model.items_.ids]
    return ids, np.asarray(model.item_factors_, dtype=np.float64)


def user_vectors_asof(
    keys: pl.DataFrame,
    data: SiteData,
    settings: Settings,
    item_ids: list[str],
    Y: np.ndarray,
) -> np.ndarray:
    """For each row of `keys` (user_id, timestamp): the engagement-weighted mean of the vectors of
    the items the user engaged with strictly before that time (zeros without such history).

    Vectorised: per-user running sums of w * y_i over the engagement log (one cumulative sum,
    ties at one instant summed first), read by a strict backward as-of join."""
    d = Y.shape[1]
    n = keys.height
    out = np.zeros((n, d))
    if n == 0:
        return out
    idx = pl.DataFrame(
        {"item_id": item_ids, "__j": np.arange(len(item_ids))},
        schema={"item_id": pl.String, "__j": pl.Int64},
    )
    ev = (
        engagements(data, settings)
        .select("user_id", "item_id", T, "weight")
        .join(idx, on="item_id")
        .sort("user_id", T)
    )
    if ev.is_empty():
        return out
    w = ev["weight"].to_numpy()
    S = np.cumsum(Y[ev["__j"].to_numpy()] * w[:, None], axis=0)
    W = np.cumsum(w)
    users = ev["user_id"].to_numpy()
    first = np.ones(len(users), dtype=bool)
    first[1:] = users[1:] != users[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    # running sums within each user: subtract the total before the user's first row
    before_S = np.vstack([np.zeros((1, d)), S])[start]
    before_W = np.concatenate([[0.0], W])[start]
    S, W = S - before_S, W - before_W
    ts = ev[T]
    last_of_instant = np.ones(len(users), dtype=bool)
    last_of_instant[:-1] = (users[:-1] != users[1:]) | (ts[:-1] != ts[1:]).to_numpy()
    table = (
        ev.select("user_id", T)
        .with_columns(__row=pl.arange(0, ev.height))
        .filter(pl.Series(last_of_instant))
    )
    got = (
        keys.select("user_id", T)
        .with_row_index("__k")
        .sort(T)
        .join_asof(
            table.sort(T),
            on=T,
            by="user_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .sort("__k")["__row"]
        .to_numpy(allow_copy=True)
    )
    got = np.asarray(got, dtype=np.float64)
    has = ~np.isnan(got)
    rows = got[has].astype(np.int64)
    out[has] = S[rows] / W[rows, None]
    return out


def engagements(data: SiteData, settings: Settings) -> pl.DataFrame:
    """The engagements of `data` with their weight (what user vectors average over)."""
    ev = weighted(data.events, data.items, settings, data.types)
    return ev.filter((pl.col("engaged") > 0) & (pl.col("weight") > 0))


def lookup(wanted: Sequence[str], item_ids: Sequence[str], table: np.ndarray) -> np.ndarray:
    """Rows of `table` (aligned with item_ids) for the wanted ids; zeros for unknown ids."""
    index = {v: i for i, v in enumerate(item_ids)}
    j = np.array([index.get(i, -1) for i in wanted], dtype=np.int64)
    return np.vstack([table, np.zeros((1, table.shape[1]))])[j]  # -1 picks the zero row


def at_time(user_ids: list[str], at: datetime) -> pl.DataFrame:
    """Keys (user_id, timestamp) for serving every user as of one time."""
    return pl.DataFrame(
        {"user_id": user_ids, T: [at] * len(user_ids)},
        schema={"user_id": pl.String, T: pl.Datetime("us", "UTC")},
    )
