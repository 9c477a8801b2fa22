"""Records and their validation. Input frames (from files, pandas, the API) become canonical,
typed Polars frames; bad rows become RowErrors naming field, allowed values, value and line.

Canonical frames:
- users:  user_id (str), then any attribute columns
- items:  item_id (str), created_at (datetime UTC; null when unknown), then any attribute columns
- events: event_id (str|null), user_id (str), item_id (str, "" when the event has no item), type,
          timestamp (datetime UTC), value (f64), position (i32|null), device (str|null),
          context (JSON text of every other column, or null)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from feedrank.exceptions import RowError, ValidationError
from feedrank.pii import PiiPolicy
from feedrank.settings import DEFAULT_AGE_BANDS, Settings

TS = pl.Datetime("us", "UTC")
# Columns the validators add while they work start with this; input columns may not (a key
# `__line` in a body or a context would otherwise collide with them).
RESERVED = "__"
LINE = "__line"
MAX_ID_CHARS = 256  # user and item ids, at ingestion as in every URL path (erasure included)

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "type": pl.String(),
    "timestamp": TS,
    "value": pl.Float64(),
    "position": pl.Int32(),
    "device": pl.String(),
    "context": pl.String(),
}
EVENT_CORE = ("event_id", "user_id", "item_id", "type", "timestamp", "value", "position", "device")

MAX_EPOCH_SECONDS = 1e11
_TS_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%d %H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def _epoch(text: pl.Series) -> pl.Series:
    # Seconds only: non-finite values and magnitudes of milliseconds (>= 1e11 s, year 5138) are
    # rejected rather than guessed at.
    x = text.cast(pl.Float64, strict=False)
    x = pl.select(pl.when(x.is_finite() & (x.abs() < MAX_EPOCH_SECONDS)).then(x)).to_series()
    return (x * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _format(fmt: str) -> Callable[[pl.Series], pl.Series]:
    def parse(text: pl.Series) -> pl.Series:
        got = text.str.to_datetime(fmt, strict=False, time_unit="us")
        return got.dt.convert_time_zone("UTC") if "z" in fmt else got.dt.replace_time_zone("UTC")

    return parse


_PARSERS = (_epoch, *(_format(f) for f in _TS_FORMATS))


def parse_timestamps(values: pl.Series) -> pl.Series:
    """ISO 8601 (with or without zone; naive means UTC) or epoch seconds -> datetime UTC, null
    where unparseable. Vectorised: each parser runs on the whole column once, and each later one
    only on the rows the earlier ones could not read."""
    text = values.cast(pl.String).str.strip_chars()
    out = pl.Series(values.name, [None] * len(text), dtype=TS)
    todo = text.is_not_null()
    for parser in _PARSERS:
        idx = todo.arg_true()
        if idx.is_empty():
            break
        got = parser(text.gather(idx))
        ok = got.is_not_null()
        out = out.scatter(idx.filter(ok), got.filter(ok))
        todo = todo.scatter(idx.filter(ok), False)
    return out


def parse_timestamp(expr: pl.Expr) -> pl.Expr:
    return expr.map_batches(parse_timestamps, return_dtype=TS)


def to_timestamp(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Any timestamp column (string, epoch number, naive or zoned datetime) -> datetime UTC."""
    if isinstance(dtype, pl.Datetime):
        e = expr.cast(pl.Datetime("us", dtype.time_zone))
        return e.dt.convert_time_zone("UTC") if dtype.time_zone else e.dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return parse_timestamp(expr)


@dataclass(frozen=True)
class Check:
    """One rule: rows where `bad` holds are rejected with `message` (an expression, so it can
    quote the row's value)."""

    field: str
    bad: pl.Expr
    message: pl.Expr


@dataclass(frozen=True)
class Validated:
    good: pl.DataFrame
    errors: list[RowError]
    n_bad: int
    redacted: int = 0  # personal values dropped (PiiPolicy)


def _quoted(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).fill_null("<missing>")


def _required(col: str) -> Check:
    return Check(
        col,
        pl.col(col).is_null() | (pl.col(col).cast(pl.String).str.strip_chars() == ""),
        pl.lit(f"{col} is required and must be non-empty; got ''"),
    )


