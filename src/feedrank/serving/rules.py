"""Business rules a request can carry, with one meaning for the CLI, Python and HTTP:

- `filter` `field<op>value` on any item attribute: `=` (for a list attribute such as tags:
  contains), `!=`, and on numbers and times `<`, `<=`, `>`, `>=`; `age<30d` is relative to the
  catalogue's time (units s, m, h, d, w). `=` conditions on one field are OR-ed, everything
  else is AND-ed.
- `exclude` / `include` (an allow-list) of item ids; `boost` `field=value:factor` (scores are
  multiplied by the factor; a negative score is divided, so a boost never lowers an item);
  `max_per` `field=n` (at most n items sharing a value, the best first); `offset` (pages);
  `exclude_seen`.

`Rules.parse` checks syntax; `select(catalogue, rules)` checks fields and types against the
catalogue and returns the eligible candidates (with their boosts), kept per catalogue so a
rule set costs its filtering once per state, not once per request. What a rule does per user
(seen items, negative feedback, the cap) is in serving.ranking."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from feedrank.exceptions import ParameterError
from feedrank.schema import parse_timestamps, to_timestamp
from feedrank.views.catalogue import Catalogue

MEMO_RULE_SETS = 64  # selections (filters + boosts) kept per catalogue: memory stays bounded
REWARM_RULE_SETS = 8  # the most recent rule sets a refresh computes for the new catalogue
RANGE_OPS = ("<=", ">=", "<", ">")
OPS = ("!=", *RANGE_OPS, "=")  # longest first: '<=' before '<', '!=' before '='
AGE = "age"  # a virtual field: the item's age at the catalogue's time
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONDITION = re.compile(r"^\s*([^=<>!\s]+)\s*(!=|<=|>=|<|>|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


@dataclass(frozen=True)
class Boost:
    field: str
    value: str
    factor: float

    def __str__(self) -> str:
        return f"{self.field}={self.value}:{self.factor:g}"


@dataclass(frozen=True)
class Rules:
    filters: tuple[Condition, ...] = ()
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] | None = None
    boosts: tuple[Boost, ...] = ()
    max_per: tuple[tuple[str, int], ...] = ()
    offset: int = 0
    exclude_seen: bool = True

    @classmethod
    def parse(
        cls,
        filter: Iterable[str] = (),
        exclude: Iterable[str] = (),
        include: Iterable[str] | None = None,
        boost: Iterable[str] = (),
        max_per: Iterable[str] = (),
        offset: int = 0,
        exclude_seen: bool = True,
    ) -> Rules:
        """Rules from their text forms (what the CLI and HTTP take); ids may be comma-separated."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ParameterError("offset", f"offset must be a whole number >= 0; got {offset!r}")
        return cls(
            filters=tuple(_condition(s) for s in _texts("filter", filter)),
            exclude=tuple(_ids("exclude", exclude)),
            include=None if include is None else tuple(_ids("include", include)),
            boosts=tuple(_boost(s) for s in _texts("boost", boost)),
            max_per=tuple(_cap(s) for s in _texts("max_per", max_per)),
            offset=offset,
            exclude_seen=bool(exclude_seen),
        )

    @property
    def plain(self) -> bool:
        """No rule beyond the defaults: a model's own top-k serves as it is."""
        narrowed = self.filters or self.exclude or self.include is not None or self.boosts
        return not (narrowed or self.max_per or self.offset) and self.exclude_seen


@dataclass(frozen=True)
class Selection:
    """The candidates a rule set leaves, sorted by id, with each one's boost factor;
    `boosts` maps each boosted item to its factor and the boosts that matched it; `removed`
    counts, rule by rule in the order applied, the candidates each took out."""

    items: np.ndarray
    factor: np.ndarray  # float64 per item (1.0: not boosted)
    boosts: dict[str, tuple[float, list[str]]]
    removed: list[dict[str, Any]]

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """Whether each id is eligible (a binary search: items are sorted)."""
        return _found(self.items, np.asarray(ids, dtype=object))


