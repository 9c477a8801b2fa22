"""The Python twin of the engine's GLM script (GLM_SCRIPT_SOURCE): the same formula over the
same plain data — a model's exported script params (feedrank.models.glm_export) and the item
fields published to the items index — computed with NumPy. A unit test shows it equals the
GLM's own scores; the server suite shows the engine equals both. Plain data in, plain data out:
the store never imports a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

MISSING = "(missing)"  # the encoder's level of a missing value (features.encoder.MISSING)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def _levels(fields: pl.DataFrame, field: str) -> pl.Series:
    if field in fields.columns:
        return fields[field].cast(pl.String)
    return pl.Series(field, [None] * fields.height, dtype=pl.String)


def _lookup(levels: pl.Series, mapping: dict[str, float], other: float) -> np.ndarray:
    if not mapping:
        return np.full(levels.len(), other)
    return levels.replace_strict(mapping, default=other, return_dtype=pl.Float64).to_numpy()


def _standardised(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    if p["log"]:
        x = np.log1p(np.clip(x, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (x - p["mean"]) / p["std"]
    return p["coef"] * np.where(np.isfinite(v), v, 0.0)


def evaluate(params: dict[str, Any], fields: pl.DataFrame) -> np.ndarray:
    """Probability per row of `fields` (item_id, created_at_us, lv.*, f.*), computed exactly as
    the painless script does (one feature at a time, vectorised over items)."""
    n = fields.height
    z = np.full(n, float(params["base"]))
    for p in params["num"]:
        col = fields[p["field"]] if p["field"] in fields.columns else pl.Series([None] * n)
        x = col.cast(pl.Float64).fill_null(p["missing"]).to_numpy().astype(np.float64)
        z += _standardised(x, p)
    age = params.get("age")
    if age is not None:
        d = params["now_us"] - fields["created_at_us"].cast(pl.Int64).to_numpy()
        secs = np.sign(d) * (np.abs(d) // 1_000_000)  # Java's long division truncates to zero
        z += _standardised(np.maximum(secs / 86400.0, 0.0), age)
    for c in params["cat"]:
        z += _lookup(_levels(fields, c["field"]).fill_null(MISSING), c["map"], c["other"])
    for s in params["share"]:
        levels = _levels(fields, s["field"])
        z += np.where(
            levels.is_null().to_numpy(), s["missing"], _lookup(levels, s["map"], s["other"])
        )
    z += _lookup(fields["item_id"].cast(pl.String), params["pair"], params["pair_other"])
    return sigmoid(z)


def rank(params: dict[str, Any], fields: pl.DataFrame, exclude: list[str], k: int) -> pl.DataFrame:
    """The engine's answer computed in Python: top-k by probability, ties by item_id."""
    p = evaluate(params, fields)
    out = fields.select("item_id").with_columns(score=pl.Series(p))
    out = out.filter(~pl.col("item_id").is_in(exclude))
    return out.sort(["score", "item_id"], descending=[True, False]).head(k)


__all__ = ["evaluate", "rank"]