def _apply_checks(
    df: pl.DataFrame, checks: list[Check], source: str | None, max_errors: int
) -> Validated:
    if not checks:
        return Validated(df.drop(LINE), [], 0)
    first = checks[0]
    field_expr: Any = pl.when(first.bad).then(pl.lit(first.field))
    msg_expr: Any = pl.when(first.bad).then(first.message)
    for c in checks[1:]:
        field_expr = field_expr.when(c.bad).then(pl.lit(c.field))
        msg_expr = msg_expr.when(c.bad).then(c.message)
    flagged = df.with_columns(
        field_expr.otherwise(None).alias("__err_field"),
        msg_expr.otherwise(None).alias("__err_msg"),
    )
    bad = flagged.filter(pl.col("__err_field").is_not_null())
    errors = [
        RowError(line, field, msg, source)
        for line, field, msg in bad.head(max_errors)
        .select(LINE, "__err_field", "__err_msg")
        .iter_rows()
    ]
    good = flagged.filter(pl.col("__err_field").is_null()).drop(LINE, "__err_field", "__err_msg")
    return Validated(good, errors, bad.height)


def _with_lines(df: pl.DataFrame, first_line: int) -> pl.DataFrame:
    return df.with_row_index(LINE, offset=first_line).with_columns(pl.col(LINE).cast(pl.Int64))


def _missing_columns(df: pl.DataFrame, required: list[str], source: str | None) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValidationError(
            [
                RowError(
                    None,
                    c,
                    f"column '{c}' is required; the columns are {df.columns}",
                    source,
                )
                for c in missing
            ]
        )


def _columns_usable(df: pl.DataFrame, scalar: Sequence[str], source: str | None) -> None:
    """Column-level defects, before any row is looked at: names the validators reserve for
    themselves, and record fields that are lists or objects (a Parquet list column, a JSON
    array) where a text or a number must be."""
    errors = [
        RowError(
            None, c, f"field names must not start with '{RESERVED}' (reserved); got '{c}'", source
        )
        for c in df.columns
        if c.startswith(RESERVED)
    ]
    errors += [
        RowError(None, c, f"{c} must be text or a number; got {df.schema[c]}", source)
        for c in scalar
        if c in df.columns and (df.schema[c].is_nested() or df.schema[c] == pl.Binary)
    ]
    if errors:
        raise ValidationError(errors)


def _too_long(col: str) -> Check:
    """Ids longer than every URL path accepts could be stored but never erased."""
    return Check(
        col,
        pl.col(col).str.len_chars() > MAX_ID_CHARS,
        pl.format(
            f"{col} must be at most {MAX_ID_CHARS} characters; got {{}} characters",
            pl.col(col).str.len_chars(),
        ),
    )


def _in_range(col: str, parsed: str, settings: Settings) -> Check:
    """A parsed time outside the settings' time_range: the store, every view and every model
    can represent what passes (year 0 once poisoned start-up, score and stats)."""
    lo, hi = settings.time_bounds()
    return Check(
        col,
        pl.col(parsed).is_not_null() & ((pl.col(parsed) < lo) | (pl.col(parsed) >= hi)),
        pl.format(
            f"{col} must be from {lo.date()} to {hi.date()} (settings time_range); got '{{}}'",
            _quoted(col),
        ),
    )


def _id(col: str) -> pl.Expr:
    # Ids are opaque strings: never let a numeric reading turn 0042 into 42.
    return pl.col(col).cast(pl.String).str.strip_chars()


