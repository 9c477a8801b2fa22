"""Settings that shape the data, not the code: interaction types and their weights, what counts
as an engagement, how examples are labelled. They are stored with the data (`feedrank settings
import`), travel with every fitted model, and are read from TOML or built in code.

The engagement rule lives here, once: `weight_expr`, `engaged_expr` and `seen_expr` are the
Polars expressions every layer uses to weigh an event, to decide whether it is an engagement
(a positive) and whether it shows the user already knows the item."""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from feedrank.exceptions import ConfigError

IMPRESSION = "impression"

DEFAULT_TYPE_WEIGHTS: dict[str, float] = {
    IMPRESSION: 0.0,  # what was shown; the negative class when no engagement follows
    # content sites
    "view": 1.0,
    "click": 1.0,
    "like": 2.0,
    "comment": 3.0,
    "share": 4.0,
    "download": 2.0,
    "form_submission": 1.0,
    # explicit feedback: a rating counts when its value reaches rating_threshold
    "rating": 1.0,
    "review": 3.0,
    # e-commerce
    "page_view": 1.0,
    "favorite": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
    # negative feedback (negative_types): no weight, and never served to that user again
    "not_interested": 0.0,
    # events about a user with no item (seed 001's UserLogin/UserLogout)
    "login": 0.0,
    "logout": 0.0,
    "visit": 0.0,
}
DEFAULT_ITEMLESS_TYPES = ("login", "logout", "visit")
DEFAULT_NEGATIVE_TYPES = ("not_interested",)
DEFAULT_RATING_TYPES = ("rating",)
DEFAULT_AGE_BANDS = (18, 25, 35, 45, 55, 65)
DEFAULT_TIME_RANGE = ("1970-01-01", "2100-01-01")
# Names other logs use for the default types: `--map-type` suggestions, never applied silently.
TYPE_ALIASES = {
    "pv": "page_view",
    "pageview": "page_view",
    "fav": "favorite",
    "favourite": "favorite",
    "wishlist": "favorite",
    "cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "buy": "purchase",
    "transaction": "purchase",
    "order": "purchase",
    "rate": "rating",
    "submit": "form_submission",
}


@dataclass(frozen=True)
class AttributeWeights:
    """A weight that depends on an item attribute (seed 004 weighs forms by asset type).
    The event's weight is type_weight * values.get(item[attribute], default)."""

    attribute: str
    values: dict[str, float]
    default: float = 1.0


