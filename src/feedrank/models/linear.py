"""Fast serving of a linear model over point-in-time features.

A logit that is linear in the encoded features splits by scope:
    z[u, i] = b + user[u] + item[i] + sum_attr level_attr[u, attr(i)]
              + sum_cross table[a(u), b(i)] + pair corrections[u, i] + context
Each part is computed by the same feature groups and encoder as training rows (so the two paths
agree), and the user x item matrix is assembled with NumPy broadcasting and gathers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import polars as pl

from feedrank.features.encoder import Encoder, cross_name
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import T

CONTEXT_COLUMNS = ("hour", "weekday", "position", "device")


class LinearScorer:
    def __init__(
        self,
        groups: FeatureGroups,
        encoder: Encoder,
        coef: np.ndarray,
        intercept: float,
        at: datetime,
        position: int | None = 1,
        device: str | None = None,
    ) -> None:
        self.groups, self.encoder, self.coef, self.intercept = groups, encoder, coef, intercept
        self.at = at
        self.context_row = pl.DataFrame(
            {T: [at], "position": [position], "device": [device]},
            schema={T: pl.Datetime("us", "UTC"), "position": pl.Int32, "device": pl.String},
        )
        spec = groups.spec
        self.cols_user = [
            c.name
            for c in encoder.columns_
            if c.name in spec.user_categoricals
            or (c.name.startswith("user_") and not c.name.startswith("user_share_"))
        ]
        self.cols_item = [
            c.name
            for c in encoder.columns_
            if c.name in spec.item_categoricals or c.name.startswith("item_")
        ]
        self.cols_pair = [c.name for c in encoder.columns_ if c.name.startswith("pair_")]
        self.cols_context = [c.name for c in encoder.columns_ if c.name in CONTEXT_COLUMNS]
        self._item_cache: tuple[np.ndarray, np.ndarray] | None = None

    def partial(self, frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
        if not columns or frame.is_empty():
            return np.zeros(frame.height)
        return self.encoder.partial_logit(frame, list(columns), self.coef)

    def _keys(self, col: str, ids: Sequence[str] | np.ndarray) -> pl.DataFrame:
        return pl.DataFrame({col: list(ids)}, schema={col: pl.String}).with_columns(
            pl.lit(self.at).cast(pl.Datetime("us", "UTC")).alias(T)
        )

    def item_part(self, item_ids: np.ndarray) -> np.ndarray:
        if self._item_cache is not None and np.array_equal(self._item_cache[0], item_ids):
            return self._item_cache[1]
        part = self.partial(self.groups.item(self._keys("item_id", item_ids)), self.cols_item)
        self._item_cache = (item_ids, part)
        return part

    def logits(self, user_ids: Sequence[str], item_ids: np.ndarray) -> np.ndarray:
        spec = self.groups.spec
        ukeys = self._keys("user_id", user_ids)
        ufeat = self.groups.user(ukeys)
        z = np.full((len(user_ids), len(item_ids)), self.intercept)
        z += self.partial(ufeat, self.cols_user)[:, None]
        z += self.item_part(item_ids)[None, :]
        z += self.partial(self.groups.context(self.context_row), self.cols_context)[0]
        names = {c.name for c in self.encoder.columns_}
        for attr in spec.share_attributes:
            col = f"user_share_{attr}"
            if col not in names:
                continue
            item_levels = self.groups.item_levels(pl.Series(item_ids, dtype=pl.String), attr)
            levels = item_levels.unique(maintain_order=True)
            grid = ukeys.join(pl.DataFrame({"level": levels}), how="cross")
            share = self.groups.level(grid, attr).to_frame()
            table = self.partial(share, [col]).reshape(len(user_ids), levels.len())
            z += table[:, _codes(item_levels, levels)]
        for a, b in spec.crosses:
            name = cross_name(a, b)
            if name not in names:
                continue
            ua = ufeat[a].cast(pl.String)
            ib = self._item_attributes(item_ids)[b]
            ua_levels, ib_levels = ua.unique(maintain_order=True), ib.unique(maintain_order=True)
            combos = pl.DataFrame({a: ua_levels}).join(pl.DataFrame({b: ib_levels}), how="cross")
            table = self.partial(combos, [name]).reshape(ua_levels.len(), ib_levels.len())
            z += table[_codes(ua, ua_levels)][:, _codes(ib, ib_levels)]
        if self.cols_pair:
            z += self._pair_part(user_ids, item_ids)
        return z

    def _item_attributes(self, item_ids: np.ndarray) -> pl.DataFrame:
        cats = self.groups.spec.item_categoricals
        return pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String}).join(
            self.groups.data.items.select("item_id", *[pl.col(c).cast(pl.String) for c in cats]),
            on="item_id",
            how="left",
            maintain_order="left",
        )

    def _pair_part(self, user_ids: Sequence[str], item_ids: np.ndarray) -> np.ndarray:
        """Every pair gets the no-history value; only pairs with history are computed."""
        table = self.groups.history.user_item
        zero_row = self.groups.pair(
            pl.DataFrame(
                {"user_id": [""], "item_id": [""], T: [self.at]},
                schema={"user_id": pl.String, "item_id": pl.String, T: pl.Datetime("us", "UTC")},
            )
        )
        out = np.full((len(user_ids), len(item_ids)), self.partial(zero_row, self.cols_pair)[0])
        pairs = (
            table.filter(pl.col(T) < self.at, pl.col("user_id").is_in(list(user_ids)))
            .select("user_id", "item_id")
            .unique()
        )
        uidx = pl.DataFrame(
            {"user_id": list(user_ids), "__u": np.arange(len(user_ids))},
            schema={"user_id": pl.String, "__u": pl.Int64},
        )
        iidx = pl.DataFrame(
            {"item_id": item_ids, "__i": np.arange(len(item_ids))},
            schema={"item_id": pl.String, "__i": pl.Int64},
        )
        pairs = pairs.join(uidx, on="user_id").join(iidx, on="item_id")
        if not pairs.is_empty():
            keys = pairs.select(
                "user_id", "item_id", pl.lit(self.at).cast(pl.Datetime("us", "UTC")).alias(T)
            )
            out[pairs["__u"].to_numpy(), pairs["__i"].to_numpy()] = self.partial(
                self.groups.pair(keys), self.cols_pair
            )
        return out


def _codes(values: pl.Series, levels: pl.Series) -> np.ndarray:
    """Position of each value in `levels` (nulls match a null level)."""
    lv = pl.DataFrame({"v": levels, "__c": np.arange(levels.len())})
    return (
        values.to_frame("v")
        .join(lv, on="v", how="left", maintain_order="left", nulls_equal=True)["__c"]
        .to_numpy()
    )