def validate_users(
    df: pl.DataFrame,
    source: str | None = None,
    first_line: int = 2,
    max_errors: int = 50,
    pii: PiiPolicy | None = None,
    age_bands: Sequence[int] = DEFAULT_AGE_BANDS,
) -> Validated:
    """Users; with a PiiPolicy, as the store may keep them (age as its band, no contact or
    precise location)."""
    _missing_columns(df, ["user_id"], source)
    ages = [c for c in df.columns if c.lower() == "age"]  # 'Age' is an age too
    if len(ages) == 1:
        df = df.rename({ages[0]: "age"})
    elif ages:
        raise ValidationError(
            [RowError(None, "age", f"age must be given once; got {ages}", source)]
        )
    _columns_usable(df, ["user_id", "age"], source)
    df = _with_lines(df, first_line).with_columns(_id("user_id"))
    checks = [_required("user_id"), _too_long("user_id")]
    if "age" in df.columns:
        age = pl.col("age").cast(pl.Float64, strict=False)
        checks.append(
            Check(
                "age",
                pl.col("age").is_not_null() & (age.is_null() | (age < 0) | (age > 130)),
                pl.format("age must be a number from 0 to 130; got '{}'", _quoted("age")),
            )
        )
        df = df.with_columns(__age=age)
    out = _apply_checks(df, checks, source, max_errors)
    good = out.good
    if "__age" in good.columns:
        good = good.with_columns(age=pl.col("__age")).drop("__age")
    redacted = 0
    if pii is not None:
        good, redacted = pii.users(good, age_bands)
    return Validated(
        good.unique("user_id", keep="last", maintain_order=True), out.errors, out.n_bad, redacted
    )


def validate_items(
    df: pl.DataFrame,
    source: str | None = None,
    first_line: int = 2,
    max_errors: int = 50,
    settings: Settings | None = None,
) -> Validated:
    _missing_columns(df, ["item_id"], source)
    _columns_usable(df, ["item_id", "created_at"], source)
    if "created_at" not in df.columns:  # unknown, not invented
        df = df.with_columns(created_at=pl.lit(None, TS))
    df = _with_lines(df, first_line).with_columns(
        _id("item_id"), __created=to_timestamp(pl.col("created_at"), df.schema["created_at"])
    )
    checks = [
        _required("item_id"),
        _too_long("item_id"),
        Check(
            "created_at",
            pl.col("__created").is_null() & pl.col("created_at").is_not_null(),
            pl.format(
                "created_at must be an ISO 8601 time or epoch seconds; got '{}'",
                _quoted("created_at"),
            ),
        ),
        _in_range("created_at", "__created", settings or Settings()),
    ]
    out = _apply_checks(df, checks, source, max_errors)
    good = out.good.with_columns(created_at=pl.col("__created")).drop("__created")
    good = good.select("item_id", "created_at", pl.exclude("item_id", "created_at"))
    return Validated(
        good.unique("item_id", keep="last", maintain_order=True), out.errors, out.n_bad
    )


def _unpack_context(df: pl.DataFrame) -> pl.DataFrame:
    """A `context` column of objects or JSON text (e.g. events exported from a store) is unpacked
    so its keys are extra columns again; one that is not objects stays an ordinary extra column."""
    if df["context"].null_count() == df.height:
        return df.drop("context")
    if isinstance(df.schema["context"], pl.Struct):  # objects (the HTTP API, JSON Lines)
        ctx = df["context"]
    else:
        try:
            ctx = df["context"].cast(pl.String).str.json_decode(infer_schema_length=None)
        except pl.exceptions.PolarsError:
            return df.rename({"context": "context_text"})
    if not isinstance(ctx.dtype, pl.Struct):
        return df.rename({"context": "context_text"})
    keys = [f.name for f in ctx.dtype.fields if f.name not in df.columns]
    df = df.drop("context")
    return df.with_columns(ctx.struct.field(k) for k in keys) if keys else df


def _number_or_null(col: str, dtype: pl.DataType) -> pl.Expr:
    """A column read as a number, null where it is not one (text like 'abc', booleans, nested
    values): the check then rejects every non-null input that parsed to null."""
    if dtype.is_numeric() or dtype == pl.String:
        return pl.col(col).cast(pl.Float64, strict=False)
    return pl.lit(None, pl.Float64)


