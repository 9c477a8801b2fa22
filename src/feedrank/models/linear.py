"""Fast serving of a linear model over point-in-time features.

A logit that is linear in the encoded features splits by scope:
    z[u, i] = b + user[u] + item[i] + sum_attr level_attr[u, attr(i)]
              + sum_cross table[a(u), b(i)] + pair corrections[u, i] + context
Each part is computed by the same feature groups and encoder as training rows (so the two paths
agree), over a Snapshot of the users being scored, and the user x item matrix is assembled with
NumPy broadcasting and gathers. The item part depends on the catalogue only, so it is computed
once per catalogue (views.catalogue.Catalogue.memo)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import polars as pl

from feedrank.features.encoder import Encoder, cross_name
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import Snapshot, T

CONTEXT_COLUMNS = ("hour", "weekday", "position", "device")


class LinearParts:
    """Which encoded columns belong to which scope, for one encoder."""

    def __init__(
        self, groups_spec_user: Sequence[str], groups_spec_item: Sequence[str], encoder: Encoder
    ) -> None:
        names = [c.name for c in encoder.columns_]
        self.user = [
            n
            for n in names
            if n in groups_spec_user or (n.startswith("user_") and not n.startswith("user_share_"))
        ]
        self.item = [n for n in names if n in groups_spec_item or n.startswith("item_")]
        self.pair = [n for n in names if n.startswith("pair_")]
        self.context = [n for n in names if n in CONTEXT_COLUMNS]
        self.names = set(names)


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
        level_terms: Sequence[tuple[str, str, Callable[[pl.Series], np.ndarray]]] = (),
    ) -> None:
        """level_terms: more user x level columns (column, item attribute, levels -> users x
        levels raw values), e.g. the GLM's affinity terms."""
        self.groups, self.encoder, self.coef, self.intercept = groups, encoder, coef, intercept
        self.level_terms = list(level_terms)
        self.at = at
        self.context_row = pl.DataFrame(
            {T: [at], "position": [position], "device": [device]},
            schema={T: pl.Datetime("us", "UTC"), "position": pl.Int32, "device": pl.String},
        )
        spec = groups.spec
        self.parts = LinearParts(spec.user_categoricals, spec.item_categoricals, encoder)

    def partial(self, frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
        if not columns or frame.is_empty():
            return np.zeros(frame.height)
        return self.encoder.partial_logit(frame, list(columns), self.coef)

    def _keys(
        self, col: str, ids: Sequence[str] | np.ndarray, at: datetime | None = None
    ) -> pl.DataFrame:
        return pl.DataFrame({col: list(ids)}, schema={col: pl.String}).with_columns(
            pl.lit(at or self.at).cast(pl.Datetime("us", "UTC")).alias(T)
        )

    def item_part(self, item_ids: np.ndarray, at: datetime | None = None) -> np.ndarray:
        """The item scope's logit of each item, with item features as of `at`."""
        keys = self._keys("item_id", item_ids, at)
        return self.partial(self.groups.item(keys), self.parts.item)

    def logits(
        self, user_ids: Sequence[str], item_ids: np.ndarray, item_part: np.ndarray | None = None
    ) -> np.ndarray:
        """z for every (user, item): the per-user scalars and the user x attribute-level terms
        are summed on the small (users x level combinations) table, gathered into the block
        in one pass and the item part added in a second; pair corrections touch only the pairs
        with history."""
        ukeys = self._keys("user_id", user_ids)
        ufeat = self.groups.user(ukeys)
        context = self.partial(self.groups.context(self.context_row), self.parts.context)[0]
        user = self.partial(ufeat, self.parts.user) + (self.intercept + context)
        pair_base, pairs = self._pair_part(user_ids, item_ids)
        table, combo = self._attribute_part(user_ids, ufeat, item_ids)
        table += (user + pair_base)[:, None]
        z = np.take(table, combo, axis=1)
        z += (self.item_part(item_ids) if item_part is None else item_part)[None, :]
        if pairs is not None:
            rows, cols, extra = pairs
            z[rows, cols] += extra
        return z

    def _attribute_part(
        self, user_ids: Sequence[str], ufeat: pl.DataFrame, item_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The terms that pair a user with an item attribute (shares of engagement per level,
        user x item crosses) per distinct combination of the items' levels — a few hundred
        combinations, not thousands of items — and each item's combination."""
        spec = self.groups.spec
        shares = [a for a in spec.share_attributes if f"user_share_{a}" in self.parts.names]
        crosses = [(a, b) for a, b in spec.crosses if cross_name(a, b) in self.parts.names]
        terms = [(c, a, f) for c, a, f in self.level_terms if c in self.parts.names]
        attrs = list(dict.fromkeys([*shares, *(b for _, b in crosses), *(a for _, a, _ in terms)]))
        if not attrs:  # one combination, no term
            return np.zeros((len(user_ids), 1)), np.zeros(len(item_ids), dtype=np.int64)
        items = self._item_attributes(item_ids, attrs)
        combos = items.select(attrs).unique(maintain_order=True)
        acc = np.zeros((len(user_ids), combos.height))
        for attr in shares:
            col = f"user_share_{attr}"
            levels = combos[attr].unique(maintain_order=True)
            share = self.groups.share_matrix(user_ids, levels, attr)
            values = self.partial(pl.DataFrame({col: share.ravel()}), [col])
            acc += np.take(values.reshape(share.shape), _codes(combos[attr], levels), axis=1)
        for col, attr, values_of in terms:
            levels = combos[attr].unique(maintain_order=True)
            raw = values_of(levels)
            values = self.partial(pl.DataFrame({col: raw.ravel()}), [col])
            acc += np.take(values.reshape(raw.shape), _codes(combos[attr], levels), axis=1)
        for a, b in crosses:
            ua = ufeat[a].cast(pl.String)
            ua_levels, ib_levels = (
                ua.unique(maintain_order=True),
                combos[b].unique(maintain_order=True),
            )
            pairs = pl.DataFrame({a: ua_levels}).join(pl.DataFrame({b: ib_levels}), how="cross")
            table = self.partial(pairs, [cross_name(a, b)]).reshape(
                ua_levels.len(), ib_levels.len()
            )
            by_level = np.take(table, _codes(combos[b], ib_levels), axis=1)
            acc += np.take(by_level, _codes(ua, ua_levels), axis=0)
        keyed = combos.with_row_index("__c")
        code = items.join(keyed, on=attrs, how="left", maintain_order="left", nulls_equal=True)
        return acc, code["__c"].to_numpy()

    def _item_attributes(self, item_ids: np.ndarray, attrs: Sequence[str]) -> pl.DataFrame:
        return pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String}).join(
            self.groups.counters.items.select(
                "item_id", *[pl.col(c).cast(pl.String) for c in attrs]
            ),
            on="item_id",
            how="left",
            maintain_order="left",
        )

    def _pair_part(
        self, user_ids: Sequence[str], item_ids: np.ndarray
    ) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """The pair scope's value for a pair with no history (every pair gets it), and for the
        pairs with history their rows, columns and what they add to it."""
        if not self.parts.pair:
            return 0.0, None
        zero_row = self.groups.pair(
            pl.DataFrame(
                {"user_id": [""], "item_id": [""], T: [self.at]},
                schema={"user_id": pl.String, "item_id": pl.String, T: pl.Datetime("us", "UTC")},
            )
        )
        base = float(self.partial(zero_row, self.parts.pair)[0])
        counters = self.groups.counters
        assert isinstance(counters, Snapshot), "serving reads a Snapshot"
        pairs = counters.pair_table().select("user_id", "item_id")
        uidx = pl.DataFrame(
            {"user_id": list(user_ids), "__u": np.arange(len(user_ids))},
            schema={"user_id": pl.String, "__u": pl.Int64},
        )
        iidx = pl.DataFrame(
            {"item_id": item_ids, "__i": np.arange(len(item_ids))},
            schema={"item_id": pl.String, "__i": pl.Int64},
        )
        pairs = pairs.join(uidx, on="user_id").join(iidx, on="item_id")
        if pairs.is_empty():
            return base, None
        keys = pairs.select(
            "user_id", "item_id", pl.lit(self.at).cast(pl.Datetime("us", "UTC")).alias(T)
        )
        extra = self.partial(self.groups.pair(keys), self.parts.pair) - base
        return base, (pairs["__u"].to_numpy(), pairs["__i"].to_numpy(), extra)


def _codes(values: pl.Series, levels: pl.Series) -> np.ndarray:
    """Position of each value in `levels` (nulls match a null level). The series here are
    small (levels of an attribute, combinations of levels): a dict beats a join's overhead."""
    index = {v: i for i, v in enumerate(levels.to_list())}
    return np.fromiter((index[v] for v in values.to_list()), dtype=np.int64, count=values.len())
