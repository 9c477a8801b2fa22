"""Fast serving of a linear model over point-in-time features.

A logit that is linear in the encoded features splits by scope:
    z[u, i] = b + user[u] + item[i] + sum_attr level_attr[u, attr(i)]
              + sum_cross table[a(u), b(i)] + pair corrections[u, i] + context
Each part is computed by the same feature groups and encoder as training rows (so the two paths
agree), over a Snapshot of the users being scored, and the user x item matrix is assembled with
NumPy broadcasting and gathers. The item part depends on the catalogue only, so it is computed
once per catalogue (views.catalogue.Catalogue.memo)."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import polars as pl

from feedrank.features.encoder import Encoder, cross_name
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import Snapshot, T

CONTEXT_COLUMNS = ("hour", "weekday", "position", "device")
KEEP_POSITIONS_OF = 1000  # item lists at least this long have their positions kept
KEPT_POSITIONS = 32
KEPT_USERS = 4096  # users' terms kept per catalogue (about a kilobyte each)
T_ = TypeVar("T_")
_MISSING = object()


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
        self.at, self.position, self.device = at, position, device
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

    def item_side(self, item_ids: np.ndarray, at: datetime | None = None) -> ItemSide:
        """What the logit needs of these items, with item features as of `at`: computed once
        per catalogue for every candidate (models.glm), or for a few items outside them."""
        spec = self.groups.spec
        shares = [a for a in spec.share_attributes if f"user_share_{a}" in self.parts.names]
        crosses = [(a, b) for a, b in spec.crosses if cross_name(a, b) in self.parts.names]
        terms = [(c, a) for c, a, _ in self.level_terms if c in self.parts.names]
        attrs = list(dict.fromkeys([*shares, *(b for _, b in crosses), *(a for _, a in terms)]))
        item = self.item_part(item_ids, at)
        if not attrs:  # one combination, no term
            return ItemSide(item_ids, item, np.zeros(len(item_ids), dtype=np.int64), 1, {})
        items = self._item_attributes(item_ids, attrs)
        combos = items.select(attrs).unique(maintain_order=True)
        keyed = combos.with_row_index("__c")
        code = items.join(keyed, on=attrs, how="left", maintain_order="left", nulls_equal=True)
        levels = {}
        for attr in attrs:
            lv = combos[attr].unique(maintain_order=True)
            levels[attr] = (lv, _codes(combos[attr], lv))
        return ItemSide(item_ids, item, code["__c"].to_numpy(), combos.height, levels)

    def logits(
        self, user_ids: Sequence[str], item_ids: np.ndarray, side: ItemSide | None = None
    ) -> np.ndarray:
        """z for every (user, item); `side` holds the item terms (of any superset of
        item_ids)."""
        if side is None:
            side = self.item_side(item_ids)
        return self.user_terms(user_ids, side).logits(side, side.positions(item_ids))

    def user_terms(self, user_ids: Sequence[str], side: ItemSide) -> UserTerms:
        """Everything the users bring to the logit over the side's items: per user a scalar
        (intercept, context, user scope, a pair without history), their values of each
        attribute term per level, and the pairs with history."""
        ukeys = self._keys("user_id", user_ids)
        ufeat = self.groups.user(ukeys)
        context = side.memo(
            ("context", self.at.hour, self.at.weekday(), self.position, self.device),
            lambda: self.partial(self.groups.context(self.context_row), self.parts.context)[0],
        )
        user = self.partial(ufeat, self.parts.user) + (self.intercept + context)
        pair_base, pairs = self._pair_part(user_ids, side)
        return UserTerms(user + pair_base, self._attribute_part(user_ids, ufeat, side), pairs)

    def _attribute_part(
        self, user_ids: Sequence[str], ufeat: pl.DataFrame, side: ItemSide
    ) -> list[tuple[str, np.ndarray]]:
        """The terms that pair a user with an item attribute (shares of engagement per level,
        user x item crosses): per term, the item attribute and its value for each user and
        level of it (users x levels)."""
        spec = self.groups.spec
        terms = []
        for attr in spec.share_attributes:
            col = f"user_share_{attr}"
            if col not in self.parts.names:
                continue
            levels, _ = side.levels[attr]
            share = self.groups.share_matrix(user_ids, levels, attr)
            values = self.partial(pl.DataFrame({col: share.ravel()}), [col])
            terms.append((attr, values.reshape(share.shape)))
        for col, attr, values_of in self.level_terms:
            if col not in self.parts.names:
                continue
            raw = values_of(side.levels[attr][0])
            values = self.partial(pl.DataFrame({col: raw.ravel()}), [col])
            terms.append((attr, values.reshape(raw.shape)))
        for a, b in spec.crosses:
            if cross_name(a, b) not in self.parts.names:
                continue
            ua = ufeat[a].cast(pl.String)
            ua_levels = ua.unique(maintain_order=True)
            ib_levels, _ = side.levels[b]
            # one row per user level, over the item's levels: kept with the items
            rows = [
                side.memo(
                    ("cross", a, b, v), functools.partial(self._cross_row, a, b, v, ib_levels)
                )
                for v in ua_levels.to_list()
            ]
            terms.append((b, np.take(np.stack(rows), _codes(ua, ua_levels), axis=0)))
        return terms

    def _cross_row(self, a: str, b: str, ua: str | None, ib_levels: pl.Series) -> np.ndarray:
        """A cross's term for a user level `ua` and each item level."""
        pairs = pl.DataFrame({a: pl.Series([ua], dtype=pl.String)}).join(
            pl.DataFrame({b: ib_levels}), how="cross"
        )
        return self.partial(pairs, [cross_name(a, b)])

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
        self, user_ids: Sequence[str], side: ItemSide
    ) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """The pair scope's value for a pair with no history (every pair gets it), and for the
        pairs with history among the side's items their rows, item positions and what they
        add to it."""
        if not self.parts.pair:
            return 0.0, None
        base: float = side.memo("pair base", self._pair_base)
        counters = self.groups.counters
        assert isinstance(counters, Snapshot), "serving reads a Snapshot"
        pairs = counters.pair_table().select("user_id", "item_id")
        if pairs.is_empty():
            return base, None
        uidx = pl.DataFrame(
            {"user_id": list(user_ids), "__u": np.arange(len(user_ids))},
            schema={"user_id": pl.String, "__u": pl.Int64},
        )
        pairs = pairs.join(uidx, on="user_id")
        at = side.lookup(pairs["item_id"].to_numpy())
        hit = at >= 0
        if not hit.any():
            return base, None
        pairs = pairs.filter(pl.Series(hit))
        keys = pairs.select(
            "user_id", "item_id", pl.lit(self.at).cast(pl.Datetime("us", "UTC")).alias(T)
        )
        extra = self.partial(self.groups.pair(keys), self.parts.pair) - base
        return base, (pairs["__u"].to_numpy(), at[hit], extra)

    def _pair_base(self) -> float:
        zero_row = self.groups.pair(
            pl.DataFrame(
                {"user_id": [""], "item_id": [""], T: [self.at]},
                schema={"user_id": pl.String, "item_id": pl.String, T: pl.Datetime("us", "UTC")},
            )
        )
        return float(self.partial(zero_row, self.parts.pair)[0])