@dataclass(frozen=True)
class Settings:
    type_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    # None: every type with an item and a weight > 0 except impressions is an engagement.
    engagement_types: tuple[str, ...] | None = None
    itemless_types: tuple[str, ...] = DEFAULT_ITEMLESS_TYPES
    # Types whose value is a score: the event counts (weight x 1) when value >= rating_threshold,
    # else not at all. 3.5 suits 5-star scales (4 and 5 count; 3 and below do not).
    rating_types: tuple[str, ...] = DEFAULT_RATING_TYPES
    rating_threshold: float = 3.5
    # Types found in the data but absent from type_weights get this weight (and a note).
    unknown_type_weight: float = 1.0
    attribute_weights: AttributeWeights | None = None
    # An impression is labelled positive when an engagement follows within this many seconds.
    label_window_seconds: float = 3600.0
    # Without impressions: sampled negatives per positive.
    negative_ratio: int = 4
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS
    seed: int = 0
    # Event types by which a user says "not this": the item is never served to them again.
    negative_types: tuple[str, ...] = DEFAULT_NEGATIVE_TYPES
    # Online experiments: name -> {variant: share}; a variant is a registry model name.
    experiments: dict[str, dict[str, float]] = field(default_factory=dict)
    # Event and item times accepted at every entry: [from, to), ISO dates (UTC).
    time_range: tuple[str, str] = DEFAULT_TIME_RANGE

    def __post_init__(self) -> None:
        _check(self)

    def time_bounds(self) -> tuple[datetime, datetime]:
        """time_range as UTC datetimes (checked when the settings are made)."""
        lo, hi = (datetime.fromisoformat(t).replace(tzinfo=UTC) for t in self.time_range)
        return lo, hi

    # -- the engagement rule -----------------------------------------------------------------------
    def weight_of(self, event_type: str) -> float:
        return self.type_weights.get(event_type, self.unknown_type_weight)

    def is_engagement_type(self, event_type: str) -> bool:
        if self.engagement_types is not None:
            return event_type in self.engagement_types
        return (
            event_type != IMPRESSION
            and event_type not in self.itemless_types
            and self.weight_of(event_type) > 0
        )

    def engagement_types_among(self, types: list[str]) -> list[str]:
        return [t for t in types if self.is_engagement_type(t)]

    def _rating(self) -> pl.Expr:
        return pl.col("type").is_in(list(self.rating_types))

    def engaged_expr(self, types: list[str]) -> pl.Expr:
        """True for an engagement: an item event of an engagement type (a rating only when its
        value reaches the threshold). `types` are the event types present (unknown ones follow
        the default rule)."""
        engaged = self.engagement_types_among(types)
        return (
            (pl.col("item_id") != "")
            & pl.col("type").is_in(engaged)
            & (~self._rating() | (pl.col("value") >= self.rating_threshold))
        )

    def weight_expr(self, types: list[str]) -> pl.Expr:
        """An event's weight before item-attribute weights: type weight x value, where a
        rating's value only decides whether it counts (x 1 or x 0); itemless events weigh 0.
        `types` are the event types present (unknown ones get unknown_type_weight)."""
        weights = {t: self.weight_of(t) for t in types}
        tw = pl.col("type").replace_strict(weights, default=0.0, return_dtype=pl.Float64)
        factor = (
            pl.when(self._rating())
            .then((pl.col("value") >= self.rating_threshold).cast(pl.Float64))
            .otherwise(pl.col("value"))
        )
        return pl.when(pl.col("item_id") != "").then(tw * factor).otherwise(0.0)

    @staticmethod
    def seen_expr() -> pl.Expr:
        """True when the event shows the user knows the item (any item event but an impression):
        such items are not recommended to them again."""
        return (pl.col("item_id") != "") & (pl.col("type") != IMPRESSION)

    def describe_types(self, counts: dict[str, int]) -> list[dict[str, Any]]:
        """One row per event type found: count, weight, whether it counts as an engagement, and a
        note for types the settings do not name."""
        rows = []
        for t, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            note = ""
            if t not in self.type_weights:
                alias = TYPE_ALIASES.get(t.lower())
                note = f"not in the settings: weight {self.unknown_type_weight:g}" + (
                    f" (to treat it as '{alias}': --map-type {t}={alias})" if alias else ""
                )
            elif t in self.rating_types:
                note = f"counts when value >= {self.rating_threshold:g}"
            rows.append(
                {
                    "type": t,
                    "events": n,
                    "weight": self.weight_of(t),
                    "engagement": self.is_engagement_type(t),
                    "note": note,
                }
            )
        return rows

    # -- (de)serialisation ---------------------------------------------------------------------------
    @property
    def types(self) -> list[str]:
        return sorted(self.type_weights)

    def with_types(self, extra: dict[str, float]) -> Settings:
        return replace(self, type_weights={**self.type_weights, **extra})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def diff(self, other: Settings) -> list[str]:
        """'key: this -> other' for every setting that differs; tables key by key
        ('type_weights.watchlist: (none) -> 2.0')."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in a:
            if a[k] == b[k]:
                continue
            if isinstance(a[k], dict) and isinstance(b[k], dict):
                out += [
                    f"{k}.{key}: {_shown(a[k], key)} -> {_shown(b[k], key)}"
                    for key in sorted({*a[k], *b[k]})
                    if a[k].get(key) != b[k].get(key)
                ]
            else:
                out.append(f"{k}: {a[k]!r} -> {b[k]!r}")
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> Settings:
        """Read a TOML file: top-level keys are the field names of Settings."""
        try:
            text = Path(path).read_text()
            data: dict[str, Any] = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"settings file {path} must be readable TOML; got: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            twice = _repeated_key(text, str(exc))
            if twice:
                raise ConfigError(
                    f"settings keys must be given once; got {twice} more than once ({path})"
                ) from exc
            raise ConfigError(f"settings file {path} must be readable TOML; got: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> Settings:
        data = dict(data)
        allowed = sorted(f.name for f in fields(cls))
        bad = sorted(set(data) - set(allowed))
        if bad:
            raise ConfigError(f"settings keys must be among {allowed}; got {bad} ({source})")
        if "type_weights" in data:
            data["type_weights"] = {
                **DEFAULT_TYPE_WEIGHTS,
                **_weights(data["type_weights"], source),
            }
        for key in ("engagement_types", "itemless_types", "rating_types", "negative_types"):
            if data.get(key) is not None:
                data[key] = _names(key, data[key], source)
                if not all(isinstance(t, str) and t for t in data[key]):
                    raise ConfigError(
                        f"{key} must be a list of type names; got {data[key]!r} ({source})"
                    )
        if data.get("age_bands") is not None:
            bands = _names("age_bands", data["age_bands"], source)
            if not bands or not all(_integer(b) for b in bands) or list(bands) != sorted(bands):
                raise ConfigError(
                    f"age_bands must be increasing whole ages, e.g. [18, 25, 35]; got "
                    f"{data['age_bands']!r} ({source})"
                )
            data["age_bands"] = bands
        for key in ("negative_ratio", "seed"):
            if key in data and not _integer(data[key]):
                raise ConfigError(f"{key} must be a whole number; got {data[key]!r} ({source})")
        if "experiments" in data:
            data["experiments"] = _experiments(data["experiments"], source)
        if "time_range" in data:
            data["time_range"] = tuple(_names("time_range", data["time_range"], source))
        if data.get("attribute_weights"):
            aw = data["attribute_weights"]
            if not isinstance(aw, dict) or "attribute" not in aw:
                raise ConfigError(
                    "attribute_weights must be a table {attribute = ..., values = {...}, "
                    f"default = ...}}; got {aw!r} ({source})"
                )
            data["attribute_weights"] = AttributeWeights(
                str(aw["attribute"]),
                _weights(aw.get("values", {}), source, "attribute_weights.values"),
                _number("attribute_weights.default", aw.get("default", 1.0), source),
            )
        for key in ("rating_threshold", "unknown_type_weight", "label_window_seconds"):
            if key in data:
                data[key] = _number(key, data[key], source)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({source})") from exc
        except TypeError as exc:  # a value of the wrong shape for its field
            raise ConfigError(
                f"settings values must have their field's type: {exc} ({source})"
            ) from exc


def _repeated_key(text: str, error: str) -> str | None:
    """The dotted name of the key a TOML 'Cannot overwrite a value' error points at."""
    import re

    inline = re.search(r"Duplicate inline table key '([^']+)' \(at line (\d+)", error)
    if inline:
        line = text.splitlines()[int(inline.group(2)) - 1]
        table = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        return f"{table.group(1)}.{inline.group(1)}" if table else inline.group(1)
    where = re.search(r"Cannot overwrite a value \(at line (\d+), column (\d+)\)", error)
    if not where:
        return None
    lines = text.splitlines()
    row, col = int(where.group(1)) - 1, int(where.group(2)) - 1
    if row >= len(lines):
        return None
    line = lines[row]
    key = re.match(r"[A-Za-z0-9_-]+", line[col:]) or re.match(r"\s*([A-Za-z0-9_-]+)", line)
    if key is None:
        return None
    name = key.group(key.lastindex or 0)
    header = next(
        (
            m.group(1)
            for m in (re.match(r"\s*\[([^\]]+)\]", lines[r]) for r in range(row, -1, -1))
            if m
        ),
        None,
    )
    return f"{header.strip()}.{name}" if header else name


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _experiments(table: Any, source: str) -> dict[str, dict[str, float]]:
    """name -> {variant: share}: shares are numbers >= 0 that sum to 1."""
    if not isinstance(table, dict):
        raise ConfigError(f"experiments must be a table of experiments; got {table!r} ({source})")
    out = {}
    for name, shares in table.items():
        key = f"experiments.{name}"
        got = _weights(shares, source, key)
        if not got or abs(sum(got.values()) - 1.0) > 1e-9:
            raise ConfigError(
                f"{key} must give each variant a share, the shares summing to 1; got {shares!r} "
                f"({source})"
            )
        out[str(name)] = got
    return out


def _number(key: str, value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {value!r} ({source})")
    return float(value)


def _weights(table: Any, source: str, key: str = "type_weights") -> dict[str, float]:
    if not isinstance(table, dict):
        raise ConfigError(f"{key} must be a table of name = number; got {table!r} ({source})")
    out = {}
    for name, w in table.items():
        out[str(name)] = _number(f"{key}.{name}", w, source)
        if out[str(name)] < 0:
            raise ConfigError(f"{key}.{name} must be >= 0; got {w!r} ({source})")
    return out


def _names(key: str, values: Any, source: str) -> tuple[Any, ...]:
    if not isinstance(values, list | tuple):
        raise ConfigError(f"{key} must be a list; got {values!r} ({source})")
    twice = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if twice:
        raise ConfigError(f"{key} must list each value once; got {twice} more than once ({source})")
    return tuple(values)


def _shown(table: dict[str, Any], key: str) -> str:
    return repr(table[key]) if key in table else "(none)"


def _check(s: Settings) -> None:
    if s.engagement_types is not None:
        unknown = [t for t in s.engagement_types if t not in s.type_weights]
        if unknown:
            raise ConfigError(
                f"engagement_types must be among the configured types {sorted(s.type_weights)}; "
                f"got {unknown}"
            )
        zero = [t for t in s.engagement_types if s.type_weights[t] <= 0]
        if zero:
            raise ConfigError(
                f"engagement types must have a weight > 0 in type_weights; got weight 0 for {zero}"
            )
    if s.negative_ratio < 1:
        raise ConfigError(f"negative_ratio must be >= 1; got {s.negative_ratio}")
    if s.label_window_seconds <= 0:
        raise ConfigError(f"label_window_seconds must be > 0; got {s.label_window_seconds}")
    try:
        lo, hi = s.time_bounds()
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"time_range must be two ISO dates [from, to); got {list(s.time_range)!r}"
        ) from exc
    if len(s.time_range) != 2 or not lo < hi or lo.year < 1 or hi.year > 9998:
        raise ConfigError(
            "time_range must be two ISO dates [from, to), from before to, within years "
            f"1..9998; got {list(s.time_range)!r}"
        )
    if s.unknown_type_weight < 0:
        raise ConfigError(f"unknown_type_weight must be >= 0; got {s.unknown_type_weight}")
