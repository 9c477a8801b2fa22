"""The encoder turns raw feature columns into a sparse design matrix: one-hot categoricals
(levels learned at fit, rare ones pooled), crosses of a user and an item categorical, and
numeric columns transformed (log1p for counts) and standardised with training statistics.

It can encode any subset of columns, which lets a linear model's logit be split by scope
(user, item, user x level, pair, context) for fast serving."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

if TYPE_CHECKING:
    import tabmat

OTHER = "(other)"
SMALL = 256  # rows up to which codes are looked up one by one
MISSING = "(missing)"
LOG1P_PREFIXES = (
    "user_n_",
    "item_engaged",
    "item_exposed",
    "pair_",
    "item_age_days",
    "user_events_per_day",
)


def cross_name(a: str, b: str) -> str:
    return f"{a}×{b}"


def _as_level(s: pl.Series) -> pl.Series:
    return s.cast(pl.String).fill_null(MISSING)


@dataclass
class Column:
    """One raw column's encoding: categorical (levels) or numeric (transform, mean, std)."""

    name: str
    kind: str  # "categorical" | "numeric" | "cross"
    levels: list[str] | None = None
    transform: str = "none"
    mean: float = 0.0
    std: float = 1.0
    sources: tuple[str, str] | None = None  # for crosses: (user column, item column)

    @property
    def width(self) -> int:
        return len(self.levels) if self.levels is not None else 1

    def feature_names(self) -> list[str]:
        if self.levels is None:
            return [self.name]
        return [f"{self.name}={lv}" for lv in self.levels]

    def raw(self, frame: pl.DataFrame) -> pl.Series:
        if self.kind == "cross":
            assert self.sources is not None
            a, b = self.sources
            return _as_level(frame[a]) + "|" + _as_level(frame[b])
        return frame[self.name]

    def numeric_values(self, s: pl.Series) -> np.ndarray:
        x = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
        if self.transform == "log1p":
            x = np.log1p(np.clip(x, 0, None))
        return x

    def codes(self, s: pl.Series) -> np.ndarray:
        """Index of each value's level; unknown values go to OTHER (or -1 when it is absent)."""
        assert self.levels is not None
        lookup = {lv: i for i, lv in enumerate(self.levels)}
        other = lookup.get(OTHER, -1)
        values = _as_level(s)
        if values.len() <= SMALL:  # a request's few rows: dict lookups beat a join's overhead
            return np.fromiter(
                (lookup.get(v, other) for v in values.to_list()), np.int64, values.len()
            )
        uniques = values.unique(maintain_order=True)
        mapping = pl.DataFrame(
            {"v": uniques, "code": [lookup.get(u, other) for u in uniques.to_list()]},
            schema={"v": pl.String, "code": pl.Int64},
        )
        return (
            values.to_frame("v")
            .join(mapping, on="v", how="left", maintain_order="left")["code"]
            .to_numpy()
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def plan(
    categorical: list[str], numeric: list[str], crosses: list[tuple[str, str]]
) -> list[Column]:
    """The encoder's columns before anything is learned (levels, statistics)."""
    return [
        *(Column(name, "categorical") for name in categorical),
        *(Column(cross_name(a, b), "cross", sources=(a, b)) for a, b in crosses),
        *(
            Column(
                name, "numeric", transform="log1p" if name.startswith(LOG1P_PREFIXES) else "none"
            )
            for name in numeric
        ),
    ]


def level_counts(col: Column, frame: pl.DataFrame) -> pl.DataFrame:
    """level, n: how often each value of a categorical or cross column occurs."""
    return (
        _as_level(col.raw(frame))
        .alias("level")
        .value_counts(name="n")
        .with_columns(pl.col("n").cast(pl.Int64))
    )


def _moments(x: np.ndarray) -> tuple[float, float]:
    finite = x[np.isfinite(x)]
    return (float(finite.mean()), float(finite.std())) if finite.size else (0.0, 0.0)


class Encoder:
    """fit(raw frame) learns levels and statistics; transform(frame, only) -> CSR matrix."""

    def __init__(self, max_levels: int = 50, min_count: int = 5) -> None:
        self.max_levels = max_levels
        self.min_count = min_count
        self.columns_: list[Column] = []

    def fit(
        self,
        frame: pl.DataFrame,
        categorical: list[str],
        numeric: list[str],
        crosses: list[tuple[str, str]],
    ) -> Encoder:
        columns = plan(categorical, numeric, crosses)
        counts = {c.name: level_counts(c, frame) for c in columns if c.kind != "numeric"}
        moments = {
            c.name: _moments(c.numeric_values(frame[c.name]))
            for c in columns
            if c.kind == "numeric"
        }
        return self.fit_stats(columns, counts, moments)

    def fit_stats(
        self,
        columns: list[Column],
        counts: dict[str, pl.DataFrame],
        moments: dict[str, tuple[float, float]],
    ) -> Encoder:
        """Levels from each categorical's counts (level_counts), numeric columns' mean and
        standard deviation: what `fit` learns from a frame, or a Spark job from a cluster's."""
        for col in columns:
            if col.kind == "numeric":
                col.mean, sd = moments[col.name]
                col.std = sd if sd > 1e-12 else 1.0
            else:
                c = counts[col.name].sort("n", "level", descending=[True, False])
                kept = c.filter(pl.col("n") >= self.min_count).head(self.max_levels)
                col.levels = sorted(kept["level"].to_list())
                if kept.height < c.height:
                    col.levels.append(OTHER)  # rare and unseen values share one column
        self.columns_ = columns
        return self

    @property
    def feature_names_(self) -> list[str]:
        return [n for c in self.columns_ for n in c.feature_names()]

    def column_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for c in self.columns_:
            out[c.name] = slice(start, start + c.width)
            start += c.width
        return out

    def _block(self, col: Column, frame: pl.DataFrame) -> sp.csr_matrix:
        n = frame.height
        if col.levels is None:
            x = (col.numeric_values(col.raw(frame)) - col.mean) / col.std
            x = np.where(np.isfinite(x), x, 0.0)  # missing -> the training mean
            return sp.csr_matrix(x.reshape(-1, 1))
        codes = col.codes(col.raw(frame))
        ok = codes >= 0
        rows = np.flatnonzero(ok)
        return sp.csr_matrix((np.ones(rows.size), (rows, codes[ok])), shape=(n, col.width))

    def transform(self, frame: pl.DataFrame, only: list[str] | None = None) -> sp.csr_matrix:
        """Design matrix over all features (columns not in `only` stay zero)."""
        n = frame.height
        blocks = [
            self._block(col, frame)
            if only is None or col.name in only
            else sp.csr_matrix((n, col.width))
            for col in self.columns_
        ]
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((n, 0))

    def design(self, frame: pl.DataFrame) -> tabmat.SplitMatrix:
        """The design matrix for fitting, equal to `transform(frame)` but in tabmat's split form:
        a categorical block is one small integer code per row (pandas codes: int8 for < 128
        levels), not a sparse one-hot of 12 bytes per entry, and the numeric columns are one
        dense block. A few times less memory, and what glum fits fastest."""
        import pandas as pd  # fitting only: serving never builds a design matrix
        import tabmat

        parts: list[tabmat.MatrixBase] = []
        indices: list[np.ndarray] = []
        # The dense block filled column by column in place: a list of columns stacked at the
        # end would hold the block twice at the training job's peak.
        n_numeric = sum(col.levels is None for col in self.columns_)
        dense = np.empty((frame.height, n_numeric))
        numeric_at: list[int] = []
        start = 0
        for col in self.columns_:
            if col.levels is None:
                x = (col.numeric_values(col.raw(frame)) - col.mean) / col.std
                dense[:, len(numeric_at)] = np.where(np.isfinite(x), x, 0.0)
                numeric_at.append(start)
            else:
                codes = col.codes(col.raw(frame))  # -1: no level, a row of zeros
                cat = pd.Categorical.from_codes(codes, categories=np.arange(col.width))
                parts.append(tabmat.CategoricalMatrix(cat, cat_missing_method="zero"))
                indices.append(np.arange(start, start + col.width))
            start += col.width
        if n_numeric:
            parts.append(tabmat.DenseMatrix(dense))
            indices.append(np.asarray(numeric_at))
        return tabmat.SplitMatrix(parts, indices)

    def partial_logit(
        self, frame: pl.DataFrame, columns: list[str], coef: np.ndarray
    ) -> np.ndarray:
        """The named columns' share of the linear predictor, X[:, those] @ coef[those], encoding
        only those columns (serving calls this per scope, on frames of up to millions of rows)."""
        slices = self.column_slices()
        out = np.zeros(frame.height)
        for col in self.columns_:
            if col.name not in columns:
                continue
            w = coef[slices[col.name]]
            if col.levels is None:  # what the one-column block times its coefficient gives
                x = (col.numeric_values(col.raw(frame)) - col.mean) / col.std
                out += np.where(np.isfinite(x), x, 0.0) * w[0]
            else:  # a one-hot row times the coefficients is the coefficient of its level
                codes = col.codes(col.raw(frame))
                out += np.where(codes >= 0, w[np.maximum(codes, 0)], 0.0)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "max_levels": self.max_levels,
            "min_count": self.min_count,
            "columns": [c.to_json() for c in self.columns_],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Encoder:
        enc = cls(d["max_levels"], d["min_count"])
        enc.columns_ = [
            Column(**{**c, "sources": tuple(c["sources"]) if c.get("sources") else None})
            for c in d["columns"]
        ]
        return enc