class UserTerms:
    """A block of users' part of a linear logit over an ItemSide (models.linear): `base` per
    user, per attribute term the item attribute and the users x levels values, and the pairs
    with history (rows, item positions, what they add). Read-only once made."""

    def __init__(
        self,
        base: np.ndarray,
        terms: list[tuple[str, np.ndarray]],
        pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> None:
        self.base, self.terms, self.pairs = base, terms, pairs

    def row(self, r: int) -> UserTerms:
        """The r-th user's terms alone."""
        pairs = None
        if self.pairs is not None:
            rows, at, extra = self.pairs
            mine = rows == r
            pairs = (np.zeros(int(mine.sum()), dtype=rows.dtype), at[mine], extra[mine])
        terms = [(attr, values[r : r + 1]) for attr, values in self.terms]
        return UserTerms(self.base[r : r + 1], terms, pairs)

    def logits(self, side: ItemSide, pos: np.ndarray) -> np.ndarray:
        """z of every user and the side's items at `pos`: the attribute terms summed on the
        small (users x level combinations) table, gathered into the block in one pass and the
        item part added in a second; pair corrections touch only the pairs with history."""
        table = np.zeros((len(self.base), side.n_combos))
        for attr, values in self.terms:
            table += np.take(values, side.levels[attr][1], axis=1)
        table += self.base[:, None]
        z = np.take(table, side.combo[pos], axis=1)
        z += side.item[pos][None, :]
        if self.pairs is not None:
            rows, at, extra = self.pairs
            # each pair's column: its item's place among the side's items, then among pos
            column = np.full(len(side.ids), -1, dtype=np.int64)
            column[pos] = np.arange(len(pos))
            cols = column[at]
            hit = cols >= 0
            z[rows[hit], cols[hit]] += extra[hit]
        return z


class ItemSide:
    """The item terms of a linear logit over a set of items (a catalogue's candidates): each
    item's item-scope logit, its combination of attribute levels, and per attribute the
    levels the combinations hold. Computed once, then read-only: requests gather what they
    score by position; small per-user-level tables are kept beside it (`memo`)."""

    def __init__(
        self,
        ids: np.ndarray,
        item: np.ndarray,
        combo: np.ndarray,
        n_combos: int,
        levels: dict[str, tuple[pl.Series, np.ndarray]],
    ) -> None:
        self.ids, self.item, self.combo, self.n_combos = ids, item, combo, n_combos
        self.levels = levels
        self._index = {i: p for p, i in enumerate(ids.tolist())}
        self._memo: dict[Any, Any] = {}
        self._positions: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._users: OrderedDict[Any, UserTerms] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """Each id's position among the items (-1: not among them)."""
        get = self._index.get
        return np.fromiter((get(i, -1) for i in item_ids.tolist()), np.int64, len(item_ids))

    def positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Positions of item_ids, all of which must be among the items."""
        pos = self.find(item_ids)
        if pos is None:
            raise KeyError("item ids must be among the side's items")
        return pos

    def find(self, item_ids: np.ndarray) -> np.ndarray | None:
        """Positions of item_ids, or None when one is not among the items. The same large
        arrays (a rule selection's items) come back request after request: their positions
        are kept, by identity, a few at a time."""
        if item_ids is self.ids:
            return np.arange(len(self.ids))
        key = id(item_ids)
        with self._lock:
            hit = self._positions.get(key)
            if hit is not None and hit[0] is item_ids:
                self._positions.move_to_end(key)
                return hit[1]
        pos = self.lookup(item_ids)
        if (pos < 0).any():
            return None
        if len(item_ids) >= KEEP_POSITIONS_OF:
            with self._lock:  # the array is held with its positions: its id stays its own
                self._positions[key] = (item_ids, pos)
                while len(self._positions) > KEPT_POSITIONS:
                    self._positions.popitem(last=False)
        return pos

    def keep_user(self, key: Any, terms: UserTerms) -> None:
        with self._lock:
            self._users[key] = terms
            self._users.move_to_end(key)
            while len(self._users) > KEPT_USERS:
                self._users.popitem(last=False)

    def kept_users(self, n: int) -> list[Any]:
        """The keys of the n users most recently asked for, the most recent first."""
        with self._lock:
            return list(reversed(self._users))[:n]

    def user_terms(self, key: Any, compute: Callable[[], UserTerms]) -> UserTerms:
        """One user's terms under `key` (what they depend on), kept for the next request of
        that user; bounded, least recently used out first."""
        with self._lock:
            hit = self._users.get(key)
            if hit is not None:
                self._users.move_to_end(key)
                return hit
        terms = compute()
        self.keep_user(key, terms)
        return terms

    def memo(self, key: Any, compute: Callable[[], T_]) -> T_:
        """compute() once per key (results are equal if two threads both compute)."""
        hit = self._memo.get(key, _MISSING)
        if hit is _MISSING:
            hit = self._memo.setdefault(key, compute())
        return hit  # type: ignore[no-any-return]


def _codes(values: pl.Series, levels: pl.Series) -> np.ndarray:
    """Position of each value in `levels` (nulls match a null level). The series here are
    small (levels of an attribute, combinations of levels): a dict beats a join's overhead."""
    index = {v: i for i, v in enumerate(levels.to_list())}
    return np.fromiter((index[v] for v in values.to_list()), dtype=np.int64, count=values.len())