def select(catalogue: Catalogue, rules: Rules) -> Selection:
    """The eligible candidates of `catalogue` under `rules`. Filters and boosts are kept per
    catalogue and rule set; a request's own id lists (exclude, include) are applied to that,
    so they never fill the catalogue's memo."""
    key = (rules.filters, rules.boosts)
    sel = _memo(catalogue, rules).get(key, lambda: _select(catalogue, rules.filters, rules.boosts))
    if not rules.exclude and rules.include is None:
        return sel
    keep = np.ones(len(sel.items), dtype=bool)
    removed = list(sel.removed)
    if rules.exclude:
        hit = _found(sel.items, np.asarray(rules.exclude, dtype=object), where=True)
        keep[hit] = False
        removed.append({"rule": "exclude", "removed": len(set(hit.tolist()))})
    if rules.include is not None:
        inside = np.zeros(len(sel.items), dtype=bool)
        inside[_found(sel.items, np.asarray(rules.include, dtype=object), where=True)] = True
        removed.append({"rule": "include", "removed": int((keep & ~inside).sum())})
        keep &= inside
    return Selection(sel.items[keep], sel.factor[keep], sel.boosts, removed)


def selection_ready(catalogue: Catalogue, rules: Rules) -> bool:
    """Whether `select` has this rule set's filters and boosts at hand (no work to do)."""
    return (rules.filters, rules.boosts) in _memo(catalogue, rules)


def rewarm(old: Catalogue, new: Catalogue, n: int = REWARM_RULE_SETS) -> int:
    """Compute on `new` the selections of the rule sets most recently used on `old` (a
    server's refresh does this off the request path); how many it computed."""
    done = 0
    for aged in (False, True):
        if not old.memoised(_SELECTIONS[aged]):
            continue
        for filters, boosts in _selections(old, aged).recent(n):
            rules = Rules(filters=filters, boosts=boosts)
            if not selection_ready(new, rules):
                select(new, rules)
                done += 1
    return done


def _memo(catalogue: Catalogue, rules: Rules) -> _Bounded:
    """The bounded memo of a rule set's selection: their own, so that many rule sets never
    evict a model's per-catalogue work. A selection depends on the items and which of them
    may be served (kept across catalogues while those stay the same), and, with an `age`
    filter, on the catalogue's time (kept per catalogue)."""
    return _selections(catalogue, any(c.field == AGE for c in rules.filters))


_SELECTIONS = {False: "rule selections", True: "rule selections by age"}


def _selections(catalogue: Catalogue, aged: bool) -> _Bounded:
    memo = catalogue.memo if aged else catalogue.memo_items
    return memo(_SELECTIONS[aged], lambda: _Bounded(MEMO_RULE_SETS))


