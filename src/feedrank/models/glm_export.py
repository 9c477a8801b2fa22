"""The GLM as plain data for a search engine (seed 000: the GLM's score computed inside the
engine). LinearScorer (models/linear.py) serves the GLM as
    z[u, i] = b + user[u] + context + item[i] + sum_attr share_attr[u, level(i)]
              + sum_cross table[a(u), b(i)] + pair[u, i].
In the engine the item side lives in the items index (lv.<attr> levels, f.<feature> numeric
features as of the catalogue's time, created_at_us) and everything about the user travels with
the request as script params: the scalar b + user + context, maps level -> contribution for this
user (shares, crosses), the few items the user has history with (pair corrections), and the
encoder's item coefficients with their standardisation. Item age depends on the request time,
so the script computes it from created_at_us and `now_us`.

An export is made from a GLM serving a view (its scorer): the view supplies the user's history
and the catalogue, so the store that runs the script never imports a model. The Python twin of
the script (feedrank.store.search_ranking.evaluate) checks the params against GLMScorer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from feedrank.exceptions import ConfigError
from feedrank.features.encoder import MISSING, OTHER, Column
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import Snapshot, T
from feedrank.models.glm import GLMScorer
from feedrank.models.linear import LinearScorer
from feedrank.settings import Settings

AGE = "item_age_days"
_UNSEEN = "\x00feedrank-unseen-level"  # a level no item can have: gives the "other" value


def epoch_us(t: datetime) -> int:
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


class GLMExport:
    """Script params and item fields of a GLM serving a view."""

    def __init__(self, scorer: GLMScorer) -> None:
        self.scorer = scorer
        model = scorer.model
        if model.affinity_:
            raise ConfigError(
                "a GLM exported to a search engine must have no affinity terms (the script does "
                f"not compute them); got affinity={model.affinity}"
            )
        enc, spec, coef = model.encoder_, model.spec_, model.coef_
        self.linear = scorer._linear([], _no_events())
        parts = self.linear.parts
        slices = enc.column_slices()
        by_name = {c.name: c for c in enc.columns_}
        self.item_numeric = [c for c in enc.columns_ if c.name in parts.item and c.levels is None]
        self.item_categorical = [
            c for c in enc.columns_ if c.name in parts.item and c.levels is not None
        ]
        self.shares = [a for a in spec.share_attributes if f"user_share_{a}" in by_name]
        self.crosses = [(a, b, by_name[n]) for a, b in spec.crosses if (n := f"{a}×{b}") in by_name]
        self.level_attributes = sorted(
            {c.name for c in self.item_categorical}
            | set(self.shares)
            | {b for _, b, _ in self.crosses}
        )
        no_history = self.linear.groups.item(self.linear._keys("item_id", [_UNSEEN], self.at))
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
        """The time the item fields are computed at: the catalogue's."""
        return self.scorer.view.catalogue.as_of

    # -- the item side: fields written to the items index ---------------------------------------
    def item_fields(self, item_ids: list[str] | np.ndarray | None = None) -> pl.DataFrame:
        """item_id, created_at_us, lv.<attr> (text levels), f.<feature> (numeric features as of
        the catalogue's time) for the given items (default: the view's candidates)."""
        view = self.scorer.view
        ids = list(view.candidates() if item_ids is None else item_ids)
        keys = self.linear._keys("item_id", ids, self.at)
        feats = self.linear.groups.item(keys)
        meta = keys.select("item_id").join(
            view.catalogue.items.select(
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
    def user_params(
        self, user_id: str, position: int | None = 1, device: str | None = None
    ) -> dict[str, Any]:
        """Everything the script needs about this user and request, as JSON-able values, as of
        the view's time (the user's history is read from the view)."""
        sc, m = self.scorer, self.scorer.model
        hist = sc.view.histories([user_id])
        snap = sc._snapshot([user_id], hist)
        groups = FeatureGroups(m.spec_, snap)
        lin = LinearScorer(groups, m.encoder_, m.coef_, m.intercept_, sc.view.at, position, device)
        ukeys = lin._keys("user_id", [user_id])
        ufeat = groups.user(ukeys)
        base = (
            m.intercept_
            + float(_partial(lin, ufeat, lin.parts.user)[0])
            + float(_partial(lin, groups.context(lin.context_row), lin.parts.context)[0])
        )
        shares = [self._share(lin, snap, user_id, attr) for attr in self.shares]
        crosses = [self._cross(lin, ufeat, a, b, col) for a, b, col in self.crosses]
        pair, pair_other = self._pairs(lin, snap)
        return {
            "base": float(base),
            "now_us": epoch_us(sc.view.at),
            "num": self.num_params,
            "age": self.age_params,
            "cat": self.cat_params + crosses,
            "share": shares,
            "pair": pair,
            "pair_other": pair_other,
        }

    def _share(self, sc: LinearScorer, snap: Snapshot, user_id: str, attr: str) -> dict[str, Any]:
        mine = snap.level_table(attr).filter(pl.col("user_id") == user_id)
        levels = sorted(mine["level"].drop_nulls().unique().to_list())
        grid = pl.DataFrame(
            {"user_id": [user_id] * (len(levels) + 2), "level": [*levels, _UNSEEN, None]},
            schema={"user_id": pl.String, "level": pl.String},
        ).with_columns(pl.lit(sc.at).cast(pl.Datetime("us", "UTC")).alias(T))
        share = sc.groups.level(grid, attr).to_frame()
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

    def _pairs(self, sc: LinearScorer, snap: Snapshot) -> tuple[dict[str, float], float]:
        if not sc.parts.pair:
            return {}, 0.0
        at = pl.lit(sc.at).cast(pl.Datetime("us", "UTC")).alias(T)
        zero = pl.DataFrame({"user_id": [""], "item_id": [""]}).with_columns(at)
        other = float(_partial(sc, sc.groups.pair(zero), sc.parts.pair)[0])
        keys = snap.pair_table().select("user_id", "item_id").sort("item_id").with_columns(at)
        if keys.is_empty():
            return {}, other
        values = _partial(sc, sc.groups.pair(keys), sc.parts.pair)
        return {i: float(v) for i, v in zip(keys["item_id"], values, strict=True)}, other

    def seen_items(self, user_id: str) -> list[str]:
        """Items the user already knows: excluded from the candidates, as Scorer.recommend
        (exclude_seen=True) does."""
        hist = self.scorer.view.histories([user_id])
        return sorted(hist.filter(Settings.seen_expr())["item_id"].unique().to_list())


def _no_events() -> pl.DataFrame:
    from feedrank.schema import empty_events

    return empty_events()
