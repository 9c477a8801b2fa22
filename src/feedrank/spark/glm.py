"""The engagement GLM on Spark: MLlib's GeneralizedLinearRegression (binomial, logit, IRLS) on
the cluster's feature rows (spark.features), encoded by the local Encoder, returned as a
GLMRecommender with the same coefficient table and standard errors.

The penalty. glum minimises, over n examples,

    -loglik(b) / n + alpha * (1 - l1_ratio) / 2 * |b|^2      (the intercept unpenalised)

so at its optimum X'(y - mu) = n * alpha * b. MLlib's IRLS solves, at every step, a weighted
least-squares problem normalised by the sum of its working weights, W = sum mu_i (1 - mu_i):

    sum w_i (z_i - x_i b)^2 / (2 W) + regParam / 2 * |b|^2

(features unstandardised in IRLS, so regParam acts on b itself), whose fixed point is
X'(y - mu) = regParam * W * b. The two optima agree exactly when regParam * W = n * alpha, with
W taken at the optimum: W depends on the fit, so regParam is found by a fixed-point iteration
(regParam <- n * alpha / W(b)), which settles in two or three fits because W barely moves with
the penalty. MLlib's GLM has no L1 term, so only l1_ratio = 0 runs here.

Standard errors are glum's (models.glm.fit_logistic): the inverse of the penalised Hessian
X'WX + n * alpha * I (intercept unpenalised) at the optimum, summed on the cluster as one
(p+1) x (p+1) matrix over the rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from feedrank.exceptions import ConfigError
from feedrank.features.encoder import Column, Encoder, level_counts, plan
from feedrank.features.groups import FeatureSpec
from feedrank.models.base import sigmoid
from feedrank.models.glm import GLMRecommender
from feedrank.models.linear import CONTEXT_COLUMNS
from feedrank.settings import Settings
from feedrank.spark.data import SparkSite, map_frames
from feedrank.spark.features import feature_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MAX_REFITS = 6
REG_TOL = 1e-7  # relative change of regParam that ends the fixed point (coefficients move less)
IRLS_TOL = 1e-9  # MLlib's IRLS stops when no coefficient moves more than this (relatively)


def encoder_stats(
    rows: DataFrame, columns: list[Column]
) -> tuple[dict[str, pl.DataFrame], dict[str, tuple[float, float]]]:
    """Encoder.fit's statistics over the cluster's rows: each categorical's level counts, each
    numeric column's mean and standard deviation (two passes, as numpy computes them)."""
    from pyspark.sql import functions as F

    cats = [c for c in columns if c.kind != "numeric"]
    nums = [c for c in columns if c.kind == "numeric"]

    def counts(part: pl.DataFrame) -> pl.DataFrame:
        frames = [level_counts(c, part).with_columns(column=pl.lit(c.name)) for c in cats]
        return pl.concat(frames).select("column", "level", "n")

    got = pl.from_arrow(
        map_frames(rows, counts, "column string, level string, n long")
        .groupBy("column", "level")
        .agg(F.sum("n").alias("n"))
        .toArrow()
    )
    assert isinstance(got, pl.DataFrame)
    level = {c.name: got.filter(pl.col("column") == c.name).drop("column") for c in cats}

    def values(part: pl.DataFrame) -> dict[str, np.ndarray]:
        out = {}
        for c in nums:
            x = c.numeric_values(part[c.name])
            out[c.name] = x[np.isfinite(x)]
        return out

    def sums(center: dict[str, float] | None) -> pl.DataFrame:
        def partial(part: pl.DataFrame) -> pl.DataFrame:
            got = values(part)
            return pl.DataFrame(
                {
                    "column": list(got),
                    "n": [float(v.size) for v in got.values()],
                    "s": [
                        float(np.sum(v if center is None else (v - center[k]) ** 2))
                        for k, v in got.items()
                    ],
                }
            )

        out = pl.from_arrow(
            map_frames(rows, partial, "column string, n double, s double")
            .groupBy("column")
            .agg(F.sum("n").alias("n"), F.sum("s").alias("s"))
            .toArrow()
        )
        assert isinstance(out, pl.DataFrame)
        return out

    first = sums(None)
    mean = {k: (s / n if n else 0.0) for k, n, s in first.select("column", "n", "s").iter_rows()}
    second = sums(mean)
    std = {
        k: (np.sqrt(s / n) if n else 0.0)
        for k, n, s in second.select("column", "n", "s").iter_rows()
    }
    return level, {c.name: (mean.get(c.name, 0.0), float(std.get(c.name, 0.0))) for c in nums}