class _Bounded:
    """A small thread-safe memo, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._d: OrderedDict[Any, Selection] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._d

    def recent(self, n: int) -> list[Any]:
        """The n most recently used keys, the most recent first."""
        with self._lock:
            return list(reversed(self._d))[:n]

    def get(self, key: Any, compute: Callable[[], Selection]) -> Selection:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = compute()  # not under the lock: two first callers may both compute (equal)
        with self._lock:
            self._d[key] = value
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)
        return value


def _found(sorted_ids: np.ndarray, ids: np.ndarray, where: bool = False) -> np.ndarray:
    """Per id, whether it is in `sorted_ids` (or, with `where`, the positions of those that
    are)."""
    if not len(sorted_ids) or not len(ids):
        return np.zeros(0 if where else len(ids), dtype=np.int64 if where else bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    hit = sorted_ids[pos] == ids
    return pos[hit] if where else hit


def _select(
    catalogue: Catalogue, filters: tuple[Condition, ...], boosts: tuple[Boost, ...]
) -> Selection:
    items = catalogue.items.filter(catalogue.exists())
    removed = []
    withdrawn = items.select(catalogue.withdrawn()).to_series()
    removed.append({"rule": "hidden or unavailable", "removed": int(withdrawn.sum())})
    items = items.filter(~withdrawn)
    by_field: dict[str, list[Condition]] = {}
    for c in filters:
        by_field.setdefault(c.field, []).append(c)
    for name, conds in by_field.items():
        keep = items.select(_field_expr(catalogue, name, conds).fill_null(False)).to_series()
        removed.append(
            {"rule": "filter " + " ".join(str(c) for c in conds), "removed": int((~keep).sum())}
        )
        items = items.filter(keep)
    ids = items["item_id"].to_numpy().astype(object)
    factor = np.ones(items.height)
    matched: dict[int, list[str]] = {}
    for b in boosts:
        expr = _equals(catalogue, b.field, [b.value], "boost").fill_null(False)
        rows = items.select(expr).to_series().arg_true().to_numpy()
        factor[rows] *= b.factor
        for r in rows.tolist():
            matched.setdefault(r, []).append(str(b))
    by_item = {ids[r]: (float(factor[r]), by) for r, by in matched.items()}
    return Selection(ids, factor, by_item, removed)


# -- filters -------------------------------------------------------------------------------------
def _field_expr(catalogue: Catalogue, name: str, conds: list[Condition]) -> pl.Expr:
    """One field's conditions: its '=' values OR-ed, the rest AND-ed."""
    equal = [c.value for c in conds if c.op == "="]
    out = _equals(catalogue, name, equal) if equal else pl.lit(True)
    for c in conds:
        if c.op == "!=":
            out = out & ~_equals(catalogue, name, [c.value]).fill_null(False)
        elif c.op != "=":
            out = out & _compare(catalogue, c)
    return out


def _kind(catalogue: Catalogue, name: str, param: str) -> tuple[str, pl.DataType | None]:
    """'list', 'number', 'time', 'bool', 'text' or 'age' for a field, or a ParameterError
    naming the fields there are."""
    if name == AGE:
        return "age", None
    schema = catalogue.items.schema
    if name not in schema:
        fields = sorted([*schema, AGE])
        raise ParameterError(param, f"{param} field must be one of {fields}; got '{name}'")
    dtype = schema[name]
    if isinstance(dtype, pl.List | pl.Array):
        return "list", dtype
    if dtype.is_numeric():
        return "number", dtype
    if isinstance(dtype, pl.Datetime | pl.Date) or name in ("created_at", "available_until"):
        return "time", dtype
    if dtype == pl.Boolean:
        return "bool", dtype
    return "text", dtype


def _equals(
    catalogue: Catalogue, name: str, values: Sequence[str], param: str = "filter"
) -> pl.Expr:
    kind, dtype = _kind(catalogue, name, param)
    col = pl.col(name)
    if kind == "age":
        raise ParameterError(param, f"{param} on age takes <, <=, >, >= (e.g. age<30d); got '='")
    if kind == "list":
        inner = dtype.inner if isinstance(dtype, pl.List | pl.Array) else None
        inner = inner if isinstance(inner, pl.DataType) else None
        parsed = [_value(name, v, inner, param) for v in values]
        out = pl.lit(False)
        for v in parsed:
            out = out | col.list.contains(pl.lit(v))
        return out
    if kind == "time":
        return to_time(col, dtype).is_in([_time(name, v, param) for v in values])
    return col.is_in([_value(name, v, dtype, param) for v in values])