def validate_events(
    df: pl.DataFrame,
    settings: Settings,
    source: str | None = None,
    first_line: int = 2,
    max_errors: int = 50,
    pii: PiiPolicy | None = None,
) -> Validated:
    """Validate interactions; every column beyond the core ones is kept as JSON `context`. Types
    are open strings (lower-cased): what each one weighs is the settings' business (an import
    summary says it per type). A `propensity` (the logging policy's probability of showing that item at that position, for
    off-policy estimates) must be a number in (0, 1] and is kept in context as a number."""
    _missing_columns(df, ["user_id", "type", "timestamp"], source)
    if "item_id" not in df.columns:
        df = df.with_columns(item_id=pl.lit(""))
    if "context" in df.columns:
        df = _unpack_context(df)
    _columns_usable(df, EVENT_CORE, source)
    extra = [c for c in df.columns if c not in EVENT_CORE and c != "context"]
    df = _with_lines(df, first_line)
    itemless = set(settings.itemless_types)
    parsed = {
        "__ts": to_timestamp(pl.col("timestamp"), df.schema["timestamp"]),
        "__value": (
            pl.col("value").cast(pl.Float64, strict=False) if "value" in df.columns else pl.lit(1.0)
        ),
        "__position": (
            pl.col("position").cast(pl.Float64, strict=False)
            if "position" in df.columns
            else pl.lit(None, pl.Float64)
        ),
    }
    if "propensity" in df.columns:  # the logging policy's P(this item at this position)
        parsed["__propensity"] = _number_or_null("propensity", df.schema["propensity"])
    df = df.with_columns(
        _id("user_id"),
        _id("item_id").fill_null(""),
        pl.col("type").cast(pl.String).str.strip_chars().str.to_lowercase(),
        **parsed,
    )
    checks = [
        _required("user_id"),
        _too_long("user_id"),
        _too_long("item_id"),
        _required("type"),
        Check(
            "item_id",
            (pl.col("item_id") == "") & ~pl.col("type").is_in(sorted(itemless)),
            pl.format(
                f"item_id must be non-empty for type '{{}}' (only {sorted(itemless)} "
                "may have no item); got ''",
                pl.col("type"),
            ),
        ),
        Check(
            "timestamp",
            pl.col("__ts").is_null(),
            pl.format(
                "timestamp must be an ISO 8601 time or epoch seconds; got '{}'",
                _quoted("timestamp"),
            ),
        ),
        _in_range("timestamp", "__ts", settings),
    ]
    if "value" in df.columns:
        checks.append(
            Check(
                "value",
                pl.col("value").is_not_null()
                & (pl.col("__value").is_null() | ~pl.col("__value").is_finite()),
                pl.format("value must be a finite number; got '{}'", _quoted("value")),
            )
        )
    if "position" in df.columns:
        p = pl.col("__position")
        checks.append(
            Check(
                "position",
                pl.col("position").is_not_null()
                & (p.is_null() | (p < 0) | (p != p.floor()) | (p > 1_000_000)),
                pl.format("position must be a whole number >= 0; got '{}'", _quoted("position")),
            )
        )
    if "propensity" in df.columns:
        p, dtype = pl.col("__propensity"), df.schema["propensity"]
        scalar = dtype.is_numeric() or dtype in (pl.String, pl.Boolean)
        quoted = _quoted("propensity") if scalar else pl.lit(str(dtype))  # nested: its type
        checks.append(
            Check(
                "propensity",
                pl.col("propensity").is_not_null()
                & (p.is_null() | ~p.is_finite() | (p <= 0) | (p > 1)),
                pl.format("propensity must be a number in (0, 1]; got '{}'", quoted),
            )
        )
    out = _apply_checks(df, checks, source, max_errors)
    good = out.good
    if "propensity" in good.columns:  # kept in context as a number, whatever it arrived as
        good = good.with_columns(propensity=pl.col("__propensity"))
    redacted = 0
    if pii is not None and extra:  # before the extra columns become the stored context
        good, redacted = pii.reduce(good, extra)
        extra = [c for c in extra if c in good.columns]
    context = pl.struct(extra).struct.json_encode() if extra else pl.lit(None, pl.String)
    good = good.select(
        (
            # An empty id is no id: such events are told apart by who/what/which/when.
            pl.when(pl.col("event_id").cast(pl.String).str.strip_chars() != "").then(
                pl.col("event_id").cast(pl.String).str.strip_chars()
            )
            if "event_id" in good.columns
            else pl.lit(None, pl.String)
        ).alias("event_id"),
        "user_id",
        "item_id",
        "type",
        pl.col("__ts").alias("timestamp"),
        pl.col("__value").fill_null(1.0).alias("value"),
        pl.col("__position").cast(pl.Int32).alias("position"),
        (
            pl.col("device").cast(pl.String)
            if "device" in good.columns
            else pl.lit(None, pl.String)
        ).alias("device"),
        context.alias("context"),
    )
    return Validated(good, out.errors, out.n_bad, redacted)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_COLUMNS)