def design(rows: DataFrame, encoder: Encoder) -> DataFrame:
    """`features` (an MLlib sparse vector: Encoder.transform of each row) and `label`."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    p = len(encoder.feature_names_)

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            part = pl.from_arrow(pa.Table.from_batches([b]))
            assert isinstance(part, pl.DataFrame)
            X = encoder.transform(part)
            n = X.shape[0]
            vec = pa.StructArray.from_arrays(
                [
                    pa.array(np.zeros(n, dtype=np.int8)),  # 0: sparse
                    pa.array(np.full(n, p, dtype=np.int32)),
                    pa.ListArray.from_arrays(
                        pa.array(X.indptr.astype(np.int32)), pa.array(X.indices.astype(np.int32))
                    ),
                    pa.ListArray.from_arrays(
                        pa.array(X.indptr.astype(np.int32)), pa.array(X.data.astype(np.float64))
                    ),
                ],
                names=["type", "size", "indices", "values"],
            )
            label = pa.array(part["label"].cast(pl.Float64).to_numpy())
            yield pa.RecordBatch.from_arrays([vec, label], names=["features", "label"])

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    return rows.mapInArrow(encode, schema)


def _csr(batch: pa.RecordBatch, p: int) -> sp.csr_matrix:
    """The design rows of an Arrow batch (design's sparse vectors) as a CSR, without a loop."""
    vec = batch.column("features")
    indices, values = vec.field("indices"), vec.field("values")
    indptr = np.asarray(indices.offsets) - np.asarray(indices.offsets)[0]
    return sp.csr_matrix(
        (np.asarray(values.flatten()), np.asarray(indices.flatten()), indptr),
        shape=(batch.num_rows, p),
    )


def _summed(data: DataFrame, p: int, fn: Callable[[sp.csr_matrix], np.ndarray]) -> np.ndarray:
    """fn over every batch of design rows, added up on the driver."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            v = np.asarray(fn(_csr(b, p)), dtype=np.float64).ravel()
            yield pa.RecordBatch.from_arrays([pa.array([v], pa.list_(pa.float64()))], ["v"])

    got = data.mapInArrow(run, "v array<double>").toArrow()["v"].to_pylist()
    return np.sum(np.asarray(got), axis=0)


def _working_weight(data: DataFrame, coef: np.ndarray, intercept: float) -> float:
    """W = sum mu (1 - mu) at these coefficients."""

    def w(X: sp.csr_matrix) -> np.ndarray:
        mu = sigmoid(X @ coef + intercept)
        return np.array([np.sum(mu * (1 - mu))])

    return float(_summed(data, coef.size, w)[0])


def _hessian(data: DataFrame, coef: np.ndarray, intercept: float) -> np.ndarray:
    """The log-likelihood's Hessian with the intercept as a border, [[sum w, (X'w)'], [X'w,
    X'WX]], as fit_logistic forms it, summed over the cluster's batches."""
    p = coef.size

    def h(X: sp.csr_matrix) -> np.ndarray:
        mu = sigmoid(X @ coef + intercept)
        w = mu * (1 - mu)
        Xb = sp.hstack([np.ones((X.shape[0], 1)), X], format="csr")
        return np.asarray((Xb.T @ sp.diags(w) @ Xb).todense())

    return _summed(data, p, h).reshape(p + 1, p + 1)


def fit_glr(
    data: DataFrame, n: int, alpha: float, y_mean: float
) -> tuple[np.ndarray, float, float]:
    """MLlib's binomial GLM at glum's penalty (the module's derivation): coef, intercept and
    the regParam that matched it."""
    from pyspark.ml.regression import GeneralizedLinearRegression

    reg = alpha / max(y_mean * (1 - y_mean), 1e-12)  # W ~ n * p(1-p) before any fit
    for _ in range(MAX_REFITS):
        fitted = GeneralizedLinearRegression(
            family="binomial", link="logit", regParam=reg, maxIter=50, tol=IRLS_TOL
        ).fit(data)
        coef, intercept = fitted.coefficients.toArray(), float(fitted.intercept)
        new = n * alpha / _working_weight(data, coef, intercept)
        done = abs(new - reg) <= REG_TOL * reg
        reg = new
        if done:
            break
    return coef, intercept, reg


def fit_glm(
    site: SparkSite,
    settings: Settings,
    params: dict[str, Any],
    rows: tuple[FeatureSpec, DataFrame] | None = None,
) -> GLMRecommender:
    """The GLM fitted on the cluster (on `rows` = feature_rows(site, settings) when given)."""
    model = GLMRecommender(**params)
    if model.l1_ratio != 0.0:
        raise ConfigError(
            f"l1_ratio must be 0 with --engine spark (MLlib's GLM penalises by L2 only); got "
            f"{model.l1_ratio}"
        )
    if not model.alpha > 0:
        raise ConfigError(f"alpha must be > 0 with --engine spark; got {model.alpha}")
    if model.affinity:
        raise ConfigError(
            f"affinity must be empty with --engine spark (its terms are computed locally only); "
            f"got {model.affinity}"
        )
    model.affinity_ = []
    model.stamp(settings, site.time_span)
    spec, frame = rows or feature_rows(site, settings)
    frame = frame.cache()
    categorical = [*spec.user_categoricals, *spec.item_categoricals, *CONTEXT_COLUMNS]
    numeric = [c for c in frame.columns if c not in categorical and c != "label"]
    columns = plan(categorical, numeric, spec.crosses)
    encoder = Encoder(model.max_levels, model.min_count).fit_stats(
        columns, *encoder_stats(frame, columns)
    )
    data = design(frame, encoder).cache()
    from pyspark.sql import functions as F

    n, positives = data.agg(F.count("label"), F.sum("label")).first()  # type: ignore[misc]
    coef, intercept, _ = fit_glr(data, int(n), float(model.alpha), float(positives) / n)
    H = _hessian(data, coef, intercept)
    penalty = n * model.alpha * np.ones(H.shape[0])
    penalty[0] = 0.0
    se = np.sqrt(np.clip(np.diag(np.linalg.pinv(H + np.diag(penalty))), 0, None))
    data.unpersist()
    model.spec_, model.encoder_ = spec, encoder
    model.coef_, model.intercept_, model.se_ = coef, intercept, se
    model.n_examples_, model.positive_rate_ = int(n), float(positives) / n
    return model