def _compare(catalogue: Catalogue, c: Condition) -> pl.Expr:
    kind, dtype = _kind(catalogue, c.field, "filter")
    if kind == "age":
        if "created_at" not in catalogue.items.columns:
            return pl.lit(False)
        seconds = _duration(c.value)
        # age < 30d <=> created after as_of - 30d: the comparison flips
        bound = pl.lit(catalogue.as_of - timedelta(seconds=seconds))
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[c.op]
        return _op(pl.col("created_at"), flip, bound)
    if kind == "number":
        return _op(pl.col(c.field), c.op, pl.lit(_value(c.field, c.value, dtype, "filter")))
    if kind == "time":
        return _op(to_time(pl.col(c.field), dtype), c.op, pl.lit(_time(c.field, c.value, "filter")))
    raise ParameterError(
        "filter",
        f"filter operator {c.op} needs a number or a time; '{c.field}' is {kind} "
        f"(allowed: =, !=); got '{c}'",
    )


def _op(left: pl.Expr, op: str, right: pl.Expr) -> pl.Expr:
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def to_time(col: pl.Expr, dtype: pl.DataType | None) -> pl.Expr:
    return to_timestamp(col, dtype or pl.String())


def _value(name: str, text: str, dtype: pl.DataType | None, param: str) -> Any:
    """text as a value of the field's type."""
    if dtype is not None and dtype.is_numeric():
        try:
            return float(text)
        except ValueError:
            raise ParameterError(
                param, f"{param} value of '{name}' must be a number; got '{text}'"
            ) from None
    if dtype == pl.Boolean:
        low = text.lower()
        if low not in ("true", "false"):
            raise ParameterError(
                param, f"{param} value of '{name}' must be one of ['true', 'false']; got '{text}'"
            )
        return low == "true"
    return text


def _time(name: str, text: str, param: str) -> Any:
    parsed = parse_timestamps(pl.Series([text]))[0]
    if parsed is None:
        raise ParameterError(
            param,
            f"{param} value of '{name}' must be an ISO 8601 time (e.g. 2026-01-01) or epoch "
            f"seconds; got '{text}'",
        )
    return parsed


def _duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not m:
        raise ParameterError(
            "filter",
            f"filter on age must compare with a duration such as 30d (units {list(UNITS)}); "
            f"got '{text}'",
        )
    return float(m.group(1)) * UNITS[m.group(2)]


# -- parsing -------------------------------------------------------------------------------------
def _texts(param: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ParameterError(param, f"{param} entries must be non-empty text; got {v!r}")
        out.append(v)
    return out


def _ids(param: str, values: Iterable[str]) -> list[str]:
    return [i.strip() for v in _texts(param, values) for i in v.split(",") if i.strip()]


def _condition(text: str) -> Condition:
    m = _CONDITION.match(text)
    if not m or not m.group(3):
        raise ParameterError(
            "filter",
            f"filter must be field<op>value with op one of {list(OPS)} (e.g. content_type=video, "
            f"price<50, age<30d); got '{text}'",
        )
    return Condition(m.group(1), m.group(2), m.group(3))


def _boost(text: str) -> Boost:
    head, _, factor = text.rpartition(":")
    name, eq, value = head.partition("=")
    try:
        f = float(factor)
    except ValueError:
        f = float("nan")
    if not (eq and name.strip() and value.strip() and f > 0 and np.isfinite(f)):
        raise ParameterError(
            "boost",
            f"boost must be field=value:factor with a factor > 0 (e.g. author=a1:2); got '{text}'",
        )
    return Boost(name.strip(), value.strip(), f)


def _cap(text: str) -> tuple[str, int]:
    name, eq, n = text.partition("=")
    if not (eq and name.strip() and n.strip().isdigit() and int(n) >= 1):
        raise ParameterError(
            "max_per", f"max_per must be field=n with a whole n >= 1 (e.g. author=2); got '{text}'"
        )
    return name.strip(), int(n)


def check_caps(catalogue: Catalogue, rules: Rules) -> None:
    """Raise a ParameterError for a max_per field the catalogue lacks."""
    for name, _ in rules.max_per:
        if _kind(catalogue, name, "max_per")[0] == "age":
            raise ParameterError(
                "max_per", f"max_per field must be an item attribute; got '{name}'"
            )
