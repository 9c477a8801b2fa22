"""The GLM's logit split for the search engine, and a Python twin of the engine's script.

LinearScorer (models/linear.py) serves the GLM as
    z[u, i] = b + user[u] + context + item[i] + sum_attr share_attr[u, level(i)]
              + sum_cross table[a(u), b(i)] + pair[u, i].
In the engine the item side lives in the items index (lv.<attr> levels, f.<feature> numeric
features as of the publish time, created_at_us) and everything about the user travels with the
request as script params: the scalar b + user + context, maps level -> contribution for this
user (shares, crosses), the few items the user has history with (pair corrections), and the
encoder's item coefficients with their standardisation. Item age depends on the request time,
so it is computed in the script from created_at_us and `now_us`.

`evaluate` computes the same formula from the same params and fields in NumPy: a unit test
shows it equals GLMRecommender.score; the integration suite shows the engine equals both."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from feedrank.data.site import SiteData
from feedrank.exceptions import NotFittedError
from feedrank.features.encoder import MISSING, OTHER, Column
from feedrank.features.history import T
from feedrank.models.glm import GLMRecommender, sigmoid
from feedrank.models.linear import LinearScorer

AGE = "item_age_days"
_UNSEEN = "\x00feedrank-unseen-level"  # a level no item can have: gives the "other" value


def _us(t: datetime) -> int:
    return int(pl.Series([t]).dt.epoch("us")[0])


def _coef_map(col: Column, coef: np.ndarray, start: int) -> tuple[dict[str, float], float]:
    """A categorical column's one-hot coefficients: level -> coef, and the value of any other
    level (the pooled OTHER column, or nothing when the encoder has none)."""
    assert col.levels is not None
    values = {lv: float(coef[start + j]) for j, lv in enumerate(col.levels)}
    other = values.pop(OTHER, 0.0)
    return values, other


def _partial(sc: LinearScorer, frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """LinearScorer.partial without assembling the whole sparse design matrix (most of a
    request's time): each column encoded by the encoder's own Column methods, summed in the
    encoder's column order, as the sparse product sums a row's entries."""
    out = np.zeros(frame.height)
    start = 0
    for col in sc.encoder.columns_:
        if col.name in columns and frame.height:
            if col.levels is None:
                x = (col.numeric_values(col.raw(frame)) - col.mean) / col.std
                out += sc.coef[start] * np.where(np.isfinite(x), x, 0.0)
            else:
                codes = col.codes(col.raw(frame))
                out += np.where(codes >= 0, sc.coef[start + np.maximum(codes, 0)], 0.0)
        start += col.width
    return out


class GLMSplit:
    """Script params and item fields of a GLM served as of `model.at_` (see serve_with)."""

    def __init__(self, model: GLMRecommender) -> None:
        if not model.is_fitted:
            raise NotFittedError("GLMSplit needs a fitted GLMRecommender (fit or serve_with)")
        self.model = model
        enc, spec, coef = model.encoder_, model.spec_, model.coef_
        self.scorer: LinearScorer = model.scorer_
        slices = enc.column_slices()
        by_name = {c.name: c for c in enc.columns_}
        self.item_numeric = [
            c for c in enc.columns_ if c.name in self.scorer.cols_item and c.levels is None
        ]
        self.item_categorical = [
            c for c in enc.columns_ if c.name in self.scorer.cols_item and c.levels is not None
        ]
        self.shares = [a for a in spec.share_attributes if f"user_share_{a}" in by_name]
        self.crosses = [(a, b, by_name[n]) for a, b in spec.crosses if (n := f"{a}×{b}") in by_name]
        self.level_attributes = sorted(
            {c.name for c in self.item_categorical}
            | set(self.shares)
            | {b for _, b, _ in self.crosses}
        )
        no_history = model.groups_.item(self.scorer._keys("item_id", [_UNSEEN]))
        self.num_params: list[dict[str, Any]] = []
        self.age_params: dict[str, Any] | None = None
        for c in self.item_numeric:
            p = {
                "coef": float(coef[slices[c.name].start]),
                "mean": float(c.mean),
                "std": float(c.std),
                "log": c.transform == "log1p",
            }
            if c.name == AGE:
                self.age_params = p
            else:
                missing = float(no_history[c.name].cast(pl.Float64).fill_null(np.nan)[0])
                self.num_params.append({"field": f"f.{c.name}", "missing": missing, **p})
        self.cat_params = []
        for c in self.item_categorical:
            values, other = _coef_map(c, coef, slices[c.name].start)
            self.cat_params.append({"field": f"lv.{c.name}", "map": values, "other": other})

    @property
    def at(self) -> datetime:
        return self.model.at_

    # -- the item side: fields written to the items index ---------------------------------------
    def item_fields(self, item_ids: list[str] | np.ndarray | None = None) -> pl.DataFrame:
        """item_id, created_at_us, lv.<attr> (text levels), f.<feature> (numeric features as of
        the serving time) for the given items (default: the model's catalogue)."""
        ids = list(self.model.item_ids_ if item_ids is None else item_ids)
        keys = self.scorer._keys("item_id", ids)
        feats = self.model.groups_.item(keys)
        items = self.model.data_.items
        meta = keys.select("item_id").join(
            items.select(
                "item_id",
                created_at_us=pl.col("created_at").dt.epoch("us"),
                **{f"lv.{a}": pl.col(a).cast(pl.String) for a in self.level_attributes},
            ),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        numeric = feats.select(
            [pl.col(p["field"][2:]).cast(pl.Float64).alias(p["field"]) for p in self.num_params]
        )
        return pl.concat([meta, numeric], how="horizontal")

    # -- the user side: script params ----------------------------------------------------------
    def _served_on(self, data: SiteData | None, at: datetime | None) -> GLMRecommender:
        """The model itself, or a shallow copy serving `data` as of `at` (only the user side is
        read from it, so the user's own events and items are enough)."""
        if data is None and at is None:
            return self.model
        m = self.model
        return copy.copy(m).serve_with(data if data is not None else m.data_, at or m.at_)

    def user_params(
        self,
        user_id: str,
        position: int | None = 1,
        device: str | None = None,
        data: SiteData | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Everything the script needs about this user and request, as JSON-able values.
        `data`: the user's profile, events and touched items (SearchStore.user_site) instead of
        the whole site the model serves (the params are the same); `at`: the request time
        (default: the model's serving time), which moves history features and item ages."""
        m = self._served_on(data, at)
        groups, enc = m.groups_, m.encoder_
        sc = LinearScorer(groups, enc, m.coef_, m.intercept_, m.at_, position, device)
        ukeys = sc._keys("user_id", [user_id])
        ufeat = groups.user(ukeys)
        base = (
            m.intercept_
            + float(_partial(sc, ufeat, sc.cols_user)[0])
            + float(_partial(sc, groups.context(sc.context_row), sc.cols_context)[0])
        )
        shares = [self._share(sc, user_id, attr) for attr in self.shares]
        crosses = [self._cross(sc, ufeat, a, b, col) for a, b, col in self.crosses]
        pair, pair_other = self._pairs(sc, user_id)
        return {
            "base": float(base),
            "now_us": _us(m.at_),
            "num": self.num_params,
            "age": self.age_params,
            "cat": self.cat_params + crosses,
            "share": shares,
            "pair": pair,
            "pair_other": pair_other,
        }

    def _share(self, sc: LinearScorer, user_id: str, attr: str) -> dict[str, Any]:
        groups = sc.groups
        hist = groups.history.user_level(attr).filter(
            (pl.col("user_id") == user_id) & (pl.col(T) < sc.at)
        )
        levels = sorted(hist["level"].drop_nulls().unique().to_list())
        grid = pl.DataFrame(
            {"user_id": [user_id] * (len(levels) + 2), "level": [*levels, _UNSEEN, None]},
            schema={"user_id": pl.String, "level": pl.String},
        ).with_columns(pl.lit(sc.at).cast(pl.Datetime("us", "UTC")).alias(T))
        share = groups.level(grid, attr).to_frame()
        values = _partial(sc, share, [f"user_share_{attr}"])
        return {
            "field": f"lv.{attr}",
            "map": {lv: float(v) for lv, v in zip(levels, values, strict=False)},
            "other": float(values[-2]),
            "missing": float(values[-1]),
        }

    def _cross(
        self, sc: LinearScorer, ufeat: pl.DataFrame, a: str, b: str, col: Column
    ) -> dict[str, Any]:
        assert col.levels is not None
        ua = ufeat[a].cast(pl.String)[0]
        prefix = (MISSING if ua is None else ua) + "|"
        item_levels = [lv[len(prefix) :] for lv in col.levels if lv.startswith(prefix)]
        combos = pl.DataFrame(
            {a: [ua] * (len(item_levels) + 1), b: [*item_levels, _UNSEEN]},
            schema={a: pl.String, b: pl.String},
        )
        values = _partial(sc, combos, [col.name])
        return {
            "field": f"lv.{b}",
            "map": {lv: float(v) for lv, v in zip(item_levels, values, strict=False)},
            "other": float(values[-1]),
        }

    def _pairs(self, sc: LinearScorer, user_id: str) -> tuple[dict[str, float], float]:
        if not sc.cols_pair:
            return {}, 0.0
        groups = sc.groups
        at = pl.lit(sc.at).cast(pl.Datetime("us", "UTC")).alias(T)
        zero = pl.DataFrame({"user_id": [""], "item_id": [""]}).with_columns(at)
        other = float(_partial(sc, groups.pair(zero), sc.cols_pair)[0])
        items = (
            groups.history.user_item.filter((pl.col("user_id") == user_id) & (pl.col(T) < sc.at))
            .select("item_id")
            .unique()
            .sort("item_id")
        )
        if items.is_empty():
            return {}, other
        keys = items.with_columns(user_id=pl.lit(user_id), timestamp=at).select(
            "user_id", "item_id", T
        )
        values = _partial(sc, groups.pair(keys), sc.cols_pair)
        return {i: float(v) for i, v in zip(items["item_id"], values, strict=True)}, other

    def seen_items(
        self, user_id: str, data: SiteData | None = None, at: datetime | None = None
    ) -> list[str]:
        """Items the user engaged with before the request time: excluded from the candidates,
        as Recommender.recommend(exclude_seen=True) does."""
        m = self.model
        ev = (data if data is not None else m.data_).events.filter(
            (pl.col("user_id") == user_id)
            & pl.col("type").is_in(m.settings_.engagement_types)
            & (pl.col(T) < (at or m.at_))
            & (pl.col("item_id") != "")
        )
        return sorted(ev["item_id"].unique().to_list())


# -- the Python twin of GLM_SCRIPT_SOURCE -------------------------------------------------------
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


__all__ = ["GLMSplit", "evaluate", "rank"]
